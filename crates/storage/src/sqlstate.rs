//! SQLSTATE codes and the one classification of database errors every service uses.
//!
//! PostgreSQL says why it refused with a five-character SQLSTATE; its message text is for
//! people and may be translated. Everything here decides by the code alone.

use std::fmt;

/// A SQLSTATE: five ASCII letters or digits, the first two naming its class.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    pub const SERIALIZATION_FAILURE: Self = Self(*b"40001");
    pub const DEADLOCK_DETECTED: Self = Self(*b"40P01");
    pub const LOCK_NOT_AVAILABLE: Self = Self(*b"55P03");
    pub const QUERY_CANCELED: Self = Self(*b"57014");
    pub const ADMIN_SHUTDOWN: Self = Self(*b"57P01");
    pub const CRASH_SHUTDOWN: Self = Self(*b"57P02");
    pub const CANNOT_CONNECT_NOW: Self = Self(*b"57P03");
    pub const READ_ONLY_SQL_TRANSACTION: Self = Self(*b"25006");
    pub const TOO_MANY_CONNECTIONS: Self = Self(*b"53300");
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: Self = Self(*b"25P03");
    pub const IN_FAILED_SQL_TRANSACTION: Self = Self(*b"25P02");
    pub const UNIQUE_VIOLATION: Self = Self(*b"23505");
    pub const UNDEFINED_TABLE: Self = Self(*b"42P01");

    /// Parses a code as the server sends it; `None` unless it is five ASCII letters or digits.
    pub fn parse(code: &str) -> Option<Self> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `parse` and the constants).
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }

    /// The class: the first two characters (`"40"` for transaction rollback).
    pub fn class(&self) -> &str {
        &self.as_str()[..2]
    }

    /// True when the database, not the request, is the problem and the same request may
    /// succeed later: connection trouble (class 08), the transaction rolled back by a conflict
    /// (40: serialization failure, deadlock), insufficient resources (53: too many
    /// connections, out of memory or disk), operator intervention (57: statement timeout or
    /// cancel, the server shutting down, restarting or still starting), a lock not had within
    /// `lock_timeout` (55P03) and a read-only transaction (25006: this server was demoted, a
    /// failover is under way), a session ended for idling in a transaction (25P03), and a
    /// session found inside an already failed transaction (25P02: nothing of this request was
    /// applied; the session is not reused, as with every retryable code). The fault suite saw
    /// 25P02 once, on a group of writes right after another group's statement timeout on a
    /// hot product; how a session got there is not known yet, and it must not answer 500.
    /// The pool now closes any session the server reports inside a transaction instead of
    /// handing it out (`pool::build`), so this is the second line.
    pub fn is_retryable(&self) -> bool {
        matches!(self.class(), "08" | "40" | "53" | "57")
            || [
                Self::LOCK_NOT_AVAILABLE,
                Self::READ_ONLY_SQL_TRANSACTION,
                Self::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                Self::IN_FAILED_SQL_TRANSACTION,
            ]
            .contains(self)
    }

    /// True when the statement's failure proves its transaction was rolled back and a second
    /// attempt at once, on another connection, is likely to succeed: a conflict with another
    /// transaction (class 40), or the server ending this session (connection failure, class
    /// 08; shutdown or crash, 57P01 and 57P02).
    pub fn worth_retrying_at_once(&self) -> bool {
        matches!(self.class(), "08" | "40")
            || [Self::ADMIN_SHUTDOWN, Self::CRASH_SHUTDOWN].contains(self)
    }

    /// For an error answering `COMMIT`: true when it proves the transaction was rolled back
    /// (a conflict, class 40, or a deferred constraint, class 23). Any other failure of a
    /// `COMMIT` — the session ended, a timeout — leaves the outcome unknown.
    pub fn proves_commit_rolled_back(&self) -> bool {
        matches!(self.class(), "40" | "23")
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> SqlState {
        SqlState::parse(text).unwrap()
    }

    #[test]
    fn every_listed_code_is_retryable() {
        for text in [
            "55P03", // lock_not_available
            "57014", // query_canceled (statement_timeout)
            "40001", // serialization_failure
            "40P01", // deadlock_detected
            "57P01", // admin_shutdown
            "57P02", // crash_shutdown
            "57P03", // cannot_connect_now
            "25006", // read_only_sql_transaction
            "53300", // too_many_connections
            "25P03", // idle_in_transaction_session_timeout
            "25P02", // in_failed_sql_transaction
            "08000", // connection_exception
            "08003", // connection_does_not_exist
            "08006", // connection_failure
            "08001", // sqlclient_unable_to_establish_sqlconnection
            "08004", // sqlserver_rejected_establishment_of_sqlconnection
            "08P01", // protocol_violation
            "40002", // transaction_integrity_constraint_violation
            "40003", // statement_completion_unknown
            "40000", // transaction_rollback
            "53000", // insufficient_resources
            "53100", // disk_full
            "53200", // out_of_memory
            "53400", // configuration_limit_exceeded
            "57000", // operator_intervention
            "57P04", // database_dropped
            "57P05", // idle_session_timeout
        ] {
            assert!(code(text).is_retryable(), "{text}");
        }
    }

    #[test]
    fn request_errors_are_not_retryable() {
        for text in [
            "23505", // unique_violation
            "23503", // foreign_key_violation
            "23514", // check_violation
            "23502", // not_null_violation
            "42P01", // undefined_table
            "42703", // undefined_column
            "42601", // syntax_error
            "22003", // numeric_value_out_of_range
            "22P02", // invalid_text_representation
            "55000", // object_not_in_prerequisite_state
            "XX000", // internal_error
            "P0001", // raise_exception
        ] {
            assert!(!code(text).is_retryable(), "{text}");
        }
    }

    #[test]
    fn only_conflicts_and_lost_sessions_are_retried_at_once() {
        for text in ["40001", "40P01", "08006", "08003", "57P01", "57P02"] {
            assert!(code(text).worth_retrying_at_once(), "{text}");
        }
        for text in [
            "55P03", "57014", "57P03", "53300", "25006", "23505", "42P01",
        ] {
            assert!(!code(text).worth_retrying_at_once(), "{text}");
        }
    }

    #[test]
    fn a_failed_commit_proves_a_rollback_only_for_conflicts_and_constraints() {
        for text in ["40001", "40P01", "23505", "23503"] {
            assert!(code(text).proves_commit_rolled_back(), "{text}");
        }
        for text in ["57P01", "57P02", "08006", "57014", "53300", "XX000"] {
            assert!(!code(text).proves_commit_rolled_back(), "{text}");
        }
    }

    #[test]
    fn parsing_takes_five_ascii_alphanumerics_only() {
        assert_eq!(code("40P01"), SqlState::DEADLOCK_DETECTED);
        assert_eq!(code("40P01").class(), "40");
        assert_eq!(code("57014").to_string(), "57014");
        for bad in ["", "4000", "400011", "40 01", "4000é"] {
            assert!(SqlState::parse(bad).is_none(), "{bad:?}");
        }
    }
}

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error};

use crate::sqlstate::SqlState;

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No connection could be had in time: the database is down, unreachable or saturated.
    #[error("database unavailable")]
    Unavailable(#[from] Unavailable),
    /// A statement or transaction ran past its deadline.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database query failed: {0}")]
    Query(#[from] Error),
    /// PostgreSQL refused for now, with a SQLSTATE that blames the moment, not the request
    /// ([`SqlState::is_retryable`]): a lock or statement timeout, a deadlock, the server
    /// shutting down or failing over, too many connections.
    #[error("the database refused for now (SQLSTATE {sqlstate})")]
    Refused {
        sqlstate: SqlState,
        #[source]
        source: Error,
    },
    /// The session ended under the statement (the server closed it or the link broke) with
    /// no error from the server saying why. What was not committed is rolled back.
    #[error("the database connection was lost")]
    ConnectionLost {
        #[source]
        source: Error,
    },
    /// `COMMIT` was sent and nothing proves whether it took effect: the connection was lost
    /// or the deadline passed while waiting for its answer.
    #[error("the outcome of COMMIT is unknown")]
    OutcomeUnknown {
        #[source]
        cause: Box<StorageError>,
    },
    /// The tables are not there (SQLSTATE 42P01): a database nobody has migrated yet.
    #[error("no schema yet")]
    NoSchema {
        #[source]
        source: Error,
    },
    /// A stored row breaks a rule the schema should have enforced.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("migrations failed: {0}")]
    Migration(String),
}

impl StorageError {
    /// True when retrying later may succeed: the database, not the request, is the problem.
    /// This is the one classification every service answers by (503, not 500).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Unavailable(_)
            | StorageError::Timeout(_)
            | StorageError::Refused { .. }
            | StorageError::ConnectionLost { .. }
            | StorageError::OutcomeUnknown { .. } => true,
            // The kinds diesel itself names, for errors that did not pass through a session
            // of ours (see `session`).
            StorageError::Query(Error::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::ReadOnlyTransaction
            ),
            StorageError::Query(Error::BrokenTransactionManager) => true,
            _ => false,
        }
    }

    /// True when the work certainly did not commit and running it again at once, on another
    /// connection, may well succeed: a serialization failure or deadlock (the server rolled
    /// the transaction back), or the session lost before `COMMIT` was sent. Never true for
    /// [`StorageError::OutcomeUnknown`].
    pub fn worth_retrying_at_once(&self) -> bool {
        match self {
            StorageError::Refused { sqlstate, .. } => sqlstate.worth_retrying_at_once(),
            StorageError::ConnectionLost { .. } => true,
            StorageError::Query(Error::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::SerializationFailure | DatabaseErrorKind::ClosedConnection
            ),
            _ => false,
        }
    }

    /// True for errors that say nothing about the connection: the statement ran and the
    /// database answered no. Anything else may have left the session unusable.
    pub fn leaves_connection_usable(&self) -> bool {
        match self {
            StorageError::Query(Error::NotFound) => true,
            StorageError::Query(Error::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation
            ),
            StorageError::Corrupt { .. } | StorageError::NoSchema { .. } => true,
            _ => false,
        }
    }

    /// This error and its causes, `": "`-separated, for a log line.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("no pooled connection in time")]
    Pool(#[source] diesel_async::pooled_connection::deadpool::PoolError),
    #[error("cannot open a session")]
    Session(#[source] diesel::ConnectionError),
    #[error("the pool cannot be built")]
    Build(#[source] diesel_async::pooled_connection::deadpool::BuildError),
    /// The service is shutting down and takes no new database work.
    #[error("the service is stopping")]
    Stopping,
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StorageError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StorageError::Unavailable(Unavailable::Pool(error))
    }
}

use std::time::Duration;

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No connection could be had in time: the database is down, unreachable or saturated.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement or transaction ran past its deadline.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A stored row breaks a rule the schema should have enforced.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("migrations failed: {0}")]
    Migration(String),
}

impl StorageError {
    /// True when retrying later may succeed: the database, not the request, is the problem.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StorageError::Unavailable(_) | StorageError::Timeout(_) => true,
            StorageError::Query(Error::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::SerializationFailure
            ),
            StorageError::Query(Error::BrokenTransactionManager) => true,
            _ => false,
        }
    }
}

impl StorageError {
    /// True for errors that say nothing about the connection: the statement ran and the
    /// database answered no. Anything else may have left the session unusable.
    pub fn leaves_connection_usable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StorageError::Query(Error::NotFound) => true,
            StorageError::Query(Error::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation
            ),
            StorageError::Corrupt { .. } => true,
            _ => false,
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StorageError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StorageError::Unavailable(error.to_string())
    }
}

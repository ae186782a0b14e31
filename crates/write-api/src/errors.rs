//! The one place where write-api's errors become HTTP answers.

use http_api::{ApiError, ErrorCode};
use storage::StorageError;

use crate::catalogue::WriteError;
use crate::preconditions::InvalidIfMatch;

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::NotFound(id) => {
                ApiError::new(ErrorCode::NotFound, format!("product {id} not found"))
            }
            WriteError::AlreadyExists(id) => ApiError::new(
                ErrorCode::AlreadyExists,
                format!("product {id} already exists; use PUT to replace it"),
            ),
            WriteError::PreconditionFailed { id, current } => ApiError::new(
                ErrorCode::PreconditionFailed,
                match current {
                    Some(version) => format!(
                        "product {id} is at version {version}, which If-Match does not name"
                    ),
                    None => format!("product {id} does not exist, so If-Match cannot match"),
                },
            ),
            WriteError::Storage(error) => storage_error(&error),
            WriteError::Group(error) => storage_error(&error),
        }
    }
}

impl From<InvalidIfMatch> for ApiError {
    fn from(error: InvalidIfMatch) -> Self {
        ApiError::new(ErrorCode::InvalidIfMatch, error.to_string())
    }
}

/// 503 with `Retry-After` when the primary is down, busy, restarting or failing over
/// (retrying later may work); `outcome_unknown` when the connection was lost while committing;
/// 500, logged, for anything else — a bug. Clients get a fixed message; the cause goes to the
/// log.
pub fn storage_error(error: &StorageError) -> ApiError {
    match error {
        StorageError::OutcomeUnknown { .. } => {
            tracing::warn!(error = %error.report(), "write outcome unknown: lost while committing");
            ApiError::new(ErrorCode::OutcomeUnknown, OUTCOME_UNKNOWN)
        }
        _ if error.is_transient() => {
            tracing::warn!(error = %error.report(), "primary database unavailable; answered 503");
            ApiError::new(ErrorCode::Unavailable, UNAVAILABLE)
        }
        _ => ApiError::internal("write failed", error),
    }
}

const UNAVAILABLE: &str =
    "the primary database is unavailable or busy; nothing was written, try again shortly";

const OUTCOME_UNKNOWN: &str = "the write may or may not have happened: the connection to the \
     database was lost while committing it. Repeating the same request is safe with If-Match \
     (or, for a create, the same id): if the first attempt took effect, the repeat answers 412 \
     (or 409) and changes nothing";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::ResponseError;
    use actix_web::http::StatusCode;

    use super::*;

    fn lost() -> StorageError {
        StorageError::ConnectionLost {
            source: diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UnableToSendCommand,
                Box::new(String::from("connection closed")),
            ),
        }
    }

    #[test]
    fn a_lost_commit_is_outcome_unknown_and_says_what_is_safe() {
        let error = storage_error(&StorageError::OutcomeUnknown {
            cause: Box::new(lost()),
        });
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), ErrorCode::OutcomeUnknown);
        let response = error.error_response();
        let retry_after = response.headers().get("retry-after").unwrap();
        assert_eq!(retry_after.to_str().unwrap(), "1");
        assert!(OUTCOME_UNKNOWN.contains("If-Match") && OUTCOME_UNKNOWN.contains("same id"));
    }

    #[test]
    fn transient_errors_are_503s_with_a_fixed_message_and_the_rest_500s() {
        for error in [
            lost(),
            StorageError::Timeout(Duration::from_secs(1)),
            StorageError::Unavailable(storage::Unavailable::Stopping),
        ] {
            let answer = storage_error(&error);
            assert_eq!(
                answer.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{error:?}"
            );
            assert_eq!(answer.code(), ErrorCode::Unavailable);
        }
        let bug = storage_error(&StorageError::Query(diesel::result::Error::NotFound));
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

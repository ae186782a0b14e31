//! The one place where write-api's errors become HTTP answers.

use actix_web::http::StatusCode;
use http_api::ApiError;
use storage::StorageError;

use crate::catalogue::WriteError;
use crate::preconditions::InvalidIfMatch;

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::NotFound(id) => ApiError::not_found(format!("product {id} not found")),
            WriteError::AlreadyExists(id) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("product {id} already exists; use PUT to replace it"),
            ),
            WriteError::PreconditionFailed { id, current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                match current {
                    Some(version) => format!(
                        "product {id} is at version {version}, which If-Match does not name"
                    ),
                    None => format!("product {id} does not exist, so If-Match cannot match"),
                },
            ),
            WriteError::Storage(error) => storage_error(&error),
        }
    }
}

impl From<InvalidIfMatch> for ApiError {
    fn from(error: InvalidIfMatch) -> Self {
        ApiError::bad_request("invalid_if_match", error.to_string())
    }
}

/// 503 when the primary is down, slow or saturated (retrying later may work); 500, logged,
/// for anything else.
pub fn storage_error(error: &StorageError) -> ApiError {
    if error.is_transient() {
        tracing::warn!(%error, "primary database unavailable");
        ApiError::unavailable(format!("the primary database is unavailable: {error}"))
    } else {
        ApiError::internal("write failed", error)
    }
}

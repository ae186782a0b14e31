//! The one place where read-api's errors become HTTP answers, with `X-Served-By` on every
//! answer a source had a part in.

use std::fmt;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use domain::ProductId;
use http_api::{ApiError, ErrorCode};

use crate::list_query::InvalidQuery;
use crate::min_version::InvalidMinVersion;
use crate::router::{ReadError, ReadFailure};

/// Names the source of an answer: a replica's name, or `primary`.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// An error answer, and the source that gave it or was tried last.
#[derive(Debug)]
pub struct Failure {
    error: ApiError,
    served_by: Option<Arc<str>>,
}

impl Failure {
    /// 404 for an id that is absent or deleted on the source that answered.
    pub fn not_found(id: ProductId, served_by: Arc<str>) -> Self {
        Self {
            error: ApiError::new(ErrorCode::NotFound, format!("product {id} not found")),
            served_by: Some(served_by),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = self.error.error_response();
        if let Some(source) = &self.served_by {
            set_served_by(&mut response, source);
        }
        response
    }
}

pub fn set_served_by(response: &mut HttpResponse, source: &str) {
    if let Ok(value) = HeaderValue::from_str(source) {
        response.headers_mut().insert(SERVED_BY, value);
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            served_by: None,
        }
    }
}

/// Every failed read is a 503: the request was fine, the sources were not; retrying later
/// may work. Logged here, once.
impl From<ReadFailure> for Failure {
    fn from(failure: ReadFailure) -> Self {
        let ReadFailure { error, served_by } = failure;
        tracing::warn!(%error, served_by = served_by.as_deref(), "read not served");
        let code = match &error {
            ReadError::NoSource(_) | ReadError::Failed { .. } => ErrorCode::Unavailable,
            ReadError::VersionNotReplicated { .. } => ErrorCode::VersionNotReplicated,
        };
        Self {
            error: ApiError::new(code, error.to_string()),
            served_by,
        }
    }
}

impl From<InvalidQuery> for ApiError {
    fn from(error: InvalidQuery) -> Self {
        match error {
            InvalidQuery::Parameters(message) => ApiError::new(ErrorCode::InvalidQuery, message),
            InvalidQuery::Cursor(error) => {
                ApiError::new(ErrorCode::InvalidCursor, error.to_string())
            }
        }
    }
}

impl From<InvalidMinVersion> for ApiError {
    fn from(error: InvalidMinVersion) -> Self {
        ApiError::new(ErrorCode::InvalidMinVersion, error.to_string())
    }
}

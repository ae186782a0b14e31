use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::{FieldError, InvalidInput};
use serde::Serialize;

/// An error answer: status, a stable machine `code`, a message for people, and for invalid
/// input the field-by-field details. Every handler error becomes one of these, in one place
/// per API, and this is the only place that turns them into HTTP.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<FieldError>,
    /// Seconds for `Retry-After`; every 503 carries one.
    retry_after: Option<u32>,
}

/// `Retry-After` of a 503 that names none: try again in a second.
pub const DEFAULT_RETRY_AFTER_S: u32 = 1;

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [FieldError],
}

/// Bad input parsed into the domain's error is always a 400 listing every field.
impl From<InvalidInput> for ApiError {
    fn from(input: InvalidInput) -> Self {
        Self::invalid_input(&input)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 listing every bad field.
    pub fn invalid_input(input: &InvalidInput) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "validation_failed",
            message: input.to_string(),
            details: input.errors().to_vec(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503: a dependency (database, broker) is down or too slow; retrying later may work.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Sets `Retry-After` (in seconds). A 503 without one says 1 second.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 500 for what should not happen. Logged here, once, with its cause chain; the client
    /// gets no internals.
    pub fn internal(context: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        let retry_after = match self.retry_after {
            Some(seconds) => Some(seconds),
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => Some(DEFAULT_RETRY_AFTER_S),
            None => None,
        };
        if let Some(seconds) = retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(ErrorBody {
            success: false,
            error: &self.message,
            code: self.code,
            details: &self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::RETRY_AFTER;

    use super::*;

    fn retry_after(error: &ApiError) -> Option<String> {
        error
            .error_response()
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn every_503_says_when_to_retry_and_nothing_else_does() {
        assert_eq!(
            retry_after(&ApiError::unavailable("busy")).as_deref(),
            Some("1")
        );
        let custom = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "x", "y").retry_after(5);
        assert_eq!(retry_after(&custom).as_deref(), Some("5"));
        assert_eq!(retry_after(&ApiError::not_found("gone")), None);
    }
}

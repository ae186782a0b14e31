use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::{FieldError, InvalidInput};
use serde::Serialize;

use crate::ErrorCode;

/// An error answer: status, a stable machine `code`, a message for people, and for invalid
/// input the field-by-field details. Every handler error becomes one of these, in one place
/// per API, and this is the only place that turns them into HTTP.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
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
    code: ErrorCode,
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
    /// An answer with `code`'s status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// 400 listing every bad field.
    pub fn invalid_input(input: &InvalidInput) -> Self {
        Self {
            details: input.errors().to_vec(),
            ..Self::new(ErrorCode::ValidationFailed, input.to_string())
        }
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
        Self::new(ErrorCode::Internal, "internal error; it has been logged")
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        let retry_after = match self.retry_after {
            Some(seconds) => Some(seconds),
            None if self.status() == StatusCode::SERVICE_UNAVAILABLE => Some(DEFAULT_RETRY_AFTER_S),
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
        for &code in ErrorCode::ALL {
            let expected = (code.status() == StatusCode::SERVICE_UNAVAILABLE).then(|| "1".into());
            assert_eq!(retry_after(&ApiError::new(code, "")), expected, "{code}");
        }
        let custom = ApiError::new(ErrorCode::Unavailable, "y").retry_after(5);
        assert_eq!(retry_after(&custom).as_deref(), Some("5"));
    }
}

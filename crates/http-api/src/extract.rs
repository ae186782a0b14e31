//! Request parts parsed into domain types before a handler runs.

use std::future::{Ready, ready};

use actix_web::error::JsonPayloadError;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use domain::ProductId;

use crate::{ApiError, ErrorCode};

/// The `{id}` path segment as a [`ProductId`]; a non-UUID is a 400 in the envelope (actix's
/// own answer would be a plain-text 404).
#[derive(Debug, Clone, Copy)]
pub struct ProductIdPath(pub ProductId);

impl FromRequest for ProductIdPath {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or_default();
        ready(
            ProductId::parse(raw)
                .map(ProductIdPath)
                .map_err(|e| ApiError::new(ErrorCode::InvalidId, e.message)),
        )
    }
}

/// The request id of this request (see [`crate::middleware`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl FromRequest for RequestId {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::now_v7().to_string()));
        ready(Ok(id))
    }
}

/// JSON bodies: at most `limit` bytes (413 beyond), `Content-Type: application/json` (415
/// otherwise), and parse errors as 400s in the envelope with serde's message, which names
/// the line and column.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|error, _| json_error(error).into())
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON, sent with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.is_syntax() || e.is_eof() => {
            ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::new(ErrorCode::InvalidBody, format!("invalid body: {e}"))
        }
        other => ApiError::new(ErrorCode::InvalidBody, format!("unreadable body: {other}")),
    }
}

//! Bearer-token access to the write routes, when `WRITE_API_TOKEN` is set.
//!
//! The token is compared in constant time and never logged. Operator endpoints (`/healthz`,
//! `/readyz`, `/metrics`) stay open: they are for probes and scrapers on the inside network.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use http_api::{ApiError, ErrorCode};
use service_kit::SecretText;
use subtle::ConstantTimeEq;

/// The token writes need; unset means writes are open.
#[derive(Clone)]
pub struct WriteToken(pub SecretText);

/// Refuses requests under `/api/` without the bearer token, with 401 in the envelope.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let token = req.app_data::<web::Data<WriteToken>>().map(|t| t.0.clone());
    let needs_token =
        req.path().starts_with("/api/") && token.as_ref().is_some_and(SecretText::is_set);
    if needs_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = token.as_ref().map(SecretText::expose).unwrap_or_default();
        let matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        if !matches {
            tracing::warn!(path = %req.path(), method = %req.method(), "write refused: missing or wrong bearer token");
            let error = ApiError::new(
                ErrorCode::Unauthorized,
                "writes need Authorization: Bearer <token>",
            );
            let mut response = error.error_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

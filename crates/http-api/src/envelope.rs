//! The response envelope of the seed's API.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::Serialize;

#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    success: bool,
    data: T,
    message: &'a str,
}

/// `{"success": true, "data": data, "message": message}` with `status`.
pub fn success<T: Serialize>(status: StatusCode, data: T, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(Success {
        success: true,
        data,
        message,
    })
}

/// A 200 in the envelope.
pub fn ok<T: Serialize>(data: T, message: &str) -> HttpResponse {
    success(StatusCode::OK, data, message)
}

/// `/readyz` when the service cannot do its job: 503 with the error envelope, and the
/// readiness report still under `data` so an operator sees why.
pub fn not_ready<T: Serialize>(error: &str, report: T) -> HttpResponse {
    HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(serde_json::json!({
        "success": false,
        "error": error,
        "code": crate::ErrorCode::NotReady,
        "data": report,
    }))
}

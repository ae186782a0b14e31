//! Endpoints for operators that every service has, and the answers for requests no route
//! takes.

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use service_kit::metrics::PrometheusHandle;

use crate::{ApiError, ErrorCode};

/// `GET /healthz`: the process is alive and serving. Dependencies are `/readyz`'s business.
pub async fn healthz() -> HttpResponse {
    crate::envelope::ok(serde_json::json!({ "status": "alive" }), "alive")
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// Paths every service serves for GET only: any other method on them answers 405.
const GET_ONLY: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

/// 405 with `Allow`, saying what to use instead; `hint` is appended to the message.
pub fn method_not_allowed(req: &HttpRequest, allowed: &'static str, hint: &str) -> HttpResponse {
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; use {allowed}{hint}",
            req.method(),
            req.path()
        ),
    );
    let mut response = error.error_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// The app's default service, for requests no route took: 405 on the operator paths (their
/// routes take GET only), `/docs` sent on to `/docs/`, 404 for any other path.
pub async fn unrouted(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let get_only = GET_ONLY.contains(&path) || path.starts_with("/docs/");
    if get_only && req.method() != Method::GET {
        return method_not_allowed(&req, "GET", "");
    }
    if path == "/docs" {
        return HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/docs/"))
            .finish();
    }
    let error = ApiError::new(
        ErrorCode::NotFound,
        format!("no endpoint at {} {path}", req.method()),
    );
    error.error_response()
}

//! Endpoints for operators that every service has.

use actix_web::{HttpResponse, web};
use service_kit::metrics::PrometheusHandle;

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

//! What operators see: `GET /api/replicas`, `/readyz` and the source gauges of `/metrics`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use service_kit::TaskHealth;
use service_kit::metrics::PrometheusHandle;

use crate::router::Router;
use crate::source::SourceReport;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    /// `running`, or the background task that ended unexpectedly and why.
    tasks: String,
    strategy: String,
    fallback_to_primary: bool,
    replicas: Vec<SourceReport>,
    /// The primary: it says what each replica lacks, and serves reads when fallback is on.
    primary: Option<SourceReport>,
}

fn report(router: &Router, tasks: &TaskHealth) -> Report {
    Report {
        tasks: tasks
            .failure()
            .map_or_else(|| "running".to_owned(), |f| f.to_string()),
        strategy: router.strategy().to_string(),
        fallback_to_primary: router.fallback().is_some(),
        replicas: router.replicas().iter().map(|s| s.report()).collect(),
        primary: router.primary().map(|s| s.report()),
    }
}

/// `GET /api/replicas`: each replica's health (and why not), lag and load.
#[utoipa::path(get, path = "/api/replicas", tag = "replicas",
    responses((status = 200, description = "per replica: healthy, reason, lagMs, inFlight, readsServed, lastError",
               body = http_api::openapi::StatusEnvelope)))]
pub async fn replicas(router: web::Data<Router>, tasks: web::Data<TaskHealth>) -> HttpResponse {
    http_api::envelope::ok(
        report(&router, &tasks),
        "Replica status retrieved successfully",
    )
}

/// `GET /readyz`: 200 while some source can serve reads (a replica in rotation, or the
/// primary when fallback is on); every source is shown either way.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = http_api::openapi::StatusEnvelope),
              (status = 503, description = "no source can serve", body = http_api::openapi::StatusEnvelope)))]
pub async fn readyz(router: web::Data<Router>, tasks: web::Data<TaskHealth>) -> HttpResponse {
    let report = report(&router, &tasks);
    if let Some(failure) = tasks.failure() {
        http_api::envelope::not_ready(&failure.to_string(), report)
    } else if router.can_serve() {
        http_api::envelope::success(StatusCode::OK, report, "ready")
    } else {
        http_api::envelope::not_ready(
            "no source can serve reads: every replica is out of rotation and the primary is \
             unavailable or not a fallback",
            report,
        )
    }
}

/// `GET /metrics`: refreshes the source gauges, then renders everything.
pub async fn metrics(
    router: web::Data<Router>,
    handle: web::Data<PrometheusHandle>,
) -> HttpResponse {
    publish_gauges(&router);
    http_api::ops::metrics(handle).await
}

/// `replica_healthy`, `replica_lag_seconds` and `replica_in_flight` for every replica.
pub fn publish_gauges(router: &Router) {
    for source in router.replicas() {
        let report = source.report();
        let name = report.name;
        metrics::gauge!("replica_healthy", "replica" => name.clone()).set(if report.healthy {
            1.0
        } else {
            0.0
        });
        if let Some(lag_ms) = report.lag_ms {
            metrics::gauge!("replica_lag_seconds", "replica" => name.clone())
                .set(lag_ms as f64 / 1000.0);
        }
        if let Some(heartbeat) = report.heartbeat {
            metrics::gauge!("replication_lag_seconds", "replica" => name.clone())
                .set(heartbeat.age_ms as f64 / 1000.0);
            if let Some(delay_ms) = heartbeat.pipeline_delay_ms {
                metrics::gauge!("replication_pipeline_delay_seconds", "replica" => name.clone())
                    .set(delay_ms as f64 / 1000.0);
            }
        }
        metrics::gauge!("replica_in_flight", "replica" => name).set(report.in_flight as f64);
    }
}

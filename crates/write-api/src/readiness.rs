//! `/readyz` and the outbox gauges of `/metrics`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Serialize;
use service_kit::metrics::PrometheusHandle;
use storage::outbox::{self, Backlog};
use storage::{DbPool, pool};
use tokio::sync::watch;

use crate::relay::BrokerStatus;

/// Deadline for the checks behind `/readyz` and `/metrics`.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// What `/readyz` looks at.
pub struct Readiness {
    pub pool: DbPool,
    pub broker: watch::Receiver<BrokerStatus>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    database: String,
    broker: BrokerStatus,
    outbox: Option<OutboxReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutboxReport {
    backlog: i64,
    oldest_age_seconds: Option<f64>,
}

impl Readiness {
    async fn backlog(&self) -> Result<Backlog, storage::StorageError> {
        pool::with_connection(&self.pool, CHECK_DEADLINE, async |conn| {
            outbox::backlog(conn).await
        })
        .await
    }
}

/// `GET /readyz`: 200 when the primary answers; writes do not need the broker (they queue in
/// the outbox), so its state and the backlog are shown but do not make this fail.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "the primary answers; broker state and outbox backlog shown",
         body = http_api::openapi::StatusEnvelope),
        (status = 503, description = "the primary does not answer", body = http_api::openapi::StatusEnvelope)))]
pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let backlog = readiness.backlog().await;
    let broker = readiness.broker.borrow().clone();
    let (status, database, outbox) = match backlog {
        Ok(backlog) => (
            StatusCode::OK,
            "ok".to_owned(),
            Some(outbox_report(backlog)),
        ),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string(), None),
    };
    let report = Report {
        database,
        broker,
        outbox,
    };
    if status.is_success() {
        http_api::envelope::success(status, report, "ready")
    } else {
        http_api::envelope::not_ready("the primary database is unreachable", report)
    }
}

/// `GET /metrics`: refreshes the outbox gauges, then renders everything.
pub async fn metrics(
    readiness: web::Data<Readiness>,
    handle: web::Data<PrometheusHandle>,
) -> HttpResponse {
    if let Ok(backlog) = readiness.backlog().await {
        let report = outbox_report(backlog);
        metrics::gauge!("outbox_backlog_events").set(report.backlog as f64);
        metrics::gauge!("outbox_oldest_event_age_seconds")
            .set(report.oldest_age_seconds.unwrap_or(0.0));
    }
    let connected = readiness.broker.borrow().connected;
    metrics::gauge!("broker_connected").set(if connected { 1.0 } else { 0.0 });
    http_api::ops::metrics(handle).await
}

fn outbox_report(backlog: Backlog) -> OutboxReport {
    OutboxReport {
        backlog: backlog.rows,
        oldest_age_seconds: backlog
            .oldest
            .map(|oldest| (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0),
    }
}

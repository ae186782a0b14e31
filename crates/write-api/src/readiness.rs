//! `/readyz` and the outbox gauges of `/metrics`.
//!
//! Readiness fails for two things only: the primary not answering, and a background task
//! (the relay) having ended. The broker and the outbox are shown, never decisive: writes do
//! not need the broker, and a large backlog is exactly when writes must keep flowing. Every
//! figure is had at a cost that does not grow with the backlog (see
//! [`storage::outbox::backlog`]).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Serialize;
use service_kit::TaskHealth;
use service_kit::metrics::PrometheusHandle;
use storage::outbox::{self, Backlog};
use storage::{DbPool, StorageError, pool};
use tokio::sync::watch;

use crate::relay::BrokerStatus;

/// Deadline for the primary's check behind `/readyz`.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);
/// Deadline for the outbox figures; shorter, as they only inform.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(1);

/// What `/readyz` looks at.
pub struct Readiness {
    pub pool: DbPool,
    pub broker: watch::Receiver<BrokerStatus>,
    pub tasks: TaskHealth,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    database: String,
    /// `ok`, or the background task that ended and why.
    tasks: String,
    broker: BrokerStatus,
    outbox: Option<OutboxReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutboxReport {
    /// Rows waiting: exact up to 10,000, PostgreSQL's estimate past it.
    backlog: i64,
    backlog_estimated: bool,
    oldest_age_seconds: Option<f64>,
    /// Rows the relay could not decode, set aside in `outbox_dead_letters`.
    dead_lettered: i64,
}

impl Readiness {
    async fn outbox(&self) -> Result<OutboxReport, StorageError> {
        let (backlog, dead) = pool::with_connection(&self.pool, BACKLOG_DEADLINE, async |conn| {
            Ok((
                outbox::backlog(conn).await?,
                outbox::dead_letters(conn).await?,
            ))
        })
        .await?;
        Ok(outbox_report(backlog, dead.rows))
    }
}

/// `GET /readyz`: 200 while the primary answers and every background task runs.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "the primary answers and the relay runs; broker state and outbox backlog shown",
         body = http_api::openapi::StatusEnvelope),
        (status = 503, description = "the primary does not answer, or a background task ended (the process is then stopping)",
         body = http_api::openapi::StatusEnvelope)))]
pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let failed_task = readiness.tasks.failure();
    let primary = pool::ping(&readiness.pool, CHECK_DEADLINE).await;
    let outbox = match &primary {
        Ok(()) => readiness.outbox().await.ok(),
        Err(_) => None,
    };
    let report = Report {
        database: match &primary {
            Ok(()) => "ok".to_owned(),
            Err(error) => error.to_string(),
        },
        tasks: failed_task
            .as_ref()
            .map_or_else(|| "ok".to_owned(), ToString::to_string),
        broker: readiness.broker.borrow().clone(),
        outbox,
    };
    match (failed_task, primary) {
        (None, Ok(())) => http_api::envelope::success(StatusCode::OK, report, "ready"),
        (Some(failure), _) => http_api::envelope::not_ready(&failure.to_string(), report),
        (None, Err(_)) => {
            http_api::envelope::not_ready("the primary database is unreachable", report)
        }
    }
}

/// `GET /metrics`: refreshes the outbox gauges, then renders everything.
pub async fn metrics(
    readiness: web::Data<Readiness>,
    handle: web::Data<PrometheusHandle>,
) -> HttpResponse {
    if let Ok(report) = readiness.outbox().await {
        metrics::gauge!("outbox_backlog_events").set(report.backlog as f64);
        metrics::gauge!("outbox_oldest_event_age_seconds")
            .set(report.oldest_age_seconds.unwrap_or(0.0));
        metrics::gauge!("outbox_dead_letters").set(report.dead_lettered as f64);
    }
    let connected = readiness.broker.borrow().connected;
    metrics::gauge!("broker_connected").set(if connected { 1.0 } else { 0.0 });
    http_api::ops::metrics(handle).await
}

fn outbox_report(backlog: Backlog, dead_lettered: i64) -> OutboxReport {
    OutboxReport {
        backlog: backlog.rows,
        backlog_estimated: backlog.estimated,
        oldest_age_seconds: backlog
            .oldest
            .map(|oldest| (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0),
        dead_lettered,
    }
}

//! `/readyz`: consuming or not, and each replica's state.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use service_kit::TaskHealth;
use tokio::sync::watch;

use crate::consume::ConsumerStatus;
use crate::replica::{Replica, ReplicaReport};

pub struct Health {
    pub consumer: watch::Receiver<ConsumerStatus>,
    pub replicas: Arc<Vec<Arc<Replica>>>,
    pub tasks: TaskHealth,
}

#[derive(Serialize)]
struct Report {
    broker: ConsumerStatus,
    replicas: Vec<ReplicaReport>,
    tasks: String,
}

/// 200 while consuming and every task runs. A replica that is down does not make the
/// replicator unready: it keeps serving the others and catch-up will bring that one level.
pub async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let broker = health.consumer.borrow().clone();
    let consuming = broker.consuming;
    let failure = health.tasks.failure();
    let report = Report {
        broker,
        replicas: health.replicas.iter().map(|r| r.report()).collect(),
        tasks: failure
            .as_ref()
            .map_or_else(|| "running".to_owned(), ToString::to_string),
    };
    match failure {
        Some(failure) => http_api::envelope::not_ready(&failure.to_string(), report),
        None if !consuming => http_api::envelope::not_ready("not consuming", report),
        None => http_api::envelope::success(StatusCode::OK, report, "ready"),
    }
}

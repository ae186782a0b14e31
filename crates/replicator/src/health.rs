//! `/readyz`: consuming or not, and each replica's state.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use tokio::sync::watch;

use crate::consume::ConsumerStatus;
use crate::replica::{Replica, ReplicaReport};

pub struct Health {
    pub consumer: watch::Receiver<ConsumerStatus>,
    pub replicas: Arc<Vec<Arc<Replica>>>,
}

#[derive(Serialize)]
struct Report {
    broker: ConsumerStatus,
    replicas: Vec<ReplicaReport>,
}

/// 200 while consuming. A replica that is down does not make the replicator unready: it
/// keeps serving the others and catch-up will bring that one level.
pub async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let broker = health.consumer.borrow().clone();
    let status = if broker.consuming {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let report = Report {
        broker,
        replicas: health.replicas.iter().map(|r| r.report()).collect(),
    };
    let message = if status == StatusCode::OK {
        "ready"
    } else {
        "not consuming"
    };
    http_api::envelope::success(status, report, message)
}

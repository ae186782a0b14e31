//! Periodic health checks: every `health_check_interval_ms`, each source (not cooling down)
//! is probed with a short timeout. A replica's probe reads its `replication_status` row, which
//! both proves the schema is there and gives its lag; the primary's reads its newest change,
//! the reference replicas' lag is measured against.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::RunQueryDsl;
use futures_util::future::join_all;
use storage::replication_status::ReplicationStatus;
use storage::schema::replication_status;
use storage::{StorageError, pool};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lag::{self, Sample};
use crate::router::Router;
use crate::source::{Role, Source};
use crate::status;

/// Probes every due source once, then updates lags (they compare replicas with each other)
/// and the gauges.
pub async fn check_all(router: &Router, timeout: Duration) {
    let started = Instant::now();
    let due: Vec<&Arc<Source>> = router
        .replicas()
        .iter()
        .chain(router.primary())
        .filter(|s| s.probe_due(started))
        .collect();
    let outcomes = join_all(due.iter().map(|source| probe(source, timeout))).await;

    let reference = lag::reference(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().and_then(Option::as_ref)),
    );
    for (source, outcome) in due.into_iter().zip(outcomes) {
        source.record_probe(
            started,
            match outcome {
                Ok(sample) => Ok(sample.map(|s| lag::lag(&s, reference))),
                Err(error) => {
                    tracing::debug!(replica = %source.name(), %error, "health check failed");
                    Err(reason(&error, timeout))
                }
            },
        );
    }
    status::publish_gauges(router);
}

/// Runs [`check_all`] every `interval`, and as soon as a breaker's cool-down ends, until
/// `stop` fires. `breaker_opened` is the notification the sources send when a breaker opens.
pub async fn run(
    router: Arc<Router>,
    interval: Duration,
    timeout: Duration,
    breaker_opened: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let next = router
            .replicas()
            .iter()
            .chain(router.primary())
            .filter_map(|s| s.cooldown_ends())
            .filter(|end| *end > Instant::now())
            .fold(Instant::now() + interval, Instant::min);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            // A new cool-down may end before `next`: work out the wake-up time again.
            () = breaker_opened.notified() => continue,
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = check_all(&router, timeout) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A replica's status row with its database's clock; for the primary, its newest change.
async fn probe(source: &Source, timeout: Duration) -> Result<Option<Sample>, StorageError> {
    match source.role() {
        Role::Primary => {
            pool::with_connection(source.pool(), timeout, async |conn| {
                use storage::schema::products;
                let (newest, db_now): (Option<DateTime<Utc>>, DateTime<Utc>) = products::table
                    .select((
                        diesel::dsl::max(products::updated_at),
                        now.into_sql::<Timestamptz>(),
                    ))
                    .first(conn)
                    .await?;
                Ok(Some(Sample {
                    last_event_at: newest,
                    last_applied_at: None,
                    behind_since: None,
                    now: db_now,
                }))
            })
            .await
        }
        Role::Replica => {
            pool::with_connection(source.pool(), timeout, async |conn| {
                let (status, db_now): (ReplicationStatus, DateTime<Utc>) =
                    replication_status::table
                        .select((
                            ReplicationStatus::as_select(),
                            now.into_sql::<Timestamptz>(),
                        ))
                        .first(conn)
                        .await?;
                Ok(Some(Sample {
                    last_event_at: status.last_event_at,
                    last_applied_at: status.last_applied_at,
                    behind_since: status.behind_since,
                    now: db_now,
                }))
            })
            .await
        }
    }
}

/// Why a probe failed, in words for `/api/replicas`.
fn reason(error: &StorageError, timeout: Duration) -> String {
    use diesel::result::Error;
    match error {
        StorageError::Query(Error::DatabaseError(_, info))
            if info.message().contains("does not exist") =>
        {
            format!(
                "no schema yet ({}); the replicator or write-api migrates databases, read-api \
                 never does",
                info.message()
            )
        }
        StorageError::Query(Error::NotFound) => {
            "replication_status has no row; the schema is incomplete".into()
        }
        StorageError::Timeout(_) => format!(
            "health check got no answer within {} ms",
            timeout.as_millis()
        ),
        other => format!("health check failed: {other}"),
    }
}

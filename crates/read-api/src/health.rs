//! Periodic health checks: every `health_check_interval_ms`, each source (not cooling down)
//! is probed with a short timeout. A replica's probe reads its `replication_status` row,
//! which proves the schema is there and says what it holds; then the primary's probe reads
//! what each replica lacks (its catch-up marks, and its oldest change newer than each
//! replica's newest), which is what a replica's staleness is measured by (see [`crate::lag`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use storage::staleness::{PrimarySample, ReplicaSample};
use storage::{StorageError, pool};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lag::{self, PrimaryView, Sample};
use crate::router::Router;
use crate::source::{Heartbeat, Source};
use crate::status;

/// Probes every due source once, then updates lags and the gauges.
pub async fn check_all(router: &Router, timeout: Duration) {
    let started = Instant::now();
    let due: Vec<&Arc<Source>> = router
        .replicas()
        .iter()
        .filter(|s| s.probe_due(started))
        .collect();
    let samples: Vec<Result<ReplicaSample, StorageError>> = join_all(due.iter().map(|source| {
        pool::with_connection(source.probe_pool(), timeout, async |conn| {
            storage::staleness::replica_sample(conn).await
        })
    }))
    .await;

    // The primary is asked what each replica that answered lacks.
    let levels: Vec<Option<DateTime<Utc>>> = samples
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .map(|s| s.status.last_event_at)
        .collect();
    let primary = match router.primary().filter(|p| p.probe_due(started)) {
        Some(source) => {
            let sample = pool::with_connection(source.probe_pool(), timeout, async |conn| {
                storage::staleness::primary_sample(conn, &levels).await
            })
            .await;
            source.record_probe(
                started,
                sample
                    .as_ref()
                    .map(|_| None)
                    .map_err(|error| reason(error, timeout)),
            );
            sample.ok()
        }
        None => None,
    };

    let replica_samples: Vec<Option<Sample>> = samples
        .iter()
        .map(|s| {
            s.as_ref().ok().map(|s| Sample {
                last_event_at: s.status.last_event_at,
                behind_since: s.status.behind_since,
                now: s.now,
            })
        })
        .collect();
    let reference = lag::reference(replica_samples.iter().flatten());
    let mut first_missing = primary
        .as_ref()
        .map(|p| p.first_missing.iter().copied())
        .into_iter()
        .flatten();
    for ((source, outcome), sample) in due.into_iter().zip(samples).zip(replica_samples) {
        let outcome = match (outcome, sample) {
            (Ok(read), Some(sample)) => {
                let now = primary.as_ref().map_or(read.now, |p| p.now);
                source.record_heartbeat(heartbeat_of(&read, now));
                let view = primary
                    .as_ref()
                    .map(|primary| view_of(primary, source.name(), first_missing.next()));
                Ok(Some(lag::lag(&sample, view.as_ref(), reference)))
            }
            (Err(error), _) => {
                tracing::debug!(replica = %source.name(), %error, "health check failed");
                Err(reason(&error, timeout))
            }
            (Ok(_), None) => continue,
        };
        source.record_probe(started, outcome);
    }
    status::publish_gauges(router);
}

/// The newest heartbeat a replica holds, aged on `now` (the primary's clock when it answered).
fn heartbeat_of(read: &ReplicaSample, now: DateTime<Utc>) -> Option<Heartbeat> {
    let at = read.status.heartbeat_at?;
    let millis = |delta: chrono::TimeDelta| u64::try_from(delta.num_milliseconds()).unwrap_or(0);
    Some(Heartbeat {
        at,
        age_ms: millis(now - at),
        pipeline_delay_ms: read
            .status
            .heartbeat_applied_at
            .map(|applied| millis(applied - at)),
    })
}

/// What the primary said about the replica `name`; `first_missing` is its answer for that
/// replica's level point.
fn view_of(
    primary: &PrimarySample,
    name: &str,
    first_missing: Option<Option<DateTime<Utc>>>,
) -> PrimaryView {
    PrimaryView {
        now: primary.now,
        marked_since: primary
            .marks
            .iter()
            .find(|mark| mark.replica == name)
            .map(|mark| mark.behind_since),
        first_missing: first_missing.flatten(),
    }
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

/// Why a probe failed, in words for `/api/replicas`.
fn reason(error: &StorageError, timeout: Duration) -> String {
    match error {
        StorageError::NoSchema { source } => format!(
            "no schema yet ({source}); the replicator or write-api migrates databases, read-api \
             never does"
        ),
        StorageError::Timeout(_) => format!(
            "health check got no answer within {} ms",
            timeout.as_millis()
        ),
        other => format!("health check failed: {other}"),
    }
}

//! Applying a batch of change events to every replica at once.
//!
//! Each replica gets the batch all or nothing (rows and its status row in one statement), retried
//! with full-jitter backoff, all within a short live budget. Replicas run in parallel and fail
//! alone: one that cannot take the batch within the budget (down, refusing connections, or
//! frozen: it accepts and never answers) is marked down and left to catch-up, so a sick
//! replica costs the others at most one budget, once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::ChangeEvent;
use service_kit::Backoff;
use storage::products::ProductRow;
use storage::replica::{self as replica_rows, AppliedBatch};
use storage::{StorageError, pool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::replica::Replica;

/// The retry budget of one replica for one batch.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Bound on all attempts together: past it the replica is left to catch-up.
    pub budget: Duration,
}

/// What happened to a batch on one replica.
#[derive(Debug)]
pub enum ReplicaOutcome {
    /// Written (rows at an equal or newer version were left alone), except `refused`: rows
    /// this replica answered no to, each alone, while it was otherwise healthy.
    Applied {
        rows_changed: usize,
        refused: Vec<Refused>,
    },
    /// Not written: the replica is down. The batch must be covered by a catch-up mark.
    Missed { cause: MissCause, attempts: u32 },
}

/// Why a batch missed a replica.
#[derive(Debug, thiserror::Error)]
pub enum MissCause {
    /// The replica was already down: catch-up, not the live path, brings it back.
    #[error("the replica is down ({last_error})")]
    AlreadyDown { last_error: String },
    #[error("applying failed")]
    Failed(#[source] StorageError),
    /// Every attempt waited without an answer until the live budget ran out.
    #[error("no answer within the live budget of {} ms", .0.as_millis())]
    OutOfBudget(Duration),
}

impl MissCause {
    /// This cause and its own causes, for the replica's status and the catch-up mark.
    pub fn report(&self) -> String {
        match self {
            MissCause::Failed(error) => error.report(),
            other => other.to_string(),
        }
    }
}

/// A change one replica refuses for itself (a constraint it has and the primary has not, say):
/// not an outage, so not catch-up's business; it goes to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct Refused {
    pub product_id: uuid::Uuid,
    pub version: i64,
    pub error: String,
}

/// The rows, status update and heartbeat a batch makes on a replica.
pub struct PreparedBatch {
    rows: Vec<ProductRow>,
    /// `None` when the batch carries heartbeats only.
    status: Option<AppliedBatch>,
    /// The newest pipeline heartbeat in the batch.
    heartbeat: Option<DateTime<Utc>>,
    /// When each change of the batch was committed on the primary.
    committed_at: Vec<DateTime<Utc>>,
}

impl PreparedBatch {
    /// `None` for a batch with neither changes nor a heartbeat.
    pub fn new(events: &[&ChangeEvent], heartbeat: Option<DateTime<Utc>>) -> Option<Self> {
        let committed_at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at()).collect();
        let status = events.last().map(|last| AppliedBatch {
            last_event_id: last.event_id,
            last_event_seq: last.seq,
            newest_event_at: committed_at.iter().max().copied().unwrap_or_default(),
            events: i64::try_from(events.len()).unwrap_or(i64::MAX),
        });
        if status.is_none() && heartbeat.is_none() {
            return None;
        }
        Some(Self {
            rows: replica_rows::newest_per_id(events.iter().map(|e| ProductRow::from(&e.product))),
            status,
            heartbeat,
            committed_at,
        })
    }

    /// The oldest change in the batch: a replica that misses it is behind since then.
    /// `None` when it carries no change (missing a heartbeat misses no data).
    pub fn oldest_event_at(&self) -> Option<DateTime<Utc>> {
        self.committed_at.iter().min().copied()
    }

    /// How long each change waited, in seconds, from its commit on the primary until `now`.
    fn waits(&self, now: DateTime<Utc>) -> impl Iterator<Item = f64> + '_ {
        self.committed_at
            .iter()
            .map(move |at| seconds_since(*at, now))
    }

    fn events(&self) -> u64 {
        self.status
            .as_ref()
            .map_or(0, |s| u64::try_from(s.events).unwrap_or(0))
    }
}

/// Applies `batch` to `replica` within the policy's budget; a replica that is down is not
/// tried (catch-up brings it back).
pub async fn apply_to_replica(
    replica: &Replica,
    batch: &PreparedBatch,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> ReplicaOutcome {
    if !replica.is_up() {
        return ReplicaOutcome::Missed {
            cause: MissCause::AlreadyDown {
                last_error: replica.last_error().unwrap_or_default(),
            },
            attempts: 0,
        };
    }
    let until = Instant::now() + policy.budget;
    let mut backoff = Backoff::new(policy.base, policy.cap);
    let mut last_error = None;
    let mut attempts = 0;
    while attempts < policy.attempts {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        attempts += 1;
        match apply_once(replica, batch, left).await {
            Ok(rows_changed) => {
                count_applied(replica, batch);
                record_lag(replica, batch);
                return ReplicaOutcome::Applied {
                    rows_changed,
                    refused: Vec::new(),
                };
            }
            Err(error) if error.leaves_connection_usable() => {
                // The replica answered and said no: retrying the batch would only fail
                // again. Find the rows it refuses by halving the batch around them.
                tracing::warn!(replica = %replica.name, %error, "replica refused a batch; isolating the rows it refuses");
                return apply_isolating(replica, batch).await;
            }
            Err(error) => {
                tracing::warn!(replica = %replica.name, attempt = attempts, error = %error.report(), "apply failed");
                last_error = Some(error);
                if attempts < policy.attempts {
                    metrics::counter!("replicator_apply_retries_total", "replica" => replica.name.clone())
                        .increment(1);
                    let pause = tokio::time::sleep_until(until);
                    tokio::select! {
                        waited = backoff.wait(cancel) => if !waited { break },
                        () = pause => break,
                    }
                }
            }
        }
    }
    let cause = match last_error {
        Some(error) => MissCause::Failed(error),
        None => MissCause::OutOfBudget(policy.budget),
    };
    missed(replica, batch, cause, attempts)
}

/// Marks `replica` down for `cause` and says the batch missed it.
fn missed(
    replica: &Replica,
    batch: &PreparedBatch,
    cause: MissCause,
    attempts: u32,
) -> ReplicaOutcome {
    replica.mark_down(
        &cause.report(),
        batch.oldest_event_at().unwrap_or_else(Utc::now),
    );
    ReplicaOutcome::Missed { cause, attempts }
}

/// Applies the batch's rows isolating those the replica refuses, then the status row; the
/// refused rows are returned (the rest of the batch is applied).
async fn apply_isolating(replica: &Replica, batch: &PreparedBatch) -> ReplicaOutcome {
    let isolated =
        crate::copy::apply_isolating_refusals(&replica.pool, replica.deadline, batch.rows.clone())
            .await;
    let (rows_changed, refused) = match isolated {
        Ok(isolated) => (
            isolated.rows_changed,
            isolated
                .refused
                .into_iter()
                .map(|(row, error)| Refused {
                    product_id: row.id,
                    version: row.version,
                    error,
                })
                .collect::<Vec<_>>(),
        ),
        Err(error) => {
            // The replica itself failed half-way: an outage after all.
            return missed(replica, batch, MissCause::Failed(error), 1);
        }
    };
    let status = pool::with_connection(&replica.pool, replica.deadline, async |conn| {
        record_status(conn, batch).await
    })
    .await;
    if let Err(error) = status {
        return missed(replica, batch, MissCause::Failed(error), 1);
    }
    count_applied(replica, batch);
    ReplicaOutcome::Applied {
        rows_changed,
        refused,
    }
}

/// A batch is on `replica`: counted, and the index merger told it has work.
fn count_applied(replica: &Replica, batch: &PreparedBatch) {
    replica.note_rows_written();
    metrics::counter!("replicator_events_applied_total", "replica" => replica.name.clone())
        .increment(batch.events());
}

/// The rows under the version guard, then the status row, all or nothing, within `left`: one
/// statement for a batch of changes alone (most batches), a transaction when it also carries
/// a heartbeat.
async fn apply_once(
    replica: &Replica,
    batch: &PreparedBatch,
    left: Duration,
) -> Result<usize, StorageError> {
    let until = Instant::now() + left;
    replica.ensure_migrated(left).await?;
    let deadline = replica
        .deadline
        .min(until.saturating_duration_since(Instant::now()));
    let Some(beat_at) = batch.heartbeat else {
        return pool::with_connection(&replica.pool, deadline, async |conn| {
            replica_rows::apply_batch(conn, &batch.rows, batch.status.as_ref()).await
        })
        .await;
    };
    pool::transaction::<_, StorageError, _>(&replica.pool, deadline, async |conn| {
        let changed = replica_rows::apply_batch(conn, &batch.rows, batch.status.as_ref()).await?;
        storage::heartbeat::record(conn, beat_at).await?;
        Ok(changed)
    })
    .await
}

/// The status row's share of a batch: what was applied, and the newest heartbeat.
async fn record_status(
    conn: &mut storage::AsyncPgConnection,
    batch: &PreparedBatch,
) -> Result<(), StorageError> {
    if let Some(status) = &batch.status {
        replica_rows::record_applied(conn, status).await?;
    }
    if let Some(beat_at) = batch.heartbeat {
        storage::heartbeat::record(conn, beat_at).await?;
    }
    Ok(())
}

/// Every change's wait goes to the histogram, not only the batch's newest: after a stall the
/// next batch holds the changes that waited beside fresh ones, and the newest alone would
/// hide the stall. The gauge holds the newest's: how far behind the replica is now.
fn record_lag(replica: &Replica, batch: &PreparedBatch) {
    let Some(status) = &batch.status else {
        return;
    };
    let now = Utc::now();
    let waits =
        metrics::histogram!("replicator_apply_lag_seconds", "replica" => replica.name.clone());
    for waited in batch.waits(now) {
        waits.record(waited);
    }
    metrics::gauge!("replicator_replica_lag_seconds", "replica" => replica.name.clone())
        .set(seconds_since(status.newest_event_at, now));
}

fn seconds_since(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - at).to_std().unwrap_or_default().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Price, Product, ProductId, ProductName, Stock, Version};

    fn change(committed_at: DateTime<Utc>) -> ChangeEvent {
        ChangeEvent {
            event_id: uuid::Uuid::now_v7(),
            seq: 1,
            product: Product {
                id: ProductId::generate(),
                name: ProductName::parse("Lamp").unwrap(),
                price: Price::from_cents(1999).unwrap(),
                stock: Stock::new(3).unwrap(),
                created_at: committed_at,
                updated_at: committed_at,
                version: Version::new(1).unwrap(),
                deleted_at: None,
            },
        }
    }

    #[test]
    fn every_change_of_a_batch_reports_its_own_wait() {
        let now = Utc::now();
        let waited = change(now - chrono::Duration::milliseconds(300));
        let fresh = change(now - chrono::Duration::milliseconds(2));
        let batch = PreparedBatch::new(&[&waited, &fresh], None).unwrap();
        let mut waits: Vec<f64> = batch.waits(now).collect();
        waits.sort_by(f64::total_cmp);
        assert_eq!(waits, vec![0.002, 0.3]);
    }
}

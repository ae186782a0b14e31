//! One replica as the replicator sees it: its pool, whether its schema is in place, and
//! whether live batches reach it or leave it to catch-up.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::replicas::ReplicaTarget;
use storage::{DbPool, StorageError};
use uuid::Uuid;

use crate::settings::Settings;

pub struct Replica {
    pub name: String,
    url: service_kit::SecretUrl,
    pub pool: DbPool,
    /// Bound on one statement, page or apply attempt.
    pub deadline: Duration,
    /// Bound on applying pending migrations.
    migration_deadline: Duration,
    migrated: AtomicBool,
    /// Rows were written since the index merger last ran ([`crate::index_merge`]).
    rows_written: AtomicBool,
    state: Mutex<LinkState>,
    /// Refused changes (product id, version) this process already dead-lettered, on the live
    /// path or by catch-up: a change both refuse, or a later round copies again, goes to the
    /// DLQ once.
    refusals_sent: Mutex<HashSet<(Uuid, i64)>>,
}

/// How many dead-lettered refusals a replica remembers before it starts over (a repeat after
/// that is a duplicate DLQ entry, which replays harmlessly).
const REFUSALS_REMEMBERED: usize = 10_000;

/// Live batches reach a replica while it is `Up`. When one cannot take a batch within the
/// live budget it is `Down`: batches skip it (each covered by a catch-up mark on the primary)
/// and only catch-up brings it back, once the replica is flagged for everything it missed.
#[derive(Debug, Clone)]
enum LinkState {
    Up,
    Down {
        since: DateTime<Utc>,
        /// The oldest change a live batch could not bring it.
        missed_since: DateTime<Utc>,
        last_error: String,
    },
}

/// What `/readyz` shows of a replica.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaReport {
    pub name: String,
    pub reachable: bool,
    pub down_since: Option<DateTime<Utc>>,
    pub missed_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl Replica {
    pub fn connect(target: &ReplicaTarget, settings: &Settings) -> Result<Self, StorageError> {
        let pool = storage::pool::build(
            target.url.expose(),
            &settings.pool_settings(&format!("replicator:{}", target.name)),
        )?;
        Ok(Self {
            name: target.name.clone(),
            url: target.url.clone(),
            pool,
            deadline: settings.apply_timeout_ms,
            migration_deadline: settings.migration_timeout_ms,
            migrated: AtomicBool::new(false),
            rows_written: AtomicBool::new(false),
            state: Mutex::new(LinkState::Up),
            refusals_sent: Mutex::default(),
        })
    }

    /// Claims the dead-lettering of `product_id`'s refusal at `version` for the caller:
    /// false when this process already sent it (or is sending it, on the other path).
    pub fn claim_refusal(&self, product_id: Uuid, version: i64) -> bool {
        let mut sent = self.refusals_sent();
        if sent.len() >= REFUSALS_REMEMBERED {
            sent.clear();
        }
        sent.insert((product_id, version))
    }

    /// Gives back claims whose dead letters were not confirmed, so they are sent again.
    pub fn release_refusals(&self, refusals: impl IntoIterator<Item = (Uuid, i64)>) {
        let mut sent = self.refusals_sent();
        for refusal in refusals {
            sent.remove(&refusal);
        }
    }

    fn refusals_sent(&self) -> std::sync::MutexGuard<'_, HashSet<(Uuid, i64)>> {
        self.refusals_sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies pending migrations once per process, on first contact, within `limit` (and
    /// the migration deadline): a replica that is down or frozen is migrated when it answers.
    pub async fn ensure_migrated(&self, limit: Duration) -> Result<(), StorageError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        let applied =
            storage::migrations::run_pending(self.url.expose(), limit.min(self.migration_deadline))
                .await?;
        if !applied.is_empty() {
            tracing::info!(replica = %self.name, ?applied, "migrations applied to replica");
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Notes that rows were written, so the index merger has work.
    pub fn note_rows_written(&self) {
        self.rows_written.store(true, Ordering::Release);
    }

    /// Whether rows were written since the last call.
    pub fn take_rows_written(&self) -> bool {
        self.rows_written.swap(false, Ordering::AcqRel)
    }

    /// Whether live batches reach this replica.
    pub fn is_up(&self) -> bool {
        matches!(*self.lock(), LinkState::Up)
    }

    /// The oldest change live batches could not bring it, while it is down.
    pub fn missed_since(&self) -> Option<DateTime<Utc>> {
        match &*self.lock() {
            LinkState::Up => None,
            LinkState::Down { missed_since, .. } => Some(*missed_since),
        }
    }

    pub fn mark_up(&self) {
        let mut state = self.lock();
        if let LinkState::Down { since, .. } = &*state {
            tracing::info!(replica = %self.name, down_since = %since, "replica flagged for what it missed; live batches reach it again");
        }
        *state = LinkState::Up;
        metrics::gauge!("replicator_replica_up", "replica" => self.name.clone()).set(1.0);
    }

    /// Live batches stop reaching it; `missed_since` is the oldest change of the batch it
    /// could not take (an earlier one stays).
    pub fn mark_down(&self, error: &str, missed_since: DateTime<Utc>) {
        let mut state = self.lock();
        let (since, missed_since) = match &*state {
            LinkState::Down {
                since,
                missed_since: earlier,
                ..
            } => (*since, missed_since.min(*earlier)),
            LinkState::Up => {
                tracing::warn!(replica = %self.name, %error, "replica failing; live batches skip it until catch-up brings it level");
                (Utc::now(), missed_since)
            }
        };
        *state = LinkState::Down {
            since,
            missed_since,
            last_error: error.to_owned(),
        };
        metrics::gauge!("replicator_replica_up", "replica" => self.name.clone()).set(0.0);
    }

    /// The last error while down.
    pub fn last_error(&self) -> Option<String> {
        match &*self.lock() {
            LinkState::Up => None,
            LinkState::Down { last_error, .. } => Some(last_error.clone()),
        }
    }

    pub fn report(&self) -> ReplicaReport {
        let (reachable, down_since, missed_since, last_error) = match &*self.lock() {
            LinkState::Up => (true, None, None, None),
            LinkState::Down {
                since,
                missed_since,
                last_error,
            } => (
                false,
                Some(*since),
                Some(*missed_since),
                Some(last_error.clone()),
            ),
        };
        ReplicaReport {
            name: self.name.clone(),
            reachable,
            down_since,
            missed_since,
            last_error,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // A poisoned lock only means another thread panicked mid-update of a plain enum.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

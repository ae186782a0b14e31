//! One replica as the replicator sees it: its pool, whether its schema is in place, and
//! whether live batches still reach it or leave it to catch-up.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::replicas::ReplicaTarget;
use storage::{DbPool, StorageError};
use tokio::time::Instant;

use crate::settings::Settings;

pub struct Replica {
    pub name: String,
    url: service_kit::SecretUrl,
    pub pool: DbPool,
    /// Bound on one apply or probe.
    pub deadline: Duration,
    migrated: AtomicBool,
    state: Mutex<LinkState>,
}

/// Live batches reach a replica while it is `Up`. After the retry budget fails it is `Down`:
/// batches skip it (catch-up copies what they carried) and probe it now and then.
#[derive(Debug, Clone)]
enum LinkState {
    Up,
    Down {
        since: DateTime<Utc>,
        next_probe: Instant,
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
            migrated: AtomicBool::new(false),
            state: Mutex::new(LinkState::Up),
        })
    }

    /// Applies pending migrations once per process, on first contact: a replica that is
    /// down at start-up is migrated when it comes up.
    pub async fn ensure_migrated(&self) -> Result<(), StorageError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        let applied = tokio::time::timeout(
            self.deadline * 4,
            storage::migrations::run_pending(self.url.expose()),
        )
        .await
        .map_err(|_| StorageError::Timeout(self.deadline * 4))??;
        if !applied.is_empty() {
            tracing::info!(replica = %self.name, ?applied, "migrations applied to replica");
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a live batch should try this replica now, and how: `Some(true)` with the full
    /// retry budget, `Some(false)` as a single probe, `None` not at all.
    pub fn live_attempt(&self) -> Option<bool> {
        match &*self.lock() {
            LinkState::Up => Some(true),
            LinkState::Down { next_probe, .. } if Instant::now() >= *next_probe => Some(false),
            LinkState::Down { .. } => None,
        }
    }

    pub fn mark_up(&self) {
        let mut state = self.lock();
        if let LinkState::Down { since, .. } = &*state {
            tracing::info!(replica = %self.name, down_since = %since, "replica answers again; live batches reach it");
        }
        *state = LinkState::Up;
        metrics::gauge!("replicator_replica_up", "replica" => self.name.clone()).set(1.0);
    }

    pub fn mark_down(&self, error: &str, probe_after: Duration) {
        let mut state = self.lock();
        let since = match &*state {
            LinkState::Down { since, .. } => *since,
            LinkState::Up => {
                tracing::warn!(replica = %self.name, %error, "replica failing; live batches skip it until it answers, catch-up fills the gap");
                Utc::now()
            }
        };
        *state = LinkState::Down {
            since,
            next_probe: Instant::now() + probe_after,
            last_error: error.to_owned(),
        };
        metrics::gauge!("replicator_replica_up", "replica" => self.name.clone()).set(0.0);
    }

    pub fn report(&self) -> ReplicaReport {
        let (reachable, down_since, last_error) = match &*self.lock() {
            LinkState::Up => (true, None, None),
            LinkState::Down {
                since, last_error, ..
            } => (false, Some(*since), Some(last_error.clone())),
        };
        ReplicaReport {
            name: self.name.clone(),
            reachable,
            down_since,
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

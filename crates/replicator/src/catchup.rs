//! Bringing a replica level with the primary, with no operator step: after an outage, when it
//! is new or empty, and when its history went back (restored from an older backup).
//!
//! Each replica has its own loop, so a frozen one holds up nobody. Every interval a round:
//! 1. checks the replica's history: a replica flagged on itself (new: "unknown history") but
//!    not marked on the primary gets a mark; one whose apply counter went back below what
//!    was seen before gets a full copy;
//! 2. copies, when the replica has a mark, under a lease on the mark so one instance copies
//!    at a time: flag the replica first (read-api then keeps it out of rotation; the flag
//!    covers everything missed, so live batches reach it again from here), copy every row
//!    changed from the mark minus a margin up to the claim, then end the round on the
//!    primary: no new mark meanwhile clears the flag; a new one moves it up to the oldest
//!    change missed since the copy began, so the next round copies only that. A change
//!    after the claim is not copied: live batches bring it, or its miss marks the replica
//!    again. So a copy is finite however fast the writes come;
//! 3. lets live batches reach a replica that was down again, once its flag covers everything
//!    they missed (or a copy already cleared the mark), for instances that did not copy.
//!
//! Every call has a deadline. The copies are version-guarded, so copying twice is harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use messaging::{BrokerAddress, BrokerSettings, MessagingError};
use storage::catchup::{CatchupMark, Finished};
use storage::products::ProductRow;
use storage::replica::UNKNOWN_HISTORY;
use storage::{DbPool, StorageError, pool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::copy::{CopyJob, CopyReport};
use crate::dead_letter::{self, Verdict};
use crate::replica::Replica;

/// Where refused rows go.
#[derive(Clone)]
pub struct DeadLetterTarget {
    pub address: BrokerAddress,
    pub settings: BrokerSettings,
}

/// Catch-up for one replica.
pub struct CatchUp {
    pub replica: Arc<Replica>,
    pub primary: DbPool,
    /// Bound on one call to the primary or the replica (a page is two).
    pub deadline: Duration,
    pub interval: Duration,
    pub margin: Duration,
    pub page_size: i64,
    /// This process, as the holder of copy leases.
    pub holder: Uuid,
    pub dead_letters: DeadLetterTarget,
}

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot dead-letter refused rows: {0}")]
    DeadLetters(#[from] MessagingError),
    #[error("the copy lease was lost to another replicator instance")]
    LeaseLost,
}

/// What one copy round did.
#[derive(Debug, Default)]
pub struct RoundReport {
    pub copied: u64,
    pub refused: usize,
    pub removed: u64,
    pub level: bool,
}

/// Extra work a round does for `replicator resync`.
#[derive(Clone, Copy)]
pub struct Resync<'a> {
    pub progress: &'a ProgressBar,
    /// Also delete replica rows the primary does not have.
    pub remove_strays: bool,
}

impl CatchUp {
    /// Runs a round at once (a new replica is migrated and copied without waiting), then
    /// every interval, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    () = stop.cancelled() => return,
                }
            }
            let round = tokio::select! {
                round = self.round() => round,
                () = stop.cancelled() => return,
            };
            match round {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(replica = %self.replica.name, "catch-up reaches the replica and the primary again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(replica = %self.replica.name, %error, "catch-up round failed; retrying every interval");
                }
                Err(error) => {
                    tracing::debug!(replica = %self.replica.name, %error, "catch-up round failed again");
                }
            }
        }
    }

    /// One round: history checks, a copy when marked, and live batches back when covered.
    pub async fn round(&self) -> Result<(), CatchUpError> {
        let name = self.replica.name.as_str();
        // The primary's record first, then the replica: a counter read after the record was
        // written can only be lower if the replica went back.
        let recorded = self
            .on_primary(async |conn| storage::catchup::recorded_progress(conn, name).await)
            .await?;
        self.replica.ensure_migrated(self.deadline).await?;
        let status = self
            .on_replica(async |conn| storage::replication_status::read(conn).await)
            .await?;
        let went_back = recorded.is_some_and(|seen| status.events_applied < seen);
        if went_back {
            tracing::warn!(
                replica = name,
                applied = status.events_applied,
                seen = recorded,
                "replica's history went back (restored from an older backup, or replaced); copying it in full"
            );
            self.mark(UNKNOWN_HISTORY, "history went back").await?;
        }
        if went_back || recorded.is_none_or(|seen| status.events_applied > seen) {
            self.on_primary(async |conn| {
                storage::catchup::record_progress(conn, name, status.events_applied, went_back)
                    .await
            })
            .await?;
        }
        if let Some(since) = status.behind_since
            && !went_back
            && self.mark_of().await?.is_none()
        {
            // Flagged on the replica (new: unknown history) without a mark on the primary.
            let reason = if since == UNKNOWN_HISTORY {
                "unknown history (new, empty or never fully copied)"
            } else {
                "flagged on the replica"
            };
            self.mark(since, reason).await?;
        }
        self.copy_round(None).await?;
        self.rejoin_live().await
    }

    /// Claims the replica's mark and copies; nothing to do when there is no mark or another
    /// instance holds it. With `resync`, waits for the lease instead.
    pub async fn copy_round(
        &self,
        resync: Option<Resync<'_>>,
    ) -> Result<RoundReport, CatchUpError> {
        let name = self.replica.name.as_str();
        let lease = self.lease();
        let mark = loop {
            let claimed = self
                .on_primary(async |conn| {
                    storage::catchup::claim(conn, name, self.holder, lease).await
                })
                .await?;
            match (claimed, resync) {
                (Some(mark), _) => break mark,
                (None, None) => return Ok(RoundReport::default()),
                (None, Some(_)) => {
                    tracing::info!(
                        replica = name,
                        "another replicator instance is copying this replica; waiting for its lease"
                    );
                    tokio::time::sleep(self.interval.max(Duration::from_millis(500))).await;
                }
            }
        };
        let copied = self.copy(&mark, resync).await;
        if copied.is_err() {
            // Best effort: an expired lease frees the mark anyway.
            let _released = self
                .on_primary(async |conn| storage::catchup::release(conn, name, self.holder).await)
                .await;
        }
        copied
    }

    /// Flags the replica, copies what the mark covers, and ends the round.
    async fn copy(
        &self,
        mark: &CatchupMark,
        resync: Option<Resync<'_>>,
    ) -> Result<RoundReport, CatchUpError> {
        let name = self.replica.name.as_str();
        let token = Uuid::new_v4();
        self.on_replica(async |conn| {
            storage::replica::flag_behind(conn, mark.behind_since, token).await
        })
        .await?;
        // The flag covers every change missed before the claim (read-api keeps the replica
        // out), and a miss after it marks the replica again: live batches may reach it now,
        // so they do not pile up more to copy while this copy runs.
        self.replica.mark_up();
        // Changes after the claim reach the replica live or re-mark it: the copy stops there.
        let until = self
            .on_primary(async |conn| storage::catchup::clock_now(conn).await)
            .await?;
        tracing::info!(replica = name, behind_since = %mark.behind_since, reason = %mark.reason, "copying what the replica may lack from the primary");
        let since = mark.behind_since
            - chrono::Duration::from_std(self.margin).unwrap_or(chrono::Duration::zero());
        let lease = self.lease();
        let job = CopyJob {
            primary: &self.primary,
            replica: &self.replica.pool,
            page_size: self.page_size,
            deadline: self.deadline,
        };
        let mut copy = job.changed_since(since, until);
        while let Some(rows) = copy.next_page().await? {
            // The page queued index entries like any apply; the merger takes them (it skips
            // only replicas that are down, and this one was marked up above).
            self.replica.note_rows_written();
            metrics::counter!("replicator_catchup_rows_total", "replica" => self.replica.name.clone())
                .increment(rows);
            if let Some(resync) = resync {
                resync.progress.inc(rows);
            }
            let renewed = self
                .on_primary(async |conn| {
                    storage::catchup::renew(conn, name, self.holder, lease).await
                })
                .await?;
            if !renewed {
                return Err(CatchUpError::LeaseLost);
            }
        }
        let copied = copy.into_report();
        self.dead_letter_refused(&copied).await?;
        let removed = match resync {
            Some(Resync {
                remove_strays: true,
                ..
            }) => job.remove_strays().await?,
            _ => 0,
        };
        let finished = self
            .on_primary(async |conn| storage::catchup::finish(conn, mark, self.holder).await)
            .await?;
        let level_at = copied.newest;
        let mut report = RoundReport {
            copied: copied.rows,
            refused: copied.refused.len(),
            removed,
            level: false,
        };
        match finished {
            Finished::Cleared => {
                report.level = self
                    .on_replica(async |conn| {
                        storage::replica::clear_behind(conn, token, level_at).await
                    })
                    .await?;
                tracing::info!(
                    replica = name,
                    rows = copied.rows,
                    refused = report.refused,
                    level = report.level,
                    "replica caught up"
                );
            }
            Finished::Advanced(since) => {
                self.on_replica(async |conn| {
                    storage::replica::advance_behind(conn, token, since, level_at).await
                })
                .await?;
                tracing::info!(replica = name, rows = copied.rows, missed_since = %since, "replica missed more during the copy; the next round copies only that");
            }
            Finished::LeaseLost => return Err(CatchUpError::LeaseLost),
        }
        Ok(report)
    }

    /// Refused rows go to the DLQ with the same headers as refusals on the live path.
    async fn dead_letter_refused(&self, copied: &CopyReport) -> Result<(), CatchUpError> {
        let fresh: Vec<&(ProductRow, String)> = copied
            .refused
            .iter()
            .filter(|(row, _)| self.replica.claim_refusal(row.id, row.version))
            .collect();
        let messages: Vec<_> = fresh
            .iter()
            .filter_map(|(row, error)| {
                tracing::error!(replica = %self.replica.name, product_id = %row.id, version = row.version, %error, "replica refused a copied change; dead-lettering it");
                dead_letter::from_copied_row(
                    row,
                    &Verdict {
                        reason: "refused_by_replica",
                        error,
                        replica: &self.replica.name,
                        attempts: 2,
                    },
                )
            })
            .collect();
        let target = &self.dead_letters;
        dead_letter::publish_once(
            &target.address,
            &target.settings,
            &messages,
            "refused_by_replica",
        )
        .await
        .inspect_err(|_| {
            self.replica
                .release_refusals(fresh.iter().map(|(row, _)| (row.id, row.version)));
        })?;
        Ok(())
    }

    /// Publishes whether the replica has a mark. A replica that live batches skip gets them
    /// again once what they missed is covered:
    /// it is flagged (read-api keeps it out; only a round that no miss overtook clears the
    /// flag, and every miss re-marks), or no mark is left (a copy already brought it level).
    async fn rejoin_live(&self) -> Result<(), CatchUpError> {
        let marked = self.mark_of().await?.is_some();
        metrics::gauge!("replicator_replica_behind", "replica" => self.replica.name.clone())
            .set(if marked { 1.0 } else { 0.0 });
        if self.replica.is_up() {
            return Ok(());
        }
        let flagged = self
            .on_replica(async |conn| storage::replication_status::read(conn).await)
            .await?
            .behind_since;
        if !marked || flagged.is_some() {
            self.replica.mark_up();
        }
        Ok(())
    }

    /// Marks the replica on the primary as lacking changes from `since` on.
    pub async fn mark(&self, since: DateTime<Utc>, reason: &str) -> Result<(), StorageError> {
        let name = self.replica.name.as_str();
        self.on_primary(async |conn| storage::catchup::mark_behind(conn, name, since, reason).await)
            .await
    }

    async fn mark_of(&self) -> Result<Option<CatchupMark>, StorageError> {
        let name = self.replica.name.as_str();
        self.on_primary(async |conn| storage::catchup::mark_of(conn, name).await)
            .await
    }

    /// How long a copy may go without renewing its lease before another instance may take
    /// over: a page is two calls, each within the deadline.
    fn lease(&self) -> Duration {
        self.deadline * 4 + self.interval
    }

    async fn on_primary<T>(
        &self,
        work: impl AsyncFnOnce(&mut storage::AsyncPgConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        pool::with_connection(&self.primary, self.deadline, work).await
    }

    async fn on_replica<T>(
        &self,
        work: impl AsyncFnOnce(&mut storage::AsyncPgConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        pool::with_connection(&self.replica.pool, self.replica.deadline, work).await
    }
}

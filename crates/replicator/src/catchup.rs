//! Bringing a replica level after it missed changes, with no operator step.
//!
//! Every interval: read the catch-up marks on the primary; for each replica of ours that
//! answers, flag it as behind on the replica itself (read-api then counts it as lagging),
//! copy every row changed since the mark minus a margin, and clear the mark if nobody
//! re-marked meanwhile. Several replicator instances may do this at once: the copies are
//! version-guarded, so the only cost is duplicate work.

use std::sync::Arc;
use std::time::Duration;

use storage::catchup::CatchupMark;
use storage::{DbPool, StorageError, pool};
use tokio_util::sync::CancellationToken;

use crate::copy::CopyJob;
use crate::replica::Replica;

pub struct CatchUp {
    pub replicas: Arc<Vec<Arc<Replica>>>,
    pub primary: DbPool,
    pub deadline: Duration,
    pub interval: Duration,
    pub margin: Duration,
    pub page_size: i64,
}

impl CatchUp {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return,
            }
            let marks = pool::with_connection(&self.primary, self.deadline, async |conn| {
                storage::catchup::marks(conn).await
            })
            .await;
            let marks = match marks {
                Ok(marks) => marks,
                Err(error) => {
                    tracing::warn!(%error, "catch-up cannot read the primary; will retry");
                    continue;
                }
            };
            for replica in self.replicas.iter() {
                let mark = marks.iter().find(|m| m.replica == replica.name);
                metrics::gauge!("replicator_replica_behind", "replica" => replica.name.clone())
                    .set(if mark.is_some() { 1.0 } else { 0.0 });
                let Some(mark) = mark else { continue };
                tokio::select! {
                    caught_up = self.catch_up(replica, mark) => if let Err(error) = caught_up {
                        tracing::debug!(replica = %replica.name, %error, "replica not caught up yet");
                    },
                    () = stop.cancelled() => return,
                }
            }
        }
    }

    pub async fn catch_up(
        &self,
        replica: &Replica,
        mark: &CatchupMark,
    ) -> Result<(), StorageError> {
        replica.ensure_migrated().await?;
        pool::with_connection(&replica.pool, replica.deadline, async |conn| {
            storage::replica::set_behind_since(conn, Some(mark.behind_since)).await
        })
        .await?;
        let since = mark.behind_since
            - chrono::Duration::from_std(self.margin).unwrap_or(chrono::Duration::zero());
        tracing::info!(replica = %replica.name, behind_since = %mark.behind_since, reason = %mark.reason, "catching up replica");
        let job = CopyJob {
            primary: &self.primary,
            replica: &replica.pool,
            page_size: self.page_size,
            deadline: self.deadline,
        };
        let copied = job.changed_since(since).await?;
        metrics::counter!("replicator_catchup_rows_total", "replica" => replica.name.clone())
            .increment(copied);
        let cleared = pool::with_connection(&self.primary, self.deadline, async |conn| {
            storage::catchup::clear(conn, mark).await
        })
        .await?;
        if cleared {
            pool::with_connection(&replica.pool, replica.deadline, async |conn| {
                storage::replica::set_behind_since(conn, None).await
            })
            .await?;
            replica.mark_up();
            tracing::info!(replica = %replica.name, rows = copied, "replica caught up");
        } else {
            tracing::info!(replica = %replica.name, rows = copied, "replica missed more meanwhile; another round follows");
        }
        Ok(())
    }
}

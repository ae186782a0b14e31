//! Keeps the name index's pending-list merges off the apply path.
//!
//! The name filter's trigram index (GIN) queues new entries in a pending list and merges
//! them into the index inside whichever insert pushes the list past its limit (256 kB, set
//! by a migration). On a replica of a few hundred thousand rows that merge takes tens of
//! milliseconds, and the apply that ran into it holds its whole batch: after the benchmark's
//! full-load runs (about 500,000 rows), applies of 10-50 rows took 20-98 ms once or twice a
//! second on each replica, and half-load lag's p99 was 83-89 ms. A merger per replica empties
//! the list from a session of its own a few times a second, so applies only append to it:
//! p99 37.5 ms in the same kind of run (docs/dependencies.md, "GIN's pending list"). The work
//! is the same; it is no longer in the way of a change.
//!
//! A merge needs no coordination: PostgreSQL lets one merge run at a time per index (another
//! replicator instance's merger waits for it), and an insert that finds the list full while
//! a merge runs goes on without merging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use storage::pool;
use tokio_util::sync::CancellationToken;

use crate::replica::Replica;

/// Merges `replica`'s name-index pending list every `interval`, when rows were written since.
pub struct IndexMerger {
    pub replica: Arc<Replica>,
    pub interval: Duration,
}

impl IndexMerger {
    /// Runs until `stop`. A replica that is down is left alone (catch-up marks it up before
    /// it copies, and each copied page counts as rows written); a failed merge is tried again
    /// next round.
    pub async fn run(self, stop: CancellationToken) {
        let replica = &self.replica;
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return,
            }
            if !replica.is_up() || !replica.take_rows_written() {
                continue;
            }
            let started = Instant::now();
            let merged = pool::with_connection(&replica.pool, replica.deadline, async |conn| {
                storage::products::merge_name_index_pending_list(conn).await
            })
            .await;
            match merged {
                Ok(_) => {
                    failing = false;
                    metrics::histogram!("replicator_index_merge_seconds", "replica" => replica.name.clone())
                        .record(started.elapsed().as_secs_f64());
                }
                Err(error) => {
                    replica.note_rows_written();
                    metrics::counter!("replicator_index_merge_failures_total", "replica" => replica.name.clone())
                        .increment(1);
                    // Once per run of failures: the applies merge meanwhile, slower but safe.
                    if !failing {
                        tracing::warn!(replica = %replica.name, error = %error.report(),
                            "cannot merge the name index's pending list; applies merge it meanwhile");
                    }
                    failing = true;
                }
            }
        }
    }
}

//! Lookups by id, coalesced per source: concurrent `GET /api/products/{id}` sent to one source
//! share one `WHERE id = ANY($1)` statement, so a busy read-api makes one round trip for many
//! reads instead of one each.
//!
//! There is no timer. Each source runs at most `concurrency` statements at once
//! (`LOOKUP_CONCURRENCY`, a few: a replica spends less per lookup on a few full statements than
//! on many small ones); a lookup that finds a free slot goes at once (an idle service adds no delay),
//! and lookups that arrive while every slot is busy wait together and go as one statement when
//! a slot frees. So batches grow with load by themselves, up to `max_ids`.
//!
//! Every lookup gets its own verdict from the rows (live, tombstone or absent); the caller
//! applies `X-Min-Version` to it as before. A failed statement fails only its own lookups,
//! each with the same error, and the router retries each elsewhere by the usual rules. A
//! lookup whose caller went away is dropped before its batch runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use domain::ProductId;
use metrics::Histogram;
use storage::{DbPool, StorageError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::reads::Found;

/// How lookups on one source are batched.
#[derive(Debug, Clone, Copy)]
pub struct LookupSettings {
    /// Most ids in one statement; 1 turns coalescing off.
    pub max_ids: usize,
    /// Statements at once (at most the pool's size: more would only wait for a connection).
    pub concurrency: usize,
    /// Bound on one statement, connection checkout included.
    pub deadline: Duration,
}

type Verdict = Result<Found, Arc<StorageError>>;

struct Lookup {
    id: ProductId,
    reply: oneshot::Sender<Verdict>,
}

/// One source's lookup queue; the dispatcher behind it stops when this is dropped.
pub struct Lookups {
    queue: mpsc::UnboundedSender<Lookup>,
}

impl Lookups {
    /// Starts the dispatcher for `pool` on the current tokio runtime; `batch_size` records
    /// the lookups each statement answers.
    pub fn start(batch_size: Histogram, pool: DbPool, settings: LookupSettings) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(batch_size, pool, settings, waiting));
        Self { queue }
    }

    /// The row of `id` on this source, waiting at most `limit`.
    pub async fn find(&self, id: ProductId, limit: Duration) -> Verdict {
        let (reply, verdict) = oneshot::channel();
        if self.queue.send(Lookup { id, reply }).is_err() {
            return Err(Arc::new(StorageError::Unavailable(
                storage::Unavailable::Stopping,
            )));
        }
        match tokio::time::timeout(limit, verdict).await {
            Ok(Ok(verdict)) => verdict,
            // The dispatcher or its statement task went away without answering.
            Ok(Err(_)) => Err(Arc::new(StorageError::Unavailable(
                storage::Unavailable::Stopping,
            ))),
            Err(_) => Err(Arc::new(StorageError::Timeout(limit))),
        }
    }
}

async fn dispatch(
    batch_size: Histogram,
    pool: DbPool,
    settings: LookupSettings,
    mut waiting: mpsc::UnboundedReceiver<Lookup>,
) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    while let Some(first) = waiting.recv().await {
        // Lookups that arrive while this waits for a slot join the batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < settings.max_ids.max(1) {
            match waiting.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        batch.retain(|lookup| !lookup.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        tokio::spawn(run(
            batch_size.clone(),
            pool.clone(),
            settings.deadline,
            batch,
            slot,
        ));
    }
}

/// One statement for `batch`; answers each lookup in it.
async fn run(
    batch_size: Histogram,
    pool: DbPool,
    deadline: Duration,
    batch: Vec<Lookup>,
    _slot: OwnedSemaphorePermit,
) {
    batch_size.record(batch.len() as f64);
    let ids: Vec<ProductId> = batch.iter().map(|lookup| lookup.id).collect();
    let rows = storage::pool::with_connection(&pool, deadline, async |conn| {
        storage::products::find_many(conn, &ids).await
    })
    .await;
    match rows {
        Ok(rows) => {
            let rows: HashMap<ProductId, domain::Product> =
                rows.into_iter().map(|row| (row.id, row)).collect();
            for lookup in batch {
                let row = rows.get(&lookup.id).cloned();
                let _ = lookup.reply.send(Ok(Found::from_row(row)));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for lookup in batch {
                let _ = lookup.reply.send(Err(error.clone()));
            }
        }
    }
}

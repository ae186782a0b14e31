//! Lookups by id, coalesced per source: concurrent `GET /api/products/{id}` sent to one source
//! share one `WHERE id = ANY($1)` statement, so a busy read-api makes one round trip for many
//! reads instead of one each.
//!
//! There is no timer. Each HTTP worker runs at most `concurrency` statements at once per
//! source (its share of `LOOKUP_CONCURRENCY`, a few: a replica spends less per lookup on a few
//! full statements than on many small ones); a lookup that finds a free slot goes at once (an idle service adds no delay),
//! and lookups that arrive while every slot is busy wait together and go as one statement when
//! a slot frees. So batches grow with load by themselves, up to `max_ids`.
//!
//! Every lookup gets its own verdict from the rows (live, tombstone or absent); the caller
//! applies `X-Min-Version` to it as before. A failed statement fails only its own lookups,
//! each with the same error, and the router retries each elsewhere by the usual rules. A
//! lookup whose caller went away is dropped before its batch runs.
//!
//! Each thread that looks up (each HTTP worker) has its own dispatcher and pool per source
//! ([`ThreadLookups`]): the statement, its connection and the answer stay on the thread that
//! serves the request. Handing each lookup to a shared runtime and back cost a wake-up system
//! call and a context switch or so per lookup, which `perf` showed as read-api's largest cost
//! after the sockets themselves.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use domain::ProductId;
use metrics::Histogram;
use storage::{DbPool, StorageError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::reads::Found;

/// How one thread's lookups on one source are batched.
#[derive(Debug, Clone, Copy)]
pub struct LookupSettings {
    /// Most ids in one statement; 1 turns coalescing off.
    pub max_ids: usize,
    /// Statements at once on this thread (its pool has as many connections: more would only
    /// wait for one).
    pub concurrency: usize,
    /// Bound on one statement, connection checkout included.
    pub deadline: Duration,
}

type Verdict = Result<Found, Arc<StorageError>>;

/// Makes the pool of one thread's lookups on a source.
pub type PoolMaker = Arc<dyn Fn() -> Result<DbPool, StorageError> + Send + Sync>;

/// One source's lookups, with a dispatcher and pool of its own on every thread that asks:
/// made on a thread's first lookup there, on that thread's runtime.
pub struct ThreadLookups {
    /// Tells this source's dispatchers apart in each thread's table.
    key: u64,
    make_pool: PoolMaker,
    settings: LookupSettings,
    batch_size: Histogram,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's dispatchers, by [`ThreadLookups::key`].
    static ON_THIS_THREAD: RefCell<HashMap<u64, Arc<Lookups>>> = RefCell::new(HashMap::new());
}

impl ThreadLookups {
    /// `settings.concurrency` is per thread; `make_pool` should make pools of that size.
    pub fn new(make_pool: PoolMaker, settings: LookupSettings, batch_size: Histogram) -> Self {
        Self {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            make_pool,
            settings,
            batch_size,
        }
    }

    /// The same lookups on pools `make_pool` makes.
    pub fn with_pools(self, make_pool: PoolMaker) -> Self {
        Self::new(make_pool, self.settings, self.batch_size)
    }

    /// The row of `id` on this source, waiting at most `limit`.
    pub async fn find(&self, id: ProductId, limit: Duration) -> Verdict {
        self.on_this_thread()
            .map_err(Arc::new)?
            .find(id, limit)
            .await
    }

    /// This thread's dispatcher, started on first use, and again if the runtime it ran on
    /// has gone (a thread can outlive a runtime).
    fn on_this_thread(&self) -> Result<Arc<Lookups>, StorageError> {
        ON_THIS_THREAD.with(|table| {
            let mut table = table.borrow_mut();
            if let Some(lookups) = table.get(&self.key).filter(|l| !l.queue.is_closed()) {
                return Ok(lookups.clone());
            }
            let pool = (self.make_pool)()?;
            let lookups = Arc::new(Lookups::start(self.batch_size.clone(), pool, self.settings));
            table.insert(self.key, lookups.clone());
            Ok(lookups)
        })
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the pools made; each points at a port where nothing listens.
    fn counting_maker(made: Arc<AtomicUsize>) -> PoolMaker {
        Arc::new(move || {
            made.fetch_add(1, Ordering::SeqCst);
            let mut settings = storage::PoolSettings::new("lookups test");
            settings.connect_timeout = Duration::from_millis(200);
            storage::pool::build("postgres://nobody@127.0.0.1:1/none", &settings)
        })
    }

    fn lookups(made: &Arc<AtomicUsize>) -> Arc<ThreadLookups> {
        let settings = LookupSettings {
            max_ids: 8,
            concurrency: 1,
            deadline: Duration::from_millis(500),
        };
        Arc::new(ThreadLookups::new(
            counting_maker(made.clone()),
            settings,
            metrics::histogram!("read_lookup_batch_size_test"),
        ))
    }

    /// One lookup on a fresh single-thread runtime on the calling thread; its verdict is an
    /// error (nothing listens), which does not matter here.
    fn look_up_once(lookups: &ThreadLookups) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let verdict = lookups
                .find(ProductId::generate(), Duration::from_millis(500))
                .await;
            assert!(verdict.is_err());
        });
    }

    #[test]
    fn each_thread_gets_its_own_pool_once_and_a_new_one_after_its_runtime_ends() {
        let made = Arc::new(AtomicUsize::new(0));
        let lookups = lookups(&made);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..3 {
                let _ = lookups
                    .find(ProductId::generate(), Duration::from_millis(500))
                    .await;
            }
        });
        assert_eq!(made.load(Ordering::SeqCst), 1, "one pool for three lookups");

        let other = lookups.clone();
        std::thread::spawn(move || look_up_once(&other))
            .join()
            .unwrap();
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "another thread, another pool"
        );

        // The first runtime ends: its dispatcher with it, so this thread starts a new one.
        drop(runtime);
        look_up_once(&lookups);
        assert_eq!(made.load(Ordering::SeqCst), 3);
    }
}

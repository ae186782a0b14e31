//! Group commit: concurrent writes share one transaction, as PostgreSQL's own commits share a
//! WAL flush.
//!
//! Writes queue here; a few committers take turns: each takes every write waiting (up to a
//! limit) and runs them as one transaction — lock their ids, read their rows, decide each
//! write in arrival order in memory ([`Change::decide`]), store every changed row in one
//! statement and every change's outbox row in another, commit. Statements that do not wait
//! for each other's answer are pipelined: a group is four round trips (BEGIN, locks and
//! read, rows and outbox, COMMIT). While one group commits the
//! next gathers, so under load groups grow by themselves; when the service is idle a write
//! finds a free committer and goes at once. With other groups in flight a committer may also
//! wait a short window (`GROUP_COMMIT_WINDOW_US`) for more.
//!
//! Every write gets its own answer: a 404, 409 or 412 is decided per write and fails nobody
//! else; two changes of one product in a group apply in arrival order with consecutive
//! versions. A client that goes away does not cancel its group. A group the database refuses
//! answers each of its writes with that failure (503), retried once first when nothing was
//! committed; nothing is half-applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::{Product, ProductId};
use storage::products::ProductRow;
use storage::{DbPool, StorageError, outbox, pool, products};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalogue::{Outcome, WriteError};
use crate::change::Change;

/// How groups form.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Groups committing at once (each holds one connection while it does).
    pub committers: usize,
    /// How long a committer waits for more writes when other groups are in flight.
    pub window: Duration,
    /// Most writes in one group.
    pub max_writes: usize,
    /// Bound on one group's transaction, and on a write's wait in the queue.
    pub deadline: Duration,
}

type Answer = Result<(Product, Outcome), WriteError>;

struct Job {
    change: Change,
    request_id: String,
    queued: Instant,
    reply: oneshot::Sender<Answer>,
}

/// The queue writes join; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
    deadline: Duration,
}

/// The committers' shared state.
struct Committers {
    queue: Mutex<mpsc::UnboundedReceiver<Job>>,
    busy: AtomicUsize,
    pool: DbPool,
    settings: GroupSettings,
    outbox_written: Arc<Notify>,
}

impl GroupCommit {
    /// The queue, and the committer tasks to run (under the service's supervisor) until
    /// `stop`.
    pub fn start(
        pool: DbPool,
        settings: GroupSettings,
        outbox_written: Arc<Notify>,
        stop: &CancellationToken,
    ) -> (Self, Vec<impl Future<Output = ()> + Send + 'static>) {
        let (jobs, queue) = mpsc::unbounded_channel();
        let committers = Arc::new(Committers {
            queue: Mutex::new(queue),
            busy: AtomicUsize::new(0),
            pool,
            settings,
            outbox_written,
        });
        let tasks = (0..settings.committers.max(1))
            .map(|_| committers.clone().run(stop.clone()))
            .collect();
        (
            Self {
                jobs,
                deadline: settings.deadline,
            },
            tasks,
        )
    }

    /// Queues `change` and waits for its group's answer: within the queue wait plus two tries
    /// of a group (each bounded by the deadline), else `outcome_unknown`.
    pub async fn write(&self, change: Change, request_id: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            change,
            request_id: request_id.to_owned(),
            queued: Instant::now(),
            reply,
        };
        if self.jobs.send(job).is_err() {
            return Err(StorageError::Unavailable(storage::Unavailable::Stopping).into());
        }
        // A committer answers within its queue wait plus two tries of a group, each bounded by
        // the deadline. Past that something is wrong with the committers themselves; the write
        // may be inside a group that is committing, so its outcome is unknown.
        match tokio::time::timeout(self.deadline * 3, answer).await {
            Ok(Ok(answer)) => answer,
            // A committer that dropped the write (it stopped or panicked) may have done so
            // mid-commit: unknown as well.
            outcome => {
                let reason = if outcome.is_ok() {
                    "dropped"
                } else {
                    "did not answer in time"
                };
                tracing::error!(request_id, reason, "no committer answered a write");
                Err(StorageError::OutcomeUnknown {
                    cause: Box::new(StorageError::Timeout(self.deadline * 3)),
                }
                .into())
            }
        }
    }
}

impl Committers {
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let Some(mut jobs) = self.take(&stop).await else {
                return;
            };
            let others_in_flight = self.busy.fetch_add(1, Ordering::AcqRel) > 0;
            if others_in_flight
                && !self.settings.window.is_zero()
                && jobs.len() < self.settings.max_writes
            {
                tokio::time::sleep(self.settings.window).await;
                // Never wait for the queue here: an idle committer holds it while it waits
                // for the next write, which may never come. What it gets, it commits itself.
                if let Ok(mut queue) = self.queue.try_lock() {
                    self.drain_into(&mut jobs, &mut queue);
                }
            }
            self.commit(jobs).await;
            self.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits for a write, then takes every other one waiting (up to the limit). `None` once
    /// stopped with nothing left.
    async fn take(&self, stop: &CancellationToken) -> Option<Vec<Job>> {
        let mut queue = self.queue.lock().await;
        let first = tokio::select! {
            job = queue.recv() => job?,
            () = stop.cancelled() => queue.try_recv().ok()?,
        };
        let mut jobs = vec![first];
        self.drain_into(&mut jobs, &mut queue);
        Some(jobs)
    }

    fn drain_into(&self, jobs: &mut Vec<Job>, queue: &mut mpsc::UnboundedReceiver<Job>) {
        while jobs.len() < self.settings.max_writes {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    }

    /// Runs one group; answers every write in it.
    async fn commit(&self, jobs: Vec<Job>) {
        // A write that waited out its deadline in the queue was never sent: say so, nothing
        // was written.
        let (jobs, late): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| job.queued.elapsed() < self.settings.deadline);
        for job in late {
            let _ = job
                .reply
                .send(Err(StorageError::Timeout(self.settings.deadline).into()));
        }
        if jobs.is_empty() {
            return;
        }
        metrics::histogram!("write_group_size").record(jobs.len() as f64);
        let changes: Vec<(&Change, &str)> = jobs
            .iter()
            .map(|job| (&job.change, job.request_id.as_str()))
            .collect();
        let mut retried = false;
        let outcome = loop {
            match self.transaction(&changes).await {
                Err(error) if !retried && error.worth_retrying_at_once() => {
                    retried = true;
                    metrics::counter!("write_retries_total").increment(1);
                    tracing::info!(error = %error.report(), writes = changes.len(),
                        "group of writes not committed; trying once more");
                }
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(answers) => {
                self.outbox_written.notify_one();
                for (job, answer) in jobs.into_iter().zip(answers) {
                    if let Ok((product, _)) = &answer {
                        tracing::debug!(product_id = %product.id, version = product.version.get(),
                            deleted = product.is_deleted(), request_id = %job.request_id, "change committed");
                    }
                    let _ = job.reply.send(answer);
                }
            }
            Err(error) => {
                let shared = Arc::new(error);
                for job in jobs {
                    let _ = job.reply.send(Err(WriteError::Group(shared.clone())));
                }
            }
        }
    }

    /// One transaction for the whole group: every write decided in arrival order on the rows
    /// as they stand under the locks; the answers in the same order.
    async fn transaction(&self, changes: &[(&Change, &str)]) -> Result<Vec<Answer>, StorageError> {
        pool::transaction::<_, StorageError, _>(&self.pool, self.settings.deadline, async |conn| {
            let ids: Vec<ProductId> = changes.iter().map(|(change, _)| change.id()).collect();
            let (now, rows) = products::lock_group(conn, &ids).await?;
            let mut state: HashMap<ProductId, Product> = rows
                .into_iter()
                .map(|product| (product.id, product))
                .collect();
            let mut answers = Vec::with_capacity(changes.len());
            let mut events: Vec<(Product, &str)> = Vec::new();
            for (change, request_id) in changes {
                let answer = change.decide(state.get(&change.id()), now);
                if let Ok((product, _)) = &answer {
                    state.insert(product.id, product.clone());
                    events.push((product.clone(), request_id));
                }
                answers.push(answer);
            }
            // The last state of each product changed; every change's own event.
            let mut changed: HashMap<ProductId, ProductRow> = HashMap::new();
            for (product, _) in &events {
                changed.insert(product.id, ProductRow::from(product));
            }
            let changed: Vec<ProductRow> = changed.into_values().collect();
            let outbox_rows: Vec<(&Product, Option<&str>)> = events
                .iter()
                .map(|(product, request_id)| (product, Some(*request_id)))
                .collect();
            // Pipelined: both statements go in one round trip and run in this order. Should
            // the store fail, the outbox insert fails too (the transaction is aborted) and
            // the store's error is the one that says why.
            let (stored, queued) = tokio::join!(
                products::store(conn, &changed),
                outbox::enqueue_all(conn, &outbox_rows),
            );
            stored?;
            queued?;
            Ok(answers)
        })
        .await
    }
}

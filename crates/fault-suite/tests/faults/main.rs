//! The fault suite. Every scenario: a steady mixed write load, a fault, recovery, then
//! `replicator verify` clean, `products.dlq` empty (unless the scenario is about it) and the
//! primary holding every acknowledged write. Each prints one summary line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod brokers;
mod database;
mod failover;
mod heartbeat;
mod probe;
mod scenarios;
mod staleness;
mod status_load;

use std::sync::Arc;
use std::time::Duration;

use test_support::load::{CheckedReads, History, LoadReport, ReadReport};
use test_support::stack::Stack;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Write clients of the steady load.
const WRITERS: usize = 8;

/// The staleness bound read-api is run with (its default `MAX_LAG_MS`).
pub const MAX_LAG: Duration = Duration::from_millis(5000);

/// A write load (and optionally a read load) running in the background until stopped.
pub struct Load {
    stop: CancellationToken,
    writes: JoinHandle<LoadReport>,
    reads: Option<JoinHandle<ReadReport>>,
    checked: Option<JoinHandle<CheckedReads>>,
}

impl Load {
    /// Mixed writes, and reads of pages and random ids when the stack has a read-api.
    pub fn start(stack: &Stack) -> Self {
        let mut load = Self::writes_only(stack, None);
        load.reads = stack.read_api.as_ref().map(|read_api| {
            let (client, base, stop) = (stack.client.clone(), read_api.url(), load.stop.clone());
            tokio::spawn(
                async move { test_support::load::reads_until(&client, &base, 4, &stop).await },
            )
        });
        load
    }

    /// Mixed writes, and reads of the products written, each answer checked against what
    /// was acknowledged more than [`MAX_LAG`] before it was asked.
    pub fn checked(stack: &Stack) -> Self {
        let history = Arc::new(History::default());
        let mut load = Self::writes_only(stack, Some(history.clone()));
        let read_api = stack.read_api.as_ref().expect("a stack with read-api");
        let (client, base, stop) = (stack.client.clone(), read_api.url(), load.stop.clone());
        load.checked = Some(tokio::spawn(async move {
            test_support::load::checked_reads_until(&client, &base, 4, &history, MAX_LAG, &stop)
                .await
        }));
        load
    }

    fn writes_only(stack: &Stack, history: Option<Arc<History>>) -> Self {
        let stop = CancellationToken::new();
        let client = stack.client.clone();
        let bases: Vec<String> = stack.write_apis.iter().map(|w| w.url()).collect();
        let writes = {
            let stop = stop.clone();
            tokio::spawn(async move {
                test_support::load::mixed_writes_recorded(
                    &client,
                    &bases,
                    usize::MAX,
                    WRITERS,
                    &stop,
                    history.as_deref(),
                )
                .await
            })
        };
        Self {
            stop,
            writes,
            reads: None,
            checked: None,
        }
    }

    pub async fn stop(self) -> (LoadReport, Option<ReadReport>) {
        let (writes, reads, _) = self.stop_all().await;
        (writes, reads)
    }

    /// Stops a [`Load::checked`] load.
    pub async fn stop_checked(self) -> (LoadReport, CheckedReads) {
        let (writes, _, checked) = self.stop_all().await;
        (writes, checked.expect("a checked load"))
    }

    async fn stop_all(self) -> (LoadReport, Option<ReadReport>, Option<CheckedReads>) {
        self.stop.cancel();
        let writes = self.writes.await.unwrap();
        let reads = match self.reads {
            Some(reads) => Some(reads.await.unwrap()),
            None => None,
        };
        let checked = match self.checked {
            Some(checked) => Some(checked.await.unwrap()),
            None => None,
        };
        (writes, reads, checked)
    }
}

/// Waits for convergence, checks the end state every scenario shares, and prints the
/// scenario's line. `dead_letters` is how many messages the scenario put in the DLQ on
/// purpose.
pub async fn finish(
    scenario: &str,
    stack: &Stack,
    writes: &LoadReport,
    reads: Option<&ReadReport>,
    dead_letters: u32,
) {
    stack.wait_converged().await;
    let dlq = stack.vhost.queue_depth("products.dlq").await.unwrap_or(0);
    let tallies = stack.tallies().await;
    let primary = &tallies[0];
    let replicas: Vec<String> = tallies[1..]
        .iter()
        .map(|t| format!("{} {} rows", t.name, t.rows))
        .collect();
    println!(
        "[fault] {scenario}: writes acknowledged {} (ambiguous {}, refused {}), primary {} rows \
         holding {} writes, {}, dead-lettered {dlq}, write 5xx {}, read 5xx {}",
        writes.acknowledged,
        writes.ambiguous(),
        writes.refused,
        primary.rows,
        primary.version_sum,
        replicas.join(", "),
        writes.server_errors,
        reads.map_or("-".to_owned(), |r| r.server_errors.to_string()),
    );

    assert_eq!(
        writes.unexpected, 0,
        "{scenario}: unexpected 4xx: {writes:?}"
    );
    assert!(
        writes.acknowledged > 0,
        "{scenario}: the load made progress"
    );
    let held = usize::try_from(primary.version_sum).unwrap();
    assert!(
        held >= writes.acknowledged && held <= writes.acknowledged + writes.ambiguous(),
        "{scenario}: the primary holds {held} writes; {} were acknowledged and {} ambiguous",
        writes.acknowledged,
        writes.ambiguous()
    );
    for replica in &tallies[1..] {
        assert_eq!(
            replica.version_sum, primary.version_sum,
            "{scenario}: {}",
            replica.name
        );
    }
    assert_eq!(dlq, dead_letters, "{scenario}: messages in products.dlq");
}

/// Lets the load run for a while.
pub async fn steady(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

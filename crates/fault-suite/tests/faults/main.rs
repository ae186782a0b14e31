//! The fault suite. Every scenario: a steady mixed write load, a fault, recovery, then
//! `replicator verify` clean, `products.dlq` empty (unless the scenario is about it) and the
//! primary holding every acknowledged write. Each prints one summary line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod database;
mod scenarios;
mod status_load;

use std::time::Duration;

use test_support::load::{LoadReport, ReadReport};
use test_support::stack::Stack;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Write clients of the steady load.
const WRITERS: usize = 8;

/// A write load (and optionally a read load) running in the background until stopped.
pub struct Load {
    stop: CancellationToken,
    writes: JoinHandle<LoadReport>,
    reads: Option<JoinHandle<ReadReport>>,
}

impl Load {
    pub fn start(stack: &Stack) -> Self {
        let stop = CancellationToken::new();
        let client = stack.client.clone();
        let bases: Vec<String> = stack.write_apis.iter().map(|w| w.url()).collect();
        let writes = {
            let stop = stop.clone();
            tokio::spawn(async move {
                test_support::load::mixed_writes(&client, &bases, usize::MAX, WRITERS, &stop).await
            })
        };
        let reads = stack.read_api.as_ref().map(|read_api| {
            let (client, base, stop) = (stack.client.clone(), read_api.url(), stop.clone());
            tokio::spawn(
                async move { test_support::load::reads_until(&client, &base, 4, &stop).await },
            )
        });
        Self {
            stop,
            writes,
            reads,
        }
    }

    pub async fn stop(self) -> (LoadReport, Option<ReadReport>) {
        self.stop.cancel();
        let writes = self.writes.await.unwrap();
        let reads = match self.reads {
            Some(reads) => Some(reads.await.unwrap()),
            None => None,
        };
        (writes, reads)
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

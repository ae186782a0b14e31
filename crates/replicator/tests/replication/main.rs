//! End-to-end: the real write-api and replicator binaries against real databases and a real
//! RabbitMQ vhost of each test's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod converge;
mod faults;
mod index_merge;
mod isolate;

use test_support::load::LoadReport;
use test_support::stack::{Stack, StackOptions};
use tokio_util::sync::CancellationToken;

/// A stack with `replicas` replicas (those in `proxied` behind a proxy) and `replicators`
/// replicator processes.
pub async fn stack(replicas: usize, proxied: &[usize], replicators: usize) -> Stack {
    Stack::start(StackOptions {
        replicas,
        proxied_replicas: proxied.to_vec(),
        replicators,
        ..StackOptions::default()
    })
    .await
}

/// `operations` mixed writes through the stack's write-api; asserts none failed.
pub async fn writes(stack: &Stack, operations: usize, concurrency: usize) -> LoadReport {
    let report = test_support::load::mixed_writes(
        &stack.client,
        &[stack.write_url()],
        operations,
        concurrency,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(report.ambiguous() + report.unexpected, 0, "{report:?}");
    report
}

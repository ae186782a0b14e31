//! What integration tests need to run in parallel against the real PostgreSQL and RabbitMQ
//! without seeing each other, and to break links on purpose.
//!
//! - [`TestDatabase`]: a fresh database, dropped when the value is.
//! - [`TestVhost`]: a fresh RabbitMQ virtual host, deleted when the value is (on the
//!   machine's broker, or on the local three-node cluster).
//! - [`RabbitCluster`]: a turn on the local three-node RabbitMQ cluster
//!   (`deploy/local/rabbitmq-cluster.sh`), whose nodes a test may stop, kill and restart.
//! - [`TcpProxy`]: a proxy a test can cut, freeze and reopen.
//! - [`PgCluster`]: a PostgreSQL cluster of the test's own (a primary, a standby) to fail
//!   over.
//! - [`ServiceProcess`]: a workspace binary run as a real process, killable with -9.
//! - [`stack::Stack`]: primary, replicas, vhost and the services, with proxies to break links;
//!   [`load`]: write and read loads that count what was acknowledged.
//! - [`eventually`]: polls a condition until it holds or a deadline passes.
//!
//! Where the services are: `TEST_PG_ADMIN_URL` (default
//! `postgres://catalogue:catalogue@127.0.0.1:5432/postgres`), `TEST_AMQP_HOST` (default
//! `127.0.0.1:5672`, user guest/guest), `TEST_RABBITMQ_API` (the management API, default
//! `http://127.0.0.1:15672`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod database;
pub mod load;
pub mod openapi;
mod process;
mod proxy;
pub mod rabbit;
pub mod stack;
mod vhost;

pub use cluster::PgCluster;
pub use database::TestDatabase;
pub use process::{ServiceProcess, free_port, workspace_binary};
pub use proxy::{LinkMode, TcpProxy};
pub use rabbit::RabbitCluster;
pub use vhost::TestVhost;

use std::future::Future;
use std::time::Duration;

/// A name no other test will pick: `prefix_` and 12 hex digits.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `future` to completion on a fresh runtime on another thread. For `Drop`, which
/// cannot await and may itself run on a runtime thread.
pub(crate) fn block_on_side_thread<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test cleanup runtime");
        runtime.block_on(future);
    });
    let _ = worker.join();
}

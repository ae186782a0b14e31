//! The local three-node RabbitMQ cluster (`deploy/local/rabbitmq-cluster.sh`: nodes
//! rmq1..3@localhost, AMQP ports 5681-5683), shared by the tests of one process.
//!
//! [`RabbitCluster::take`] starts it once per process (`up` is idempotent) and hands out a
//! turn: tests that stop, kill or cut nodes would disturb each other, so one holds the cluster
//! at a time, for as long as it keeps the value. Every turn begins with the cluster whole
//! (any stopped node started, three nodes online), whatever the last test left.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, OnceCell};

/// The nodes, as the script numbers them.
pub const NODES: [usize; 3] = [1, 2, 3];

static TURN: Mutex<()> = Mutex::const_new(());
static UP: OnceCell<()> = OnceCell::const_new();

/// One test's turn on the cluster.
pub struct RabbitCluster {
    _turn: MutexGuard<'static, ()>,
}

impl RabbitCluster {
    /// Waits for the turn, starts the cluster if need be, and makes it whole.
    pub async fn take() -> Self {
        let turn = TURN.lock().await;
        UP.get_or_init(|| async { script(&["up"]).await }).await;
        let cluster = Self { _turn: turn };
        cluster.make_whole().await;
        cluster
    }

    /// `127.0.0.1:<amqp port>` of node `n` (1..3).
    pub fn host(n: usize) -> String {
        format!("127.0.0.1:{}", 5680 + n)
    }

    /// `rmq<n>@localhost`.
    pub fn node_name(n: usize) -> String {
        format!("rmq{n}@localhost")
    }

    /// Starts every stopped node and waits until the cluster has its three nodes online
    /// (the script's `up`, which leaves running nodes alone).
    pub async fn make_whole(&self) {
        script(&["up"]).await;
    }

    /// A graceful stop of node `n` (it leaves the cluster in order).
    pub async fn stop(&self, n: usize) {
        script(&["stop", &n.to_string()]).await;
    }

    /// `kill -9` of node `n`.
    pub async fn kill(&self, n: usize) {
        script(&["kill", &n.to_string()]).await;
    }

    /// Starts node `n` again and waits until it has rejoined.
    pub async fn start(&self, n: usize) {
        script(&["start", &n.to_string()]).await;
        script(&[
            "ctl",
            "-n",
            &Self::node_name(n),
            "await_online_nodes",
            "3",
            "--timeout",
            "120",
        ])
        .await;
    }

    /// The node leading quorum queue `queue` of `vhost` (1..3), asked of a running node;
    /// `None` while it has no leader.
    pub async fn leader(&self, vhost: &str, queue: &str) -> Option<usize> {
        let out = ctl(&[
            "list_queues",
            "-p",
            vhost,
            "name",
            "leader",
            "--formatter",
            "json",
            "--quiet",
        ])
        .await
        .ok()?;
        let queues: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let leader = queues.as_array()?.iter().find(|q| q["name"] == queue)?["leader"]
            .as_str()?
            .to_owned();
        NODES.into_iter().find(|&n| leader == Self::node_name(n))
    }
}

/// `deploy/local/rabbitmq-cluster.sh`.
fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/rabbitmq-cluster.sh")
}

/// Runs the cluster script; panics with its output when it fails.
async fn script(args: &[&str]) {
    if let Err(e) = run(args).await {
        panic!("rabbitmq-cluster.sh {args:?}: {e}");
    }
}

/// `rabbitmqctl ARGS` on the cluster (a running node unless `args` name one): its stdout.
pub(crate) async fn ctl(args: &[&str]) -> Result<String, String> {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    run(&all).await
}

/// Runs the script with a last-resort limit (its own CLI calls are bounded, 150 s each). Its
/// progress lines go to the test's stderr as they come, so a slow step is named even when the
/// limit cuts it short; its stdout is the answer.
async fn run(args: &[&str]) -> Result<String, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(script_path())
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "no answer in 300 s (its last progress line above names the step)".to_owned())?
    .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{} (its errors are above)\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        ))
    }
}

/// The same, blocking: for `Drop`.
pub(crate) fn ctl_blocking(args: &[&str]) -> bool {
    std::process::Command::new(script_path())
        .arg("ctl")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

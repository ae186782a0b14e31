//! A whole stack for one test: primary, replicas, vhost, write-api, replicators.

use std::time::Duration;

use test_support::{ServiceProcess, TcpProxy, TestDatabase, TestVhost, workspace_binary};

/// At most this many stacks at once: each holds a few dozen PostgreSQL connections, and the
/// server allows 100 in all.
static STACKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

pub struct Stack {
    _slot: tokio::sync::SemaphorePermit<'static>,
    pub primary: TestDatabase,
    pub replicas: Vec<TestDatabase>,
    /// `Some` for replicas reached through a proxy the test controls.
    pub replica_proxies: Vec<Option<TcpProxy>>,
    pub vhost: TestVhost,
    pub write_api: ServiceProcess,
    pub replicators: Vec<ServiceProcess>,
    pub client: reqwest::Client,
}

/// How long a stack may take to converge after the load stops.
pub const CONVERGE: Duration = Duration::from_secs(90);

impl Stack {
    /// `replicas` replica databases; those whose index is in `proxied` sit behind a proxy.
    pub async fn start(replicas: usize, proxied: &[usize], replicators: usize) -> Self {
        let slot = STACKS.acquire().await.unwrap();
        let primary = TestDatabase::create().await;
        let vhost = TestVhost::create().await;
        let mut replica_dbs = Vec::new();
        let mut proxies = Vec::new();
        for index in 0..replicas {
            replica_dbs.push(TestDatabase::create().await);
            proxies.push(if proxied.contains(&index) {
                Some(TcpProxy::start("127.0.0.1:5432").await)
            } else {
                None
            });
        }
        let write_api = ServiceProcess::start(
            workspace_binary("write-api"),
            &[],
            &[
                ("DATABASE_URL", primary.url().to_owned()),
                ("RABBITMQ_URL", vhost.url()),
                ("RELAY_POLL_INTERVAL_MS", "200".into()),
                ("AMQP_RECONNECT_MAX_MS", "500".into()),
                ("HTTP_WORKERS", "2".into()),
                ("DB_POOL_SIZE", "6".into()),
            ],
        );
        write_api.wait_ready(Duration::from_secs(60)).await;
        let mut stack = Self {
            _slot: slot,
            primary,
            replicas: replica_dbs,
            replica_proxies: proxies,
            vhost,
            write_api,
            replicators: Vec::new(),
            client: reqwest::Client::new(),
        };
        for _ in 0..replicators {
            stack.add_replicator().await;
        }
        stack
    }

    /// The replicator's environment: the same for `serve`, `verify`, `resync` and `dlq`.
    pub fn replicator_env(&self) -> Vec<(&'static str, String)> {
        let urls: Vec<String> = self
            .replicas
            .iter()
            .zip(&self.replica_proxies)
            .map(|(db, proxy)| match proxy {
                Some(proxy) => db.url().replace("127.0.0.1:5432", &proxy.host()),
                None => db.url().to_owned(),
            })
            .collect();
        vec![
            ("DATABASE_URL", self.primary.url().to_owned()),
            ("RABBITMQ_URL", self.vhost.url()),
            ("REPLICA_URLS", urls.join(",")),
            ("RETRY_ATTEMPTS", "3".into()),
            ("RETRY_BASE_MS", "20".into()),
            ("RETRY_CAP_MS", "200".into()),
            ("CATCHUP_INTERVAL_MS", "300".into()),
            ("CATCHUP_MARGIN_MS", "5000".into()),
            ("APPLY_TIMEOUT_MS", "2000".into()),
            ("DB_CONNECT_TIMEOUT_MS", "1000".into()),
            ("AMQP_RECONNECT_MAX_MS", "500".into()),
            ("DB_POOL_SIZE", "2".into()),
        ]
    }

    pub async fn add_replicator(&mut self) {
        let replicator = ServiceProcess::start(replicator_binary(), &[], &self.replicator_env());
        replicator.wait_ready(Duration::from_secs(60)).await;
        self.replicators.push(replicator);
    }

    /// Runs `replicator <args>` to completion: (success, stdout and stderr).
    pub async fn replicator_command(&self, args: &[&str]) -> (bool, String) {
        let output = tokio::process::Command::new(replicator_binary())
            .args(args)
            .envs(self.replicator_env())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// Waits until `replicator verify` is clean; panics with its last report otherwise.
    pub async fn wait_converged(&self) {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let (clean, report) = self.replicator_command(&["verify"]).await;
            if clean {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replicas did not converge within {CONVERGE:?}:\n{report}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

pub fn replicator_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_replicator"))
}

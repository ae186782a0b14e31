//! A whole stack for one test: a primary, replicas, a vhost, and the three services as real
//! processes, with TCP proxies the test controls in front of whatever it wants to break.

use std::time::Duration;

use crate::{ServiceProcess, TcpProxy, TestDatabase, TestVhost, workspace_binary};

/// At most this many stacks at once: each holds a few dozen PostgreSQL connections, and the
/// server allows 100 in all.
static STACKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

/// How long a stack may take to converge after the load stops.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// What to start, and which links go through a proxy.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub replicas: usize,
    /// Indexes of replicas reached through a proxy (by the replicator and read-api).
    pub proxied_replicas: Vec<usize>,
    /// write-api and the replicators reach RabbitMQ through a proxy.
    pub broker_proxy: bool,
    /// The vhost is on the local three-node RabbitMQ cluster (hold a
    /// [`crate::RabbitCluster`] turn), and write-api and the replicators get every node in
    /// `RABBITMQ_URLS`, each through a proxy of its own ([`Stack::node_proxies`]).
    pub broker_cluster: bool,
    /// write-api, the replicators and read-api reach the primary through a proxy.
    pub primary_proxy: bool,
    pub write_apis: usize,
    pub replicators: usize,
    pub read_api: bool,
    /// How many of the replicas (the first ones) the replicators and read-api are told about
    /// at start; the others are added later with [`Stack::attach_all_replicas`], as an
    /// operator adds a replica. `None`: all of them.
    pub attached_replicas: Option<usize>,
    /// Extra environment for every service (each ignores what it does not know).
    pub extra_env: Vec<(&'static str, String)>,
    /// The services' `DATABASE_URL`, when not the primary's own URL: a host list whose
    /// first host is reached through a proxy, say.
    pub services_database_url: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            replicas: 2,
            proxied_replicas: Vec::new(),
            broker_proxy: false,
            broker_cluster: false,
            primary_proxy: false,
            write_apis: 1,
            replicators: 1,
            read_api: false,
            attached_replicas: None,
            extra_env: Vec::new(),
            services_database_url: None,
        }
    }
}

pub struct Stack {
    _slot: tokio::sync::SemaphorePermit<'static>,
    pub primary: TestDatabase,
    pub replicas: Vec<TestDatabase>,
    /// `Some` for replicas behind a proxy.
    pub replica_proxies: Vec<Option<TcpProxy>>,
    pub primary_proxy: Option<TcpProxy>,
    pub broker_proxy: Option<TcpProxy>,
    /// With `broker_cluster`: a proxy in front of each node of the cluster, in node order
    /// (index 0 is node 1).
    pub node_proxies: Vec<TcpProxy>,
    pub vhost: TestVhost,
    pub write_apis: Vec<ServiceProcess>,
    pub replicators: Vec<ServiceProcess>,
    pub read_api: Option<ServiceProcess>,
    pub client: reqwest::Client,
    attached: usize,
    extra_env: Vec<(&'static str, String)>,
    services_database_url: Option<String>,
}

impl Stack {
    pub async fn start(options: StackOptions) -> Self {
        let slot = STACKS.acquire().await.unwrap();
        let primary = TestDatabase::create().await;
        Self::assemble(slot, primary, options).await
    }

    /// A stack whose primary is `primary` (a database on a [`crate::PgCluster`], say).
    pub async fn start_on(primary: TestDatabase, options: StackOptions) -> Self {
        let slot = STACKS.acquire().await.unwrap();
        Self::assemble(slot, primary, options).await
    }

    async fn assemble(
        slot: tokio::sync::SemaphorePermit<'static>,
        primary: TestDatabase,
        options: StackOptions,
    ) -> Self {
        assert!(
            !(options.broker_cluster && options.broker_proxy),
            "broker_cluster has a proxy per node; broker_proxy is for the machine's broker"
        );
        storage_migrate(primary.url()).await;
        let vhost = if options.broker_cluster {
            TestVhost::on_cluster().await
        } else {
            TestVhost::create().await
        };
        let mut replicas = Vec::new();
        let mut replica_proxies = Vec::new();
        for index in 0..options.replicas {
            let replica = TestDatabase::create().await;
            replica_proxies.push(if options.proxied_replicas.contains(&index) {
                Some(TcpProxy::start(&replica.server()).await)
            } else {
                None
            });
            replicas.push(replica);
        }
        let primary_proxy = if options.primary_proxy {
            Some(TcpProxy::start(&primary.server()).await)
        } else {
            None
        };
        let broker_proxy = if options.broker_proxy {
            Some(TcpProxy::start(vhost.broker_host()).await)
        } else {
            None
        };
        let mut node_proxies = Vec::new();
        if options.broker_cluster {
            for host in vhost.broker_hosts() {
                node_proxies.push(TcpProxy::start(host).await);
            }
        }
        let mut stack = Self {
            _slot: slot,
            primary,
            replicas,
            replica_proxies,
            primary_proxy,
            broker_proxy,
            node_proxies,
            vhost,
            write_apis: Vec::new(),
            replicators: Vec::new(),
            read_api: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // Shorter than the services' keep-alive (5 s): a connection the server is
                // closing is never reused, which would fail a request that was never sent.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            attached: options.attached_replicas.unwrap_or(options.replicas),
            extra_env: options.extra_env.clone(),
            services_database_url: options.services_database_url.clone(),
        };
        for _ in 0..options.write_apis {
            stack.add_write_api().await;
        }
        for _ in 0..options.replicators {
            stack.add_replicator().await;
        }
        if options.read_api {
            let mut read_api =
                ServiceProcess::start(workspace_binary("read-api"), &[], &stack.read_api_env());
            read_api.wait_ready(Duration::from_secs(60)).await;
            stack.read_api = Some(read_api);
            if options.replicators > 0 {
                stack.wait_replicas_in_rotation().await;
            }
        }
        stack
    }

    /// Waits until read-api serves from every replica it knows. New replicas start out of
    /// rotation (unknown history) until the replicator has copied them, and a test that
    /// faults the primary before that would find no source to read from.
    pub async fn wait_replicas_in_rotation(&self) {
        let names: Vec<String> = (1..=self.attached)
            .map(|n| format!("replica-{n}"))
            .collect();
        for name in &names {
            crate::eventually(CONVERGE, &format!("{name} in rotation"), async || {
                (self.in_rotation(name).await == Some(true)).then_some(())
            })
            .await;
        }
    }

    /// Whether read-api has `replica` in rotation, as `/api/replicas` says; `None` when
    /// read-api does not answer or does not know it.
    pub async fn in_rotation(&self, replica: &str) -> Option<bool> {
        self.replica_report(replica).await?["healthy"].as_bool()
    }

    /// What `/api/replicas` says of `replica` (health, reason, lag, last error); `None` when
    /// read-api does not answer or does not know it.
    pub async fn replica_report(&self, replica: &str) -> Option<serde_json::Value> {
        let read_api = self.read_api.as_ref()?.url();
        let report: serde_json::Value = self
            .client
            .get(format!("{read_api}/api/replicas"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        report["data"]["replicas"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == replica)
            .cloned()
    }

    /// The primary's URL as the services see it (through its proxy when there is one).
    fn primary_url(&self) -> String {
        if let Some(url) = &self.services_database_url {
            return url.clone();
        }
        match &self.primary_proxy {
            Some(proxy) => self.primary.url_via(&proxy.host()),
            None => self.primary.url().to_owned(),
        }
    }

    /// The broker as the services see it: `RABBITMQ_URL`, or `RABBITMQ_URLS` listing the
    /// cluster's nodes through their proxies.
    fn broker_env(&self) -> (&'static str, String) {
        if self.vhost.on_the_cluster() {
            let hosts: Vec<String> = self.node_proxies.iter().map(TcpProxy::host).collect();
            return ("RABBITMQ_URLS", self.vhost.urls_via(&hosts));
        }
        match &self.broker_proxy {
            Some(proxy) => ("RABBITMQ_URL", self.vhost.url_via(&proxy.host())),
            None => ("RABBITMQ_URL", self.vhost.url()),
        }
    }

    /// The broker straight, no proxy: for the replicator's commands.
    fn direct_broker_env(&self) -> (&'static str, String) {
        if self.vhost.on_the_cluster() {
            ("RABBITMQ_URLS", self.vhost.urls())
        } else {
            ("RABBITMQ_URL", self.vhost.url())
        }
    }

    fn replica_urls(&self) -> String {
        self.replicas
            .iter()
            .zip(&self.replica_proxies)
            .take(self.attached)
            .map(|(db, proxy)| match proxy {
                Some(proxy) => db.url_via(&proxy.host()),
                None => db.url().to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn write_api_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.primary_url()),
            self.broker_env(),
            ("RELAY_POLL_INTERVAL_MS", "200".into()),
            ("AMQP_RECONNECT_MAX_MS", "500".into()),
            ("AMQP_CONNECT_TIMEOUT_MS", "2000".into()),
            ("RELAY_CONFIRM_TIMEOUT_MS", "3000".into()),
            ("REQUEST_TIMEOUT_MS", "2000".into()),
            ("DB_CONNECT_TIMEOUT_MS", "1000".into()),
            ("HTTP_WORKERS", "2".into()),
            ("DB_POOL_SIZE", "6".into()),
        ]
        .into_iter()
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    /// The replicator's environment, for `serve` and the commands.
    pub fn replicator_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.primary_url()),
            self.broker_env(),
            ("REPLICA_URLS", self.replica_urls()),
            ("RETRY_ATTEMPTS", "3".into()),
            ("RETRY_BASE_MS", "20".into()),
            ("RETRY_CAP_MS", "200".into()),
            ("CATCHUP_INTERVAL_MS", "300".into()),
            ("CATCHUP_MARGIN_MS", "5000".into()),
            ("APPLY_TIMEOUT_MS", "2000".into()),
            ("DB_CONNECT_TIMEOUT_MS", "1000".into()),
            ("AMQP_RECONNECT_MAX_MS", "500".into()),
            ("AMQP_CONNECT_TIMEOUT_MS", "2000".into()),
            ("DB_POOL_SIZE", "2".into()),
        ]
        .into_iter()
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    pub fn read_api_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.primary_url()),
            ("REPLICA_URLS", self.replica_urls()),
            ("DB_POOL_SIZE", "4".into()),
            ("HEALTH_CHECK_INTERVAL_MS", "200".into()),
            ("READ_TIMEOUT_MS", "500".into()),
            ("COOLDOWN_MS", "500".into()),
        ]
        .into_iter()
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    /// Tells the replicators and read-api about every replica, as an operator adds one: a
    /// configuration change and a restart of each (SIGTERM, then start).
    pub async fn attach_all_replicas(&mut self) {
        self.attached = self.replicas.len();
        let replicator_env = self.replicator_env();
        let read_api_env = self.read_api_env();
        for replicator in &mut self.replicators {
            replicator.terminate(Duration::from_secs(30)).await;
            replicator.set_env(&replicator_env);
            replicator.restart();
            replicator.wait_ready(Duration::from_secs(60)).await;
        }
        if let Some(read_api) = &mut self.read_api {
            read_api.terminate(Duration::from_secs(30)).await;
            read_api.set_env(&read_api_env);
            read_api.restart();
            read_api.wait_ready(Duration::from_secs(60)).await;
        }
    }

    pub async fn add_write_api(&mut self) {
        let mut write_api =
            ServiceProcess::start(workspace_binary("write-api"), &[], &self.write_api_env());
        write_api.wait_ready(Duration::from_secs(60)).await;
        self.write_apis.push(write_api);
    }

    pub async fn add_replicator(&mut self) {
        let mut replicator =
            ServiceProcess::start(workspace_binary("replicator"), &[], &self.replicator_env());
        replicator.wait_ready(Duration::from_secs(60)).await;
        self.replicators.push(replicator);
    }

    /// Waits until every replica has every migration of the workspace (the replicator
    /// migrates a replica on first contact, off its start-up path, one migration per
    /// transaction: the first tables appear before the last migration is in).
    pub async fn wait_replicas_migrated(&self) {
        use diesel::sql_types::BigInt;
        use diesel_async::RunQueryDsl;

        #[derive(diesel::QueryableByName)]
        struct Applied {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }

        let migrations = std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations"),
        )
        .expect("the workspace's migrations directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("up.sql").is_file())
        .count();
        for replica in &self.replicas {
            crate::eventually(
                CONVERGE,
                "the replicator to migrate a replica",
                async || {
                    let mut conn = replica.connect().await;
                    let applied: Applied = diesel::sql_query(
                        "SELECT count(*) AS count FROM __diesel_schema_migrations",
                    )
                    .get_result(&mut conn)
                    .await
                    .ok()?;
                    (usize::try_from(applied.count).ok()? == migrations).then_some(())
                },
            )
            .await;
        }
    }

    /// The first write-api's base URL.
    pub fn write_url(&self) -> String {
        self.write_apis[0].url()
    }

    /// Runs `replicator <args>` to completion, straight to the databases and the broker (no
    /// proxy): (success, stdout and stderr).
    pub async fn replicator_command(&self, args: &[&str]) -> (bool, String) {
        let direct: Vec<String> = self.replicas.iter().map(|db| db.url().to_owned()).collect();
        let output = tokio::process::Command::new(workspace_binary("replicator"))
            .args(args)
            .envs(self.replicator_env())
            .env("DATABASE_URL", self.primary.url())
            .envs([self.direct_broker_env()])
            .env("REPLICA_URLS", direct.join(","))
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}{}",
            if output.status.success() {
                String::new()
            } else {
                format!("[{}] ", output.status)
            },
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

    /// Rows (all, tombstones included) and the sum of versions on the primary, then on
    /// each replica. Each acknowledged write raises one product's version by one, so the
    /// primary's version sum counts the writes it holds.
    pub async fn tallies(&self) -> Vec<Tally> {
        let mut tallies = vec![tally("primary", &self.primary).await];
        for (index, replica) in self.replicas.iter().enumerate() {
            tallies.push(tally(&format!("replica-{}", index + 1), replica).await);
        }
        tallies
    }
}

#[derive(Debug, Clone)]
pub struct Tally {
    pub name: String,
    pub rows: i64,
    pub live_rows: i64,
    pub version_sum: i64,
}

async fn tally(name: &str, db: &TestDatabase) -> Tally {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        rows: i64,
        #[diesel(sql_type = BigInt)]
        live_rows: i64,
        #[diesel(sql_type = BigInt)]
        version_sum: i64,
    }
    let mut conn = db.connect().await;
    let row: Row = diesel::sql_query(
        "SELECT count(*) AS rows, count(*) FILTER (WHERE deleted_at IS NULL) AS live_rows, \
                COALESCE(sum(version), 0)::bigint AS version_sum FROM products",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    Tally {
        name: name.to_owned(),
        rows: row.rows,
        live_rows: row.live_rows,
        version_sum: row.version_sum,
    }
}

/// Applies the migrations to the primary before any service starts, so services that reach
/// it through a proxy never race each other to create the schema.
async fn storage_migrate(url: &str) {
    let status = tokio::process::Command::new(workspace_binary("write-api"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "write-api migrate");
}

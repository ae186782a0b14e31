//! Command-line options. `--quick` changes the defaults of the sizes not given explicitly.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Phases that `--skip` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Writes,
    Lag,
    Reads,
    Strategies,
    Catchup,
}

/// Measures the running stack against what PostgreSQL itself does in the same run, and
/// writes a Markdown report, a JSON file and a PNG chart. Run it through
/// deploy/local/bench.sh, which starts the services on a dedicated `bench` database and
/// RabbitMQ vhost.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// A smoke run of about a minute: short runs, few catch-up changes.
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds of each write and read run [default: 30, quick: 4].
    #[arg(long)]
    pub duration: Option<u64>,
    /// Unmeasured seconds before each run [default: 3, quick: 1].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Concurrency levels of the write runs.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub write_concurrency: Vec<usize>,
    /// Concurrency of the read runs.
    #[arg(long, default_value_t = 64)]
    pub read_concurrency: usize,
    /// Also measure the scaling table, first: read-api's queries with 10k and 1M products
    /// (`make bench-scaling`, which also writes at concurrency 1 to 256).
    #[arg(long)]
    pub scaling: bool,
    /// Concurrency levels of the scaling table's lookups by id (its other queries run at 16).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub scaling_concurrency: Vec<usize>,
    /// Seconds each scaling-table run is measured [default: 10, quick 2].
    #[arg(long)]
    pub scaling_duration: Option<u64>,
    /// Seconds of writes at half rate for the lag figure [default: 30, quick: 5].
    #[arg(long)]
    pub lag_duration: Option<u64>,
    /// Writes per second for the lag figure [default: half the write-api rate measured at
    /// the highest write concurrency].
    #[arg(long)]
    pub lag_rate: Option<f64>,
    /// How often the replicas are polled for tracked writes, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub lag_poll_ms: u64,
    /// At full load, follow every n-th write for lag.
    #[arg(long, default_value_t = 2)]
    pub lag_sample_every: u64,
    /// Changes written while the replicator is stopped [default: 50000, quick: 5000].
    #[arg(long)]
    pub catchup_changes: Option<u64>,
    /// Leave phases out (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Phase>,

    /// write-api's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub write_url: String,
    /// read-api's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub read_url: String,
    /// The primary, as the services see it.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://catalogue:catalogue@127.0.0.1:5435/bench"
    )]
    pub primary_url: String,
    /// The first replica (read directly for lag and the read baseline).
    #[arg(
        long,
        env = "REPLICA_1_URL",
        hide_env_values = true,
        default_value = "postgres://catalogue:catalogue@127.0.0.1:5433/bench"
    )]
    pub replica_1_url: String,
    /// The second replica.
    #[arg(
        long,
        env = "REPLICA_2_URL",
        hide_env_values = true,
        default_value = "postgres://catalogue:catalogue@127.0.0.1:5434/bench"
    )]
    pub replica_2_url: String,

    /// What the broker is, for the report's header (bench.sh names the node it starts).
    #[arg(long, env = "BENCH_BROKER")]
    pub broker: Option<String>,

    /// Directory of `<service>.pid` files (written by bench.sh): needed for memory and for
    /// stopping the replicator.
    #[arg(long)]
    pub pid_dir: Option<PathBuf>,
    /// The replicator binary, restarted for catch-up and run as `replicator verify`.
    #[arg(long, default_value = "target/release/replicator")]
    pub replicator_bin: PathBuf,
    /// The replicator's port when restarted.
    #[arg(long, default_value_t = 8002)]
    pub replicator_port: u16,
    /// Where the restarted replicator logs [default: <pid-dir or out-dir>/replicator-restarted.log].
    #[arg(long)]
    pub replicator_log: Option<PathBuf>,

    /// read-api's binary, started once per strategy for the slow-replica comparison.
    #[arg(long, default_value = "target/release/read-api")]
    pub read_api_bin: PathBuf,
    /// How long the slowed replica holds back every answer in the strategy comparison.
    #[arg(long, default_value_t = 50)]
    pub slow_replica_ms: u64,
    /// The strategies compared under one slow replica.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round_robin,random,least_outstanding,p2c_ewma"
    )]
    pub strategies: Vec<String>,

    /// Logical-replication baselines: subscriber databases, one per replica cluster, where
    /// the login may create subscriptions (superuser before PostgreSQL 16) [default: the
    /// two replicas].
    #[arg(
        long,
        value_delimiter = ',',
        env = "BENCH_LR_SUBSCRIBER_URLS",
        hide_env_values = true
    )]
    pub lr_subscriber_url: Vec<String>,
    /// Logical-replication baselines: how subscribers reach the primary, a login with the
    /// REPLICATION attribute [default: the primary URL].
    #[arg(long, env = "BENCH_LR_PUBLISHER_CONNINFO", hide_env_values = true)]
    pub lr_publisher_conninfo: Option<String>,

    /// pgpool-II in load-balancing mode over the two replicas (bench.sh starts one): the
    /// same lookups by id through it, as the proxy a user would otherwise put in front of
    /// replicas [default: none, reported as unavailable].
    #[arg(long, env = "BENCH_PGPOOL_URL", hide_env_values = true)]
    pub pgpool_url: Option<String>,

    /// Where the report, JSON and PNG go.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// A TrueType font for the chart's text [default: DejaVu Sans where Debian puts it].
    #[arg(long, env = "BENCH_FONT")]
    pub font: Option<PathBuf>,
}

impl Args {
    fn pick(&self, explicit: Option<u64>, full: u64, quick: u64) -> u64 {
        explicit.unwrap_or(if self.quick { quick } else { full })
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.pick(self.duration, 30, 4))
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.pick(self.warmup, 3, 1))
    }

    pub fn scaling_duration(&self) -> Duration {
        Duration::from_secs(self.pick(self.scaling_duration, 10, 2))
    }

    pub fn lag_duration(&self) -> Duration {
        Duration::from_secs(self.pick(self.lag_duration, 30, 5))
    }

    pub fn catchup_changes(&self) -> u64 {
        self.pick(self.catchup_changes, 50_000, 5_000)
    }

    pub fn runs(&self, phase: Phase) -> bool {
        !self.skip.contains(&phase)
    }

    pub fn replica_urls(&self) -> Vec<String> {
        vec![self.replica_1_url.clone(), self.replica_2_url.clone()]
    }

    /// Where the logical-replication baselines run.
    pub fn logical_endpoints(&self) -> crate::logical::Endpoints {
        crate::logical::Endpoints {
            primary_url: self.primary_url.clone(),
            publisher_conninfo: self
                .lr_publisher_conninfo
                .clone()
                .unwrap_or_else(|| self.primary_url.clone()),
            subscriber_urls: if self.lr_subscriber_url.is_empty() {
                self.replica_urls()
            } else {
                self.lr_subscriber_url.clone()
            },
        }
    }

    /// The highest write concurrency: the one the targets judge.
    pub fn top_write_concurrency(&self) -> usize {
        self.write_concurrency.iter().copied().max().unwrap_or(64)
    }
}

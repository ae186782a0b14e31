//! The replicator's settings. Each key is also an environment variable in upper case; each
//! has its line in `docs/configuration.md` (`cargo test -p deploy-checks` checks that).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, millis};
use service_kit::groups::{AmqpSettings, DbSettings, HttpSettings, ReplicaSettings};
use service_kit::telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Health and metrics.
    #[serde(flatten)]
    pub http: HttpSettings,
    #[serde(flatten)]
    pub broker: AmqpSettings,
    /// The primary: read by catch-up, `resync` and `verify`; written only to note which
    /// replica missed changes (`replica_catchup`). Its pool size is also each replica's.
    #[serde(flatten)]
    pub db: DbSettings,
    #[serde(flatten)]
    pub replicas: ReplicaSettings,
    /// Unacked messages per queue the broker may hand out ahead.
    pub prefetch: u16,
    /// Most events applied in one transaction per replica.
    pub batch_size: usize,
    /// How long a batch waits to fill once its first event arrived.
    #[serde(with = "millis")]
    pub batch_linger_ms: Duration,
    /// Attempts on a failing replica before it is left to catch-up.
    pub retry_attempts: u32,
    #[serde(with = "millis")]
    pub retry_base_ms: Duration,
    #[serde(with = "millis")]
    pub retry_cap_ms: Duration,
    /// How often a replica left behind is probed and, once it answers, caught up.
    #[serde(with = "millis")]
    pub catchup_interval_ms: Duration,
    /// Copied before a replica's `behind_since`, for clock skew and long transactions.
    #[serde(with = "millis")]
    pub catchup_margin_ms: Duration,
    pub catchup_page_size: i64,
    /// Bound on one apply (connection, statements, commit) to one replica, and on each call
    /// catch-up makes.
    #[serde(with = "millis")]
    pub apply_timeout_ms: Duration,
    /// How long a live batch waits for one replica, retries included, before that replica is
    /// left to catch-up and the batch goes on for the others.
    #[serde(with = "millis")]
    pub live_apply_budget_ms: Duration,
    /// Bound on applying pending migrations to a replica.
    #[serde(with = "millis")]
    pub migration_timeout_ms: Duration,
    /// How often each replica's name index gets its pending entries merged from a session of
    /// its own ([`crate::index_merge`]); zero leaves the merges to the applies.
    #[serde(with = "millis")]
    pub index_merge_interval_ms: Duration,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings {
                http_workers: 1,
                shutdown_timeout_s: 5,
                ..HttpSettings::on_port(8002)
            },
            broker: AmqpSettings::local(),
            db: DbSettings::local_primary("catalogue", 4, Duration::from_secs(2)),
            replicas: ReplicaSettings::local("catalogue"),
            prefetch: 1000,
            batch_size: 500,
            batch_linger_ms: Duration::from_millis(5),
            retry_attempts: 4,
            retry_base_ms: Duration::from_millis(50),
            retry_cap_ms: Duration::from_secs(1),
            catchup_interval_ms: Duration::from_secs(1),
            catchup_margin_ms: Duration::from_secs(60),
            catchup_page_size: 2000,
            apply_timeout_ms: Duration::from_secs(5),
            live_apply_budget_ms: Duration::from_secs(1),
            migration_timeout_ms: Duration::from_secs(30),
            index_merge_interval_ms: Duration::from_millis(100),
            log_format: LogFormat::Text,
        }
    }
}

impl service_kit::config::Settings for Settings {
    const ALIASES: &'static [(&'static str, &'static str)] = &[("rabbitmq_urls", "rabbitmq_url")];

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        self.replicas.targets()?;
        self.db.validate()?;
        self.broker.validate()?;
        if let Err(e) = self.broker_address() {
            return invalid(format!("rabbitmq_url: {e}"));
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return invalid("batch_size must be between 1 and 10000".into());
        }
        if usize::from(self.prefetch) < self.batch_size {
            // A batch larger than the prefetch window never fills
            // (docs/dependencies.md#amqprs-consumers-and-prefetch).
            return invalid("prefetch must be at least batch_size".into());
        }
        if self.retry_attempts == 0 {
            return invalid("retry_attempts must be at least 1".into());
        }
        if !(1..=100_000).contains(&self.catchup_page_size) {
            return invalid("catchup_page_size must be between 1 and 100000".into());
        }
        service_kit::config::require_positive(&[
            ("retry_base_ms", self.retry_base_ms),
            ("retry_cap_ms", self.retry_cap_ms),
            ("catchup_interval_ms", self.catchup_interval_ms),
            ("apply_timeout_ms", self.apply_timeout_ms),
            ("live_apply_budget_ms", self.live_apply_budget_ms),
            ("migration_timeout_ms", self.migration_timeout_ms),
        ])
    }
}

impl Settings {
    /// The broker's address, as checked at load.
    pub fn broker_address(&self) -> Result<messaging::BrokerAddress, messaging::MessagingError> {
        messaging::BrokerAddress::parse(self.broker.rabbitmq_url.expose())
    }

    pub fn pool_settings(&self, application_name: &str) -> storage::PoolSettings {
        let mut pool = storage::PoolSettings::new(application_name);
        pool.max_size = self.db.db_pool_size;
        pool.connect_timeout = self.db.db_connect_timeout_ms;
        pool.acquire_timeout = self.db.db_connect_timeout_ms;
        pool.statement_timeout = self.apply_timeout_ms;
        pool
    }

    pub fn broker_settings(&self, connection_name: &str) -> messaging::BrokerSettings {
        let mut broker = messaging::BrokerSettings::new(connection_name);
        broker.heartbeat = self.broker.amqp_heartbeat_s;
        broker.connect_timeout = self.broker.amqp_connect_timeout_ms;
        broker
    }
}

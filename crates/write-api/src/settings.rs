//! write-api's settings. Each key is also an environment variable in upper case; each has its
//! line in `docs/configuration.md` (`cargo test -p deploy-checks` checks that).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::SecretText;
use service_kit::config::{ConfigError, millis};
use service_kit::groups::{AmqpSettings, DbSettings, HttpSettings};
use service_kit::telemetry::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub http: HttpSettings,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// The primary database.
    #[serde(flatten)]
    pub db: DbSettings,
    #[serde(with = "millis")]
    pub db_statement_timeout_ms: Duration,
    /// Bound on all database work of one request, waiting for a connection included;
    /// past it the request fails with 503.
    #[serde(with = "millis")]
    pub request_timeout_ms: Duration,
    /// Apply pending migrations at start-up.
    pub run_migrations: bool,
    #[serde(flatten)]
    pub broker: AmqpSettings,
    /// Outbox rows published per confirm round.
    pub relay_batch_size: i64,
    /// The relay wakes at once on a local write; this is its fallback poll (for rows left by
    /// other instances or a crash).
    #[serde(with = "millis")]
    pub relay_poll_interval_ms: Duration,
    #[serde(with = "millis")]
    pub relay_confirm_timeout_ms: Duration,
    /// How often the pipeline heartbeat travels outbox relay → broker → replicator → every
    /// replica, so the pipeline's delay shows when nobody writes; 0 turns it off.
    #[serde(with = "millis")]
    pub heartbeat_interval_ms: Duration,
    /// Groups of concurrent writes committing at once (each holds a connection meanwhile).
    pub group_commit_committers: usize,
    /// How long a group waits for more writes while others commit (µs); an idle service
    /// never waits.
    pub group_commit_window_us: u64,
    /// Most writes in one group (one transaction).
    pub group_commit_max_writes: usize,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// When set, writes need `Authorization: Bearer <token>`.
    pub write_api_token: SecretText,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(8000),
            body_limit_bytes: 64 * 1024,
            db: DbSettings::local_primary("catalogue", 16, Duration::from_secs(3)),
            db_statement_timeout_ms: Duration::from_secs(5),
            request_timeout_ms: Duration::from_secs(5),
            run_migrations: true,
            broker: AmqpSettings::local(),
            relay_batch_size: 500,
            relay_poll_interval_ms: Duration::from_secs(1),
            relay_confirm_timeout_ms: Duration::from_secs(10),
            heartbeat_interval_ms: Duration::from_secs(5),
            // Two, not more: on 2 shared cores, four committers cost the primary about 1.5 ×
            // the CPU per write (smaller groups, more commits) and doubled the half-load lag;
            // one would let a single stuck group (a lock wait) hold every write.
            group_commit_committers: 2,
            // 1.5 ms, not 0.2: bigger groups at half load cost less CPU per write, which on 2
            // shared cores is what the replication lag queues behind (docs/configuration.md).
            group_commit_window_us: 1500,
            group_commit_max_writes: 256,
            log_format: LogFormat::Text,
            write_api_token: SecretText::default(),
        }
    }
}

impl service_kit::config::Settings for Settings {
    const ALIASES: &'static [(&'static str, &'static str)] = &[("rabbitmq_urls", "rabbitmq_url")];

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        self.db.validate()?;
        self.broker.validate()?;
        if !(1..=self.db.db_pool_size).contains(&self.group_commit_committers) {
            return invalid(
                "group_commit_committers must be between 1 and db_pool_size (each holds a \
                 connection while its group commits)"
                    .into(),
            );
        }
        if !(1..=4096).contains(&self.group_commit_max_writes) {
            return invalid("group_commit_max_writes must be between 1 and 4096".into());
        }
        if !(1..=10_000).contains(&self.relay_batch_size) {
            return invalid("relay_batch_size must be between 1 and 10000".into());
        }
        if self.body_limit_bytes < 1024 {
            return invalid("body_limit_bytes must be at least 1024".into());
        }
        if let Err(e) = self.broker_address() {
            return invalid(format!("rabbitmq_url: {e}"));
        }
        service_kit::config::require_positive(&[
            ("db_statement_timeout_ms", self.db_statement_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("relay_poll_interval_ms", self.relay_poll_interval_ms),
            ("relay_confirm_timeout_ms", self.relay_confirm_timeout_ms),
        ])
    }
}

impl Settings {
    /// The broker's address, as checked at load.
    pub fn broker_address(&self) -> Result<messaging::BrokerAddress, messaging::MessagingError> {
        messaging::BrokerAddress::parse(self.broker.rabbitmq_url.expose())
    }

    pub fn group_settings(&self) -> crate::group_commit::GroupSettings {
        crate::group_commit::GroupSettings {
            committers: self.group_commit_committers,
            window: Duration::from_micros(self.group_commit_window_us),
            max_writes: self.group_commit_max_writes,
            deadline: self.request_timeout_ms,
        }
    }

    pub fn pool_settings(&self) -> storage::PoolSettings {
        let mut pool = storage::PoolSettings::new("write-api");
        pool.max_size = self.db.db_pool_size;
        pool.connect_timeout = self.db.db_connect_timeout_ms;
        pool.acquire_timeout = self.request_timeout_ms;
        pool.statement_timeout = self.db_statement_timeout_ms;
        // Every statement write-api runs is keyed (ids, outbox sequence numbers).
        pool.index_scans_only = true;
        pool
    }

    pub fn broker_settings(&self) -> messaging::BrokerSettings {
        let mut broker = messaging::BrokerSettings::new("write-api");
        broker.heartbeat = self.broker.amqp_heartbeat_s;
        broker.connect_timeout = self.broker.amqp_connect_timeout_ms;
        broker.confirm_timeout = self.relay_confirm_timeout_ms;
        broker
    }
}

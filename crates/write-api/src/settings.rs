//! write-api's settings. Each key is also an environment variable in upper case; each has its
//! line in `docs/configuration.md` (`cargo test -p deploy-checks` checks that).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, millis};
use service_kit::telemetry::LogFormat;
use service_kit::{SecretText, SecretUrl};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address to listen on.
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per CPU core.
    pub http_workers: usize,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_timeout_s: u64,
    /// The primary database.
    pub database_url: SecretUrl,
    pub db_pool_size: usize,
    #[serde(with = "millis")]
    pub db_connect_timeout_ms: Duration,
    #[serde(with = "millis")]
    pub db_statement_timeout_ms: Duration,
    /// Bound on all database work of one request, waiting for a connection included;
    /// past it the request fails with 503.
    #[serde(with = "millis")]
    pub request_timeout_ms: Duration,
    /// Apply pending migrations at start-up.
    pub run_migrations: bool,
    pub rabbitmq_url: SecretUrl,
    /// AMQP heartbeat when the URL does not set one.
    pub amqp_heartbeat_s: u16,
    #[serde(with = "millis")]
    pub amqp_connect_timeout_ms: Duration,
    /// Ceiling of the backoff between reconnect attempts to the broker.
    #[serde(with = "millis")]
    pub amqp_reconnect_max_ms: Duration,
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
            host: "0.0.0.0".into(),
            port: 8000,
            http_workers: 0,
            body_limit_bytes: 64 * 1024,
            shutdown_timeout_s: 30,
            database_url: SecretUrl::new("postgres://catalogue:catalogue@127.0.0.1:5432/products"),
            db_pool_size: 16,
            db_connect_timeout_ms: Duration::from_secs(3),
            db_statement_timeout_ms: Duration::from_secs(5),
            request_timeout_ms: Duration::from_secs(5),
            run_migrations: true,
            rabbitmq_url: SecretUrl::new("amqp://catalogue:catalogue@127.0.0.1:5672/catalogue"),
            amqp_heartbeat_s: 10,
            amqp_connect_timeout_ms: Duration::from_secs(5),
            amqp_reconnect_max_ms: Duration::from_secs(10),
            relay_batch_size: 500,
            relay_poll_interval_ms: Duration::from_secs(1),
            relay_confirm_timeout_ms: Duration::from_secs(10),
            heartbeat_interval_ms: Duration::from_secs(5),
            group_commit_committers: 4,
            group_commit_window_us: 200,
            group_commit_max_writes: 256,
            log_format: LogFormat::Text,
            write_api_token: SecretText::default(),
        }
    }
}

impl service_kit::config::Settings for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.db_pool_size == 0 {
            return invalid("db_pool_size must be at least 1".into());
        }
        if !(1..=self.db_pool_size).contains(&self.group_commit_committers) {
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
        if let Err(e) = messaging::BrokerAddress::parse(self.rabbitmq_url.expose()) {
            return invalid(format!("rabbitmq_url: {e}"));
        }
        service_kit::config::require_positive(&[
            ("db_connect_timeout_ms", self.db_connect_timeout_ms),
            ("db_statement_timeout_ms", self.db_statement_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("relay_poll_interval_ms", self.relay_poll_interval_ms),
            ("relay_confirm_timeout_ms", self.relay_confirm_timeout_ms),
            ("amqp_connect_timeout_ms", self.amqp_connect_timeout_ms),
            ("amqp_reconnect_max_ms", self.amqp_reconnect_max_ms),
        ])
    }
}

impl Settings {
    pub fn http_options(&self) -> service_kit::http::HttpOptions {
        service_kit::http::HttpOptions {
            host: self.host.clone(),
            port: self.port,
            workers: self.http_workers,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_s),
        }
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
        pool.max_size = self.db_pool_size;
        pool.connect_timeout = self.db_connect_timeout_ms;
        pool.acquire_timeout = self.request_timeout_ms;
        pool.statement_timeout = self.db_statement_timeout_ms;
        pool
    }

    pub fn broker_settings(&self) -> messaging::BrokerSettings {
        let mut broker = messaging::BrokerSettings::new("write-api");
        broker.heartbeat = self.amqp_heartbeat_s;
        broker.connect_timeout = self.amqp_connect_timeout_ms;
        broker.confirm_timeout = self.relay_confirm_timeout_ms;
        broker
    }
}

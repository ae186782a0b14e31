//! The settings groups the services share, each with its keys, its checks and the typed
//! value the rest of the code wants. A service's `Settings` holds them with
//! `#[serde(flatten)]`, so every key stays a top-level key and its environment variable
//! keeps its flat name (`PORT`, `DB_POOL_SIZE`, `RABBITMQ_URL`, …).
//!
//! A flattened field gets from serde whatever value the source holds, not what its type asks
//! for: so the loader types each environment variable by its key's default before serde
//! sees it (see [`crate::config`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SecretUrl;
use crate::config::{ConfigError, millis, require_positive};
use crate::replicas::{self, ReplicaTarget};

/// Where and how a service serves HTTP (`HOST`, `PORT`, `HTTP_WORKERS`,
/// `SHUTDOWN_TIMEOUT_S`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free one.
    pub host: String,
    pub port: u16,
    /// Worker threads; 0 means one per CPU core.
    pub http_workers: usize,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout_s: u64,
}

impl HttpSettings {
    /// How many worker threads the server runs: `http_workers`, or one per core when 0 (as
    /// actix-web counts them).
    pub fn workers(&self) -> usize {
        if self.http_workers > 0 {
            self.http_workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }

    /// All interfaces on `port`, one worker per core, 30 s to drain.
    pub fn on_port(port: u16) -> Self {
        Self {
            host: "0.0.0.0".into(),
            port,
            http_workers: 0,
            shutdown_timeout_s: 30,
        }
    }
}

/// The connection pool to one database (`DATABASE_URL`, `DB_POOL_SIZE`,
/// `DB_CONNECT_TIMEOUT_MS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSettings {
    pub database_url: SecretUrl,
    /// Connections per pool.
    pub db_pool_size: usize,
    /// Bound on opening one connection (a frozen host is passed over after it).
    #[serde(with = "millis")]
    pub db_connect_timeout_ms: Duration,
}

impl DbSettings {
    /// The primary `make run` creates, reached as `user`.
    pub fn local_primary(user: &str, db_pool_size: usize, connect_timeout: Duration) -> Self {
        Self {
            database_url: SecretUrl::new(format!(
                "postgres://{user}:{user}@127.0.0.1:5432/products"
            )),
            db_pool_size,
            db_connect_timeout_ms: connect_timeout,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.db_pool_size == 0 {
            return Err(ConfigError::Invalid(
                "db_pool_size must be at least 1".into(),
            ));
        }
        require_positive(&[("db_connect_timeout_ms", self.db_connect_timeout_ms)])
    }
}

/// The broker connection (`RABBITMQ_URL`, also read as `RABBITMQ_URLS`; `AMQP_HEARTBEAT_S`,
/// `AMQP_CONNECT_TIMEOUT_MS`, `AMQP_RECONNECT_MAX_MS`). The URL is checked by the messaging
/// crate, which owns its syntax (one URL, or a cluster's nodes comma-separated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpSettings {
    pub rabbitmq_url: SecretUrl,
    /// AMQP heartbeat when the URL does not set one.
    pub amqp_heartbeat_s: u16,
    #[serde(with = "millis")]
    pub amqp_connect_timeout_ms: Duration,
    /// Ceiling of the backoff between reconnect attempts.
    #[serde(with = "millis")]
    pub amqp_reconnect_max_ms: Duration,
}

impl AmqpSettings {
    /// The local broker's `catalogue` vhost, as `make run` sets it up.
    pub fn local() -> Self {
        Self {
            rabbitmq_url: SecretUrl::new("amqp://catalogue:catalogue@127.0.0.1:5672/catalogue"),
            amqp_heartbeat_s: 10,
            amqp_connect_timeout_ms: Duration::from_secs(5),
            amqp_reconnect_max_ms: Duration::from_secs(10),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("amqp_connect_timeout_ms", self.amqp_connect_timeout_ms),
            ("amqp_reconnect_max_ms", self.amqp_reconnect_max_ms),
        ])
    }
}

/// The replicas (`REPLICA_URLS`, or the seed's `REPLICA_1_URL` and `REPLICA_2_URL`); see
/// [`replicas`] for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSettings {
    /// Empty unless set: `config` drops an empty list from the defaults, and a flattened
    /// group gets no default from its parent's `#[serde(default)]`.
    #[serde(default)]
    pub replica_urls: Vec<SecretUrl>,
    pub replica_1_url: SecretUrl,
    pub replica_2_url: SecretUrl,
}

impl ReplicaSettings {
    /// The two local replica clusters `make run` creates (ports 5433 and 5434), reached as
    /// `user` (whose password is its name, as provisioned).
    pub fn local(user: &str) -> Self {
        let on_port = |port: u16| {
            SecretUrl::new(format!(
                "postgres://{user}:{user}@127.0.0.1:{port}/products"
            ))
        };
        Self {
            replica_urls: Vec::new(),
            replica_1_url: on_port(5433),
            replica_2_url: on_port(5434),
        }
    }

    /// The replicas, named; fails on none, a duplicate name or a URL that is not PostgreSQL's.
    pub fn targets(&self) -> Result<Vec<ReplicaTarget>, ConfigError> {
        replicas::replica_targets(&self.replica_urls, &self.replica_1_url, &self.replica_2_url)
    }
}

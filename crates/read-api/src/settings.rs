//! read-api's settings. Each key is also an environment variable in upper case; each has its
//! line in `docs/configuration.md` (`cargo test -p deploy-checks` checks that).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, millis};
use service_kit::groups::{DbSettings, HttpSettings, ReplicaSettings};
use service_kit::telemetry::LogFormat;

/// read-api logs in as the role that may only SELECT (made by `make run`'s provisioning and
/// by the compose init script).
const READER: &str = "catalogue_reader";

use crate::strategy::Strategy;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub http: HttpSettings,
    /// Any number of replicas, `url` or `name=url`; when empty, `replica_1_url` and
    /// `replica_2_url`.
    #[serde(flatten)]
    pub replicas: ReplicaSettings,
    /// The primary, read (read-only sessions) only when no replica can answer; its pool
    /// settings are every source's.
    #[serde(flatten)]
    pub db: DbSettings,
    pub fallback_to_primary: bool,
    /// `p2c_ewma`, `round_robin`, `random` or `least_outstanding`.
    pub strategy: Strategy,
    /// Per-replica weights, `name=weight,…` (unnamed replicas weigh 1; 0 drains one).
    pub replica_weights: ReplicaWeights,
    /// Time constant of the peak-EWMA latency `p2c_ewma` compares.
    #[serde(with = "millis")]
    pub latency_decay_ms: Duration,
    /// Server-side bound on one statement.
    #[serde(with = "millis")]
    pub db_statement_timeout_ms: Duration,
    /// Bound on one attempt on one source, waiting for a connection included.
    #[serde(with = "millis")]
    pub read_timeout_ms: Duration,
    /// Bound on a whole read, all attempts on all sources included; past it, 503.
    #[serde(with = "millis")]
    pub request_deadline_ms: Duration,
    /// Most lookups by id one statement answers (`WHERE id = ANY`): an HTTP worker's
    /// concurrent lookups on a source share a statement when its share of
    /// `lookup_concurrency` statements are all in flight. 1 turns that off.
    pub lookup_batch_max: usize,
    /// Lookup statements in flight at once per source (at most `db_pool_size`), shared out
    /// among the HTTP workers, rounded up. Fewer, fuller statements cost the replica less per
    /// lookup than many small ones.
    pub lookup_concurrency: usize,
    /// Threads of the runtime that runs listings, health checks and their connections beside
    /// the HTTP workers (which look up by id themselves); 0 means one per four cores, at least
    /// one.
    pub db_threads: usize,
    #[serde(with = "millis")]
    pub health_check_interval_ms: Duration,
    #[serde(with = "millis")]
    pub health_check_timeout_ms: Duration,
    /// Consecutive failed reads that take a source out of rotation.
    pub max_consecutive_errors: u32,
    /// How long such a source stays out before a probe decides.
    #[serde(with = "millis")]
    pub cooldown_ms: Duration,
    /// No answer is staler than this: a replica leaves rotation before the oldest change it
    /// lacks could be older (the next health check's interval included).
    pub max_lag_ms: u64,
    /// Flap damping: a source that left rotation more than `flap_max_exits` times within
    /// `flap_window_ms` rejoins only after `flap_rejoin_checks` passing checks in a row.
    #[serde(with = "millis")]
    pub flap_window_ms: Duration,
    pub flap_max_exits: u32,
    pub flap_rejoin_checks: u32,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(8001),
            replicas: ReplicaSettings::local(READER),
            db: DbSettings::local_primary(READER, 16, Duration::from_secs(1)),
            fallback_to_primary: true,
            strategy: Strategy::P2cEwma,
            replica_weights: ReplicaWeights::default(),
            latency_decay_ms: Duration::from_secs(2),
            db_statement_timeout_ms: Duration::from_secs(1),
            read_timeout_ms: Duration::from_secs(1),
            request_deadline_ms: Duration::from_secs(3),
            lookup_batch_max: 64,
            lookup_concurrency: 4,
            db_threads: 0,
            health_check_interval_ms: Duration::from_secs(1),
            health_check_timeout_ms: Duration::from_millis(500),
            max_consecutive_errors: 3,
            cooldown_ms: Duration::from_secs(5),
            max_lag_ms: 5000,
            flap_window_ms: Duration::from_secs(60),
            flap_max_exits: 3,
            flap_rejoin_checks: 5,
            log_format: LogFormat::Text,
        }
    }
}

impl service_kit::config::Settings for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        self.db.validate()?;
        let targets = self.replicas.targets()?;
        if let Some(unknown) = self
            .replica_weights
            .names()
            .find(|name| !targets.iter().any(|t| t.name == *name))
        {
            return invalid(format!(
                "replica_weights names {unknown:?}, which is not one of the replicas"
            ));
        }
        if targets.iter().any(|t| t.name == crate::app::PRIMARY) {
            return invalid(format!(
                "a replica may not be named {:?}: that name is the primary's",
                crate::app::PRIMARY
            ));
        }
        if self.max_consecutive_errors == 0 {
            return invalid("max_consecutive_errors must be at least 1".into());
        }
        if u128::from(self.max_lag_ms) <= self.health_check_interval_ms.as_millis() {
            return invalid(
                "max_lag_ms must exceed health_check_interval_ms: staleness is only seen at a \
                 check"
                    .into(),
            );
        }
        if self.lookup_batch_max == 0 {
            return invalid("lookup_batch_max must be at least 1".into());
        }
        if self.lookup_concurrency == 0 {
            return invalid("lookup_concurrency must be at least 1".into());
        }
        if self.flap_rejoin_checks == 0 {
            return invalid("flap_rejoin_checks must be at least 1".into());
        }
        if self.read_timeout_ms > self.request_deadline_ms {
            return invalid("read_timeout_ms must not exceed request_deadline_ms".into());
        }
        service_kit::config::require_positive(&[
            ("db_statement_timeout_ms", self.db_statement_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("request_deadline_ms", self.request_deadline_ms),
            ("health_check_interval_ms", self.health_check_interval_ms),
            ("health_check_timeout_ms", self.health_check_timeout_ms),
            ("cooldown_ms", self.cooldown_ms),
            ("flap_window_ms", self.flap_window_ms),
            ("latency_decay_ms", self.latency_decay_ms),
        ])
    }
}

impl Settings {
    /// Lookup settings for each HTTP worker, which looks up on its own connections:
    /// `LOOKUP_CONCURRENCY` (never more than `DB_POOL_SIZE`) shared out among the workers,
    /// rounded up, so at least one statement each (three workers sharing 4 get 2 each).
    pub fn lookup_settings(&self) -> crate::lookups::LookupSettings {
        let total = self.lookup_concurrency.min(self.db.db_pool_size);
        crate::lookups::LookupSettings {
            max_ids: self.lookup_batch_max,
            concurrency: total.div_ceil(self.http.workers()).max(1),
            deadline: self.read_timeout_ms,
        }
    }

    /// Pool settings for one HTTP worker's lookups on one source: a connection per
    /// statement it may have in flight. These sessions only ever look rows up by id, so they
    /// never plan a sequential scan (a plan cached on a young replica would otherwise scan
    /// the growing table for up to a minute; docs/dependencies.md, "Generic plans on a
    /// growing table"). Listings keep the planner's own choice.
    pub fn lookup_pool_settings(&self, source: &str) -> storage::PoolSettings {
        let mut pool = self.pool_settings(&format!("{source} lookups"));
        pool.max_size = self.lookup_settings().concurrency;
        pool.index_scans_only = true;
        pool
    }

    /// Pool settings for one source: read-only sessions, and every wait bounded by one
    /// attempt's timeout.
    pub fn pool_settings(&self, source: &str) -> storage::PoolSettings {
        let mut pool = storage::PoolSettings::new(format!("read-api {source}"));
        pool.max_size = self.db.db_pool_size;
        pool.connect_timeout = self.db.db_connect_timeout_ms;
        pool.acquire_timeout = self.read_timeout_ms;
        pool.statement_timeout = self.db_statement_timeout_ms;
        pool.read_only = true;
        pool
    }
}

/// `REPLICA_WEIGHTS`: `name=weight` pairs, comma-separated, parsed once at load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplicaWeights(Vec<(String, u32)>);

impl ReplicaWeights {
    /// The weight of the replica `name` (1 unless set).
    pub fn of(&self, name: &str) -> u32 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1, |(_, weight)| *weight)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }
}

impl TryFrom<String> for ReplicaWeights {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let mut weights = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, weight) = entry
                .split_once('=')
                .ok_or_else(|| format!("replica_weights: {entry:?} is not name=weight"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                format!("replica_weights: the weight of {name} must be a whole number 0–1000")
            })?;
            if weight > 1000 {
                return Err(format!(
                    "replica_weights: the weight of {name} must be at most 1000"
                ));
            }
            weights.push((name.trim().to_owned(), weight));
        }
        Ok(Self(weights))
    }
}

impl From<ReplicaWeights> for String {
    fn from(weights: ReplicaWeights) -> String {
        weights
            .0
            .iter()
            .map(|(name, weight)| format!("{name}={weight}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        service_kit::config::load_from(
            None,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn reads_the_seed_variables_and_the_strategy() {
        let settings = load(&[
            ("PORT", "9001"),
            ("REPLICA_URLS", "east=postgres://a/x,postgres://b/x"),
            ("STRATEGY", "least_outstanding"),
            ("FALLBACK_TO_PRIMARY", "false"),
        ])
        .unwrap();
        assert_eq!(settings.http.port, 9001);
        assert_eq!(settings.strategy, Strategy::LeastOutstanding);
        assert!(!settings.fallback_to_primary);
        let names: Vec<_> = settings
            .replicas
            .targets()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["east", "replica-2"]);
    }

    #[test]
    fn defaults_name_two_replicas_and_bad_values_are_refused() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.http.port, 8001);
        assert_eq!(settings.strategy, Strategy::P2cEwma);
        assert_eq!(settings.replicas.targets().unwrap().len(), 2);
        assert!(load(&[("STRATEGY", "fastest")]).is_err());
        assert!(load(&[("MAX_CONSECUTIVE_ERRORS", "0")]).is_err());
        assert!(load(&[("READ_TIMEOUT_MS", "5000"), ("REQUEST_DEADLINE_MS", "1000")]).is_err());
        assert!(load(&[("REPLICA_URLS", "mysql://x/y")]).is_err());
    }

    #[test]
    fn lookup_statements_in_flight_never_exceed_the_pool_and_are_shared_out_among_workers() {
        let per_worker = |vars: &[(&str, &str)]| {
            let settings = load(vars).unwrap();
            (
                settings.lookup_settings().concurrency,
                settings.lookup_pool_settings("replica-1").max_size,
            )
        };
        assert_eq!(per_worker(&[("HTTP_WORKERS", "1")]), (4, 4));
        assert_eq!(per_worker(&[("HTTP_WORKERS", "2")]), (2, 2));
        assert_eq!(per_worker(&[("HTTP_WORKERS", "3")]), (2, 2));
        assert_eq!(per_worker(&[("HTTP_WORKERS", "16")]), (1, 1));
        assert_eq!(
            per_worker(&[("HTTP_WORKERS", "1"), ("DB_POOL_SIZE", "2")]),
            (2, 2)
        );
        assert_eq!(
            per_worker(&[("HTTP_WORKERS", "2"), ("LOOKUP_CONCURRENCY", "12")]),
            (6, 6)
        );
        assert!(load(&[("LOOKUP_CONCURRENCY", "0")]).is_err());
    }

    #[test]
    fn only_lookup_sessions_avoid_sequential_scans() {
        let settings = load(&[]).unwrap();
        assert!(settings.lookup_pool_settings("replica-1").index_scans_only);
        assert!(!settings.pool_settings("replica-1").index_scans_only);
    }

    #[test]
    fn the_log_format_is_text_or_json_in_any_usual_case() {
        assert_eq!(load(&[]).unwrap().log_format, LogFormat::Text);
        for (value, format) in [
            ("json", LogFormat::Json),
            ("JSON", LogFormat::Json),
            ("Text", LogFormat::Text),
        ] {
            assert_eq!(
                load(&[("LOG_FORMAT", value)]).unwrap().log_format,
                format,
                "{value}"
            );
        }
        let refused = load(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(
            refused.contains("xml") && refused.contains("log_format"),
            "{refused}"
        );
    }

    #[test]
    fn weights_name_real_replicas_and_default_to_one() {
        let settings = load(&[("REPLICA_WEIGHTS", "replica-1=3, replica-2=0")]).unwrap();
        assert_eq!(settings.replica_weights.of("replica-1"), 3);
        assert_eq!(settings.replica_weights.of("replica-2"), 0);
        assert_eq!(settings.replica_weights.of("other"), 1);
        assert_eq!(settings.strategy.to_string(), "p2c_ewma");
        assert!(load(&[("REPLICA_WEIGHTS", "replica-9=2")]).is_err());
        assert!(load(&[("REPLICA_WEIGHTS", "replica-1")]).is_err());
        assert!(load(&[("REPLICA_WEIGHTS", "replica-1=-1")]).is_err());
        assert!(load(&[("STRATEGY", "p2c_ewma")]).is_ok());
    }
}

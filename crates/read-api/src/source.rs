//! One place reads can go (a replica, or the primary as a last resort): its pool, its load,
//! and whether it is in rotation.
//!
//! A source is in rotation when its last health check passed, it is level and its staleness
//! is within `max_lag_ms` (replicas, see [`crate::lag`]), and its breaker is closed. The
//! breaker opens after `max_consecutive_errors` failed reads in a row; it stays open for
//! `cooldown_ms`, and then the next health check decides: passing closes it, failing leaves
//! the source out as unreachable until a later check passes. Nothing but health checks
//! brings a source back, so a flapping replica is not fed reads between two failures; and
//! one that left rotation more than `flap_max_exits` times within `flap_window_ms` rejoins
//! only after `flap_rejoin_checks` passing checks in a row (flap damping).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use storage::DbPool;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lag::Lag;
use crate::latency::PeakEwma;
use crate::lookups::{LookupSettings, PoolMaker, ThreadLookups};

mod metrics;
pub use metrics::{Outcome, ReadMetrics};

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Replica,
    Primary,
}

/// When a source leaves rotation, and when it comes back.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Time constant of the peak-EWMA latency `p2c_ewma` compares.
    pub latency_decay: Duration,
    pub max_lag_ms: u64,
    /// How long until the next look: staleness may grow that much before anyone sees it.
    pub check_interval: Duration,
    pub max_consecutive_errors: u32,
    pub cooldown: Duration,
    pub flap: FlapPolicy,
}

/// Flap damping: a source that left rotation more than `max_exits` times within `window`
/// rejoins only after `rejoin_checks` passing health checks in a row.
#[derive(Debug, Clone, Copy)]
pub struct FlapPolicy {
    pub window: Duration,
    pub max_exits: u32,
    pub rejoin_checks: u32,
}

pub struct Source {
    name: Arc<str>,
    role: Role,
    pool: DbPool,
    /// Lookups by id, batched, on each HTTP worker's own connections.
    lookups: ThreadLookups,
    metrics: ReadMetrics,
    probe_pool: Option<DbPool>,
    policy: Policy,
    /// Its share of reads relative to the others; 0 drains it.
    weight: u32,
    latency: PeakEwma,
    in_flight: AtomicUsize,
    served: AtomicU64,
    health: Mutex<Health>,
    /// Wakes the health checker when a breaker opens, so the probe after the cool-down is
    /// not left to the next regular check.
    breaker_opened: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Health {
    /// `None` until the first health check; then its outcome (`Err` holds why it failed).
    probe: Option<Result<(), String>>,
    lag: Option<Lag>,
    consecutive_errors: u32,
    breaker: Option<Breaker>,
    last_error: Option<String>,
    /// When it left rotation, within the flap window.
    exits: VecDeque<Instant>,
    /// While damped: passing checks still needed before it rejoins.
    damped: Option<u32>,
    /// When it last left rotation, and why (for `/api/replicas`).
    out_since: Option<(DateTime<Utc>, String)>,
    /// The newest pipeline heartbeat this replica holds, as of the last health check.
    heartbeat: Option<Heartbeat>,
}

/// The newest pipeline heartbeat a replica holds: not routing data (a replica that lacks
/// nothing serves whatever the pipeline does), but the pipeline's end-to-end delay, visible
/// even when nobody writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// When the primary beat (its clock).
    pub at: DateTime<Utc>,
    /// How old that beat is now: grows past the beat interval when the relay, the broker
    /// or the replicator stops.
    pub age_ms: u64,
    /// From the beat on the primary to its apply on this replica.
    pub pipeline_delay_ms: Option<u64>,
}

/// An open breaker: the source is out until `until`, then until a health check passes.
#[derive(Debug, Clone)]
struct Breaker {
    until: Instant,
    errors: u32,
}

/// A source as `/api/replicas` and `/readyz` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    pub name: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub lag_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catching_up_since: Option<DateTime<Utc>>,
    pub weight: u32,
    /// Peak-EWMA latency of its reads, in milliseconds.
    pub latency_ms: f64,
    pub in_flight: usize,
    pub reads_served: u64,
    pub consecutive_errors: u32,
    pub last_error: Option<String>,
    /// When it left rotation (while it is out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_since: Option<DateTime<Utc>>,
    /// Times it left rotation within the flap window.
    pub recent_exits: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
}

impl Source {
    pub fn new(
        name: impl Into<Arc<str>>,
        role: Role,
        pool: DbPool,
        lookups: LookupSettings,
        policy: Policy,
        breaker_opened: Arc<Notify>,
    ) -> Self {
        let name: Arc<str> = name.into();
        let metrics = ReadMetrics::register(&name);
        let shared = pool.clone();
        Self {
            lookups: ThreadLookups::new(
                Arc::new(move || Ok(shared.clone())),
                lookups,
                metrics.lookup_batch_size(),
            ),
            metrics,
            name,
            role,
            pool,
            probe_pool: None,
            weight: 1,
            latency: PeakEwma::new(policy.latency_decay),
            policy,
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
            breaker_opened,
        }
    }

    /// This source with its own connection for health checks, so that a check never waits
    /// behind reads for a pooled connection (a busy replica is not a dead one).
    pub fn with_probe_pool(mut self, probe_pool: DbPool) -> Self {
        self.probe_pool = Some(probe_pool);
        self
    }

    /// The pool health checks use: their own when given, else the reads'.
    pub fn probe_pool(&self) -> &DbPool {
        self.probe_pool.as_ref().unwrap_or(&self.pool)
    }

    /// This source with lookups by id on pools `make_pool` makes, one per thread that looks
    /// up (by default they share the reads' pool).
    pub fn with_lookup_pools(mut self, make_pool: PoolMaker) -> Self {
        self.lookups = self.lookups.with_pools(make_pool);
        self
    }

    /// This source with `weight` (default 1; 0 drains it).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn metrics(&self) -> &ReadMetrics {
        &self.metrics
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Records how long one read took here (a failed one counts as at least the read
    /// timeout: a source that fails fast must not look fast).
    pub fn observe_latency(&self, latency: Duration) {
        self.latency.observe(latency);
    }

    /// What `p2c_ewma` compares: peak-EWMA latency × (reads in flight + 1), per unit of
    /// weight.
    pub fn cost(&self) -> f64 {
        let load = (self.in_flight() + 1) as f64;
        self.latency.seconds().max(1e-6) * load / f64::from(self.weight.max(1))
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    pub fn lookups(&self) -> &ThreadLookups {
        &self.lookups
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a read on this source until the guard is dropped (for `least_outstanding`).
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Why the source is out of rotation, or `None` when it is in.
    pub fn unavailable_reason(&self) -> Option<String> {
        if self.weight == 0 {
            return Some("drained: weight 0".to_owned());
        }
        self.health().reason(&self.policy, Instant::now())
    }

    pub fn is_available(&self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// A read got an answer that was used (found or not): the error streak ends.
    pub fn record_success(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.record_answer();
    }

    /// A read got an answer, used or not (one too old for `X-Min-Version` is not): the
    /// source works, so the error streak ends.
    pub fn record_answer(&self) {
        self.health().consecutive_errors = 0;
    }

    /// A read failed or timed out here; enough in a row open the breaker.
    pub fn record_failure(&self, error: &str) {
        let mut health = self.health();
        health.consecutive_errors = health.consecutive_errors.saturating_add(1);
        health.last_error = Some(error.to_owned());
        if health.breaker.is_none()
            && health.consecutive_errors >= self.policy.max_consecutive_errors
        {
            let was_in = health.reason(&self.policy, Instant::now()).is_none();
            health.breaker = Some(Breaker {
                until: Instant::now() + self.policy.cooldown,
                errors: health.consecutive_errors,
            });
            if was_in {
                health.left_rotation(&self.policy, Instant::now(), error);
            }
            tracing::warn!(
                replica = %self.name,
                errors = health.consecutive_errors,
                cooldown_ms = self.policy.cooldown.as_millis() as u64,
                last_error = error,
                "source left rotation after consecutive read errors"
            );
            self.breaker_opened.notify_one();
        }
    }

    /// Records the pipeline heartbeat a health check read.
    pub fn record_heartbeat(&self, heartbeat: Option<Heartbeat>) {
        self.health().heartbeat = heartbeat;
    }

    /// Whether a health check should run now: not while the breaker's cool-down lasts.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.health()
            .breaker
            .as_ref()
            .is_none_or(|b| b.until <= now)
    }

    /// When the breaker's cool-down ends, if it is open.
    pub fn cooldown_ends(&self) -> Option<Instant> {
        self.health().breaker.as_ref().map(|b| b.until)
    }

    /// Records a health check that began at `started`: `Ok` with the lag measured (none for
    /// the primary), or why it failed. Either way a breaker whose cool-down had ended when the
    /// check began is closed: the check has decided. (A check already under way when the
    /// breaker opened decides nothing about it.)
    pub fn record_probe(&self, started: Instant, outcome: Result<Option<Lag>, String>) {
        let now = Instant::now();
        let mut health = self.health();
        let checked_before = health.probe.is_some();
        let before = health.reason(&self.policy, now);
        if health.breaker.as_ref().is_some_and(|b| b.until <= started) {
            health.breaker = None;
            health.consecutive_errors = 0;
        }
        match outcome {
            Ok(lag) => {
                health.probe = Some(Ok(()));
                health.lag = lag;
            }
            Err(reason) => {
                health.last_error = Some(reason.clone());
                health.probe = Some(Err(reason));
            }
        }
        // Damping counts passing checks in a row; any failing one starts the count again.
        if let Some(needed) = health.damped {
            health.damped = match health.undamped_reason(&self.policy, now) {
                None if needed <= 1 => None,
                None => Some(needed - 1),
                Some(_) => Some(self.policy.flap.rejoin_checks),
            };
        }
        let after = health.reason(&self.policy, now);
        match (&before, &after) {
            (None, Some(reason)) => health.left_rotation(&self.policy, now, reason),
            (Some(_), None) => health.out_since = None,
            _ => {}
        }
        drop(health);
        // The first check's outcome is logged by start-up, not as a change.
        if !checked_before {
            return;
        }
        match (before, after) {
            (Some(was), None) => {
                tracing::info!(replica = %self.name, was = %was, "source back in rotation");
            }
            (None, Some(reason)) => {
                tracing::warn!(replica = %self.name, %reason, "source left rotation");
            }
            _ => {}
        }
    }

    pub fn report(&self) -> SourceReport {
        let health = self.health();
        let reason = health.reason(&self.policy, Instant::now());
        let reason = if self.weight == 0 {
            Some("drained: weight 0".to_owned())
        } else {
            reason
        };
        SourceReport {
            name: self.name.to_string(),
            healthy: reason.is_none(),
            reason,
            weight: self.weight,
            latency_ms: (self.latency.seconds() * 1e6).round() / 1e3,
            lag_ms: health.lag.map(|lag| lag.ms),
            catching_up_since: health.lag.and_then(|lag| lag.catching_up_since()),
            in_flight: self.in_flight(),
            reads_served: self.served.load(Ordering::Relaxed),
            consecutive_errors: health.consecutive_errors,
            last_error: health.last_error.clone(),
            out_since: health.out_since.as_ref().map(|(since, _)| *since),
            recent_exits: health.exits.len(),
            heartbeat: health.heartbeat,
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // The state is a few plain fields, valid after any panic: keep using it.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Health {
    /// Why the source is out of rotation, damping included.
    fn reason(&self, policy: &Policy, now: Instant) -> Option<String> {
        let reason = self.undamped_reason(policy, now);
        match (reason, self.damped) {
            (None, Some(needed)) => Some(format!(
                "flap damping: left rotation {} times within {} s; rejoins after {needed} more \
                 passing health checks",
                self.exits.len(),
                policy.flap.window.as_secs()
            )),
            (reason, _) => reason,
        }
    }

    fn undamped_reason(&self, policy: &Policy, now: Instant) -> Option<String> {
        if let Some(breaker) = &self.breaker {
            let last = self.last_error.as_deref().unwrap_or("unknown error");
            let next = if breaker.until > now {
                format!(
                    "a health check decides in {} ms",
                    (breaker.until - now).as_millis()
                )
            } else {
                "waiting for a health check".to_owned()
            };
            return Some(format!(
                "cooling down after {} consecutive read errors (last: {last}); {next}",
                breaker.errors
            ));
        }
        match &self.probe {
            None => return Some("not checked yet".to_owned()),
            Some(Err(reason)) => return Some(reason.clone()),
            Some(Ok(())) => {}
        }
        self.lag?.out_of_rotation_because(
            policy.max_lag_ms,
            u64::try_from(policy.check_interval.as_millis()).unwrap_or(u64::MAX),
        )
    }

    /// Counts an exit from rotation; past the flap threshold the source is damped.
    fn left_rotation(&mut self, policy: &Policy, now: Instant, reason: &str) {
        self.out_since = Some((Utc::now(), reason.to_owned()));
        while self
            .exits
            .front()
            .is_some_and(|at| now.duration_since(*at) > policy.flap.window)
        {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        if self.exits.len() > policy.flap.max_exits as usize {
            self.damped = Some(policy.flap.rejoin_checks);
        }
    }
}

/// Counts one read in flight until dropped.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Wiring: a pool and a [`Source`] per replica (and the primary), the health checker, the
//! HTTP server, and an orderly stop.

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use service_kit::Supervisor;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::router::Router;
use crate::settings::Settings;
use crate::source::{FlapPolicy, Policy, Role, Source};
use crate::{health, routes};

/// The name of the primary as a source, in `X-Served-By` and metrics.
pub const PRIMARY: &str = "primary";

/// A running read-api: HTTP server and health checker, under one [`Supervisor`].
pub struct Application {
    port: u16,
    supervisor: Supervisor,
}

impl Application {
    /// Builds the pools (lazily connected, so a replica that is down does not stop start-up),
    /// checks every source once so the first reads know where to go, binds the port and
    /// starts serving. `shutdown` stops the server gracefully, then the health checker.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // First: each source takes its metric handles from the recorder when it is made.
        let metrics = web::Data::new(service_kit::metrics::install());
        let policy = Policy {
            latency_decay: settings.latency_decay_ms,
            max_lag_ms: settings.max_lag_ms,
            check_interval: settings.health_check_interval_ms,
            max_consecutive_errors: settings.max_consecutive_errors,
            cooldown: settings.cooldown_ms,
            flap: FlapPolicy {
                window: settings.flap_window_ms,
                max_exits: settings.flap_max_exits,
                rejoin_checks: settings.flap_rejoin_checks,
            },
        };
        let breaker_opened = Arc::new(Notify::new());
        let mut replicas = Vec::new();
        for target in settings.replicas.targets()? {
            let pool =
                storage::pool::build(target.url.expose(), &settings.pool_settings(&target.name))
                    .with_context(|| format!("building the pool of {}", target.name))?;
            let probe_pool = probe_pool(&settings, target.url.expose(), &target.name)?;
            let lookup_pools = lookup_pools(&settings, target.url.expose(), &target.name);
            let weight = settings.replica_weights.of(&target.name);
            replicas.push(Arc::new(
                Source::new(
                    target.name,
                    Role::Replica,
                    pool,
                    settings.lookup_settings(),
                    policy,
                    breaker_opened.clone(),
                )
                .with_probe_pool(probe_pool)
                .with_lookup_pools(lookup_pools)
                .with_weight(weight),
            ));
        }
        // The primary is always watched: it says what each replica lacks. It serves reads
        // only as a fallback.
        let pool = storage::pool::build(
            settings.db.database_url.expose(),
            &settings.pool_settings(PRIMARY),
        )
        .context("building the primary's read-only pool")?;
        let probe = probe_pool(&settings, settings.db.database_url.expose(), PRIMARY)?;
        let lookup_pools = lookup_pools(&settings, settings.db.database_url.expose(), PRIMARY);
        let primary = Some(Arc::new(
            Source::new(
                PRIMARY,
                Role::Primary,
                pool,
                settings.lookup_settings(),
                policy,
                breaker_opened.clone(),
            )
            .with_probe_pool(probe)
            .with_lookup_pools(lookup_pools),
        ));
        let router = Arc::new(Router::new(
            replicas,
            primary,
            settings.fallback_to_primary,
            settings.strategy,
            settings.read_timeout_ms,
            settings.request_deadline_ms,
        ));

        health::check_all(&router, settings.health_check_timeout_ms).await;
        for source in router.replicas().iter().chain(router.primary()) {
            match source.unavailable_reason() {
                None => tracing::info!(replica = %source.name(), "source in rotation"),
                Some(reason) => {
                    tracing::warn!(replica = %source.name(), %reason, "source out of rotation at start-up")
                }
            }
        }

        let mut supervisor = Supervisor::new(shutdown);
        let data = web::Data::from(router.clone());
        let tasks = web::Data::new(supervisor.health());
        let listening = service_kit::http::start(&settings.http, move || {
            App::new()
                .wrap(from_fn(http_api::middleware::request_context))
                .app_data(data.clone())
                .app_data(tasks.clone())
                .app_data(metrics.clone())
                .configure(routes::configure)
                .default_service(web::to(http_api::ops::unrouted))
        })?;
        supervisor.serve(listening.server);
        supervisor.spawn(
            "health checks",
            health::run(
                router,
                settings.health_check_interval_ms,
                settings.health_check_timeout_ms,
                breaker_opened,
                supervisor.stop_token(),
            ),
        );
        supervisor.inject_fault_from_env();
        Ok(Self {
            port: listening.port,
            supervisor,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown, then stops the health checker. An error means a part of the
    /// service ended unexpectedly (it is logged): exit non-zero.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        Ok(self.supervisor.run().await?)
    }
}

/// Each HTTP worker's own pool for lookups by id on a source, made on its first lookup (the
/// URL was checked when the source's main pool was built).
fn lookup_pools(settings: &Settings, url: &str, source: &str) -> crate::lookups::PoolMaker {
    let url = url.to_owned();
    let pool_settings = settings.lookup_pool_settings(source);
    Arc::new(move || storage::pool::build(&url, &pool_settings))
}

/// One connection for a source's health checks, apart from its reads.
fn probe_pool(settings: &Settings, url: &str, source: &str) -> anyhow::Result<storage::DbPool> {
    let mut pool_settings = settings.pool_settings(&format!("{source} health"));
    pool_settings.max_size = 1;
    pool_settings.acquire_timeout = settings.health_check_timeout_ms;
    storage::pool::build(url, &pool_settings)
        .with_context(|| format!("building the health-check pool of {source}"))
}

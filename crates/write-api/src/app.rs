//! Wiring: pools, migrations, the relay and the HTTP server under one supervisor, and an
//! orderly stop.

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use chrono::Utc;
use service_kit::{Backoff, Supervisor};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::access::{self, WriteToken};
use crate::catalogue::Catalogue;
use crate::group_commit::GroupCommit;
use crate::readiness::Readiness;
use crate::relay::{BrokerStatus, Relay};
use crate::routes;
use crate::settings::Settings;

/// How long start-up waits for the primary to accept migrations (each try is bounded by
/// what is left of it, so a frozen primary cannot hold start-up for ever).
pub const STARTUP_DB_WAIT: Duration = Duration::from_secs(60);

/// A running write-api: HTTP server and outbox relay, under one [`Supervisor`].
pub struct Application {
    port: u16,
    supervisor: Supervisor,
}

impl Application {
    /// Migrates the primary (when configured), binds the port and starts serving. `shutdown`
    /// stops the server gracefully (in-flight requests finish), then the relay.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let database_url = settings.db.database_url.expose().to_owned();
        if settings.run_migrations {
            migrate_when_reachable(&database_url, &shutdown).await?;
        }
        let pool = storage::pool::build(&database_url, &settings.pool_settings())
            .context("building the primary database pool")?;
        let address = settings.broker_address().context("parsing RABBITMQ_URL")?;
        let mut supervisor = Supervisor::new(shutdown);

        let outbox_written = Arc::new(Notify::new());
        let (status, status_rx) = watch::channel(BrokerStatus {
            connected: false,
            since: Utc::now(),
            last_error: Some("not connected yet".into()),
        });
        let relay = Relay {
            pool: pool.clone(),
            address,
            broker: settings.broker_settings(),
            batch_size: settings.relay_batch_size,
            poll_interval: settings.relay_poll_interval_ms,
            db_deadline: settings.request_timeout_ms,
            wake: outbox_written.clone(),
            status,
            reconnect_max: settings.broker.amqp_reconnect_max_ms,
            heartbeat: Some(settings.heartbeat_interval_ms).filter(|i| !i.is_zero()),
        };

        let (writes, committers) = GroupCommit::start(
            pool.clone(),
            settings.group_settings(),
            outbox_written,
            &supervisor.stop_token(),
        );
        for (index, committer) in committers.into_iter().enumerate() {
            supervisor.spawn(format!("group committer {}", index + 1), committer);
        }
        let catalogue = web::Data::new(Catalogue::new(writes));
        let readiness = web::Data::new(Readiness {
            pool,
            broker: status_rx,
            tasks: supervisor.health(),
        });
        let metrics = web::Data::new(service_kit::metrics::install());
        let body_limit = settings.body_limit_bytes;
        let write_token = web::Data::new(WriteToken(settings.write_api_token.clone()));
        if !settings.write_api_token.is_set() {
            tracing::warn!("WRITE_API_TOKEN is not set: writes need no credentials");
        }

        let listening = service_kit::http::start(&settings.http, move || {
            App::new()
                .wrap(from_fn(access::require_token))
                .wrap(from_fn(http_api::middleware::request_context))
                .app_data(write_token.clone())
                .app_data(catalogue.clone())
                .app_data(readiness.clone())
                .app_data(metrics.clone())
                .app_data(http_api::extract::json_config(body_limit))
                .configure(routes::configure)
                .default_service(web::to(http_api::ops::unrouted))
        })?;
        supervisor.serve(listening.server);
        let relay_stop = supervisor.stop_token();
        supervisor.spawn("outbox relay", relay.run(relay_stop));
        supervisor.inject_fault_from_env();
        Ok(Self {
            port: listening.port,
            supervisor,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown, then lets the relay publish what it can and stop. An error
    /// means a part of the service ended unexpectedly (it is logged): exit non-zero.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        Ok(self.supervisor.run().await?)
    }
}

/// Applies migrations, waiting (with backoff, up to a minute) for the primary to come up: in
/// a fresh stack the database may start after us.
async fn migrate_when_reachable(url: &str, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + STARTUP_DB_WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match storage::migrations::run_pending(url, left).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "migrations applied to the primary");
                }
                return Ok(());
            }
            Err(
                error @ (storage::StorageError::Unavailable(_) | storage::StorageError::Timeout(_)),
            ) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "primary not reachable yet; retrying migrations");
                if !backoff.wait(shutdown).await {
                    anyhow::bail!("shutdown requested during start-up");
                }
            }
            Err(error) => return Err(error).context("applying migrations to the primary"),
        }
    }
}

//! Wiring: pools, migrations, the relay and the HTTP server, and an orderly stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use chrono::Utc;
use messaging::BrokerAddress;
use service_kit::Backoff;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{self, WriteToken};
use crate::catalogue::Catalogue;
use crate::readiness::Readiness;
use crate::relay::{BrokerStatus, Relay};
use crate::routes;
use crate::settings::Settings;

/// How long start-up waits for the primary to accept migrations (each try is bounded by
/// what is left of it, so a frozen primary cannot hold start-up for ever).
pub const STARTUP_DB_WAIT: Duration = Duration::from_secs(60);

/// A running write-api: HTTP server and outbox relay.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    relay: JoinHandle<()>,
    relay_stop: CancellationToken,
}

impl Application {
    /// Migrates the primary (when configured), binds the port and starts serving. `shutdown`
    /// stops the server gracefully (in-flight requests finish), then the relay.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let database_url = settings.database_url.expose().to_owned();
        if settings.run_migrations {
            migrate_when_reachable(&database_url, &shutdown).await?;
        }
        let pool = storage::pool::build(&database_url, &settings.pool_settings())
            .context("building the primary database pool")?;
        let address =
            BrokerAddress::parse(settings.rabbitmq_url.expose()).context("parsing RABBITMQ_URL")?;

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
            reconnect_max: settings.amqp_reconnect_max_ms,
        };

        let catalogue = web::Data::new(Catalogue::new(
            pool.clone(),
            settings.request_timeout_ms,
            outbox_written,
        ));
        let readiness = web::Data::new(Readiness {
            pool,
            broker: status_rx,
        });
        let metrics = web::Data::new(service_kit::metrics::install());
        let body_limit = settings.body_limit_bytes;
        let write_token = web::Data::new(WriteToken(settings.write_api_token.clone()));
        if !settings.write_api_token.is_set() {
            tracing::warn!("WRITE_API_TOKEN is not set: writes need no credentials");
        }

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(access::require_token))
                .wrap(from_fn(http_api::middleware::request_context))
                .app_data(write_token.clone())
                .app_data(catalogue.clone())
                .app_data(readiness.clone())
                .app_data(metrics.clone())
                .app_data(http_api::extract::json_config(body_limit))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)?
        .shutdown_timeout(settings.shutdown_timeout_s)
        .disable_signals();
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        let server = server.run();

        let handle = server.handle();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            handle.stop(true).await;
        });

        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(relay.run(relay_stop.clone()));
        Ok(Self {
            port,
            server,
            relay,
            relay_stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown, then lets the relay publish what it can and stop.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.relay_stop.cancel();
        let _ = self.relay.await;
        served.context("HTTP server failed")
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

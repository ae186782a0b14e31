//! Wiring: replica pools, the consuming loop, catch-up and the HTTP endpoints.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use chrono::Utc;
use messaging::BrokerAddress;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apply::RetryPolicy;
use crate::catchup::{CatchUp, DeadLetterTarget};
use crate::consume::{ConsumerStatus, Pipeline};
use crate::health::{self, Health};
use crate::replica::Replica;
use crate::settings::Settings;

/// The replicas of `settings`, with their pools (nothing is connected yet).
pub fn replicas(settings: &Settings) -> anyhow::Result<Arc<Vec<Arc<Replica>>>> {
    let replicas = settings
        .replicas()?
        .iter()
        .map(|target| {
            Replica::connect(target, settings)
                .map(Arc::new)
                .with_context(|| format!("replica {}", target.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Arc::new(replicas))
}

/// The primary's pool, for catch-up marks and the commands.
pub fn primary(settings: &Settings) -> anyhow::Result<storage::DbPool> {
    storage::pool::build(
        settings.database_url.expose(),
        &settings.pool_settings("replicator:primary"),
    )
    .context("building the primary pool")
}

/// Catch-up for `replica`, as `holder`.
pub fn catch_up(
    settings: &Settings,
    replica: Arc<Replica>,
    primary: storage::DbPool,
    holder: uuid::Uuid,
) -> anyhow::Result<CatchUp> {
    Ok(CatchUp {
        replica,
        primary,
        deadline: settings.apply_timeout_ms,
        interval: settings.catchup_interval_ms,
        margin: settings.catchup_margin_ms,
        page_size: settings.catchup_page_size,
        holder,
        refused_before: Default::default(),
        dead_letters: DeadLetterTarget {
            address: BrokerAddress::parse(settings.rabbitmq_url.expose())
                .context("parsing RABBITMQ_URL")?,
            settings: settings.broker_settings("replicator-catchup"),
        },
    })
}

/// A running replicator.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    workers: Vec<JoinHandle<()>>,
    workers_stop: CancellationToken,
}

impl Application {
    /// Starts consuming and serving. `shutdown` stops consuming after the batch in hand.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let replicas = replicas(&settings)?;
        let primary = primary(&settings)?;
        let address =
            BrokerAddress::parse(settings.rabbitmq_url.expose()).context("parsing RABBITMQ_URL")?;
        // Replicas are migrated on first contact, by the live path or catch-up, each within
        // its own deadline: a replica that is down or frozen at start-up delays nobody.
        let holder = uuid::Uuid::new_v4();
        let catch_ups = replicas
            .iter()
            .map(|replica| catch_up(&settings, replica.clone(), primary.clone(), holder))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let (status, status_rx) = watch::channel(ConsumerStatus {
            consuming: false,
            since: Utc::now(),
            last_error: Some("not connected yet".into()),
        });
        let pipeline = Pipeline {
            replicas: replicas.clone(),
            primary: primary.clone(),
            primary_deadline: settings.apply_timeout_ms,
            address,
            broker: settings.broker_settings("replicator"),
            prefetch: settings.prefetch,
            batch_size: settings.batch_size,
            linger: settings.batch_linger_ms,
            policy: RetryPolicy {
                attempts: settings.retry_attempts,
                base: settings.retry_base_ms,
                cap: settings.retry_cap_ms,
                budget: settings.live_apply_budget_ms,
            },
            reconnect_max: settings.amqp_reconnect_max_ms,
            status,
        };
        let health = web::Data::new(Health {
            consumer: status_rx,
            replicas,
        });
        let metrics = web::Data::new(service_kit::metrics::install());
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http_api::middleware::request_context))
                .app_data(health.clone())
                .app_data(metrics.clone())
                .route("/healthz", web::get().to(http_api::ops::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(http_api::ops::metrics))
        })
        .listen(listener)?
        .workers(1)
        .disable_signals()
        .run();

        let workers_stop = CancellationToken::new();
        let mut workers = vec![tokio::spawn(pipeline.run(workers_stop.clone()))];
        workers.extend(
            catch_ups
                .into_iter()
                .map(|catch_up| tokio::spawn(catch_up.run(workers_stop.clone()))),
        );
        let handle = server.handle();
        let stop = workers_stop.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stop.cancel();
            handle.stop(true).await;
        });
        Ok(Self {
            port,
            server,
            workers,
            workers_stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until shutdown: the consumer finishes and acks its batch, then everything stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.workers_stop.cancel();
        for worker in self.workers {
            let _ = worker.await;
        }
        served.context("HTTP server failed")
    }
}

//! Wiring: replica pools, the consuming loop, catch-up and the HTTP endpoints, under one
//! supervisor.

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use chrono::Utc;
use service_kit::Supervisor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::apply::RetryPolicy;
use crate::catchup::{CatchUp, DeadLetterTarget};
use crate::consume::{ConsumerStatus, Pipeline};
use crate::health::{self, Health};
use crate::index_merge::IndexMerger;
use crate::replica::Replica;
use crate::settings::Settings;

/// The replicas of `settings`, with their pools (nothing is connected yet).
pub fn replicas(settings: &Settings) -> anyhow::Result<Arc<Vec<Arc<Replica>>>> {
    let replicas = settings
        .replicas
        .targets()?
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
        settings.db.database_url.expose(),
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
        dead_letters: DeadLetterTarget {
            address: settings.broker_address().context("parsing RABBITMQ_URL")?,
            settings: settings.broker_settings("replicator-catchup"),
        },
    })
}

/// A running replicator: the consumer, one catch-up loop per replica and the health
/// endpoints, under one [`Supervisor`].
pub struct Application {
    port: u16,
    supervisor: Supervisor,
}

impl Application {
    /// Starts consuming and serving. `shutdown` stops consuming after the batch in hand.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let replicas = replicas(&settings)?;
        let primary = primary(&settings)?;
        let address = settings.broker_address().context("parsing RABBITMQ_URL")?;
        let mut supervisor = Supervisor::new(shutdown);
        // Replicas are migrated on first contact, by the live path or catch-up, each within
        // its own deadline: a replica that is down or frozen at start-up delays nobody.
        let holder = uuid::Uuid::new_v4();
        for replica in replicas.iter() {
            let catch_up = catch_up(&settings, replica.clone(), primary.clone(), holder)?;
            supervisor.spawn(
                format!("catch-up of {}", replica.name),
                catch_up.run(supervisor.stop_token()),
            );
            if !settings.index_merge_interval_ms.is_zero() {
                let merger = IndexMerger {
                    replica: replica.clone(),
                    interval: settings.index_merge_interval_ms,
                };
                supervisor.spawn(
                    format!("index merger of {}", replica.name),
                    merger.run(supervisor.stop_token()),
                );
            }
        }

        let (status, status_rx) = watch::channel(ConsumerStatus {
            consuming: false,
            since: Utc::now(),
            last_error: Some("not connected yet".into()),
        });
        let pipeline = Pipeline {
            replicas: replicas.clone(),
            primary,
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
            reconnect_max: settings.broker.amqp_reconnect_max_ms,
            status,
        };
        supervisor.spawn("consumer", pipeline.run(supervisor.stop_token()));

        let health = web::Data::new(Health {
            consumer: status_rx,
            replicas,
            tasks: supervisor.health(),
        });
        let metrics = web::Data::new(service_kit::metrics::install());
        let listening = service_kit::http::start(&settings.http, move || {
            App::new()
                .wrap(from_fn(http_api::middleware::request_context))
                .app_data(health.clone())
                .app_data(metrics.clone())
                .route("/healthz", web::get().to(http_api::ops::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(http_api::ops::metrics))
        })?;
        supervisor.serve(listening.server);
        supervisor.inject_fault_from_env();
        Ok(Self {
            port: listening.port,
            supervisor,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until shutdown: the consumer finishes and acks its batch, then everything stops.
    /// An error means a part of the service ended unexpectedly (it is logged): exit non-zero.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        Ok(self.supervisor.run().await?)
    }
}

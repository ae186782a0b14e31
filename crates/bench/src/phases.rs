//! The measurements, in the order they run: writes (with lag at full load), lag at half
//! load, reads, catch-up. Each fills its part of the report; one that cannot run reports why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use uuid::Uuid;

use crate::catchup::{self, CatchupPlan, Databases};
use crate::cli::Args;
use crate::lag::{self, LagTracker, Probed};
use crate::load::{self, LoadSpec, Throughput};
use crate::logical;
use crate::reads::{self, Replicas, ServedBy};
use crate::report::{Figure, HalfLoadLag, Pair};
use crate::scaling;
use crate::services::{MemoryWatch, PidFiles};
use crate::strategies;
use crate::writes::{self, Sequence};

/// A tracked write not on every replica after this long counts as missed.
const LAG_TIMEOUT: Duration = Duration::from_secs(30);
/// Ids kept for the read runs.
const KEEP_IDS: usize = 200_000;

/// What every phase needs.
pub struct Context {
    pub args: Args,
    pub dbs: Databases,
    pub client: reqwest::Client,
    pub memory: MemoryWatch,
    pub pids: PidFiles,
    /// Ids of products created through write-api: read back in the read runs.
    pub ids: Vec<Uuid>,
}

impl Context {
    fn spec(&self, concurrency: usize) -> LoadSpec {
        LoadSpec {
            concurrency,
            warmup: self.args.warmup(),
            duration: self.args.duration(),
            rate: None,
            max_ops: None,
            keep_ids: KEEP_IDS,
        }
    }

    fn lag_poll(&self) -> Duration {
        Duration::from_millis(self.args.lag_poll_ms.max(1))
    }

    /// Lag pollers on both replicas' `products`.
    async fn product_lag(&self) -> anyhow::Result<(Arc<LagTracker>, lag::LagPollers)> {
        LagTracker::start(
            &self.dbs.replicas,
            Probed::Products,
            self.lag_poll(),
            LAG_TIMEOUT,
        )
        .await
    }

    /// A `CHECKPOINT` on the primary and every replica, through the superuser login of the
    /// logical-replication baseline, so that a run does not pay for the dirty pages the run
    /// before it left: in one full run a checkpoint the full-load runs' WAL had started was
    /// still writing (the disk at 40-75 MB/s against 26 without) all through the half-load
    /// run. Best effort: a cluster that refuses is logged and left as it is.
    async fn checkpoint(&self) {
        let endpoints = self.args.logical_endpoints();
        let clusters = std::iter::once(("the primary".to_owned(), endpoints.publisher_conninfo))
            .chain(
                endpoints
                    .subscriber_urls
                    .into_iter()
                    .enumerate()
                    .map(|(i, url)| (format!("replica {}", i + 1), url)),
            );
        for (cluster, url) in clusters {
            let began = std::time::Instant::now();
            let done = async {
                let mut conn = AsyncPgConnection::establish(&url).await?;
                conn.batch_execute("CHECKPOINT").await?;
                anyhow::Ok(())
            }
            .await;
            match done {
                Ok(()) => tracing::debug!(%cluster, took = ?began.elapsed(), "checkpoint"),
                Err(error) => tracing::warn!(%cluster, %error,
                    "no CHECKPOINT before the run: it may pay for the last run's writes"),
            }
        }
    }

    fn keep(&mut self, ids: &[Uuid]) {
        let room = KEEP_IDS.saturating_sub(self.ids.len());
        self.ids.extend(ids.iter().take(room));
    }
}

/// Connections a baseline pool opens at most: more clients share them, as they would behind
/// any application's pool. PostgreSQL's default `max_connections` is 100, and a baseline at
/// concurrency 256 with one connection per client failed 8,367 of its inserts for want of
/// connections (2026-12-06T020509Z).
const MAX_BASELINE_CONNECTIONS: usize = 64;

/// Direct-SQL pool of `size` connections to `url` (at most [`MAX_BASELINE_CONNECTIONS`]).
fn pool(url: &str, name: &str, size: usize, read_only: bool) -> anyhow::Result<storage::DbPool> {
    let mut settings = storage::PoolSettings::new(name);
    settings.max_size = size.clamp(1, MAX_BASELINE_CONNECTIONS);
    settings.connect_timeout = Duration::from_secs(5);
    settings.acquire_timeout = Duration::from_secs(5);
    settings.statement_timeout = Duration::from_secs(5);
    settings.read_only = read_only;
    Ok(storage::pool::build(url, &settings)?)
}

/// Fails early, with a clear message, when a service does not answer.
pub async fn ready(client: &reqwest::Client, base_url: &str, name: &str) -> anyhow::Result<()> {
    let url = format!("{}/readyz", base_url.trim_end_matches('/'));
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{name} does not answer at {url}"))?;
    if !response.status().is_success() {
        bail!("{name} is not ready ({} from {url})", response.status());
    }
    Ok(())
}

/// 0. The scaling table, when asked for: first, on the empty table.
pub async fn scaling(ctx: &Context) -> anyhow::Result<Vec<scaling::ScalingRun>> {
    ready(&ctx.client, &ctx.args.read_url, "read-api").await?;
    scaling::measure(&scaling::ScalingPlan {
        primary_url: &ctx.dbs.primary,
        replica_urls: &ctx.dbs.replicas,
        read_url: &ctx.args.read_url,
        client: ctx.client.clone(),
        concurrencies: ctx.args.scaling_concurrency.clone(),
        warmup: ctx.args.warmup().min(Duration::from_secs(1)),
        duration: ctx.args.scaling_duration(),
    })
    .await
}

/// The write phase's figures.
pub struct WriteFigures {
    /// Per concurrency: write-api vs the same transaction straight to the primary.
    pub pairs: BTreeMap<usize, Pair>,
    /// write-api's lag at full load, per concurrency.
    pub lags: BTreeMap<usize, Figure<lag::Trend>>,
    /// PostgreSQL's logical replication of the same inserts, at the top concurrency.
    pub logical: Figure<logical::LogicalWrites>,
}

/// 1. Writes at each concurrency: the direct-SQL baseline, then write-api with its lag at
///    full load; then, at the top concurrency, the same inserts through PostgreSQL's logical
///    replication.
pub async fn writes(ctx: &mut Context) -> anyhow::Result<WriteFigures> {
    writes::create_direct_tables(&ctx.dbs.primary).await?;
    let mut pairs = BTreeMap::new();
    let mut lags = BTreeMap::new();
    for concurrency in ctx.args.write_concurrency.clone() {
        let spec = ctx.spec(concurrency);
        ctx.checkpoint().await;
        tracing::info!(concurrency, "writes: direct SQL baseline");
        ctx.memory.set_under_load(true);
        let direct = async {
            let pool = pool(&ctx.dbs.primary, "bench direct writes", concurrency, false)?;
            load::run(
                &spec,
                writes::direct_create(pool, Duration::from_secs(5), Sequence::default()),
            )
            .await
        }
        .await;

        ctx.checkpoint().await;
        tracing::info!(concurrency, "writes: write-api");
        let mut trend = None;
        let api = async {
            let (tracker, pollers) = ctx.product_lag().await?;
            let op = writes::api_create(
                ctx.client.clone(),
                &ctx.args.write_url,
                Sequence::default(),
                Some((Arc::clone(&tracker), ctx.args.lag_sample_every)),
            );
            let run = load::run(&spec, op).await;
            ctx.memory.set_under_load(false);
            let collected = pollers.finish(&tracker).await;
            let run = run?;
            if let Some(window) = run.window {
                trend = Some(collected.and_then(|c| lag::trend(&c, window)));
            }
            anyhow::Ok(run)
        }
        .await;
        ctx.memory.set_under_load(false);
        if let Ok(run) = &api {
            ctx.keep(&run.ids);
        }
        pairs.insert(
            concurrency,
            Pair::new(Figure::from_result(api), Figure::from_result(direct)),
        );
        lags.insert(
            concurrency,
            Figure::from_result(trend.unwrap_or_else(|| Err(anyhow::anyhow!("no write-api run")))),
        );
    }
    if let Err(error) = writes::drop_direct_tables(&ctx.dbs.primary).await {
        tracing::warn!(%error, "dropping the baseline tables");
    }
    ctx.checkpoint().await;
    tracing::info!("writes: PostgreSQL logical replication baseline");
    ctx.memory.set_under_load(true);
    let logical = Figure::from_result(logical_writes(ctx).await);
    ctx.memory.set_under_load(false);
    Ok(WriteFigures {
        pairs,
        lags,
        logical,
    })
}

async fn logical_writes(ctx: &Context) -> anyhow::Result<logical::LogicalWrites> {
    let endpoints = ctx.args.logical_endpoints();
    endpoints.check().await?;
    let concurrency = ctx.args.top_write_concurrency();
    let mut spec = ctx.spec(concurrency);
    spec.keep_ids = 0;
    let plan = logical::WritePlan {
        spec,
        pool: pool(
            &endpoints.primary_url,
            "bench logical writes",
            concurrency,
            false,
        )?,
        poll: ctx.lag_poll(),
        lag_timeout: LAG_TIMEOUT,
        track_every: ctx.args.lag_sample_every,
    };
    logical::measure_writes(&endpoints, plan).await
}

/// 2. Lag at a steady half of the measured write rate.
pub async fn half_load_lag(ctx: &mut Context, rate: f64) -> anyhow::Result<HalfLoadLag> {
    let mut spec = ctx.spec(ctx.args.top_write_concurrency());
    spec.duration = ctx.args.lag_duration();
    spec.rate = Some(rate);
    // The full-load runs before this one leave the pipeline a backlog to drain; lag measured
    // on top of that drain would be the drain's, not half load's.
    catchup::settle(&ctx.dbs, Duration::from_secs(180))
        .await
        .context("waiting for the replicas to be level before the half-load run")?;
    ctx.checkpoint().await;
    tracing::info!(rate, "lag at half load");
    let (tracker, pollers) = ctx.product_lag().await?;
    let op = writes::api_create(
        ctx.client.clone(),
        &ctx.args.write_url,
        Sequence::default(),
        Some((Arc::clone(&tracker), 1)),
    );
    ctx.memory.set_under_load(true);
    let run = load::run(&spec, op).await;
    ctx.memory.set_under_load(false);
    let collected = pollers.finish(&tracker).await?;
    let write = run?;
    ctx.keep(&write.ids);
    let window = write.window.context("the run has no window")?;
    let trend = lag::trend(&collected, window)?;
    Ok(HalfLoadLag {
        tracked: trend.tracked,
        missed: collected.missed,
        lag: trend.overall,
        per_second_p50_ms: trend.per_second_p50_ms,
        per_second_p99_ms: trend.per_second_p99_ms,
        write,
    })
}

/// The read figures: by id through read-api and through pgpool-II, and the first page, each
/// beside the same queries straight to the replicas.
pub struct ReadPairs {
    pub by_id: Pair,
    pub by_id_pgpool: Pair,
    pub list: Pair,
}

/// Phase 4, reads through read-api, through pgpool-II and straight to the replicas: by id,
/// then the first page.
pub async fn reads(ctx: &mut Context) -> anyhow::Result<ReadPairs> {
    catchup::settle(&ctx.dbs, Duration::from_secs(180))
        .await
        .context("waiting for the replicas to be level before the reads")?;
    ctx.checkpoint().await;
    let ids = Arc::new(if ctx.ids.is_empty() {
        sample_ids(&ctx.dbs.replicas[0]).await?
    } else {
        ctx.ids.clone()
    });
    let concurrency = ctx.args.read_concurrency;
    let spec = ctx.spec(concurrency);
    let per_replica = concurrency.div_ceil(ctx.dbs.replicas.len().max(1));
    let replicas = Replicas::new(
        ctx.dbs
            .replicas
            .iter()
            .map(|url| pool(url, "bench direct reads", per_replica, true))
            .collect::<anyhow::Result<_>>()?,
        Duration::from_secs(5),
    );
    let read_api = ready(&ctx.client, &ctx.args.read_url, "read-api").await;

    ctx.memory.set_under_load(true);
    tracing::info!("reads by id: direct SQL baseline");
    let direct_get = load::run(&spec, reads::direct_get(replicas.clone(), Arc::clone(&ids))).await;
    let api_get = match &read_api {
        Ok(()) => {
            tracing::info!("reads by id: read-api");
            let served_by = ServedBy::default();
            let op = reads::api_get(
                ctx.client.clone(),
                &ctx.args.read_url,
                Arc::clone(&ids),
                served_by.clone(),
            );
            load::run(&spec, op).await.map(|mut t| {
                t.served_by = served_by.take();
                t
            })
        }
        Err(error) => Err(anyhow::anyhow!("{error:#}")),
    };
    tracing::info!("listing: direct SQL baseline");
    let direct_list = load::run(&spec, reads::direct_list(replicas)).await;
    let api_list = match &read_api {
        Ok(()) => {
            tracing::info!("listing: read-api");
            let served_by = ServedBy::default();
            let op = reads::api_list(ctx.client.clone(), &ctx.args.read_url, served_by.clone());
            load::run(&spec, op).await.map(|mut t| {
                t.served_by = served_by.take();
                t
            })
        }
        Err(error) => Err(anyhow::anyhow!("{error:#}")),
    };
    // Last, once the direct pools are gone: pgpool-II opens a connection to both replicas
    // for each of its clients, and the replicas' connection slots (100) are shared.
    let pgpool_get = match &ctx.args.pgpool_url {
        Some(url) => {
            tracing::info!("reads by id: pgpool-II");
            let through = Replicas::new(
                vec![pool(url, "bench pgpool reads", concurrency, true)?],
                Duration::from_secs(5),
            );
            load::run(&spec, reads::direct_get(through, Arc::clone(&ids))).await
        }
        None => Err(anyhow::anyhow!(
            "no pgpool-II to compare with (bench.sh starts one where Debian's pgpool2 installs)"
        )),
    };
    ctx.memory.set_under_load(false);
    let direct_get = Figure::from_result(direct_get);
    Ok(ReadPairs {
        by_id: Pair::new(Figure::from_result(api_get), direct_get.clone()),
        by_id_pgpool: Pair::new(Figure::from_result(pgpool_get), direct_get),
        list: Pair::new(
            Figure::from_result(api_list),
            Figure::from_result(direct_list),
        ),
    })
}

/// read-api's strategies under one slow replica, each in a read-api of its own.
pub async fn strategies(ctx: &mut Context) -> anyhow::Result<Vec<strategies::StrategyRun>> {
    let ids = Arc::new(if ctx.ids.is_empty() {
        sample_ids(&ctx.dbs.replicas[0]).await?
    } else {
        ctx.ids.clone()
    });
    let [first, second] = ctx.dbs.replicas.as_slice() else {
        bail!("the strategy comparison needs exactly two replicas");
    };
    // Beside the restarted replicator's log (bench.sh keeps the services' logs there).
    let log_dir = ctx
        .args
        .replicator_log
        .as_ref()
        .and_then(|log| log.parent())
        .map_or_else(|| ctx.args.out_dir.clone(), std::path::Path::to_path_buf);
    let plan = strategies::Plan {
        binary: &ctx.args.read_api_bin,
        replica_urls: [first, second],
        slow: Duration::from_millis(ctx.args.slow_replica_ms),
        spec: ctx.spec(ctx.args.read_concurrency),
        ids,
        client: ctx.client.clone(),
        log_dir: &log_dir,
    };
    let names: Vec<&str> = ctx.args.strategies.iter().map(String::as_str).collect();
    strategies::compare(&plan, &names).await
}

/// Live ids from a replica, when no write ran in this process.
async fn sample_ids(url: &str) -> anyhow::Result<Vec<Uuid>> {
    use diesel::prelude::*;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    use storage::schema::products;
    let mut conn = AsyncPgConnection::establish(url).await?;
    let ids: Vec<Uuid> = products::table
        .filter(products::deleted_at.is_null())
        .select(products::id)
        .limit(i64::try_from(KEEP_IDS).unwrap_or(i64::MAX))
        .load(&mut conn)
        .await?;
    if ids.is_empty() {
        bail!("no products to read: run the write phase first");
    }
    Ok(ids)
}

/// 3. Catch-up, then its baseline through PostgreSQL's logical replication.
pub async fn catchup(
    ctx: &mut Context,
) -> (Figure<catchup::Catchup>, Figure<logical::LogicalCatchup>) {
    let log = ctx.args.replicator_log.clone().unwrap_or_else(|| {
        ctx.args
            .pid_dir
            .clone()
            .unwrap_or_else(|| ctx.args.out_dir.clone())
            .join("replicator-restarted.log")
    });
    ctx.memory.set_under_load(true);
    let measured = catchup::measure(CatchupPlan {
        dbs: &ctx.dbs,
        client: ctx.client.clone(),
        write_url: &ctx.args.write_url,
        changes: ctx.args.catchup_changes(),
        concurrency: ctx.args.top_write_concurrency(),
        replicator_bin: ctx.args.replicator_bin.clone(),
        replicator_port: ctx.args.replicator_port,
        replicator_log: log,
        pids: &ctx.pids,
        memory: &ctx.memory,
    })
    .await;
    ctx.memory.set_under_load(false);
    let baseline = match &measured {
        Ok(c) => logical_baseline(ctx, c.ids.clone()).await,
        Err(_) => Err(anyhow::anyhow!("no catch-up rows to replicate")),
    };
    (Figure::from_result(measured), Figure::from_result(baseline))
}

async fn logical_baseline(
    ctx: &Context,
    ids: Vec<Uuid>,
) -> anyhow::Result<logical::LogicalCatchup> {
    let endpoints = ctx.args.logical_endpoints();
    endpoints.check().await?;
    let timeout = Duration::from_secs(120 + ids.len() as u64 / 500);
    logical::measure_catchup(&endpoints, ids, timeout).await
}

/// The write-api rate the half-load lag run halves: the highest concurrency's.
pub fn full_rate(pairs: &BTreeMap<usize, Pair>, top: usize) -> Option<f64> {
    pairs
        .get(&top)
        .and_then(|p| p.product.get())
        .map(|t: &Throughput| t.rps)
        .filter(|r| *r > 0.0)
}

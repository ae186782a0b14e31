//! The write baseline: the same product inserts write-api's run made, at the same
//! concurrency, one transaction each, into the published table while both subscriptions
//! stream, with replica-visible lag probed as for write-api (from the insert's commit until
//! the row can be read on every replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use storage::DbPool;
use uuid::Uuid;

use super::{Endpoints, Replication, cleaned_up};
use crate::lag::{self, LagTracker, Probed, Trend};
use crate::load::{self, LoadSpec, Throughput, db_error_kind};
use crate::writes::Sequence;

diesel::table! {
    bench_lr_products (id) {
        id -> Uuid,
        name -> Text,
        price_cents -> Int8,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        version -> Int8,
        deleted_at -> Nullable<Timestamptz>,
    }
}

/// How long the subscriptions may take to start streaming.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);

/// What the write baseline runs.
pub struct WritePlan {
    pub spec: LoadSpec,
    /// Connections to the primary, one per client.
    pub pool: DbPool,
    pub poll: Duration,
    pub lag_timeout: Duration,
    /// Every n-th insert is tracked until every replica holds it.
    pub track_every: u64,
}

/// What logical replication did with the same writes.
#[derive(Debug, Clone, Serialize)]
pub struct LogicalWrites {
    pub write: Throughput,
    pub lag: Trend,
}

/// Runs the baseline; always removes what it created.
pub async fn measure_writes(
    endpoints: &Endpoints,
    plan: WritePlan,
) -> anyhow::Result<LogicalWrites> {
    cleaned_up(endpoints, run(endpoints, plan)).await
}

async fn run(endpoints: &Endpoints, plan: WritePlan) -> anyhow::Result<LogicalWrites> {
    let mut replication = Replication::create(endpoints, true).await?;
    wait_streaming(&plan.pool, &mut replication).await?;

    let (tracker, pollers) = LagTracker::start(
        &endpoints.subscriber_urls,
        Probed::LogicalBaseline,
        plan.poll,
        plan.lag_timeout,
    )
    .await?;
    let op = {
        let tracker = Arc::clone(&tracker);
        let pool = plan.pool.clone();
        let sequence = Sequence::default();
        let counter = Arc::new(AtomicU64::new(0));
        let every = plan.track_every.max(1);
        move || {
            let pool = pool.clone();
            let tracker = Arc::clone(&tracker);
            let (name, price_cents, stock) = sequence.next();
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                let id = Uuid::now_v7();
                let mut conn = pool.get().await.map_err(|e| db_error_kind(&e))?;
                insert(&mut conn, id, &name, price_cents, stock)
                    .await
                    .map_err(|e| db_error_kind(&e))?;
                let acked = Instant::now();
                if n.is_multiple_of(every) {
                    tracker.track(id, acked);
                }
                Ok(Some(id))
            }
        }
    };
    let run = load::run(&plan.spec, op).await;
    let collected = pollers.finish(&tracker).await?;
    let write = run?;
    let window = write.window.context("the run has no window")?;
    let lag = lag::trend(&collected, window)?;
    Ok(LogicalWrites { write, lag })
}

/// One product row, as write-api's create makes it, in a transaction of its own.
async fn insert(
    conn: &mut diesel_async::AsyncPgConnection,
    id: Uuid,
    name: &str,
    price_cents: i64,
    stock: i32,
) -> QueryResult<usize> {
    use diesel::dsl::now;
    diesel::insert_into(bench_lr_products::table)
        .values((
            bench_lr_products::id.eq(id),
            bench_lr_products::name.eq(name),
            bench_lr_products::price_cents.eq(price_cents),
            bench_lr_products::stock.eq(stock),
            bench_lr_products::created_at.eq(now),
            bench_lr_products::updated_at.eq(now),
            bench_lr_products::version.eq(1_i64),
        ))
        .execute(conn)
        .await
}

/// Waits until a first row reaches every subscriber: from then on the subscriptions stream,
/// and the measured run does not pay for their start.
async fn wait_streaming(pool: &DbPool, replication: &mut Replication) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    insert(&mut conn, Uuid::now_v7(), "bench logical warm-up", 100, 1).await?;
    let started = Instant::now();
    while replication.slowest_count().await? < 1 {
        if started.elapsed() > STREAMING_TIMEOUT {
            bail!("the subscriptions did not start streaming in {STREAMING_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Which of `ids` the baseline's table holds here.
pub async fn existing_ids(
    conn: &mut diesel_async::AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<Vec<Uuid>> {
    bench_lr_products::table
        .select(bench_lr_products::id)
        .filter(bench_lr_products::id.eq_any(ids))
        .load(conn)
        .await
}

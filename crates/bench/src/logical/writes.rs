//! The write baseline: the same product inserts write-api's run made, at the same
//! concurrency, one transaction each, into the published table while both subscriptions
//! stream, with replica-visible lag probed as for write-api (from the insert's commit until
//! the row can be read on every replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use diesel::QueryResult;
use diesel::sql_types::{Array, BigInt, Integer, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use storage::DbPool;
use uuid::Uuid;

use super::{Endpoints, Replication, TABLE, cleaned_up};
use crate::lag::{self, LagTracker, Probed, Trend};
use crate::load::{self, LoadSpec, Throughput, db_error_kind};
use crate::rows::Id;
use crate::writes::Sequence;

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
    // Raw SQL: the table is made by this tool at run time, shaped like `products`.
    diesel::sql_query(format!(
        "INSERT INTO {TABLE} (id, name, price_cents, stock, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, now(), now(), 1)"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(name)
    .bind::<BigInt, _>(price_cents)
    .bind::<Integer, _>(stock)
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
    let rows: Vec<Id> = diesel::sql_query(format!("SELECT id FROM {TABLE} WHERE id = ANY($1)"))
        .bind::<Array<SqlUuid>, _>(ids)
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}

//! The catch-up baseline: the rows write-api's catch-up run wrote, copied one transaction
//! each (as write-api made them) into the published table while the subscriptions are
//! disabled; then both are enabled and timed until they hold every row.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use uuid::Uuid;

use super::{Endpoints, Replication, TABLE, cleaned_up};
use crate::load::{self, LoadSpec, db_error_kind};

/// What logical replication did with the same backlog.
#[derive(Debug, Clone, Serialize)]
pub struct LogicalCatchup {
    pub rows: u64,
    /// From enabling the subscriptions until every subscriber held every row.
    pub seconds: f64,
    pub rows_per_second: f64,
}

/// Runs the baseline; always removes what it created.
pub async fn measure_catchup(
    endpoints: &Endpoints,
    ids: Vec<Uuid>,
    timeout: Duration,
) -> anyhow::Result<LogicalCatchup> {
    cleaned_up(endpoints, run(endpoints, ids, timeout)).await
}

async fn run(
    endpoints: &Endpoints,
    ids: Vec<Uuid>,
    timeout: Duration,
) -> anyhow::Result<LogicalCatchup> {
    let mut replication = Replication::create(endpoints, false).await?;

    // The same rows, one transaction each, 16 at a time.
    let rows = ids.len() as u64;
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let pool = storage::pool::build(&endpoints.primary_url, &{
        let mut settings = storage::PoolSettings::new("bench logical baseline");
        settings.max_size = 16;
        settings
    })?;
    let spec = LoadSpec {
        concurrency: 16,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        rate: None,
        max_ops: Some(rows),
        keep_ids: 0,
    };
    let insert = format!("INSERT INTO {TABLE} SELECT * FROM products WHERE id = $1");
    let copied = load::run(&spec, move || {
        let pool = pool.clone();
        let insert = insert.clone();
        let id = ids.get(next.fetch_add(1, Ordering::Relaxed)).copied();
        async move {
            let id = id.ok_or("no id")?;
            let mut conn = pool.get().await.map_err(|e| db_error_kind(&e))?;
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query(insert).bind::<diesel::sql_types::Uuid, _>(id),
                &mut conn,
            )
            .await
            .map_err(|e| db_error_kind(&e))?;
            Ok(None)
        }
    })
    .await?;
    if copied.errors > 0 {
        bail!(
            "copying rows into the published table: {:?}",
            copied.error_kinds
        );
    }

    let started = Instant::now();
    replication.enable().await?;
    let target = i64::try_from(rows).unwrap_or(i64::MAX);
    loop {
        let slowest = replication.slowest_count().await?;
        if slowest >= target {
            let seconds = started.elapsed().as_secs_f64();
            return Ok(LogicalCatchup {
                rows,
                seconds,
                rows_per_second: rows as f64 / seconds,
            });
        }
        if started.elapsed() > timeout {
            bail!("subscribers hold {slowest} of {rows} rows after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    use super::super::wal_level;
    use super::*;
    use crate::rows::{Count, Id};

    /// Needs a publisher with `wal_level = logical` and a subscriber (another cluster) where
    /// the login is a superuser, e.g.
    /// `BENCH_LR_PUBLISHER_URL=postgres://postgres:x@127.0.0.1:5439/lr
    ///  BENCH_LR_SUBSCRIBER_URL=postgres://postgres:x@127.0.0.1:5440/lr
    ///  cargo test -p bench -- --ignored`.
    #[tokio::test]
    #[ignore = "needs a PostgreSQL cluster with wal_level = logical and a subscriber cluster"]
    async fn replicates_the_rows_and_cleans_up() {
        let publisher = std::env::var("BENCH_LR_PUBLISHER_URL").unwrap();
        let subscriber = std::env::var("BENCH_LR_SUBSCRIBER_URL").unwrap();
        assert_eq!(wal_level(&publisher).await.unwrap(), "logical");
        for url in [&publisher, &subscriber] {
            storage::migrations::run_pending(url, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let mut conn = AsyncPgConnection::establish(&publisher).await.unwrap();
        let ids: Vec<Id> = diesel::sql_query(
            "INSERT INTO products (id, name, price_cents, stock, created_at, updated_at, version) \
             SELECT gen_random_uuid(), 'p' || i, 100, 1, now(), now(), 1 \
             FROM generate_series(1, 2000) AS i RETURNING id",
        )
        .load(&mut conn)
        .await
        .unwrap();
        let ids: Vec<Uuid> = ids.into_iter().map(|i| i.id).collect();

        let endpoints = Endpoints {
            primary_url: publisher.clone(),
            publisher_conninfo: publisher.clone(),
            subscriber_urls: vec![subscriber.clone()],
        };
        let measured = measure_catchup(&endpoints, ids, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(measured.rows, 2000);
        assert!(measured.rows_per_second > 0.0);

        let mut sub = AsyncPgConnection::establish(&subscriber).await.unwrap();
        let left: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_subscription WHERE subname LIKE 'bench_lr%'",
        )
        .get_result(&mut sub)
        .await
        .unwrap();
        assert_eq!(left.n, 0);
        let slots: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name LIKE 'bench_lr%'",
        )
        .get_result(&mut conn)
        .await
        .unwrap();
        assert_eq!(slots.n, 0);
    }
}

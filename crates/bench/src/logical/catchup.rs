//! The catch-up baseline: the same rows through PostgreSQL's own logical replication.
//!
//! Only where the primary runs with `wal_level = logical` (this tool never changes server
//! settings) and the subscriber login may create subscriptions (superuser before
//! PostgreSQL 16, `pg_create_subscription` from 16 on). The rows the catch-up wrote are
//! copied, one transaction each as write-api made them, into a published table
//! `bench_lr_products` while the subscriptions (one per replica cluster, slots kept by the
//! primary) are disabled; then both are enabled and timed until they hold every row.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde::Serialize;
use uuid::Uuid;

use crate::load::{self, LoadSpec, db_error_kind};

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// What logical replication did with the same rows.
#[derive(Debug, Clone, Serialize)]
pub struct Logical {
    pub rows: u64,
    /// From enabling the subscriptions until every subscriber held every row.
    pub seconds: f64,
    pub rows_per_second: f64,
}

/// The primary's `wal_level`: logical replication needs `logical`.
pub async fn wal_level(primary_url: &str) -> anyhow::Result<String> {
    let mut conn = AsyncPgConnection::establish(primary_url).await?;
    let setting: Setting =
        diesel::sql_query("SELECT setting AS value FROM pg_settings WHERE name = 'wal_level'")
            .get_result(&mut conn)
            .await?;
    Ok(setting.value)
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

const PUBLICATION: &str = "bench_lr";

fn subscription(index: usize) -> String {
    format!("bench_lr_{}", index + 1)
}

/// Runs the baseline; always removes what it created.
pub async fn measure(
    primary_url: &str,
    publisher_conninfo: &str,
    subscriber_urls: &[String],
    ids: Vec<Uuid>,
    timeout: Duration,
) -> anyhow::Result<Logical> {
    let outcome = run(
        primary_url,
        publisher_conninfo,
        subscriber_urls,
        ids,
        timeout,
    )
    .await;
    if let Err(error) = clean_up(primary_url, subscriber_urls).await {
        tracing::warn!(%error, "removing the logical replication baseline's objects");
    }
    outcome
}

async fn run(
    primary_url: &str,
    publisher_conninfo: &str,
    subscriber_urls: &[String],
    ids: Vec<Uuid>,
    timeout: Duration,
) -> anyhow::Result<Logical> {
    let mut primary = AsyncPgConnection::establish(primary_url).await?;
    primary
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {PUBLICATION}; \
             DROP TABLE IF EXISTS bench_lr_products; \
             CREATE TABLE bench_lr_products (LIKE products INCLUDING ALL); \
             CREATE PUBLICATION {PUBLICATION} FOR TABLE bench_lr_products;"
        ))
        .await
        .context("creating the publication on the primary")?;
    let mut subscribers = Vec::new();
    for (i, url) in subscriber_urls.iter().enumerate() {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .with_context(|| format!("connecting to subscriber {}", i + 1))?;
        conn.batch_execute(
            "DROP TABLE IF EXISTS bench_lr_products; \
             CREATE TABLE bench_lr_products (LIKE products INCLUDING ALL);",
        )
        .await?;
        // Not in a transaction block, as CREATE SUBSCRIPTION requires. The slot is made now,
        // so the primary keeps every change from here on for the disabled subscription.
        conn.batch_execute(&format!(
            "CREATE SUBSCRIPTION {name} CONNECTION {conninfo} PUBLICATION {PUBLICATION} \
             WITH (enabled = false, copy_data = false, slot_name = {slot})",
            name = subscription(i),
            conninfo = quote(publisher_conninfo),
            slot = quote(&subscription(i)),
        ))
        .await
        .with_context(|| format!("creating a subscription on subscriber {}", i + 1))?;
        subscribers.push(conn);
    }

    // The same rows, one transaction each, 16 at a time.
    let rows = ids.len() as u64;
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let pool = storage::pool::build(primary_url, &{
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
    let copied = load::run(&spec, move || {
        let pool = pool.clone();
        let id = ids.get(next.fetch_add(1, Ordering::Relaxed)).copied();
        async move {
            let id = id.ok_or("no id")?;
            let mut conn = pool.get().await.map_err(|e| db_error_kind(&e))?;
            diesel::sql_query("INSERT INTO bench_lr_products SELECT * FROM products WHERE id = $1")
                .bind::<diesel::sql_types::Uuid, _>(id)
                .execute(&mut conn)
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
    for (i, conn) in subscribers.iter_mut().enumerate() {
        conn.batch_execute(&format!("ALTER SUBSCRIPTION {} ENABLE", subscription(i)))
            .await?;
    }
    let target = i64::try_from(rows).unwrap_or(i64::MAX);
    loop {
        let mut slowest = i64::MAX;
        for conn in subscribers.iter_mut() {
            let count: Count = diesel::sql_query("SELECT count(*) AS n FROM bench_lr_products")
                .get_result(conn)
                .await?;
            slowest = slowest.min(count.n);
        }
        if slowest >= target {
            let seconds = started.elapsed().as_secs_f64();
            return Ok(Logical {
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

async fn clean_up(primary_url: &str, subscriber_urls: &[String]) -> anyhow::Result<()> {
    for (i, url) in subscriber_urls.iter().enumerate() {
        let mut conn = AsyncPgConnection::establish(url).await?;
        // Dropping the subscription also drops its slot on the primary.
        conn.batch_execute(&format!("DROP SUBSCRIPTION IF EXISTS {}", subscription(i)))
            .await?;
        conn.batch_execute("DROP TABLE IF EXISTS bench_lr_products")
            .await?;
    }
    let mut primary = AsyncPgConnection::establish(primary_url).await?;
    primary
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {PUBLICATION}; DROP TABLE IF EXISTS bench_lr_products;"
        ))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: Uuid,
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

        let subscribers = vec![subscriber.clone()];
        let measured = measure(
            &publisher,
            &publisher,
            &subscribers,
            ids,
            Duration::from_secs(60),
        )
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

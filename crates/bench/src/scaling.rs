//! The scaling table (`--scaling`): how read-api's cost grows with load and with data. With
//! 10,000 and then 1,000,000 products in the table, each listed query runs through read-api
//! at each concurrency; the target is every query's p99 ≤ 50 ms at 1M rows at concurrency 16.
//! (Writes at concurrency 1 to 256 are the write phase's, given `--write-concurrency`.)
//!
//! The rows are seeded straight into the primary and both replicas, identically, in one
//! `INSERT … SELECT FROM generate_series` each: through write-api, 1M rows would take minutes
//! and measure the write path, which the other phases do. The phase needs the fresh, empty
//! `bench` database (it runs first) and empties `products` again at the end, so the phases
//! after it see what they would have seen without it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use rand::Rng;
use serde::Serialize;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::load::{self, LoadSpec, Throughput};
use crate::reads::{self, ServedBy};
use crate::report::Figure;
use crate::rows::Count;

/// Table sizes measured, in order.
pub const SIZES: [u64; 2] = [10_000, 1_000_000];
/// The concurrency the target judges.
pub const JUDGED_CONCURRENCY: usize = 16;
/// The table size the target judges.
pub const JUDGED_ROWS: u64 = 1_000_000;
/// The p99 every query must stay under at that size and concurrency.
pub const P99_LIMIT_MS: f64 = 50.0;
/// URLs prepared per query kind; each request picks one at random.
const URLS_PER_QUERY: usize = 2_000;

/// One cell of the table.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRun {
    pub rows: u64,
    pub query: String,
    pub concurrency: usize,
    pub reads: Figure<Throughput>,
}

/// What the phase needs.
pub struct ScalingPlan<'a> {
    pub primary_url: &'a str,
    pub replica_urls: &'a [String],
    pub read_url: &'a str,
    pub client: reqwest::Client,
    pub concurrencies: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(diesel::QueryableByName)]
struct Sample {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
}

/// Runs the table, then empties `products` on every database whatever the outcome.
pub async fn measure(plan: &ScalingPlan<'_>) -> anyhow::Result<Vec<ScalingRun>> {
    let outcome = run(plan).await;
    if let Err(error) = on_every_database(plan, "TRUNCATE products", "TRUNCATE products").await {
        tracing::warn!(%error, "emptying products after the scaling table");
    }
    outcome
}

async fn run(plan: &ScalingPlan<'_>) -> anyhow::Result<Vec<ScalingRun>> {
    let mut primary = AsyncPgConnection::establish(plan.primary_url).await?;
    let existing: Count = diesel::sql_query("SELECT count(*) AS n FROM products")
        .get_result(&mut primary)
        .await?;
    if existing.n > 0 {
        bail!(
            "the scaling table needs an empty products table (the bench database is made anew \
             for each run and this phase runs first), found {} rows",
            existing.n
        );
    }
    let mut runs = Vec::new();
    let mut seeded = 0;
    for rows in SIZES {
        tracing::info!(rows, "scaling: seeding the primary and both replicas");
        seed(plan, seeded + 1, rows).await?;
        seeded = rows;
        // read-api's next health checks must see the seed as copied, or the runs would
        // measure the primary standing in for the replicas.
        tokio::time::sleep(Duration::from_secs(2)).await;
        reads::replicas_in_rotation(&plan.client, plan.read_url).await?;
        let queries = queries(plan, rows).await?;
        for (query, urls) in &queries {
            for &concurrency in &plan.concurrencies {
                // Every query at the judged concurrency; the lookup by id at every one.
                if concurrency != JUDGED_CONCURRENCY && *query != "by id" {
                    continue;
                }
                tracing::info!(rows, query, concurrency, "scaling: reads");
                let spec = LoadSpec {
                    concurrency,
                    warmup: plan.warmup,
                    duration: plan.duration,
                    rate: None,
                    max_ops: None,
                    keep_ids: 0,
                };
                let served_by = ServedBy::default();
                let op = reads::api_any(plan.client.clone(), Arc::clone(urls), served_by.clone());
                let mut reads = load::run(&spec, op).await;
                if let Ok(t) = &mut reads {
                    t.served_by = served_by.take();
                }
                runs.push(ScalingRun {
                    rows,
                    query: (*query).to_owned(),
                    concurrency,
                    reads: Figure::from_result(reads),
                });
            }
        }
    }
    Ok(runs)
}

/// Products `from..=to`, the same rows on every database: a random-looking id and name per
/// number, prices spread over 1.00-10,000.99, one in a thousand out of stock.
async fn seed(plan: &ScalingPlan<'_>, from: u64, to: u64) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO products (id, name, price_cents, stock, created_at, updated_at, version) \
         SELECT md5('bench-scale-' || i)::uuid, 'scale product ' || md5(i::text), \
                (i * 7919) % 1000000 + 100, i % 1000, \
                timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond', \
                timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond', 1 \
         FROM generate_series({from}::bigint, {to}::bigint) AS i; \
         ANALYZE products;"
    );
    // On the replicas the rows count as copied, as a completed catch-up would record: without
    // it read-api rightly sees them lacking the primary's (seeded) changes and reads from the
    // primary instead.
    let on_replicas = format!(
        "{sql} UPDATE replication_status SET last_event_at = \
         greatest(last_event_at, (SELECT max(updated_at) FROM products));"
    );
    on_every_database(plan, &sql, &on_replicas)
        .await
        .with_context(|| format!("seeding products {from} to {to}"))
}

/// Runs `on_primary` on the primary and `on_replicas` on each replica, all at once.
async fn on_every_database(
    plan: &ScalingPlan<'_>,
    on_primary: &str,
    on_replicas: &str,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let primary = std::iter::once((plan.primary_url, on_primary));
    let replicas = plan
        .replica_urls
        .iter()
        .map(|url| (url.as_str(), on_replicas));
    for (url, sql) in primary.chain(replicas) {
        let url = url.to_owned();
        let sql = sql.to_owned();
        tasks.spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute("SET statement_timeout = 0").await?;
            conn.batch_execute(&sql).await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// The listed queries, each as URLs to pick from: by id, the first page, each filter alone
/// (a rare name substring, a narrow price range, out of stock), and a page in the middle of
/// the table.
async fn queries(
    plan: &ScalingPlan<'_>,
    rows: u64,
) -> anyhow::Result<Vec<(&'static str, Arc<Vec<String>>)>> {
    let base = format!("{}/api/products", plan.read_url.trim_end_matches('/'));
    let mut replica = AsyncPgConnection::establish(&plan.replica_urls[0]).await?;
    let samples: Vec<Sample> = diesel::sql_query(format!(
        "SELECT id, name FROM products TABLESAMPLE BERNOULLI ({}) LIMIT {URLS_PER_QUERY}",
        (URLS_PER_QUERY as f64 * 200.0 / rows as f64).min(100.0)
    ))
    .load(&mut replica)
    .await?;
    if samples.is_empty() {
        bail!("no products sampled from replica-1");
    }
    let mut rng = rand::rng();
    let by_id = samples.iter().map(|s| format!("{base}/{}", s.id)).collect();
    let by_name = samples
        .iter()
        .map(|s| {
            // Five characters of the name's hex part: one row or a few match.
            let hex = s.name.trim_start_matches("scale product ");
            let at = rng.random_range(0..hex.len().saturating_sub(5).max(1));
            format!(
                "{base}?limit=100&name={}",
                &hex[at..(at + 5).min(hex.len())]
            )
        })
        .collect();
    let by_price = (0..URLS_PER_QUERY)
        .map(|_| {
            let cents = rng.random_range(100..1_000_000_u64);
            let low = format!("{}.{:02}", cents / 100, cents % 100);
            let high = format!("{}.{:02}", (cents + 50) / 100, (cents + 50) % 100);
            format!("{base}?limit=100&minPrice={low}&maxPrice={high}")
        })
        .collect();
    let deep = deep_cursor(&plan.client, &base, rows / 2).await?;
    Ok(vec![
        ("by id", Arc::new(by_id)),
        ("first page", Arc::new(vec![format!("{base}?limit=100")])),
        ("name substring", Arc::new(by_name)),
        ("narrow price range", Arc::new(by_price)),
        (
            "out of stock",
            Arc::new(vec![format!("{base}?limit=100&inStock=false")]),
        ),
        (
            "deep page",
            Arc::new(vec![format!("{base}?limit=100&cursor={deep}")]),
        ),
    ])
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    next_cursor: Option<String>,
}

/// The cursor of the page that starts after about `skip` rows, by walking pages of 1,000.
async fn deep_cursor(client: &reqwest::Client, base: &str, skip: u64) -> anyhow::Result<String> {
    let mut cursor: Option<String> = None;
    for _ in 0..skip.div_ceil(1000).max(1) {
        let mut url = format!("{base}?limit=1000");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let page: Page = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("walking to a deep page")?;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    cursor.context("the table has a single page")
}

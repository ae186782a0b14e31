//! The write operations: `POST /api/products` through write-api, and the baseline, the same
//! transaction (a product row and its outbox row) sent by this tool straight to the primary.
//!
//! The baseline writes to copies of the two tables (`bench_direct_products`,
//! `bench_direct_outbox`, same columns, indexes and constraints) so that write-api's outbox
//! relay does not pick its rows up and publish them: that would load the machine during the
//! baseline and flatter the product.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde::Deserialize;
use storage::DbPool;
use uuid::Uuid;

use crate::lag::LagTracker;
use crate::load::{OpResult, db_error_kind, http_error_kind};

diesel::table! {
    bench_direct_products (id) {
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

diesel::table! {
    bench_direct_outbox (seq) {
        seq -> Int8,
        event_id -> Uuid,
        product_id -> Uuid,
        version -> Int8,
        name -> Text,
        price_cents -> Int8,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        request_id -> Nullable<Text>,
        enqueued_at -> Timestamptz,
    }
}

/// Copies of `products` and `outbox` for the baseline, made anew each run. The outbox copy
/// gets its own sequence and the migration's autovacuum settings.
const CREATE_DIRECT_TABLES: &str = "
DROP TABLE IF EXISTS bench_direct_products, bench_direct_outbox;
DROP SEQUENCE IF EXISTS bench_direct_outbox_seq;
CREATE TABLE bench_direct_products (LIKE products INCLUDING ALL);
CREATE TABLE bench_direct_outbox (LIKE outbox INCLUDING ALL EXCLUDING DEFAULTS);
CREATE SEQUENCE bench_direct_outbox_seq OWNED BY bench_direct_outbox.seq;
ALTER TABLE bench_direct_outbox
    ALTER COLUMN seq SET DEFAULT nextval('bench_direct_outbox_seq'),
    ALTER COLUMN enqueued_at SET DEFAULT clock_timestamp();
ALTER TABLE bench_direct_outbox SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000
);
";

pub async fn create_direct_tables(primary_url: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(primary_url)
        .await
        .context("connecting to the primary")?;
    conn.batch_execute(CREATE_DIRECT_TABLES)
        .await
        .context("creating the baseline tables bench_direct_products and bench_direct_outbox")
}

pub async fn drop_direct_tables(primary_url: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(primary_url).await?;
    conn.batch_execute("DROP TABLE IF EXISTS bench_direct_products, bench_direct_outbox")
        .await?;
    Ok(())
}

/// What varies from one write to the next.
#[derive(Clone, Default)]
pub struct Sequence(Arc<AtomicU64>);

impl Sequence {
    /// The next product's name, price in cents and stock.
    pub fn next(&self) -> (String, i64, i32) {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let price_cents = i64::try_from(100 + (n * 7919) % 1_000_000).unwrap_or(100);
        let stock = i32::try_from(n % 1000).unwrap_or(0);
        (format!("bench product {n}"), price_cents, stock)
    }
}

#[derive(Deserialize)]
struct Created {
    data: CreatedData,
}

#[derive(Deserialize)]
struct CreatedData {
    id: Uuid,
}

/// `POST /api/products`, expecting 201. When `lag` is given, every `track_every`-th created
/// product is handed to it with the time its 201 arrived.
pub fn api_create(
    client: reqwest::Client,
    base_url: &str,
    sequence: Sequence,
    lag: Option<(Arc<LagTracker>, u64)>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = OpResult> + Send>> + Send + Sync + 'static {
    let url: Arc<str> = format!("{}/api/products", base_url.trim_end_matches('/')).into();
    let counter = Arc::new(AtomicU64::new(0));
    move || {
        let client = client.clone();
        let url = Arc::clone(&url);
        let (name, price_cents, stock) = sequence.next();
        let lag = lag.clone();
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            // A JSON number with at most 2 decimals, as a client sends it.
            let body = format!(
                r#"{{"name":"{name}","price":{}.{:02},"stock":{stock}}}"#,
                price_cents / 100,
                price_cents % 100
            );
            let response = client
                .post(&*url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| http_error_kind(&e))?;
            let acked = Instant::now();
            let status = response.status();
            if status != reqwest::StatusCode::CREATED {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            let created: Created = response.json().await.map_err(|e| http_error_kind(&e))?;
            if let Some((tracker, every)) = lag
                && n.is_multiple_of(every.max(1))
            {
                tracker.track(created.data.id, acked);
            }
            Ok(Some(created.data.id))
        })
    }
}

#[derive(Queryable)]
struct DirectRow {
    id: Uuid,
    name: String,
    price_cents: i64,
    stock: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    deleted_at: Option<DateTime<Utc>>,
}

/// The baseline write: the plainest transaction that does a create's work, one product
/// insert and its outbox row, on the copies of the tables, through a pool as write-api does.
/// (write-api itself groups concurrent writes: advisory locks, one upsert and one outbox
/// insert per group; see `write_api::group_commit`.)
pub fn direct_create(
    pool: DbPool,
    deadline: Duration,
    sequence: Sequence,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = OpResult> + Send>> + Send + Sync + 'static {
    move || {
        let pool = pool.clone();
        let (name, price_cents, stock) = sequence.next();
        Box::pin(async move {
            let work = async {
                let mut conn = pool.get().await.map_err(|e| db_error_kind(&e))?;
                conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                    insert_direct(conn, &name, price_cents, stock).await
                })
                .await
                .map_err(|e| db_error_kind(&e))
            };
            tokio::time::timeout(deadline, work)
                .await
                .map_err(|_| "timeout".to_owned())?
        })
    }
}

async fn insert_direct(
    conn: &mut AsyncPgConnection,
    name: &str,
    price_cents: i64,
    stock: i32,
) -> Result<Option<Uuid>, diesel::result::Error> {
    use bench_direct_outbox as outbox;
    use bench_direct_products as products;
    use diesel::dsl::now;

    let row: Option<DirectRow> = diesel::insert_into(products::table)
        .values((
            products::id.eq(Uuid::now_v7()),
            products::name.eq(name),
            products::price_cents.eq(price_cents),
            products::stock.eq(stock),
            products::created_at.eq(now),
            products::updated_at.eq(now),
            products::version.eq(1_i64),
        ))
        .on_conflict_do_nothing()
        .returning(products::all_columns)
        .get_result(conn)
        .await
        .optional()?;
    let Some(row) = row else {
        return Ok(None);
    };
    diesel::insert_into(outbox::table)
        .values((
            outbox::event_id.eq(Uuid::now_v7()),
            outbox::product_id.eq(row.id),
            outbox::version.eq(row.version),
            outbox::name.eq(&row.name),
            outbox::price_cents.eq(row.price_cents),
            outbox::stock.eq(row.stock),
            outbox::created_at.eq(row.created_at),
            outbox::updated_at.eq(row.updated_at),
            outbox::deleted_at.eq(row.deleted_at),
            outbox::request_id.eq(Some("bench")),
        ))
        .execute(conn)
        .await?;
    Ok(Some(row.id))
}

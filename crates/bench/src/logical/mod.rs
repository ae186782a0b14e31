//! Baselines through PostgreSQL's own logical replication, to the same two replica clusters:
//! the writes (`writes`: the same inserts at the same concurrency, with replica-visible lag
//! probed as for write-api) and the catch-up (`catchup`: the same backlog replayed).
//!
//! They need a primary with `wal_level = logical` (`make bench` makes its own primary
//! cluster so; this tool never changes server settings) and subscriber logins that may create
//! subscriptions (superuser before PostgreSQL 16, `pg_create_subscription` from 16 on). Each
//! makes a published table `bench_lr_products` shaped like `products` on the primary, the same
//! table and one subscription per replica cluster (slot kept by the primary), and removes all
//! of it when done, also when it fails.

mod catchup;
mod writes;

use anyhow::{Context, bail};
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::rows::Count;

pub use catchup::{LogicalCatchup, measure_catchup};
pub use writes::{LogicalWrites, WritePlan, existing_ids, measure_writes};

/// The table both baselines replicate, on the primary and on every subscriber.
pub const TABLE: &str = "bench_lr_products";
const PUBLICATION: &str = "bench_lr";

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

/// Where the baselines run.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The primary, as this tool connects to it (it creates the table and the publication).
    pub primary_url: String,
    /// How the subscribers reach the primary (a login with the REPLICATION attribute).
    pub publisher_conninfo: String,
    /// One database per replica cluster, where the login may create subscriptions.
    pub subscriber_urls: Vec<String>,
}

impl Endpoints {
    /// Fails, saying why, unless the primary can publish.
    pub async fn check(&self) -> anyhow::Result<()> {
        let level = wal_level(&self.primary_url)
            .await
            .context("reading wal_level on the primary")?;
        if level != "logical" {
            bail!(
                "the primary runs with wal_level = {level}; PostgreSQL's logical replication \
                 needs 'logical', and this tool does not change server settings"
            );
        }
        Ok(())
    }
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

fn subscription(index: usize) -> String {
    format!("bench_lr_{}", index + 1)
}

/// The published table and one subscription per replica cluster, made anew.
struct Replication {
    subscribers: Vec<AsyncPgConnection>,
}

impl Replication {
    /// Makes the table and publication on the primary, and the table and a subscription on
    /// every subscriber: `enabled` ones stream from now on, disabled ones keep their slot,
    /// so the primary holds every change for them until they are enabled.
    async fn create(endpoints: &Endpoints, enabled: bool) -> anyhow::Result<Self> {
        let mut primary = AsyncPgConnection::establish(&endpoints.primary_url).await?;
        primary
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {PUBLICATION}; \
                 DROP TABLE IF EXISTS {TABLE}; \
                 CREATE TABLE {TABLE} (LIKE products INCLUDING ALL); \
                 CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE};"
            ))
            .await
            .context("creating the publication on the primary")?;
        let mut subscribers = Vec::new();
        for (i, url) in endpoints.subscriber_urls.iter().enumerate() {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .with_context(|| format!("connecting to subscriber {}", i + 1))?;
            conn.batch_execute(&format!(
                "DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (LIKE products INCLUDING ALL);"
            ))
            .await?;
            // Not in a transaction block, as CREATE SUBSCRIPTION requires.
            conn.batch_execute(&format!(
                "CREATE SUBSCRIPTION {name} CONNECTION {conninfo} PUBLICATION {PUBLICATION} \
                 WITH (enabled = {enabled}, copy_data = false, slot_name = {slot})",
                name = subscription(i),
                conninfo = quote(&endpoints.publisher_conninfo),
                slot = quote(&subscription(i)),
            ))
            .await
            .with_context(|| format!("creating a subscription on subscriber {}", i + 1))?;
            subscribers.push(conn);
        }
        Ok(Self { subscribers })
    }

    async fn enable(&mut self) -> anyhow::Result<()> {
        for (i, conn) in self.subscribers.iter_mut().enumerate() {
            conn.batch_execute(&format!("ALTER SUBSCRIPTION {} ENABLE", subscription(i)))
                .await?;
        }
        Ok(())
    }

    /// The fewest rows any subscriber holds.
    async fn slowest_count(&mut self) -> anyhow::Result<i64> {
        let mut slowest = i64::MAX;
        for conn in self.subscribers.iter_mut() {
            let count: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {TABLE}"))
                .get_result(conn)
                .await?;
            slowest = slowest.min(count.n);
        }
        Ok(slowest)
    }
}

/// Removes what [`Replication::create`] made, as far as it got.
async fn clean_up(endpoints: &Endpoints) -> anyhow::Result<()> {
    for (i, url) in endpoints.subscriber_urls.iter().enumerate() {
        let mut conn = AsyncPgConnection::establish(url).await?;
        // Dropping the subscription also drops its slot on the primary.
        conn.batch_execute(&format!("DROP SUBSCRIPTION IF EXISTS {}", subscription(i)))
            .await?;
        conn.batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))
            .await?;
    }
    let mut primary = AsyncPgConnection::establish(&endpoints.primary_url).await?;
    primary
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {PUBLICATION}; DROP TABLE IF EXISTS {TABLE};"
        ))
        .await?;
    Ok(())
}

/// Runs `baseline` and cleans up after it whatever its outcome.
async fn cleaned_up<T>(
    endpoints: &Endpoints,
    baseline: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let outcome = baseline.await;
    if let Err(error) = clean_up(endpoints).await {
        tracing::warn!(%error, "removing the logical replication baseline's objects");
    }
    outcome
}

//! The `products` table: rows, and the queries both the primary and the replicas run.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{Price, Product, ProductId, ProductName, Stock, Version};
use uuid::Uuid;

use crate::StorageError;
use crate::schema::products;

/// A `products` row exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub struct ProductRow {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub stock: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl ProductRow {
    pub fn into_product(self) -> Result<Product, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            table: "products",
            reason: format!("product {}: {reason}", self.id),
        };
        Ok(Product {
            id: ProductId::from(self.id),
            name: ProductName::parse(&self.name).map_err(|e| corrupt(e.to_string()))?,
            price: Price::from_cents(self.price_cents).map_err(|e| corrupt(e.to_string()))?,
            stock: Stock::new(i64::from(self.stock)).map_err(|e| corrupt(e.to_string()))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: Version::new(self.version)
                .ok_or_else(|| corrupt(format!("version {}", self.version)))?,
            deleted_at: self.deleted_at,
        })
    }
}

impl From<&Product> for ProductRow {
    fn from(product: &Product) -> Self {
        Self {
            id: product.id.as_uuid(),
            name: product.name.as_str().to_owned(),
            price_cents: product.price.cents(),
            stock: product.stock.units(),
            created_at: product.created_at,
            updated_at: product.updated_at,
            version: product.version.get(),
            deleted_at: product.deleted_at,
        }
    }
}

/// The row for `id`, live or tombstone.
pub async fn find(
    conn: &mut AsyncPgConnection,
    id: ProductId,
) -> Result<Option<Product>, StorageError> {
    products::table
        .find(id.as_uuid())
        .select(ProductRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(ProductRow::into_product)
        .transpose()
}

/// The rows of `ids` (live or tombstones; absent ids are missing from the answer), in one
/// statement (`WHERE id = ANY($1)`): many lookups, one round trip.
pub async fn find_many(
    conn: &mut AsyncPgConnection,
    ids: &[ProductId],
) -> Result<Vec<Product>, StorageError> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    products::table
        .filter(products::id.eq_any(ids))
        .select(ProductRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(ProductRow::into_product)
        .collect()
}

/// Takes transaction-scoped advisory locks on `ids` (live, deleted or absent alike), in one
/// fixed order so two groups of writes never deadlock, and then reads their rows and the
/// transaction's `now()`. Every write goes through this (one group at a time per id), so the
/// rows read are the latest and an absent id stays absent until the lock is released.
///
/// Two statements: in READ COMMITTED a statement sees what was committed when it *began*, so
/// the rows must be read after the locks are held, not in the statement that waits for them.
/// They are pipelined (sent together, one round trip): the server still runs them one after
/// the other, so the read's snapshot is taken once the locks are held. `now()` (the
/// transaction's start, whichever statement asks) comes with the locks.
pub async fn lock_group(
    conn: &AsyncPgConnection,
    ids: &[ProductId],
) -> Result<(DateTime<Utc>, Vec<Product>), StorageError> {
    let mut keys: Vec<i64> = ids.iter().map(|id| lock_key(*id)).collect();
    keys.sort_unstable();
    keys.dedup();
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let (mut locking, mut reading) = (conn, conn);
    let (locked, read) = tokio::join!(
        crate::prepared::LockKeys { keys }.get_result::<DateTime<Utc>>(&mut locking),
        products::table
            .filter(products::id.eq_any(uuids))
            .select(ProductRow::as_select())
            .load::<ProductRow>(&mut reading),
    );
    // The read fails after a failed lock (the transaction is aborted): the lock's error is
    // the one that says why.
    let now = locked?;
    let products = read?
        .into_iter()
        .map(ProductRow::into_product)
        .collect::<Result<_, _>>()?;
    Ok((now, products))
}

/// A product id's advisory lock key: its 128 bits folded to 64 (collisions only make two
/// unrelated writes wait for each other).
fn lock_key(id: ProductId) -> i64 {
    let (high, low) = id.as_uuid().as_u64_pair();
    i64::from_ne_bytes((high ^ low).to_ne_bytes())
}

/// Stores `rows` (each a product's state after the writes of one group), one statement.
/// Takes a shared connection so that it can be pipelined with the group's outbox insert.
pub async fn store(conn: &AsyncPgConnection, rows: &[ProductRow]) -> Result<(), StorageError> {
    let stored = crate::replica::apply(conn, rows).await?;
    if stored != rows.len() {
        // Every row is one version above what was read under the lock: anything else means a
        // writer that skipped the lock.
        return Err(StorageError::Corrupt {
            table: "products",
            reason: format!(
                "{} of {} rows were newer than the locked read",
                rows.len() - stored,
                rows.len()
            ),
        });
    }
    Ok(())
}

/// What a page of the live listing asks for: rows after a keyset position in
/// `(created_at, id)` order, narrowed by the documented filters.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Rows to return (one more is read to learn whether another page follows).
    pub limit: i64,
    /// Strictly after this `(created_at, id)`.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// An `ILIKE` pattern, already escaped.
    pub name_pattern: Option<String>,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    /// `Some(true)`: stock above 0; `Some(false)`: stock 0.
    pub in_stock: Option<bool>,
}

/// Up to `query.limit + 1` live rows for a page of the listing. Keyset pagination: new rows
/// get a later `created_at`, so rows inserted while a client pages never shift what it has
/// not seen yet.
pub async fn live_page(
    conn: &mut AsyncPgConnection,
    query: &PageQuery,
) -> Result<Vec<ProductRow>, StorageError> {
    let mut select = products::table
        .filter(products::deleted_at.is_null())
        .select(ProductRow::as_select())
        .order((products::created_at.asc(), products::id.asc()))
        .limit(query.limit + 1)
        .into_boxed();
    if let Some((created_at, id)) = query.after {
        // `created_at >= c` first gives the planner a range on the (created_at, id) index.
        select = select.filter(
            products::created_at
                .ge(created_at)
                .and(products::created_at.gt(created_at).or(products::id.gt(id))),
        );
    }
    if let Some(pattern) = &query.name_pattern {
        select = select.filter(products::name.ilike(pattern.clone()));
    }
    if let Some(min) = query.min_price_cents {
        select = select.filter(products::price_cents.ge(min));
    }
    if let Some(max) = query.max_price_cents {
        select = select.filter(products::price_cents.le(max));
    }
    match query.in_stock {
        Some(true) => select = select.filter(products::stock.gt(0)),
        Some(false) => select = select.filter(products::stock.eq(0)),
        None => {}
    }
    Ok(select.load(conn).await?)
}

/// The trigram index behind the `name` filter (migration `listing_indexes`).
const NAME_INDEX: &str = "products_live_name_trgm";

/// Merges the entries waiting in the name index's pending list into the index now, and says
/// how many pending-list pages that emptied. GIN queues new entries and otherwise merges them
/// inside whichever write pushes the list past its limit, making that one statement slow;
/// merging from a session of its own keeps the cost off the writes (see the replicator's
/// index merger).
pub async fn merge_name_index_pending_list(
    conn: &mut AsyncPgConnection,
) -> Result<i64, StorageError> {
    #[derive(QueryableByName)]
    struct Merged {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        pages: i64,
    }
    let merged: Merged = diesel::sql_query("SELECT gin_clean_pending_list($1::regclass) AS pages")
        .bind::<diesel::sql_types::Text, _>(NAME_INDEX)
        .get_result(conn)
        .await?;
    Ok(merged.pages)
}

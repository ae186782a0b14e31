//! The queries read-api runs, the same on a replica and on the primary. Tombstones (rows with
//! `deleted_at` set) never leave this module as products: a page skips them, and a lookup
//! hands them back as [`Found::Deleted`] so the caller can honour `X-Min-Version`.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{Product, ProductId, Version};
use storage::StorageError;
use storage::products::ProductRow;
use storage::schema::products;

use crate::cursor::Cursor;
use crate::list_query::ListRequest;

/// One read, run as one statement on whichever source is chosen.
#[derive(Debug, Clone)]
pub enum Read {
    List(ListRequest),
    Get(ProductId),
}

/// What a source answered.
#[derive(Debug)]
pub enum Answer {
    Page(Page),
    Get(Found),
}

/// A page of live products in `(created_at, id)` order.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Product>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// A product id as one source knows it.
#[derive(Debug)]
pub enum Found {
    Live(Product),
    Deleted(Version),
    Absent,
}

impl Found {
    /// The version this source holds, tombstones included.
    pub fn version(&self) -> Option<Version> {
        match self {
            Found::Live(product) => Some(product.version),
            Found::Deleted(version) => Some(*version),
            Found::Absent => None,
        }
    }
}

pub async fn execute(conn: &mut AsyncPgConnection, read: &Read) -> Result<Answer, StorageError> {
    match read {
        Read::List(request) => list(conn, request).await.map(Answer::Page),
        Read::Get(id) => get(conn, *id).await.map(Answer::Get),
    }
}

async fn get(conn: &mut AsyncPgConnection, id: ProductId) -> Result<Found, StorageError> {
    Ok(match storage::products::find(conn, id).await? {
        Some(product) if product.is_deleted() => Found::Deleted(product.version),
        Some(product) => Found::Live(product),
        None => Found::Absent,
    })
}

/// Keyset pagination: rows after the cursor in `(created_at, id)` order, one more than the
/// page holds to learn whether another page follows. New rows get a later `created_at`, so
/// rows inserted while a client pages never shift what it has not seen yet.
async fn list(conn: &mut AsyncPgConnection, request: &ListRequest) -> Result<Page, StorageError> {
    let mut query = products::table
        .filter(products::deleted_at.is_null())
        .select(ProductRow::as_select())
        .order((products::created_at.asc(), products::id.asc()))
        .limit(request.limit + 1)
        .into_boxed();
    if let Some(after) = &request.after {
        // `created_at >= c` first gives the planner a range on the (created_at, id) index.
        query = query.filter(
            products::created_at.ge(after.created_at).and(
                products::created_at
                    .gt(after.created_at)
                    .or(products::id.gt(after.id)),
            ),
        );
    }
    let filter = &request.filter;
    if let Some(pattern) = &filter.name_pattern {
        query = query.filter(products::name.ilike(pattern.clone()));
    }
    if let Some(min) = filter.min_price {
        query = query.filter(products::price_cents.ge(min.cents()));
    }
    if let Some(max) = filter.max_price {
        query = query.filter(products::price_cents.le(max.cents()));
    }
    match filter.in_stock {
        Some(true) => query = query.filter(products::stock.gt(0)),
        Some(false) => query = query.filter(products::stock.eq(0)),
        None => {}
    }

    let mut rows: Vec<ProductRow> = query.load(conn).await?;
    let more = rows.len() as i64 > request.limit;
    rows.truncate(usize::try_from(request.limit).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last()).flatten().map(|last| Cursor {
        created_at: last.created_at,
        id: last.id,
    });
    let items = rows
        .into_iter()
        .map(ProductRow::into_product)
        .collect::<Result<_, _>>()?;
    Ok(Page { items, next })
}

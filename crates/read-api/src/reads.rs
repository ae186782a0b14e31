//! The queries read-api runs, the same on a replica and on the primary. Tombstones (rows with
//! `deleted_at` set) never leave this module as products: a page skips them, and a lookup
//! hands them back as [`Found::Deleted`] so the caller can honour `X-Min-Version`.

use domain::{Product, ProductId, Version};
use storage::products::{PageQuery, ProductRow};
use storage::{AsyncPgConnection, StorageError};

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
    /// What a stored row (or its absence) says about an id.
    pub fn from_row(row: Option<Product>) -> Self {
        match row {
            Some(product) if product.is_deleted() => Found::Deleted(product.version),
            Some(product) => Found::Live(product),
            None => Found::Absent,
        }
    }

    /// The version this source holds, tombstones included.
    pub fn version(&self) -> Option<Version> {
        match self {
            Found::Live(product) => Some(product.version),
            Found::Deleted(version) => Some(*version),
            Found::Absent => None,
        }
    }
}

/// A listing, run as one statement. Lookups by id go through [`crate::lookups`], which
/// batches them.
pub async fn list(
    conn: &mut AsyncPgConnection,
    request: &ListRequest,
) -> Result<Page, StorageError> {
    let filter = &request.filter;
    let query = PageQuery {
        limit: request.limit,
        after: request.after.as_ref().map(|c| (c.created_at, c.id)),
        name_pattern: filter.name_pattern.clone(),
        min_price_cents: filter.min_price.map(|p| p.cents()),
        max_price_cents: filter.max_price.map(|p| p.cents()),
        in_stock: filter.in_stock,
    };
    let mut rows = storage::products::live_page(conn, &query).await?;
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

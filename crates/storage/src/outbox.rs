//! The `outbox` table: changes committed on the primary and not yet confirmed by the broker.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{ChangeEvent, Product};
use uuid::Uuid;

use crate::StorageError;
use crate::products::ProductRow;
use crate::schema::outbox;

/// An outbox row: one change event waiting to be published.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: Uuid,
    pub product_id: Uuid,
    pub version: i64,
    pub name: String,
    pub price_cents: i64,
    pub stock: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

/// A change event read back from the outbox, with what travels beside it.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub event: ChangeEvent,
    pub request_id: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

impl OutboxRow {
    pub fn into_pending(self) -> Result<PendingEvent, StorageError> {
        let product = ProductRow {
            id: self.product_id,
            name: self.name,
            price_cents: self.price_cents,
            stock: self.stock,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            deleted_at: self.deleted_at,
        }
        .into_product()?;
        Ok(PendingEvent {
            event: ChangeEvent {
                event_id: self.event_id,
                seq: self.seq,
                product,
            },
            request_id: self.request_id,
            enqueued_at: self.enqueued_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    event_id: Uuid,
    product_id: Uuid,
    version: i64,
    name: &'a str,
    price_cents: i64,
    stock: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    request_id: Option<&'a str>,
}

/// Records the change that left `product` as it is. Call it in the transaction that wrote
/// the product, so both commit or neither does.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    product: &Product,
    request_id: Option<&str>,
) -> Result<(), StorageError> {
    let row = NewOutboxRow {
        event_id: Uuid::now_v7(),
        product_id: product.id.as_uuid(),
        version: product.version.get(),
        name: product.name.as_str(),
        price_cents: product.price.cents(),
        stock: product.stock.units(),
        created_at: product.created_at,
        updated_at: product.updated_at,
        deleted_at: product.deleted_at,
        request_id,
    };
    diesel::insert_into(outbox::table)
        .values(&row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks up to `limit` of the oldest rows no other relay holds (`FOR UPDATE SKIP LOCKED`),
/// until the caller's transaction ends. Rows that fail to parse are returned as errors with
/// their `seq` so the caller can report them and still make progress.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<Result<PendingEvent, (i64, StorageError)>>, StorageError> {
    let rows: Vec<OutboxRow> = outbox::table
        .select(OutboxRow::as_select())
        .order(outbox::seq)
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let seq = row.seq;
            row.into_pending().map_err(|e| (seq, e))
        })
        .collect())
}

/// Deletes the rows with these sequence numbers (their messages are confirmed).
pub async fn remove(conn: &mut AsyncPgConnection, seqs: &[i64]) -> Result<usize, StorageError> {
    Ok(
        diesel::delete(outbox::table.filter(outbox::seq.eq_any(seqs)))
            .execute(conn)
            .await?,
    )
}

/// How much is waiting: row count and the enqueue time of the oldest row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub rows: i64,
    pub oldest: Option<DateTime<Utc>>,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog, StorageError> {
    let (rows, oldest) = outbox::table
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(outbox::enqueued_at),
        ))
        .first::<(i64, Option<DateTime<Utc>>)>(conn)
        .await?;
    Ok(Backlog { rows, oldest })
}

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
        .into_product()
        .map_err(|error| match error {
            StorageError::Corrupt { reason, .. } => StorageError::Corrupt {
                table: "outbox",
                reason: format!("seq {}: {reason}", self.seq),
            },
            other => other,
        })?;
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

/// Records the changes that left each product as it is, in one statement (in the order
/// given, so `seq` follows it). Call it in the transaction that wrote the products, so both
/// commit or neither does (pipelined with that write: it takes a shared connection).
pub async fn enqueue_all(
    mut conn: &AsyncPgConnection,
    changes: &[(&Product, Option<&str>)],
) -> Result<(), StorageError> {
    if changes.is_empty() {
        return Ok(());
    }
    let rows: Vec<ProductRow> = changes
        .iter()
        .map(|(product, _)| (*product).into())
        .collect();
    let rows: Vec<&ProductRow> = rows.iter().collect();
    let query = crate::prepared::InsertOutbox {
        event_ids: changes.iter().map(|_| Uuid::now_v7()).collect(),
        products: crate::prepared::ProductArrays::new(&rows),
        request_ids: changes.iter().map(|(_, request_id)| *request_id).collect(),
    };
    query.execute(&mut conn).await?;
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

/// Moves rows the relay cannot publish to `outbox_dead_letters`, each with its reason, in one
/// statement: they leave the outbox, so they never block the rows behind them. Returns how
/// many were moved.
pub async fn dead_letter(
    conn: &mut AsyncPgConnection,
    rows: &[(i64, String)],
) -> Result<usize, StorageError> {
    use diesel::sql_types::{Array, BigInt, Text};
    let (seqs, reasons): (Vec<i64>, Vec<String>) = rows.iter().cloned().unzip();
    Ok(diesel::sql_query(
        "WITH moved AS (DELETE FROM outbox WHERE seq = ANY($1) RETURNING *) \
         INSERT INTO outbox_dead_letters (seq, event_id, product_id, version, name, price_cents, \
             stock, created_at, updated_at, deleted_at, request_id, enqueued_at, reason) \
         SELECT m.seq, m.event_id, m.product_id, m.version, m.name, m.price_cents, m.stock, \
             m.created_at, m.updated_at, m.deleted_at, m.request_id, m.enqueued_at, r.reason \
         FROM moved m JOIN unnest($1::bigint[], $2::text[]) AS r(seq, reason) USING (seq)",
    )
    .bind::<Array<BigInt>, _>(seqs)
    .bind::<Array<Text>, _>(reasons)
    .execute(conn)
    .await?)
}

/// Up to this many rows are counted exactly; past it, counting would cost as much as the
/// backlog is large, so [`backlog`] reports PostgreSQL's running estimate instead.
pub const EXACT_COUNT_LIMIT: i64 = 10_000;

/// How much is waiting: rows (exact up to [`EXACT_COUNT_LIMIT`], estimated past it) and the
/// enqueue time of the oldest row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub rows: i64,
    /// `rows` is PostgreSQL's live-row estimate for the table, not a count.
    pub estimated: bool,
    pub oldest: Option<DateTime<Utc>>,
}

/// The outbox's backlog, at a cost that does not grow with it: a count that stops at
/// [`EXACT_COUNT_LIMIT`] + 1 rows, the statistics' live-row estimate, and the oldest row
/// through the primary key.
pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog, StorageError> {
    bounded_count(conn, "outbox").await
}

/// Rows in `outbox_dead_letters`, counted as [`backlog`] counts (`oldest` is not looked up).
pub async fn dead_letters(conn: &mut AsyncPgConnection) -> Result<Backlog, StorageError> {
    bounded_count(conn, "outbox_dead_letters").await
}

async fn bounded_count(
    conn: &mut AsyncPgConnection,
    table: &'static str,
) -> Result<Backlog, StorageError> {
    use diesel::sql_types::{BigInt, Nullable, Timestamptz};

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        counted: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        estimate: Option<i64>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        oldest: Option<DateTime<Utc>>,
    }
    let oldest = if table == "outbox" {
        "SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1"
    } else {
        "SELECT NULL::timestamptz"
    };
    // `table` is one of ours, never input.
    let row: Row = diesel::sql_query(format!(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {limit}) AS s) AS counted, \
                (SELECT n_live_tup FROM pg_stat_user_tables \
                  WHERE relid = '{table}'::regclass) AS estimate, \
                ({oldest}) AS oldest",
        limit = EXACT_COUNT_LIMIT + 1,
    ))
    .get_result(conn)
    .await?;
    Ok(if row.counted <= EXACT_COUNT_LIMIT {
        Backlog {
            rows: row.counted,
            estimated: false,
            oldest: row.oldest,
        }
    } else {
        Backlog {
            rows: row.estimate.unwrap_or(0).max(row.counted),
            estimated: true,
            oldest: row.oldest,
        }
    })
}

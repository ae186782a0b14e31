//! Writing to a replica: the version-guarded apply rule, the replica's status row, and the
//! reads of the primary that catch-up, resync and verify page through.
//!
//! The apply rule: a row is written only when the replica holds no row for its id or an
//! older version of it. Upserts and tombstones alike, so any set of changes applied in any
//! order, any number of times, leaves the replica equal to the primary.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StorageError;
use crate::products::ProductRow;
use crate::schema::{products, replication_status};

/// Keeps, per id, only the row with the highest version: PostgreSQL refuses to upsert one
/// row twice in a statement, and the lower versions would lose anyway.
pub fn newest_per_id(rows: impl IntoIterator<Item = ProductRow>) -> Vec<ProductRow> {
    let mut newest: HashMap<Uuid, ProductRow> = HashMap::new();
    for row in rows {
        match newest.get(&row.id) {
            Some(kept) if kept.version >= row.version => {}
            _ => {
                newest.insert(row.id, row);
            }
        }
    }
    newest.into_values().collect()
}

/// Applies `rows` (one per id: see [`newest_per_id`]) under the version guard, in one
/// statement whatever their number. Returns how many rows changed; older or equal versions
/// change nothing.
pub async fn apply(
    mut conn: &AsyncPgConnection,
    rows: &[ProductRow],
) -> Result<usize, StorageError> {
    if rows.is_empty() {
        return Ok(0);
    }
    // Arrays bound once and unnested: 8 parameters for any batch size, far below the
    // protocol's 65,535-parameter limit, and one statement prepared per connection.
    let rows = in_id_order(rows);
    let query = crate::prepared::UpsertProducts(crate::prepared::ProductArrays::new(&rows));
    Ok(query.execute(&mut conn).await?)
}

/// Rows are locked in array order: in id order, a live batch and a catch-up page (or two
/// replicator instances) touching the same rows wait for each other instead of deadlocking.
fn in_id_order(rows: &[ProductRow]) -> Vec<&ProductRow> {
    let mut rows: Vec<&ProductRow> = rows.iter().collect();
    rows.sort_unstable_by_key(|row| row.id);
    rows
}

/// [`apply`] and, when given, [`record_applied`], all or nothing, in one statement: one round
/// trip, where a transaction of the two takes four. Returns how many rows changed.
pub async fn apply_batch(
    conn: &mut AsyncPgConnection,
    rows: &[ProductRow],
    status: Option<&AppliedBatch>,
) -> Result<usize, StorageError> {
    let Some(status) = status else {
        return apply(conn, rows).await;
    };
    let rows = in_id_order(rows);
    let changed: i64 = crate::prepared::UpsertRecorded {
        rows: crate::prepared::ProductArrays::new(&rows),
        status: crate::prepared::RecordApplied(status),
    }
    .get_result(conn)
    .await?;
    Ok(usize::try_from(changed).unwrap_or(0))
}

/// What one applied batch adds to the replica's `replication_status`.
#[derive(Debug, Clone)]
pub struct AppliedBatch {
    pub last_event_id: Uuid,
    pub last_event_seq: i64,
    /// The newest `occurred_at` in the batch.
    pub newest_event_at: DateTime<Utc>,
    pub events: i64,
}

/// Records a batch in the status row ([`crate::prepared::RecordApplied`]).
pub async fn record_applied(
    conn: &mut AsyncPgConnection,
    batch: &AppliedBatch,
) -> Result<(), StorageError> {
    crate::prepared::RecordApplied(batch).execute(conn).await?;
    Ok(())
}

/// `behind_since` at the epoch: the replica's history is unknown (new, empty, restored or
/// never fully copied), so it may lack anything and is copied in full.
pub const UNKNOWN_HISTORY: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// Flags the replica as possibly lacking changes from `since` on (an older flag stays), under
/// `token`: read-api keeps it out of rotation until the flag is cleared.
pub async fn flag_behind(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
    token: Uuid,
) -> Result<(), StorageError> {
    use replication_status::dsl as rs;
    diesel::update(rs::replication_status)
        .set((
            rs::behind_since.eq(diesel::dsl::sql::<Nullable<Timestamptz>>(
                "LEAST(COALESCE(behind_since, ",
            )
            .bind::<Timestamptz, _>(since)
            .sql("), ")
            .bind::<Timestamptz, _>(since)
            .sql(")")),
            rs::behind_token.eq(token),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// After a copy that brought the replica level: clears the flag if it is still `token`'s (a
/// newer flag stays), and moves `last_event_at` up to `level_at`, the newest change copied.
/// False when the flag was not `token`'s.
pub async fn clear_behind(
    conn: &mut AsyncPgConnection,
    token: Uuid,
    level_at: Option<DateTime<Utc>>,
) -> Result<bool, StorageError> {
    set_behind_if_token(conn, token, None, level_at).await
}

/// After a copy overtaken by new misses: the flag moves up to `since` if it is still
/// `token`'s. False when it was not.
pub async fn advance_behind(
    conn: &mut AsyncPgConnection,
    token: Uuid,
    since: DateTime<Utc>,
    level_at: Option<DateTime<Utc>>,
) -> Result<bool, StorageError> {
    set_behind_if_token(conn, token, Some(since), level_at).await
}

async fn set_behind_if_token(
    conn: &mut AsyncPgConnection,
    token: Uuid,
    since: Option<DateTime<Utc>>,
    level_at: Option<DateTime<Utc>>,
) -> Result<bool, StorageError> {
    use replication_status::dsl as rs;
    let updated = diesel::update(rs::replication_status.filter(rs::behind_token.eq(token)))
        .set((
            rs::behind_since.eq(since),
            rs::behind_token.eq(since.map(|_| token)),
            rs::last_event_at.eq(diesel::dsl::sql::<Nullable<Timestamptz>>(
                "GREATEST(last_event_at, ",
            )
            .bind::<Nullable<Timestamptz>, _>(level_at)
            .sql(")")),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// A keyset position: rows strictly after `(updated_at, id)`.
pub type ChangedAfter = (DateTime<Utc>, Uuid);

/// Up to `limit` rows (tombstones included) changed at or after `since` and not after
/// `until`, in `(updated_at, id)` order, starting after `after`.
pub async fn changed_since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    after: Option<ChangedAfter>,
    limit: i64,
) -> Result<Vec<ProductRow>, StorageError> {
    let mut query = products::table
        .select(ProductRow::as_select())
        .filter(products::updated_at.ge(since))
        .filter(products::updated_at.le(until))
        .order((products::updated_at, products::id))
        .limit(limit)
        .into_boxed();
    if let Some((updated_at, id)) = after {
        query = query.filter(
            products::updated_at
                .gt(updated_at)
                .or(products::updated_at.eq(updated_at).and(products::id.gt(id))),
        );
    }
    Ok(query.load(conn).await?)
}

/// Up to `limit` ids after `after`, in order.
pub async fn ids_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, StorageError> {
    let mut query = products::table
        .select(products::id)
        .order(products::id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(products::id.gt(after));
    }
    Ok(query.load(conn).await?)
}

/// Which of `ids` exist here (live or tombstone).
pub async fn existing_ids(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, StorageError> {
    Ok(products::table
        .select(products::id)
        .filter(products::id.eq_any(ids))
        .load(conn)
        .await?)
}

/// Deletes rows outright (resync removing what the primary no longer has).
pub async fn remove(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<usize, StorageError> {
    Ok(
        diesel::delete(products::table.filter(products::id.eq_any(ids)))
            .execute(conn)
            .await?,
    )
}

/// Live rows, all rows, and an order-independent checksum over every row's `(id, version)`:
/// two tables with the same summary hold the same versions of the same ids.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct TableSummary {
    #[diesel(sql_type = BigInt)]
    pub live_rows: i64,
    #[diesel(sql_type = BigInt)]
    pub all_rows: i64,
    #[diesel(sql_type = Text)]
    pub checksum: String,
}

pub async fn summarize(conn: &mut AsyncPgConnection) -> Result<TableSummary, StorageError> {
    Ok(diesel::sql_query(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL) AS live_rows, \
                count(*) AS all_rows, \
                COALESCE(sum(hashtextextended(id::text || ':' || version::text, 0)::numeric), 0)::text \
                    AS checksum \
         FROM products",
    )
    .get_result(conn)
    .await?)
}

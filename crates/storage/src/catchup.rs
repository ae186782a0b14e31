//! The primary's `replica_catchup` table: replicas that missed changes, and since when.
//!
//! The replicator writes a mark *before* it acks changes a replica could not take, so the
//! broker forgets nothing the mark does not cover. Catch-up copies what changed since the
//! mark, then clears it only if nobody re-marked meanwhile (`marked_at` is the generation).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;
use crate::schema::replica_catchup;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = replica_catchup, check_for_backend(diesel::pg::Pg))]
pub struct CatchupMark {
    pub replica: String,
    pub behind_since: DateTime<Utc>,
    pub marked_at: DateTime<Utc>,
    pub reason: String,
}

/// Records that `replica` misses changes from `since` on. An earlier mark keeps its earlier
/// time; every mark gets a new `marked_at`.
pub async fn mark_behind(
    conn: &mut AsyncPgConnection,
    replica: &str,
    since: DateTime<Utc>,
    reason: &str,
) -> Result<(), StorageError> {
    use diesel::dsl::sql;
    use diesel::sql_types::Timestamptz;
    let clock = || sql::<Timestamptz>("clock_timestamp()");
    diesel::insert_into(replica_catchup::table)
        .values((
            replica_catchup::replica.eq(replica),
            replica_catchup::behind_since.eq(since),
            replica_catchup::marked_at.eq(clock()),
            replica_catchup::reason.eq(reason),
        ))
        .on_conflict(replica_catchup::replica)
        .do_update()
        .set((
            replica_catchup::behind_since.eq(sql::<Timestamptz>(
                "LEAST(replica_catchup.behind_since, EXCLUDED.behind_since)",
            )),
            replica_catchup::marked_at.eq(clock()),
            replica_catchup::reason.eq(excluded(replica_catchup::reason)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Every replica that has a mark.
pub async fn marks(conn: &mut AsyncPgConnection) -> Result<Vec<CatchupMark>, StorageError> {
    Ok(replica_catchup::table
        .select(CatchupMark::as_select())
        .order(replica_catchup::replica)
        .load(conn)
        .await?)
}

/// Clears `mark` if it is unchanged since it was read. False when it was re-marked: there
/// is more to copy.
pub async fn clear(conn: &mut AsyncPgConnection, mark: &CatchupMark) -> Result<bool, StorageError> {
    let removed = diesel::delete(
        replica_catchup::table
            .filter(replica_catchup::replica.eq(&mark.replica))
            .filter(replica_catchup::marked_at.eq(mark.marked_at)),
    )
    .execute(conn)
    .await?;
    Ok(removed == 1)
}

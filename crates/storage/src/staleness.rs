//! What read-api reads to decide whether a replica may serve: the replica's status row with
//! its clock, and the primary's view of what each replica lacks.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;
use crate::catchup::CatchupMark;
use crate::replication_status::ReplicationStatus;
use crate::schema::replication_status;
use crate::sqlstate::SqlState;

/// A replica's status row, read with the replica database's `now()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSample {
    pub status: ReplicationStatus,
    pub now: DateTime<Utc>,
}

/// [`StorageError::NoSchema`] when the replica has not been migrated yet.
pub async fn replica_sample(conn: &mut AsyncPgConnection) -> Result<ReplicaSample, StorageError> {
    let read = replication_status::table
        .select((
            ReplicationStatus::as_select(),
            diesel::dsl::now.into_sql::<Timestamptz>(),
        ))
        .first::<(ReplicationStatus, DateTime<Utc>)>(conn)
        .await;
    let (status, db_now) = match read {
        Ok(read) => read,
        Err(error)
            if crate::session::sqlstate_of(&error, conn) == Some(SqlState::UNDEFINED_TABLE) =>
        {
            return Err(StorageError::NoSchema { source: error });
        }
        Err(error) => return Err(error.into()),
    };
    Ok(ReplicaSample {
        status,
        now: db_now,
    })
}

/// The primary's clock and catch-up marks, and for each replica's level point the oldest
/// change the primary made after it: the first thing that replica lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimarySample {
    pub now: DateTime<Utc>,
    pub marks: Vec<CatchupMark>,
    /// In the order of the level points asked about; `None` when nothing is newer.
    pub first_missing: Vec<Option<DateTime<Utc>>>,
}

#[derive(QueryableByName)]
struct FirstMissing {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    first_missing: Option<DateTime<Utc>>,
}

/// Reads [`PrimarySample`] for replicas level up to `levels` (`None`: one that holds no
/// change yet). One index probe per level point on `products(updated_at)`.
pub async fn primary_sample(
    conn: &mut AsyncPgConnection,
    levels: &[Option<DateTime<Utc>>],
) -> Result<PrimarySample, StorageError> {
    let db_now: DateTime<Utc> = diesel::select(diesel::dsl::now.into_sql::<Timestamptz>())
        .get_result(conn)
        .await?;
    let marks = crate::catchup::marks(conn).await?;
    let first_missing = if levels.is_empty() {
        Vec::new()
    } else {
        diesel::sql_query(
            "SELECT (SELECT min(p.updated_at) FROM products p \
                      WHERE p.updated_at > COALESCE(l.level, '-infinity')) AS first_missing \
             FROM unnest($1::timestamptz[]) WITH ORDINALITY AS l(level, i) ORDER BY l.i",
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(levels)
        .load::<FirstMissing>(conn)
        .await?
        .into_iter()
        .map(|row| row.first_missing)
        .collect()
    };
    Ok(PrimarySample {
        now: db_now,
        marks,
        first_missing,
    })
}

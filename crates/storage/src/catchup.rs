//! The primary's side of catch-up: `replica_catchup` (replicas that may lack changes, and
//! since when) and `replica_progress` (how far each replica's apply counter has been seen).
//!
//! The replicator writes a mark *before* it acks changes a replica could not take, so the
//! broker forgets nothing a mark does not cover. One instance at a time copies a marked
//! replica, under a lease ([`claim`]); when its copy is done, [`finish`] removes the mark if
//! nobody re-marked meanwhile, or else moves it up to the oldest change missed since the copy
//! began, so the next round copies only that.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StorageError;
use crate::schema::{replica_catchup, replica_progress};

/// A replica that may lack every change made at or after `behind_since`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = replica_catchup, check_for_backend(diesel::pg::Pg))]
pub struct CatchupMark {
    pub replica: String,
    pub behind_since: DateTime<Utc>,
    /// Changes with every new mark: the generation a clear compares against.
    pub marked_at: DateTime<Utc>,
    pub reason: String,
}

/// What [`finish`] did with a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Nobody re-marked during the copy: the mark is gone, the replica is level.
    Cleared,
    /// Re-marked during the copy: the mark now starts at the oldest change missed since the
    /// copy began.
    Advanced(DateTime<Utc>),
    /// The lease was lost (expired, taken over): this copy decides nothing.
    LeaseLost,
}

fn clock() -> diesel::expression::SqlLiteral<Timestamptz> {
    sql::<Timestamptz>("clock_timestamp()")
}

/// `clock_timestamp()` plus `lease`, on the primary's clock. The number is ours, not input.
fn lease_end(lease: Duration) -> diesel::expression::SqlLiteral<Timestamptz> {
    sql::<Timestamptz>(&format!(
        "clock_timestamp() + interval '{} milliseconds'",
        lease.as_millis()
    ))
}

/// Records that `replica` may lack changes from `since` on. An earlier mark keeps its earlier
/// time; every mark gets a new `marked_at`, and `recent_since` remembers the oldest miss since
/// the current copy was claimed.
pub async fn mark_behind(
    conn: &mut AsyncPgConnection,
    replica: &str,
    since: DateTime<Utc>,
    reason: &str,
) -> Result<(), StorageError> {
    use replica_catchup::dsl as rc;
    diesel::insert_into(rc::replica_catchup)
        .values((
            rc::replica.eq(replica),
            rc::behind_since.eq(since),
            rc::marked_at.eq(clock()),
            rc::reason.eq(reason),
            rc::recent_since.eq(since),
        ))
        .on_conflict(rc::replica)
        .do_update()
        .set((
            rc::behind_since.eq(sql::<Timestamptz>(
                "LEAST(replica_catchup.behind_since, EXCLUDED.behind_since)",
            )),
            rc::recent_since.eq(sql::<diesel::sql_types::Nullable<Timestamptz>>(
                "LEAST(COALESCE(replica_catchup.recent_since, EXCLUDED.behind_since), \
                       EXCLUDED.behind_since)",
            )),
            rc::marked_at.eq(clock()),
            rc::reason.eq(diesel::upsert::excluded(rc::reason)),
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

/// `replica`'s mark, if it has one.
pub async fn mark_of(
    conn: &mut AsyncPgConnection,
    replica: &str,
) -> Result<Option<CatchupMark>, StorageError> {
    Ok(replica_catchup::table
        .select(CatchupMark::as_select())
        .filter(replica_catchup::replica.eq(replica))
        .first(conn)
        .await
        .optional()?)
}

/// Takes (or renews) the lease on `replica`'s mark for `holder`, unless another holder's
/// lease is still running. Returns the mark as it stands now; `None` when there is no mark or
/// someone else holds it. A fresh claim starts a new round: `recent_since` is emptied.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    replica: &str,
    holder: Uuid,
    lease: Duration,
) -> Result<Option<CatchupMark>, StorageError> {
    use replica_catchup::dsl as rc;
    Ok(diesel::update(
        rc::replica_catchup.filter(rc::replica.eq(replica)).filter(
            rc::claimed_until
                .is_null()
                .or(rc::claimed_until.lt(clock().nullable()))
                .or(rc::claimed_by.eq(holder)),
        ),
    )
    .set((
        rc::claimed_by.eq(holder),
        rc::claimed_until.eq(lease_end(lease).nullable()),
        rc::recent_since.eq(None::<DateTime<Utc>>),
    ))
    .returning(CatchupMark::as_returning())
    .get_result(conn)
    .await
    .optional()?)
}

/// The primary's clock now. Read after a [`claim`], it bounds that round's copy: a change made
/// later reaches the replica live, or its miss marks the replica again.
pub async fn clock_now(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, StorageError> {
    Ok(diesel::select(clock()).get_result(conn).await?)
}

/// Extends `holder`'s lease; false when it was lost.
pub async fn renew(
    conn: &mut AsyncPgConnection,
    replica: &str,
    holder: Uuid,
    lease: Duration,
) -> Result<bool, StorageError> {
    use replica_catchup::dsl as rc;
    let renewed = diesel::update(
        rc::replica_catchup
            .filter(rc::replica.eq(replica))
            .filter(rc::claimed_by.eq(holder)),
    )
    .set(rc::claimed_until.eq(lease_end(lease).nullable()))
    .execute(conn)
    .await?;
    Ok(renewed == 1)
}

/// A mark's generation, oldest miss since the claim, and holder.
type MarkState = (DateTime<Utc>, Option<DateTime<Utc>>, Option<Uuid>);

/// Ends `holder`'s round on `mark` (as [`claim`] returned it), in one transaction.
pub async fn finish(
    conn: &mut AsyncPgConnection,
    mark: &CatchupMark,
    holder: Uuid,
) -> Result<Finished, StorageError> {
    use diesel_async::AsyncConnection;
    use replica_catchup::dsl as rc;
    conn.transaction::<_, StorageError, _>(async |conn| {
        let current: Option<MarkState> = rc::replica_catchup
            .select((rc::marked_at, rc::recent_since, rc::claimed_by))
            .filter(rc::replica.eq(&mark.replica))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((marked_at, recent_since, claimed_by)) = current else {
            return Ok(Finished::LeaseLost);
        };
        if claimed_by != Some(holder) {
            return Ok(Finished::LeaseLost);
        }
        match recent_since {
            Some(since) if marked_at != mark.marked_at => {
                diesel::update(rc::replica_catchup.filter(rc::replica.eq(&mark.replica)))
                    .set((
                        rc::behind_since.eq(since),
                        rc::claimed_by.eq(None::<Uuid>),
                        rc::claimed_until.eq(None::<DateTime<Utc>>),
                    ))
                    .execute(conn)
                    .await?;
                Ok(Finished::Advanced(since))
            }
            _ => {
                diesel::delete(rc::replica_catchup.filter(rc::replica.eq(&mark.replica)))
                    .execute(conn)
                    .await?;
                Ok(Finished::Cleared)
            }
        }
    })
    .await
}

/// Gives the lease up after a round that did not complete; the mark stays as it is.
pub async fn release(
    conn: &mut AsyncPgConnection,
    replica: &str,
    holder: Uuid,
) -> Result<(), StorageError> {
    use replica_catchup::dsl as rc;
    diesel::update(
        rc::replica_catchup
            .filter(rc::replica.eq(replica))
            .filter(rc::claimed_by.eq(holder)),
    )
    .set((
        rc::claimed_by.eq(None::<Uuid>),
        rc::claimed_until.eq(None::<DateTime<Utc>>),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// The highest apply counter seen on `replica`, if any was recorded.
pub async fn recorded_progress(
    conn: &mut AsyncPgConnection,
    replica: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(replica_progress::table
        .select(replica_progress::events_applied)
        .filter(replica_progress::replica.eq(replica))
        .first(conn)
        .await
        .optional()?)
}

/// Records `events_applied` as seen on `replica` (the record only grows), or resets it after
/// the replica's history was found to have gone back.
pub async fn record_progress(
    conn: &mut AsyncPgConnection,
    replica: &str,
    events_applied: i64,
    reset: bool,
) -> Result<(), StorageError> {
    use replica_progress::dsl as rp;
    let kept = if reset {
        "EXCLUDED.events_applied"
    } else {
        "GREATEST(replica_progress.events_applied, EXCLUDED.events_applied)"
    };
    diesel::insert_into(rp::replica_progress)
        .values((
            rp::replica.eq(replica),
            rp::events_applied.eq(events_applied),
        ))
        .on_conflict(rp::replica)
        .do_update()
        .set(rp::events_applied.eq(sql::<diesel::sql_types::BigInt>(kept)))
        .execute(conn)
        .await?;
    Ok(())
}

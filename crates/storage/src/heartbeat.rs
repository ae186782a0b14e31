//! The pipeline heartbeat: a beat on the primary that travels the same path as a change
//! (relay, broker, replicator) and is recorded on every replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;

/// One beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Beat {
    #[diesel(sql_type = BigInt)]
    pub beat: i64,
    #[diesel(sql_type = Timestamptz)]
    pub beat_at: DateTime<Utc>,
}

/// Moves the heartbeat forward on the primary unless another write-api instance did less
/// than 90 % of `interval` ago (so several instances beat about once per interval between
/// them). The new beat, or `None` when it was not due.
pub async fn beat(
    conn: &mut AsyncPgConnection,
    interval: Duration,
) -> Result<Option<Beat>, StorageError> {
    let due_after_ms = interval.as_millis() * 9 / 10;
    Ok(diesel::sql_query(format!(
        "UPDATE pipeline_heartbeat SET beat = beat + 1, beat_at = clock_timestamp() \
         WHERE beat_at <= clock_timestamp() - interval '{due_after_ms} milliseconds' \
         RETURNING beat, beat_at"
    ))
    .get_result(conn)
    .await
    .optional()?)
}

/// Records a heartbeat on a replica (older ones change nothing).
pub async fn record(
    conn: &mut AsyncPgConnection,
    beat_at: DateTime<Utc>,
) -> Result<(), StorageError> {
    diesel::sql_query(
        "UPDATE replication_status SET heartbeat_at = $1, heartbeat_applied_at = now() \
         WHERE heartbeat_at IS NULL OR heartbeat_at < $1",
    )
    .bind::<Timestamptz, _>(beat_at)
    .execute(conn)
    .await?;
    Ok(())
}

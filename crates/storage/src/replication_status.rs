//! The `replication_status` row of a replica: what was last applied there, and when.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StorageError;
use crate::schema::replication_status;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = replication_status, check_for_backend(diesel::pg::Pg))]
pub struct ReplicationStatus {
    pub last_event_id: Option<Uuid>,
    pub last_event_seq: Option<i64>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub events_applied: i64,
    /// Set while the replica may lack changes made since then (the epoch: unknown history);
    /// see `replica::flag_behind`.
    pub behind_since: Option<DateTime<Utc>>,
    /// Who set `behind_since`.
    pub behind_token: Option<Uuid>,
    /// The newest pipeline heartbeat applied here (the primary's clock), and when it was
    /// applied (this replica's clock).
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub heartbeat_applied_at: Option<DateTime<Utc>>,
}

pub async fn read(conn: &mut AsyncPgConnection) -> Result<ReplicationStatus, StorageError> {
    Ok(replication_status::table
        .select(ReplicationStatus::as_select())
        .first(conn)
        .await?)
}

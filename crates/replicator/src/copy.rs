//! Copying rows from the primary to a replica in keyset pages, through the same
//! version-guarded apply as live events: copying too much is harmless, and the replica's
//! table is never emptied, so reads go on during a copy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use storage::products::ProductRow;
use storage::replica as replica_rows;
use storage::{DbPool, StorageError, pool};
use uuid::Uuid;

/// Where to copy from and to, and how.
pub struct CopyJob<'a> {
    pub primary: &'a DbPool,
    pub replica: &'a DbPool,
    pub page_size: i64,
    pub deadline: Duration,
}

impl CopyJob<'_> {
    /// Copies every row changed at or after `since`. Returns the rows read.
    pub async fn changed_since(&self, since: DateTime<Utc>) -> Result<u64, StorageError> {
        let mut after = None;
        let mut copied = 0;
        loop {
            let page = self
                .read_primary(async |conn| {
                    replica_rows::changed_since(conn, since, after, self.page_size).await
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(copied);
            };
            after = Some((last.updated_at, last.id));
            copied += self.write_page(&page).await?;
        }
    }

    /// Copies every row, in id order, calling `progress` with each page's size.
    pub async fn everything(&self, mut progress: impl FnMut(u64)) -> Result<u64, StorageError> {
        let mut after = None;
        let mut copied = 0;
        loop {
            let page = self
                .read_primary(async |conn| {
                    replica_rows::page_by_id(conn, after, self.page_size).await
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(copied);
            };
            after = Some(last.id);
            let written = self.write_page(&page).await?;
            copied += written;
            progress(written);
        }
    }

    /// Deletes replica rows whose id the primary does not have (a resync after a primary
    /// was restored, or rows written to the replica by hand). Returns how many.
    pub async fn remove_strays(&self) -> Result<u64, StorageError> {
        let mut after: Option<Uuid> = None;
        let mut removed = 0;
        loop {
            let ids = pool::with_connection(self.replica, self.deadline, async |conn| {
                replica_rows::ids_after(conn, after, self.page_size).await
            })
            .await?;
            let Some(last) = ids.last().copied() else {
                return Ok(removed);
            };
            after = Some(last);
            let present = self
                .read_primary(async |conn| replica_rows::existing_ids(conn, &ids).await)
                .await?;
            let strays: Vec<Uuid> = ids.into_iter().filter(|id| !present.contains(id)).collect();
            if !strays.is_empty() {
                removed += pool::with_connection(self.replica, self.deadline, async |conn| {
                    replica_rows::remove(conn, &strays).await
                })
                .await? as u64;
            }
        }
    }

    async fn read_primary<T>(
        &self,
        work: impl AsyncFnOnce(&mut storage::AsyncPgConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        pool::with_connection(self.primary, self.deadline, work).await
    }

    async fn write_page(&self, rows: &[ProductRow]) -> Result<u64, StorageError> {
        pool::with_connection(self.replica, self.deadline, async |conn| {
            replica_rows::apply_batch(conn, rows, None).await
        })
        .await?;
        Ok(rows.len() as u64)
    }
}

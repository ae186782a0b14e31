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

/// What a copy did.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Rows read from the primary and applied (or refused).
    pub rows: u64,
    /// The newest `updated_at` copied: the replica holds every change up to it once the copy
    /// is complete.
    pub newest: Option<DateTime<Utc>>,
    /// Rows the replica refused (a constraint only it has), each with the replica's answer;
    /// the rest of their page was applied.
    pub refused: Vec<(ProductRow, String)>,
}

/// A copy of every row changed between two points, in `(updated_at, id)` pages: call
/// [`ChangedSince::next_page`] until it returns `None`.
pub struct ChangedSince<'a> {
    job: &'a CopyJob<'a>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    after: Option<replica_rows::ChangedAfter>,
    report: CopyReport,
}

impl ChangedSince<'_> {
    /// Copies the next page; its size, or `None` when everything was copied.
    pub async fn next_page(&mut self) -> Result<Option<u64>, StorageError> {
        let (since, until, after, limit) = (self.since, self.until, self.after, self.job.page_size);
        let page = pool::with_connection(self.job.primary, self.job.deadline, async |conn| {
            replica_rows::changed_since(conn, since, until, after, limit).await
        })
        .await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        self.after = Some((last.updated_at, last.id));
        self.report.newest = Some(last.updated_at);
        let rows = page.len() as u64;
        self.report.rows += rows;
        let refused = self.job.write_page(page).await?;
        self.report.refused.extend(refused);
        Ok(Some(rows))
    }

    pub fn into_report(self) -> CopyReport {
        self.report
    }
}

impl<'a> CopyJob<'a> {
    /// Starts a copy of every row changed at or after `since` and not after `until`. The
    /// bound makes the copy finite under writes: without it, a copy no faster than the
    /// writes chases the rows they keep moving to the end of the order.
    pub fn changed_since(&'a self, since: DateTime<Utc>, until: DateTime<Utc>) -> ChangedSince<'a> {
        ChangedSince {
            job: self,
            since,
            until,
            after: None,
            report: CopyReport::default(),
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
            let present = pool::with_connection(self.primary, self.deadline, async |conn| {
                replica_rows::existing_ids(conn, &ids).await
            })
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

    /// Applies a page, isolating the rows the replica refuses.
    async fn write_page(
        &self,
        rows: Vec<ProductRow>,
    ) -> Result<Vec<(ProductRow, String)>, StorageError> {
        apply_isolating_refusals(self.replica, self.deadline, rows)
            .await
            .map(|applied| applied.refused)
    }
}

/// What [`apply_isolating_refusals`] did.
#[derive(Debug, Default)]
pub struct Isolated {
    /// Rows written (equal or newer versions already there are left alone).
    pub rows_changed: usize,
    /// Rows the replica refused, each with its answer; every other row was applied.
    pub refused: Vec<(ProductRow, String)>,
}

/// Applies `rows` to a replica in one statement; when the replica refuses (a constraint
/// only it has, say), halves by halves until the refused rows stand alone. One refused row
/// among n costs about 2·log2(n) statements instead of n, which matters for a catch-up that
/// meets the same row in every round within its margin. Any other error (the replica failing)
/// ends it: what was applied stays applied, and the version guard makes a retry harmless.
pub async fn apply_isolating_refusals(
    replica: &DbPool,
    deadline: Duration,
    rows: Vec<ProductRow>,
) -> Result<Isolated, StorageError> {
    let mut isolated = Isolated::default();
    let mut pending = vec![rows];
    while let Some(mut part) = pending.pop() {
        let applied = pool::with_connection(replica, deadline, async |conn| {
            replica_rows::apply_batch(conn, &part, None).await
        })
        .await;
        match applied {
            Ok(changed) => isolated.rows_changed += changed,
            Err(error) if error.leaves_connection_usable() => {
                if part.len() == 1 {
                    isolated
                        .refused
                        .extend(part.pop().map(|row| (row, error.to_string())));
                } else {
                    let second = part.split_off(part.len() / 2);
                    pending.push(second);
                    pending.push(part);
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(isolated)
}

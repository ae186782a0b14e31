//! `replicator resync`: an online copy of the whole table from the primary.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use storage::{DbPool, StorageError, pool};

use crate::copy::CopyJob;
use crate::replica::Replica;

/// Copies every primary row to `replica` (version-guarded, so safe while replication runs),
/// then removes rows the primary does not have. Returns (rows copied, rows removed).
pub async fn resync(
    primary: &DbPool,
    replica: &Replica,
    page_size: i64,
    deadline: Duration,
    show_progress: bool,
) -> Result<(u64, u64), StorageError> {
    replica.ensure_migrated().await?;
    let total = pool::with_connection(primary, deadline, async |conn| {
        storage::replica::summarize(conn).await
    })
    .await?
    .all_rows;
    let bar = if show_progress {
        ProgressBar::new(u64::try_from(total).unwrap_or(0))
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(replica.name.clone());
    let job = CopyJob {
        primary,
        replica: &replica.pool,
        page_size,
        deadline,
    };
    let copied = job.everything(|rows| bar.inc(rows)).await?;
    let removed = job.remove_strays().await?;
    bar.finish();
    Ok((copied, removed))
}

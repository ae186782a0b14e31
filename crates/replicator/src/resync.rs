//! `replicator resync`: an online full copy of one replica from the primary, with progress.
//!
//! It is a catch-up round from the beginning of time: the replica is marked as of unknown
//! history on the primary (read-api keeps it out of rotation from then on), the copy takes
//! the same lease as catch-up (waiting for a copy another instance is running), and rows the
//! primary does not have are removed before the mark is cleared.

use indicatif::{ProgressBar, ProgressStyle};
use storage::pool;
use storage::replica::UNKNOWN_HISTORY;

use crate::catchup::{CatchUp, CatchUpError, Resync, RoundReport};

/// Whether to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Hidden,
}

/// Copies every primary row to the replica of `catch_up` (version-guarded, so safe while
/// replication runs), then removes rows the primary does not have.
pub async fn resync(catch_up: &CatchUp, progress: Progress) -> Result<RoundReport, CatchUpError> {
    let replica = &catch_up.replica;
    replica.ensure_migrated(catch_up.deadline * 4).await?;
    let total = pool::with_connection(&catch_up.primary, catch_up.deadline, async |conn| {
        storage::replica::summarize(conn).await
    })
    .await?
    .all_rows;
    let bar = match progress {
        Progress::Bar => ProgressBar::new(u64::try_from(total).unwrap_or(0)),
        Progress::Hidden => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(replica.name.clone());
    catch_up.mark(UNKNOWN_HISTORY, "resync requested").await?;
    let report = catch_up
        .copy_round(Some(Resync {
            progress: &bar,
            remove_strays: true,
        }))
        .await?;
    bar.finish();
    Ok(report)
}

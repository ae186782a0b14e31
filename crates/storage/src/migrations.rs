//! The schema in `migrations/`, embedded in every binary, applied within a deadline.
//!
//! Diesel's migration harness is synchronous, so it runs on a blocking thread over
//! [`AsyncConnectionWrapper`]. A blocking thread cannot be cancelled, and a frozen link (the
//! server accepts and never answers) would park it for ever with its socket. So the
//! connection is opened here, asynchronously and within the deadline (by [`session`], as the
//! pools open theirs), and its I/O task is ours: when the deadline passes we abort that task, the socket closes, the harness's
//! pending call fails at once and the thread returns. Nothing outlives a timed-out run, and
//! the server rolls back a migration cut short (each runs in a transaction).

use std::time::Duration;

use diesel::RunQueryDsl;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio::time::Instant;

use crate::{StorageError, Unavailable, session};

/// Bound on one host's attempt when the URL sets no `connect_timeout`.
const CONNECT_PER_HOST: Duration = Duration::from_secs(5);

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Serialises migration runs of every instance of every service on one database.
const MIGRATION_LOCK_KEY: i64 = 0x7265_706c_6d69_6772; // "replmigr"

type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

type HarnessError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Applies every pending migration within `deadline` and returns the versions applied.
///
/// Runs under a session advisory lock, so instances starting together take turns.
pub async fn run_pending(
    database_url: &str,
    deadline: Duration,
) -> Result<Vec<String>, StorageError> {
    with_harness(database_url, deadline, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Reverts every applied migration (for tests of the down migrations).
pub async fn revert_all(
    database_url: &str,
    deadline: Duration,
) -> Result<Vec<String>, StorageError> {
    with_harness(database_url, deadline, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Migrations this build knows that the database has not applied yet.
pub async fn pending(database_url: &str, deadline: Duration) -> Result<Vec<String>, StorageError> {
    with_harness(database_url, deadline, |conn| {
        conn.pending_migrations(MIGRATIONS)
            .map(|list| list.iter().map(|m| m.name().to_string()).collect())
    })
    .await
}

async fn with_harness<T, F>(
    database_url: &str,
    deadline: Duration,
    work: F,
) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&mut SyncConnection) -> Result<T, HarnessError> + Send + 'static,
{
    let until = Instant::now() + deadline;
    let timed_out = || StorageError::Timeout(deadline);
    // Through the session layer, so that a host list with `target_session_attrs` is
    // followed (and a frozen host passed over) as by the pools.
    let mut conn = tokio::time::timeout_at(
        until,
        session::establish_within(database_url, Some(CONNECT_PER_HOST)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| StorageError::Unavailable(Unavailable::Session(e)))?;
    let io = session::closer(&mut conn);
    let close = || {
        if let Some(io) = &io {
            io.abort();
        }
    };
    let outcome = async {
        let mut harness = tokio::task::spawn_blocking(move || {
            let mut conn = SyncConnection::from(conn);
            run_locked(&mut conn, work)
        });
        match tokio::time::timeout_at(until, &mut harness).await {
            Ok(joined) => joined
                .map_err(|e| StorageError::Migration(format!("migration task failed: {e}")))?,
            Err(_) => {
                close();
                // The harness's next read fails now that its socket is gone: wait for the
                // thread so that nothing outlives this call.
                let _ = harness.await;
                Err(timed_out())
            }
        }
    }
    .await;
    close();
    outcome
}

fn run_locked<T, F>(conn: &mut SyncConnection, work: F) -> Result<T, StorageError>
where
    F: FnOnce(&mut SyncConnection) -> Result<T, HarnessError>,
{
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    let outcome = work(conn).map_err(|e| StorageError::Migration(e.to_string()));
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    outcome
}

//! The schema in `migrations/`, embedded in every binary.

use diesel::Connection;
use diesel::RunQueryDsl;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::StorageError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Serialises migration runs of every instance of every service on one database.
const MIGRATION_LOCK_KEY: i64 = 0x7265_706c_6d69_6772; // "replmigr"

type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

/// Applies every pending migration and returns the versions applied.
///
/// Runs under a session advisory lock, so instances starting together take turns. Diesel's
/// harness is synchronous: it runs on a blocking thread (PITFALLS.md).
pub async fn run_pending(database_url: &str) -> Result<Vec<String>, StorageError> {
    let url = database_url.to_owned();
    with_sync_connection(url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Reverts every applied migration (for tests of the down migrations).
pub async fn revert_all(database_url: &str) -> Result<Vec<String>, StorageError> {
    let url = database_url.to_owned();
    with_sync_connection(url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Migrations this build knows that the database has not applied yet.
pub async fn pending(database_url: &str) -> Result<Vec<String>, StorageError> {
    let url = database_url.to_owned();
    with_sync_connection(url, |conn| {
        conn.pending_migrations(MIGRATIONS)
            .map(|list| list.iter().map(|m| m.name().to_string()).collect())
    })
    .await
}

async fn with_sync_connection<T, F>(url: String, work: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&mut SyncConnection) -> Result<T, Box<dyn std::error::Error + Send + Sync + 'static>>
        + Send
        + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut conn = <SyncConnection as Connection>::establish(&url)
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)?;
        let outcome = work(&mut conn).map_err(|e| StorageError::Migration(e.to_string()));
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)?;
        outcome
    })
    .await
    .map_err(|e| StorageError::Migration(format!("migration task failed: {e}")))?
}

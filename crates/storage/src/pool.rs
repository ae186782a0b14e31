use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

use crate::StorageError;

/// A pool of connections to one database.
pub type DbPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;

/// How a pool connects and what every connection is set up with.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Shown in `pg_stat_activity`, so an operator can tell the services apart.
    pub application_name: String,
    pub max_size: usize,
    /// Bound on opening one connection: without it `get()` hangs on a server that accepts
    /// TCP and never answers (PITFALLS.md).
    pub connect_timeout: Duration,
    /// Bound on waiting for a free connection when all are busy.
    pub acquire_timeout: Duration,
    /// Server-side bound on every statement.
    pub statement_timeout: Duration,
    /// Read-only sessions (`default_transaction_read_only`), for the read side.
    pub read_only: bool,
}

impl PoolSettings {
    pub fn new(application_name: impl Into<String>) -> Self {
        Self {
            application_name: application_name.into(),
            max_size: 8,
            connect_timeout: Duration::from_secs(3),
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }

    fn session_setup_sql(&self) -> String {
        let mut sql = format!(
            "SET application_name = '{}'; SET statement_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}; SET lock_timeout = {};",
            self.application_name.replace('\'', "''"),
            self.statement_timeout.as_millis(),
            // A transaction left open by a crashed task must not hold row locks for long.
            (self.statement_timeout * 4).as_millis(),
            self.statement_timeout.as_millis(),
        );
        if self.read_only {
            sql.push_str(" SET default_transaction_read_only = on;");
        }
        sql
    }
}

/// Builds a pool; connections are opened lazily, so this succeeds while the database is down.
pub fn build(database_url: &str, settings: &PoolSettings) -> Result<DbPool, StorageError> {
    let setup_sql = settings.session_setup_sql();
    let mut config = ManagerConfig::default();
    // `Fast` still drops connections that are closed or hold a broken transaction; `Verified`
    // would add a round trip to every checkout.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let setup_sql = setup_sql.clone();
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute(&setup_sql)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, config);
    DbPool::builder(manager)
        .max_size(settings.max_size)
        .create_timeout(Some(settings.connect_timeout))
        .wait_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Unavailable(format!("cannot build pool: {e}")))
}

/// Runs `work` on a pooled connection with an overall deadline.
///
/// The deadline covers waiting for the connection too. A statement cut short by it leaves
/// its connection mid-conversation, and diesel-async flags a connection as broken only for an
/// unfinished *transaction*: returned to the pool, it would be handed out again and hang
/// again on a frozen link. So after a timeout or a connection-level error the connection is
/// taken out of the pool and closed; `statement_timeout` stops the server side. Only errors
/// known to leave the session usable (a row not found, a constraint refused) keep it.
pub async fn with_connection<T, F>(
    pool: &DbPool,
    deadline: Duration,
    work: F,
) -> Result<T, StorageError>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StorageError>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut conn = match tokio::time::timeout_at(until, pool.get()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => return Err(StorageError::Timeout(deadline)),
    };
    match tokio::time::timeout_at(until, work(&mut conn)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            if !error.leaves_connection_usable() {
                discard(conn);
            }
            Err(error)
        }
        Err(_) => {
            discard(conn);
            Err(StorageError::Timeout(deadline))
        }
    }
}

/// Detaches a connection from its pool (freeing its slot) and closes it.
fn discard(conn: diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>) {
    drop(diesel_async::pooled_connection::deadpool::Object::take(
        conn,
    ));
}

/// Checks that the database answers a trivial query within `deadline`.
pub async fn ping(pool: &DbPool, deadline: Duration) -> Result<(), StorageError> {
    use diesel_async::RunQueryDsl;
    with_connection(pool, deadline, async |conn| {
        diesel::sql_query("SELECT 1").execute(conn).await?;
        Ok(())
    })
    .await
}

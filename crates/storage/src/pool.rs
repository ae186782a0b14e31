use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, SimpleAsyncConnection, TransactionManager,
};
use futures_util::FutureExt;

use crate::{StorageError, Unavailable, session};

/// A pool of connections to one database.
pub type DbPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;

/// How a pool connects and what every connection is set up with.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Shown in `pg_stat_activity`, so an operator can tell the services apart.
    pub application_name: String,
    pub max_size: usize,
    /// Bound on opening a connection to one host, unless the URL's own `connect_timeout`
    /// says otherwise: without it `get()` hangs on a server that accepts TCP and never
    /// answers (`docs/dependencies.md#pool-timeouts-deadpool`). With a host list, opening a
    /// connection may take this long for each host.
    pub connect_timeout: Duration,
    /// Bound on waiting for a free connection when all are busy.
    pub acquire_timeout: Duration,
    /// Server-side bound on every statement.
    pub statement_timeout: Duration,
    /// Read-only sessions (`default_transaction_read_only`), for the read side.
    pub read_only: bool,
    /// Sessions plan with `enable_seqscan = off`, for sessions whose every statement is
    /// keyed (write-api's, read-api's lookups by id). A statement kept prepared gets a
    /// generic plan after five runs, kept until the table's statistics change. Made just
    /// after autovacuum analysed a young, small table, the generic plan of
    /// `WHERE id = ANY($1)` is a sequential scan, and it stays one while the table grows,
    /// until the next analyse (autovacuum looks once a minute). Measured on a new database
    /// under 64 writers: 95 million rows read in 2,345 such scans within 30 s
    /// (`docs/dependencies.md#generic-plans-on-a-growing-table`).
    pub index_scans_only: bool,
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
            index_scans_only: false,
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
        if self.index_scans_only {
            // Turning sequential scans off adds a huge constant to their cost, so a statement
            // only a scan can answer (the heartbeat's one-row update) crossed JIT's cost
            // thresholds and was compiled with LLVM on every run: 67–330 ms of the
            // primary's CPU every 5 s, the relay waiting on it and the outbox filling
            // behind (`docs/dependencies.md#generic-plans-on-a-growing-table`). Keyed
            // statements gain nothing from JIT.
            sql.push_str(" SET enable_seqscan = off; SET jit = off;");
        }
        // PostgreSQL 14 and later notice a client gone while a statement waits (for a lock,
        // say) and end it, instead of holding its locks until the statement finishes.
        sql.push_str(
            " SELECT set_config('client_connection_check_interval', '1000', false) \
             WHERE current_setting('server_version_num')::int >= 140000;",
        );
        sql
    }
}

/// Builds a pool; connections are opened lazily, so this succeeds while the database is down.
pub fn build(database_url: &str, settings: &PoolSettings) -> Result<DbPool, StorageError> {
    let setup_sql = settings.session_setup_sql();
    let per_host = settings.connect_timeout;
    let mut config = ManagerConfig::default();
    // diesel-async drops connections whose own transaction bookkeeping is open or broken;
    // this also asks what the server last said (no round trip, unlike `Verified`).
    let application_name: Arc<str> = settings.application_name.as_str().into();
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(move |conn| {
        let application_name = application_name.clone();
        async move { idle_at_server(conn, &application_name).await }.boxed()
    }));
    config.custom_setup = Box::new(move |url| {
        let setup_sql = setup_sql.clone();
        let url = url.to_owned();
        async move {
            // Our own session, so that errors keep their SQLSTATE (see `session`).
            let mut conn = session::establish_within(&url, Some(per_host)).await?;
            conn.batch_execute(&setup_sql)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let open_timeout = session::open_bound(database_url, per_host);
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, config);
    DbPool::builder(manager)
        .max_size(settings.max_size)
        .create_timeout(Some(open_timeout))
        .wait_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Unavailable(Unavailable::Build(e)))
}

/// How long a returned session may take to receive the answers still on their way before
/// it is closed as busy: the `ReadyForQuery` behind an error comes a moment after it, while a
/// statement left running by a dropped future (a client gone mid-listing) may take long, and
/// the next caller should not wait for it.
const SETTLE_BOUND: Duration = Duration::from_millis(10);

/// Refuses to reuse a session that is not idle at the server once its requests are
/// answered. diesel-async tracks only the transactions it opened itself; this catches any
/// other way a session could be left inside one (a `BEGIN` sent as plain SQL, a path we have
/// not found: a write-api session was once handed out inside a failed transaction under
/// statement timeouts, failing the next user's statements with 25P02), and a statement still
/// running under a dropped future.
async fn idle_at_server(
    conn: &mut AsyncPgConnection,
    application_name: &str,
) -> diesel::QueryResult<()> {
    use session::TransactionStatus;
    match session::settled_status(conn, SETTLE_BOUND).await {
        None | Some(TransactionStatus::Idle) => Ok(()),
        // Lost sessions are common (a restart, a failover) and reported where they fail; a
        // busy one is a statement whose caller went away.
        Some(status @ (TransactionStatus::Closed | TransactionStatus::Busy)) => {
            tracing::debug!(
                pool = application_name,
                ?status,
                "pooled database session closed"
            );
            Err(diesel::result::Error::BrokenTransactionManager)
        }
        Some(status) => {
            tracing::warn!(
                pool = application_name,
                ?status,
                "a pooled database session was not idle at the server; closed instead of reused"
            );
            Err(diesel::result::Error::BrokenTransactionManager)
        }
    }
}

/// A connection checked out of a pool.
type Pooled = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Runs `work` on a pooled connection with an overall deadline.
///
/// The deadline covers waiting for the connection too. A statement cut short by it leaves
/// its connection mid-conversation, and diesel-async flags a connection as broken only for an
/// unfinished *transaction*: returned to the pool, it would be handed out again and hang
/// again on a frozen link. So after a timeout or a connection-level error the connection is
/// taken out of the pool and closed; `statement_timeout` stops the server side. Only errors
/// known to leave the session usable (a row not found, a constraint refused) keep it.
///
/// Errors come back classified ([`StorageError::Refused`], [`StorageError::ConnectionLost`])
/// by the SQLSTATE the server sent. For a transaction use [`transaction`], which also tells
/// a failed `COMMIT` apart.
pub async fn with_connection<T, F>(
    pool: &DbPool,
    deadline: Duration,
    work: F,
) -> Result<T, StorageError>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StorageError>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut conn = checkout(pool, until, deadline).await?;
    match tokio::time::timeout_at(until, work(&mut conn)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            let error = explain(error, &mut conn);
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

/// An error a [`transaction`] body may return: storage errors convert into it, and the
/// storage error inside it, if any, can be reached (to classify it and to decide whether the
/// connection survives).
pub trait TransactionError: From<StorageError> {
    fn storage_error(&mut self) -> Option<&mut StorageError>;
}

impl TransactionError for StorageError {
    fn storage_error(&mut self) -> Option<&mut StorageError> {
        Some(self)
    }
}

/// Runs `body` in one transaction on a pooled connection, everything (waiting for the
/// connection, `BEGIN`, the body, `COMMIT`) under `deadline`. This is how every transaction
/// runs, so that none outlives its caller:
///
/// - cut short by the deadline or failing at the connection, the connection is closed, never
///   returned to the pool, so the server rolls back and releases the locks;
/// - a failure before `COMMIT` was sent means nothing was committed; its storage error is
///   classified as [`with_connection`] does, and [`StorageError::worth_retrying_at_once`] says
///   whether running the body again now is sensible;
/// - a failure of `COMMIT` itself is [`StorageError::OutcomeUnknown`], unless the server's
///   answer proves the transaction was rolled back (a conflict or a deferred constraint).
///
/// `body` may fail with its own error (a precondition, say): the transaction is rolled back
/// and the connection kept.
pub async fn transaction<T, E, F>(pool: &DbPool, deadline: Duration, body: F) -> Result<T, E>
where
    E: TransactionError,
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, E>,
{
    transaction_with(pool, deadline, LocalSettings::default(), body).await
}

/// Settings one transaction changes for itself (`SET LOCAL`), sent with its `BEGIN` in one
/// round trip. The default changes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalSettings {
    /// The idle-in-transaction limit, for a body that waits on something else between its
    /// statements (the outbox relay holds its claim while the broker confirms): the
    /// session's, a few statement timeouts, would end it first.
    pub idle_limit: Option<Duration>,
    /// `synchronous_commit = off`: `COMMIT` answers before its WAL is on disk, so it never
    /// waits for an fsync (which a checkpoint's writes can hold up for a hundred
    /// milliseconds and more). Only for a transaction whose loss in a server crash is
    /// harmless: the relay's, whose lost deletes publish those rows again, as duplicates
    /// consumers already ignore. A lost transaction is lost whole, never in part.
    pub commit_without_flush: bool,
}

impl LocalSettings {
    /// The `BEGIN` message, or `None` for a plain `BEGIN`.
    fn begin_sql(&self) -> Option<String> {
        let mut settings = Vec::new();
        if let Some(limit) = self.idle_limit {
            settings.push(format!(
                "SET LOCAL idle_in_transaction_session_timeout = {}",
                limit.as_millis()
            ));
        }
        if self.commit_without_flush {
            settings.push("SET LOCAL synchronous_commit = off".to_owned());
        }
        (!settings.is_empty()).then(|| format!("BEGIN; {}", settings.join("; ")))
    }
}

/// [`transaction`] with [`LocalSettings`] of its own.
pub async fn transaction_with<T, E, F>(
    pool: &DbPool,
    deadline: Duration,
    settings: LocalSettings,
    body: F,
) -> Result<T, E>
where
    E: TransactionError,
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, E>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut conn = checkout(pool, until, deadline).await?;
    let committing = AtomicBool::new(false);
    match tokio::time::timeout_at(
        until,
        run_transaction(&mut conn, settings, &committing, body),
    )
    .await
    {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Failed { error, keep })) => {
            if !keep {
                discard(conn);
            }
            Err(error)
        }
        Err(_) => {
            discard(conn);
            let timeout = StorageError::Timeout(deadline);
            Err(if committing.load(Ordering::Acquire) {
                StorageError::OutcomeUnknown {
                    cause: Box::new(timeout),
                }
            } else {
                timeout
            }
            .into())
        }
    }
}

struct Failed<E> {
    error: E,
    /// The session is clean (rolled back, nothing pending): the pool may hand it out again.
    keep: bool,
}

async fn run_transaction<T, E, F>(
    conn: &mut AsyncPgConnection,
    settings: LocalSettings,
    committing: &AtomicBool,
    body: F,
) -> Result<T, Failed<E>>
where
    E: TransactionError,
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, E>,
{
    type Manager = AnsiTransactionManager;
    let begun = match settings.begin_sql() {
        None => Manager::begin_transaction(conn).await,
        Some(sql) => Manager::begin_transaction_sql(conn, &sql).await,
    };
    if let Err(error) = begun {
        let error = explain(StorageError::Query(error), conn);
        return Err(Failed {
            error: error.into(),
            keep: false,
        });
    }
    match body(conn).await {
        Ok(value) => {
            committing.store(true, Ordering::Release);
            match Manager::commit_transaction(conn).await {
                Ok(()) => Ok(value),
                Err(error) => Err(Failed {
                    error: commit_failed(error, conn).into(),
                    keep: false,
                }),
            }
        }
        Err(mut error) => {
            let rolled_back = Manager::rollback_transaction(conn).await.is_ok();
            let mut keep = rolled_back;
            if let Some(storage) = error.storage_error() {
                let unclassified =
                    // A placeholder, replaced at once by the classified error.
                    std::mem::replace(storage, StorageError::Unavailable(Unavailable::Stopping));
                let classified = explain(unclassified, conn);
                keep &= classified.leaves_connection_usable();
                *storage = classified;
            }
            Err(Failed { error, keep })
        }
    }
}

/// What a failed `COMMIT` means: a rollback only when the server's answer proves one.
fn commit_failed(error: diesel::result::Error, conn: &mut AsyncPgConnection) -> StorageError {
    use diesel::result::{DatabaseErrorKind, Error};
    let error = match error {
        Error::RollbackErrorOnCommit { commit_error, .. } => *commit_error,
        other => other,
    };
    let rolled_back = match session::sqlstate_of(&error, conn) {
        Some(sqlstate) => sqlstate.proves_commit_rolled_back(),
        None => matches!(
            error,
            Error::DatabaseError(
                DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation
                    | DatabaseErrorKind::ExclusionViolation
                    | DatabaseErrorKind::RestrictViolation,
                _
            )
        ),
    };
    let error = explain(StorageError::Query(error), conn);
    if rolled_back {
        error
    } else {
        StorageError::OutcomeUnknown {
            cause: Box::new(error),
        }
    }
}

/// Classifies a query error by what the session saw: the server's SQLSTATE when it sent one
/// ([`StorageError::Refused`] for a retryable one), or a session that ended under the
/// statement ([`StorageError::ConnectionLost`]). Anything else is returned as it is.
pub fn explain(error: StorageError, conn: &mut AsyncPgConnection) -> StorageError {
    use diesel::result::{DatabaseErrorKind, Error};
    let StorageError::Query(query_error) = error else {
        return error;
    };
    if let Some(sqlstate) = session::sqlstate_of(&query_error, conn) {
        return if sqlstate.is_retryable() {
            StorageError::Refused {
                sqlstate,
                source: query_error,
            }
        } else {
            StorageError::Query(query_error)
        };
    }
    let lost = matches!(
        query_error,
        Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _
        )
    ) && session::is_closed(conn);
    if lost {
        StorageError::ConnectionLost {
            source: query_error,
        }
    } else {
        StorageError::Query(query_error)
    }
}

async fn checkout(
    pool: &DbPool,
    until: tokio::time::Instant,
    deadline: Duration,
) -> Result<Pooled, StorageError> {
    match tokio::time::timeout_at(until, pool.get()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(StorageError::Timeout(deadline)),
    }
}

/// Detaches a connection from its pool (freeing its slot) and closes it.
fn discard(conn: Pooled) {
    drop(Pooled::take(conn));
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

//! Opening a PostgreSQL session that remembers the SQLSTATE of each error the server sent.
//!
//! diesel-async keeps the server's error code to itself: it turns every error it has no
//! `DatabaseErrorKind` for (lock and statement timeouts, deadlocks, the server shutting down,
//! too many connections …) into `Unknown`, with only the message text left. Deciding by that
//! text would break with the server's language or version. So a pooled connection is opened
//! here instead: the socket is wrapped in a reader that follows the protocol's message framing
//! and notes the code (`C` field) and message (`M` field) of every `ErrorResponse`, and the
//! session's notes ride on the connection as its diesel instrumentation. [`sqlstate_of`] then
//! pairs a diesel error with the server error that has its exact message on that same
//! connection: the pairing uses the text only to find the server's own answer, whose code
//! decides.
//!
//! The reader also notices the server closing the session (end of stream, a `FATAL` error),
//! so a lost connection is told apart from a statement the client could not encode, and
//! dropping the connection closes its socket at once, even under a statement in flight. It
//! keeps the transaction status of the server's newest `ReadyForQuery` too, so the pool can
//! refuse to hand out a session the server still has inside a transaction
//! ([`settled_status`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::ConnectionError;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::task::AbortHandle;
use tokio_postgres::config::TargetSessionAttrs;

use crate::sqlstate::SqlState;
use transport::{Endpoint, Observed, connect, endpoints};
use wire::{Parser, Requests};

mod transport;
mod wire;

/// Server errors remembered per session; a statement raises one, the rest are history.
const REMEMBERED_ERRORS: usize = 8;

/// Opens a session to `database_url` (a `postgres://` URL or key-value string), without TLS
/// as diesel-async's own `establish` does. Honours host lists, `hostaddr`, Unix socket
/// directories, `connect_timeout` and `target_session_attrs`; TCP keep-alive is on with the
/// system's timings. See [`establish_within`].
pub async fn establish(database_url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    establish_within(database_url, None).await
}

/// [`establish`], with `per_host` bounding each host's attempt when the URL sets no
/// `connect_timeout`.
///
/// The hosts are tried in the order given, as libpq does. Each attempt — the socket, the
/// start-up, and for `target_session_attrs=read-write` (or `read-only`) the check of the
/// session — is bounded by `connect_timeout`, so a host that accepts TCP and never answers
/// costs that long and no more. A session of the wrong kind is closed and the next host
/// tried: with `read-write`, a standby (or a server set read-only) is passed over, so after a
/// failover new sessions find the promoted server wherever it is in the list.
///
/// Writability is asked with `SHOW transaction_read_only` (one round trip, on opening only).
/// It is `on` on a hot standby and wherever `default_transaction_read_only` is on, which is
/// what a writer must avoid; PostgreSQL 14's `in_hot_standby` report would save the round
/// trip but not exist on older servers.
pub async fn establish_within(
    database_url: &str,
    per_host: Option<Duration>,
) -> Result<AsyncPgConnection, ConnectionError> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    let limit = config.get_connect_timeout().copied().or(per_host);
    let mut failures = Vec::new();
    for endpoint in endpoints(&config) {
        let attempt = open(&config, &endpoint, limit);
        let outcome = match limit {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or(Err(HostError::TimedOut(limit))),
            None => attempt.await,
        };
        match outcome {
            Ok(conn) => return Ok(conn),
            Err(error) => {
                tracing::debug!(host = %endpoint, %error, "database host passed over");
                failures.push(format!("{endpoint}: {error}"));
            }
        }
    }
    Err(ConnectionError::BadConnection(failures.join("; ")))
}

/// Bound on opening one session to `database_url` with [`establish_within`]: each host of
/// the list may take its own bound (the URL's `connect_timeout`, else `per_host`), so that a
/// frozen first host leaves time for the next.
pub fn open_bound(database_url: &str, per_host: Duration) -> Duration {
    let Ok(config) = database_url.parse::<tokio_postgres::Config>() else {
        // `establish` reports the bad URL on first use.
        return per_host;
    };
    let hosts = u32::try_from(endpoints(&config).len()).unwrap_or(u32::MAX);
    let per_host = config.get_connect_timeout().copied().unwrap_or(per_host);
    per_host.saturating_mul(hosts)
}

/// Why one host of the list was passed over.
#[derive(Debug, thiserror::Error)]
enum HostError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("start-up failed: {0}")]
    Startup(tokio_postgres::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("cannot check whether the session is read-only: {0}")]
    Check(tokio_postgres::Error),
    #[error("the session is read-only (a standby, or a server set read-only)")]
    ReadOnly,
    #[error("the session is not read-only")]
    ReadWrite,
    #[error(transparent)]
    Setup(ConnectionError),
}

/// One host's session, checked against `target_session_attrs`.
async fn open(
    config: &tokio_postgres::Config,
    endpoint: &Endpoint,
    limit: Option<Duration>,
) -> Result<AsyncPgConnection, HostError> {
    let state = Arc::new(SessionState::default());
    let transport = connect(endpoint, limit).await.map_err(HostError::Connect)?;
    let stream = Observed {
        inner: transport,
        state: state.clone(),
        parser: Parser::default(),
        requests: Requests::default(),
    };
    let (client, connection) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .map_err(HostError::Startup)?;
    // Start-up is over and answered: both directions are at a message boundary.
    state.counting.store(true, Ordering::Release);

    let closed = state.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database session ended with an error");
        }
        closed.closed.store(true, Ordering::Release);
    })
    .abort_handle();
    // From here on, any early return drops the probe, which closes the session.
    let probe = SessionProbe { state, task };
    let wanted = match config.get_target_session_attrs() {
        TargetSessionAttrs::ReadWrite => Some(false),
        TargetSessionAttrs::ReadOnly => Some(true),
        _ => None,
    };
    if let Some(wanted) = wanted {
        let read_only = is_read_only(&client).await?;
        match (wanted, read_only) {
            (false, true) => return Err(HostError::ReadOnly),
            (true, false) => return Err(HostError::ReadWrite),
            _ => {}
        }
    }
    let mut conn = AsyncPgConnection::try_from(client)
        .await
        .map_err(HostError::Setup)?;
    conn.set_instrumentation(probe);
    Ok(conn)
}

async fn is_read_only(client: &tokio_postgres::Client) -> Result<bool, HostError> {
    let messages = client
        .simple_query("SHOW transaction_read_only")
        .await
        .map_err(HostError::Check)?;
    Ok(messages.iter().any(|message| {
        matches!(message, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("on"))
    }))
}

/// The SQLSTATE the server sent with `error`, when `error` is a server error on `conn` and
/// `conn` was opened by [`establish`].
///
/// Call it only once the statement's futures are gone (diesel-async's instrumentation is not
/// reachable while a query holds it).
pub fn sqlstate_of(
    error: &diesel::result::Error,
    conn: &mut AsyncPgConnection,
) -> Option<SqlState> {
    let diesel::result::Error::DatabaseError(_, info) = error else {
        return None;
    };
    state_of(conn)?.sqlstate_for(info.message())
}

/// Where `conn`'s session stands at the server once every request sent on it is answered:
/// the status byte of the server's newest `ReadyForQuery`. An error reaches the caller as soon
/// as its `ErrorResponse` is read, and the `ReadyForQuery` behind it may come a moment later,
/// so this waits for it, up to `within`. `None` when `conn` was not opened by [`establish`].
pub async fn settled_status(
    conn: &mut AsyncPgConnection,
    within: Duration,
) -> Option<TransactionStatus> {
    let state = state_of(conn)?;
    if state.settled() {
        // The usual case: nothing in flight, no timer or waiter needed.
        return Some(state.status());
    }
    let settled = tokio::time::timeout(within, async {
        loop {
            let answered = state.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if state.settled() {
                return;
            }
            answered.await;
        }
    })
    .await;
    Some(match settled {
        Ok(()) => state.status(),
        Err(_) => TransactionStatus::Busy,
    })
}

/// A session's transaction status as the server reports it after every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a failed transaction block: every statement is refused until it is rolled back.
    Failed,
    /// A request still unanswered (a statement still running, or a frozen link).
    Busy,
    /// The server ended the session or its socket failed.
    Closed,
    /// No `ReadyForQuery` seen.
    Unknown,
}

/// True when the server closed `conn`'s session or its socket failed.
pub fn is_closed(conn: &mut AsyncPgConnection) -> bool {
    state_of(conn).is_some_and(|state| state.closed.load(Ordering::Acquire))
}

/// What ends `conn`'s session at once (its socket closed) from anywhere, when `conn` was
/// opened by [`establish`]: for a connection handed to a blocking thread that must not
/// outlive a deadline.
pub fn closer(conn: &mut AsyncPgConnection) -> Option<AbortHandle> {
    conn.instrumentation()
        .downcast_ref::<SessionProbe>()
        .map(|probe| probe.task.clone())
}

fn state_of(conn: &mut AsyncPgConnection) -> Option<Arc<SessionState>> {
    conn.instrumentation()
        .downcast_ref::<SessionProbe>()
        .map(|probe| probe.state.clone())
}

/// What a session has seen of the server.
#[derive(Default)]
struct SessionState {
    errors: Mutex<VecDeque<ServerError>>,
    closed: AtomicBool,
    /// The status byte of the newest `ReadyForQuery` (0 before the first).
    transaction_status: AtomicU8,
    /// Requests and `ReadyForQuery`s are counted once start-up is over.
    counting: AtomicBool,
    /// Requests sent that the server has not answered with a `ReadyForQuery` yet.
    unanswered: AtomicI64,
    /// Woken by every `ReadyForQuery`.
    answered: tokio::sync::Notify,
}

struct ServerError {
    sqlstate: SqlState,
    message: String,
}

impl SessionState {
    fn record(&self, error: ServerError) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if errors.len() == REMEMBERED_ERRORS {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    /// Every request answered, or the session gone (nothing more will be answered).
    fn settled(&self) -> bool {
        self.unanswered.load(Ordering::Acquire) <= 0 || self.closed.load(Ordering::Acquire)
    }

    fn status(&self) -> TransactionStatus {
        if self.closed.load(Ordering::Acquire) {
            return TransactionStatus::Closed;
        }
        match self.transaction_status.load(Ordering::Acquire) {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            _ => TransactionStatus::Unknown,
        }
    }

    fn sent(&self, requests: u64) {
        self.unanswered.fetch_add(
            i64::try_from(requests).unwrap_or(i64::MAX),
            Ordering::AcqRel,
        );
    }

    /// `count` `ReadyForQuery`s read, the newest with transaction status `status`.
    fn answered(&self, status: u8, count: u64) {
        self.transaction_status.store(status, Ordering::Release);
        if self.counting.load(Ordering::Acquire) {
            self.unanswered
                .fetch_sub(i64::try_from(count).unwrap_or(i64::MAX), Ordering::AcqRel);
            self.answered.notify_waiters();
        }
    }

    /// The code of the newest server error with exactly this message.
    fn sqlstate_for(&self, message: &str) -> Option<SqlState> {
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        errors
            .iter()
            .rev()
            .find(|error| error.message == message)
            .map(|error| error.sqlstate)
    }
}

/// Rides on the connection as its instrumentation (the one slot diesel lets a connection carry
/// and hand back by type); ends the session's I/O task when the connection is dropped.
struct SessionProbe {
    state: Arc<SessionState>,
    task: AbortHandle,
}

impl Instrumentation for SessionProbe {
    fn on_connection_event(&mut self, _event: InstrumentationEvent<'_>) {}
}

impl Drop for SessionProbe {
    fn drop(&mut self) {
        // Without this, tokio-postgres keeps the socket open until a statement still in flight
        // finishes, and the server keeps its locks as long.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_error_with_the_message_wins() {
        let state = SessionState::default();
        for (code, message) in [("40001", "a"), ("55P03", "b"), ("57014", "a")] {
            state.record(ServerError {
                sqlstate: SqlState::parse(code).unwrap(),
                message: message.into(),
            });
        }
        assert_eq!(state.sqlstate_for("a"), SqlState::parse("57014"));
        assert_eq!(state.sqlstate_for("b"), Some(SqlState::LOCK_NOT_AVAILABLE));
        assert_eq!(state.sqlstate_for("c"), None);
    }
}

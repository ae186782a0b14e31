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
//! dropping the connection closes its socket at once, even under a statement in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use diesel::ConnectionError;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::task::AbortHandle;

use crate::sqlstate::SqlState;
use transport::{Observed, connect_transport};
use wire::Parser;

mod transport;
mod wire;

/// Server errors remembered per session; a statement raises one, the rest are history.
const REMEMBERED_ERRORS: usize = 8;

/// Opens a session to `database_url` (a `postgres://` URL or key-value string), without TLS
/// as diesel-async's own `establish` does. Honours host lists, `hostaddr`, Unix socket
/// directories and `connect_timeout`; TCP keep-alive is on with the system's timings.
pub async fn establish(database_url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    let state = Arc::new(SessionState::default());
    let transport = connect_transport(&config)
        .await
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    let stream = Observed {
        inner: transport,
        state: state.clone(),
        parser: Parser::default(),
    };
    let startup = config.connect_raw(stream, tokio_postgres::NoTls);
    let (client, connection) = match config.get_connect_timeout() {
        Some(limit) => tokio::time::timeout(*limit, startup)
            .await
            .map_err(|_| ConnectionError::BadConnection("connection startup timed out".into()))?,
        None => startup.await,
    }
    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;

    let closed = state.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database session ended with an error");
        }
        closed.closed.store(true, Ordering::Release);
    })
    .abort_handle();
    let probe = SessionProbe { state, task };
    let mut conn = AsyncPgConnection::try_from(client).await?;
    conn.set_instrumentation(probe);
    Ok(conn)
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

/// True when the server closed `conn`'s session or its socket failed.
pub fn is_closed(conn: &mut AsyncPgConnection) -> bool {
    state_of(conn).is_some_and(|state| state.closed.load(Ordering::Acquire))
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

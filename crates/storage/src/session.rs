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
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use diesel::ConnectionError;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::AbortHandle;
use tokio_postgres::config::Host;

use crate::sqlstate::SqlState;

/// Server errors remembered per session; a statement raises one, the rest are history.
const REMEMBERED_ERRORS: usize = 8;
/// Error messages longer than this are skipped (PostgreSQL's own are far shorter).
const LONGEST_ERROR: usize = 16 * 1024;

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

/// The socket: TCP or a Unix domain socket.
enum Transport {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

async fn connect_transport(config: &tokio_postgres::Config) -> io::Result<Transport> {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let addrs = config.get_hostaddrs();
    let limit = config.get_connect_timeout().copied();
    let count = hosts.len().max(addrs.len()).max(1);
    let mut last_error = None;
    for index in 0..count {
        let port = match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(index).copied().unwrap_or(5432),
        };
        let attempt = match (addrs.get(index), hosts.get(index)) {
            (Some(ip), _) => connect_tcp(&[SocketAddr::new(*ip, port)], limit).await,
            (None, Some(Host::Tcp(name))) => {
                match tokio::net::lookup_host((name.as_str(), port)).await {
                    Ok(found) => connect_tcp(&found.collect::<Vec<_>>(), limit).await,
                    Err(error) => Err(error),
                }
            }
            #[cfg(unix)]
            (None, Some(Host::Unix(dir))) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                bounded(limit, tokio::net::UnixStream::connect(path))
                    .await
                    .map(Transport::Unix)
            }
            (None, None) => {
                let localhost = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
                connect_tcp(&[localhost], limit).await
            }
        };
        match attempt {
            Ok(transport) => return Ok(transport),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no database host to connect to")))
}

async fn connect_tcp(addrs: &[SocketAddr], limit: Option<Duration>) -> io::Result<Transport> {
    let mut last_error = None;
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_keepalive(true)?;
        socket.set_nodelay(true)?;
        match bounded(limit, socket.connect(*addr)).await {
            Ok(stream) => return Ok(Transport::Tcp(stream)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("the host name resolved to no address")))
}

async fn bounded<T>(
    limit: Option<Duration>,
    connect: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connection timed out"))?,
        None => connect.await,
    }
}

/// The transport, with what the server sends followed message by message.
struct Observed {
    inner: Transport,
    state: Arc<SessionState>,
    parser: Parser,
}

impl Observed {
    fn closed(&self) {
        self.state.closed.store(true, Ordering::Release);
    }
}

impl AsyncRead for Observed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = match &mut this.inner {
            Transport::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        };
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before => this.closed(),
            Poll::Ready(Ok(())) => {
                for error in this.parser.feed(&buf.filled()[before..]) {
                    if error.fatal {
                        this.closed();
                    }
                    this.state.record(error.error);
                }
            }
            Poll::Ready(Err(_)) => this.closed(),
            Poll::Pending => {}
        }
        polled
    }
}

impl AsyncWrite for Observed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Transport::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        };
        if matches!(polled, Poll::Ready(Err(_))) {
            this.closed();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Transport::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Transport::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// An `ErrorResponse` read off the wire.
struct Parsed {
    error: ServerError,
    /// Severity `FATAL` or `PANIC`: the server ends the session after it.
    fatal: bool,
}

/// Follows the server's message framing (a type byte, a 4-byte big-endian length counting
/// itself, the body) across reads of any size, keeping the bodies of `ErrorResponse`s only.
#[derive(Default)]
struct Parser {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    body: Vec<u8>,
    keep_body: bool,
    /// A length that cannot be: stop looking rather than misread everything after it.
    lost: bool,
}

impl Parser {
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<Parsed> {
        let mut found = Vec::new();
        while !bytes.is_empty() && !self.lost {
            if self.header_len < self.header.len() {
                let take = (self.header.len() - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < self.header.len() {
                    break;
                }
                let length = i32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                let Some(remaining) = usize::try_from(length).ok().and_then(|l| l.checked_sub(4))
                else {
                    self.lost = true;
                    break;
                };
                self.remaining = remaining;
                self.keep_body = self.header[0] == b'E' && remaining <= LONGEST_ERROR;
                self.body.clear();
            } else {
                let take = self.remaining.min(bytes.len());
                if self.keep_body {
                    self.body.extend_from_slice(&bytes[..take]);
                }
                self.remaining -= take;
                bytes = &bytes[take..];
            }
            if self.remaining == 0 {
                if self.keep_body
                    && let Some(parsed) = parse_error_response(&self.body)
                {
                    found.push(parsed);
                }
                self.header_len = 0;
                self.keep_body = false;
                self.body.clear();
            }
        }
        found
    }
}

/// The fields of an `ErrorResponse` body: pairs of a field-type byte and a NUL-terminated
/// string, ended by a zero byte.
fn parse_error_response(body: &[u8]) -> Option<Parsed> {
    let (mut code, mut message, mut severity, mut localized_severity) = (None, None, None, None);
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        let value = &tail[..end];
        match kind {
            b'C' => code = std::str::from_utf8(value).ok().and_then(SqlState::parse),
            b'M' => message = Some(String::from_utf8_lossy(value).into_owned()),
            b'V' => severity = Some(value),
            b'S' => localized_severity = Some(value),
            _ => {}
        }
        rest = &tail[end + 1..];
    }
    // `V` is never translated; servers before 9.6 send only `S`.
    let severity = severity.or(localized_severity).unwrap_or_default();
    Some(Parsed {
        error: ServerError {
            sqlstate: code?,
            message: message?,
        },
        fatal: severity == b"FATAL" || severity == b"PANIC",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_response(severity: &str, code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            body.push(kind);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap()).to_be_bytes());
        message.extend_from_slice(&body);
        message
    }

    fn other_message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap()).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn finds_errors_between_other_messages_in_reads_of_any_size() {
        let mut stream = other_message(b'D', b"\x00\x01\x00\x00\x00\x03abc");
        stream.extend(error_response("ERROR", "55P03", "could not obtain lock"));
        stream.extend(other_message(b'Z', b"E"));
        stream.extend(error_response("FATAL", "57P01", "terminating connection"));
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut parser = Parser::default();
            let found: Vec<Parsed> = stream.chunks(chunk).flat_map(|c| parser.feed(c)).collect();
            assert_eq!(found.len(), 2, "chunk {chunk}");
            assert_eq!(found[0].error.sqlstate, SqlState::LOCK_NOT_AVAILABLE);
            assert_eq!(found[0].error.message, "could not obtain lock");
            assert!(!found[0].fatal);
            assert_eq!(found[1].error.sqlstate, SqlState::ADMIN_SHUTDOWN);
            assert!(found[1].fatal);
        }
    }

    #[test]
    fn an_impossible_length_stops_the_parser() {
        let mut parser = Parser::default();
        assert!(parser.feed(&[b'E', 0, 0, 0, 1]).is_empty());
        assert!(parser.lost);
        assert!(
            parser
                .feed(&error_response("ERROR", "40001", "x"))
                .is_empty()
        );
    }

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

//! The session's socket, and a reader that hands every byte the server sends to the
//! [`wire`](super::wire) parser on its way to tokio-postgres.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
#[cfg(unix)]
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_postgres::config::Host;

use super::SessionState;
use super::wire::{Parser, Requests};

/// The socket: TCP or a Unix domain socket.
pub(super) enum Transport {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// One entry of the host list, in the order the URL gives them.
pub(super) enum Endpoint {
    /// `hostaddr`: a numeric address, no name lookup.
    Addr(SocketAddr),
    Name(String, u16),
    #[cfg(unix)]
    Socket(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Name(name, port) => write!(f, "{name}:{port}"),
            #[cfg(unix)]
            Endpoint::Socket(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The hosts of `config`, each with its port (one port for all, or one per host).
pub(super) fn endpoints(config: &tokio_postgres::Config) -> Vec<Endpoint> {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let addrs = config.get_hostaddrs();
    let count = hosts.len().max(addrs.len()).max(1);
    (0..count)
        .map(|index| {
            let port = match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(index).copied().unwrap_or(5432),
            };
            match (addrs.get(index), hosts.get(index)) {
                (Some(ip), _) => Endpoint::Addr(SocketAddr::new(*ip, port)),
                (None, Some(Host::Tcp(name))) => Endpoint::Name(name.clone(), port),
                #[cfg(unix)]
                (None, Some(Host::Unix(dir))) => {
                    Endpoint::Socket(dir.join(format!(".s.PGSQL.{port}")))
                }
                (None, None) => Endpoint::Addr(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)),
            }
        })
        .collect()
}

/// Opens the socket to one endpoint; `limit` bounds each address tried.
pub(super) async fn connect(endpoint: &Endpoint, limit: Option<Duration>) -> io::Result<Transport> {
    match endpoint {
        Endpoint::Addr(addr) => connect_tcp(&[*addr], limit).await,
        Endpoint::Name(name, port) => {
            let found = tokio::net::lookup_host((name.as_str(), *port)).await?;
            connect_tcp(&found.collect::<Vec<_>>(), limit).await
        }
        #[cfg(unix)]
        Endpoint::Socket(path) => bounded(limit, tokio::net::UnixStream::connect(path))
            .await
            .map(Transport::Unix),
    }
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

/// The transport, with what the server sends followed message by message, and the requests
/// it must answer counted.
pub(super) struct Observed {
    pub(super) inner: Transport,
    pub(super) state: Arc<SessionState>,
    pub(super) parser: Parser,
    pub(super) requests: Requests,
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
                if let Some((status, answered)) = this.parser.take_ready() {
                    this.state.answered(status, answered);
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
        match &polled {
            Poll::Ready(Ok(written)) if this.state.counting.load(Ordering::Acquire) => {
                let sent = this.requests.feed(&buf[..*written]);
                if sent > 0 {
                    this.state.sent(sent);
                }
            }
            Poll::Ready(Err(_)) => this.closed(),
            _ => {}
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

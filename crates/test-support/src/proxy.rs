use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Bytes flow both ways.
    Open,
    /// Every connection is closed and new ones are closed on accept, as when a host is
    /// restarted or a link is cut.
    Cut,
    /// Sockets stay open but no byte moves, as with a frozen host or a silent firewall.
    Frozen,
    /// Bytes flow, but every answer from the server side is held back this long: a slow host
    /// (saturated, vacuuming, slow disk) that still works.
    Slow(std::time::Duration),
}

/// A TCP proxy in front of one service, for fault tests.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
    accept_task: JoinHandle<()>,
    links: Arc<AtomicUsize>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port, forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(LinkMode::Open);
        let links = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target.to_owned(),
            mode.clone(),
            links.clone(),
        ));
        Self {
            addr,
            mode,
            accept_task,
            links,
        }
    }

    /// Connections through the proxy right now (connected to the target, not yet closed):
    /// which of several proxies the clients use.
    pub fn links(&self) -> usize {
        self.links.load(Ordering::SeqCst)
    }

    /// `127.0.0.1:port` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.mode.send_replace(LinkMode::Cut);
        self.accept_task.abort();
    }
}

/// Counts a link while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(links: &Arc<AtomicUsize>) -> Self {
        links.fetch_add(1, Ordering::SeqCst);
        Self(links.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    mode: watch::Sender<LinkMode>,
    links: Arc<AtomicUsize>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let mut link = mode.subscribe();
        let target = target.clone();
        let links = links.clone();
        tokio::spawn(async move {
            // A connection made while frozen waits, like a SYN into a black hole.
            let state = match link.wait_for(|m| *m != LinkMode::Frozen).await {
                Ok(state) => *state,
                Err(_) => return,
            };
            if state == LinkMode::Cut {
                return;
            }
            let Ok(server) = TcpStream::connect(&target).await else {
                return;
            };
            let _counted = Counted::new(&links);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pipe(client_read, server_write, link.clone(), false),
                pipe(server_read, client_write, link, true),
            );
        });
    }
}

/// Copies `from` to `to` while the link is open; `answers` is the server-to-client
/// direction, the one a slow link delays.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut link: watch::Receiver<LinkMode>,
    answers: bool,
) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let mode = *link.borrow_and_update();
        match mode {
            LinkMode::Cut => return,
            LinkMode::Frozen => {
                if link.changed().await.is_err() {
                    return;
                }
                continue;
            }
            LinkMode::Open | LinkMode::Slow(_) => {}
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let delay = match *link.borrow() {
                        LinkMode::Slow(delay) if answers => Some(delay),
                        _ => None,
                    };
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    if to.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            },
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

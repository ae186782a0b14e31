use std::time::Duration;

use amqprs::callbacks::ConnectionCallback;
use amqprs::channel::Channel;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use tokio_util::sync::CancellationToken;

use crate::address::Node;
use crate::error::within;
use crate::{BrokerAddress, MessagingError};

/// Deadlines and heartbeat for talking to the broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Opening the TCP connection and the AMQP handshake.
    pub connect_timeout: Duration,
    /// Any request that waits for the broker's reply (declare, qos, consume, close).
    pub rpc_timeout: Duration,
    /// Handing one message to the connection's writer.
    pub publish_timeout: Duration,
    /// Waiting for the broker to confirm a batch of messages.
    pub confirm_timeout: Duration,
    /// Heartbeat interval when the URL does not set one; a dead link is noticed after about
    /// twice this.
    pub heartbeat: u16,
    /// Shown in the management UI.
    pub connection_name: String,
}

impl BrokerSettings {
    pub fn new(connection_name: impl Into<String>) -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(10),
            heartbeat: 10,
            connection_name: connection_name.into(),
        }
    }
}

/// One open connection and a token that is cancelled when it is lost.
///
/// Never repaired: when [`BrokerConnection::lost`] fires or any call fails, drop it and open a
/// new one.
pub struct BrokerConnection {
    connection: Connection,
    lost: CancellationToken,
    _watcher: WatcherGuard,
    settings: BrokerSettings,
}

impl BrokerConnection {
    /// Connects to a node of `address` that answers, trying them in a random order, each
    /// within the connect timeout.
    pub async fn open(
        address: &BrokerAddress,
        settings: &BrokerSettings,
    ) -> Result<Self, MessagingError> {
        let mut failures = Vec::new();
        for node in address.nodes_in_random_order() {
            match Self::open_node(node, settings).await {
                Ok(connection) => return Ok(connection),
                Err(error) if address.quorum_group_size().is_some() => {
                    tracing::debug!(node = %node, %error, "broker node did not answer; trying the next");
                    failures.push(format!("{node}: {error}"));
                }
                Err(error) => return Err(error),
            }
        }
        Err(MessagingError::NoNodeAnswered(failures.join("; ")))
    }

    async fn open_node(node: &Node, settings: &BrokerSettings) -> Result<Self, MessagingError> {
        let mut arguments =
            OpenConnectionArguments::new(&node.host, node.port, &node.user, &node.password);
        arguments
            .virtual_host(&node.vhost)
            .heartbeat(node.heartbeat.unwrap_or(settings.heartbeat))
            .connection_name(&settings.connection_name);
        let connection = within(
            "open connection",
            settings.connect_timeout,
            Connection::open(&arguments),
        )
        .await?;

        let lost = CancellationToken::new();
        within(
            "register connection callback",
            settings.rpc_timeout,
            connection.register_callback(CloseSignal(lost.clone())),
        )
        .await?;

        // `listen_network_io_failure` subscribes on its first poll and misses anything before
        // it, so poll it once here, then let a task wait on it.
        let watched = connection.clone();
        let mut failure = Box::pin(async move { watched.listen_network_io_failure().await });
        let early =
            std::future::poll_fn(|cx| std::task::Poll::Ready(failure.as_mut().poll(cx))).await;
        if early.is_ready() {
            lost.cancel();
        }
        let on_failure = lost.clone();
        let watcher = tokio::spawn(async move {
            failure.await;
            on_failure.cancel();
        });

        Ok(Self {
            connection,
            lost,
            _watcher: WatcherGuard(watcher),
            settings: settings.clone(),
        })
    }

    /// Cancelled once the connection is gone (network failure, broker close, or any part of
    /// this crate giving up on it).
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    pub fn is_usable(&self) -> bool {
        !self.lost.is_cancelled() && self.connection.is_open()
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Opens a channel with a callback registered, as amqprs needs for confirms, returns and
    /// server-sent cancels to work (`docs/dependencies.md#amqprs-channel-callbacks-and-confirms`).
    pub(crate) async fn open_channel(
        &self,
        callback: impl amqprs::callbacks::ChannelCallback + Send + 'static,
    ) -> Result<Channel, MessagingError> {
        let timeout = self.settings.rpc_timeout;
        let channel = within("open channel", timeout, self.connection.open_channel(None)).await?;
        within(
            "register channel callback",
            timeout,
            channel.register_callback(callback),
        )
        .await?;
        Ok(channel)
    }

    /// Closes politely, within the RPC deadline; dropping would close it in the background.
    pub async fn close(self) {
        self.lost.cancel();
        let _ = tokio::time::timeout(self.settings.rpc_timeout, self.connection.close()).await;
    }
}

struct WatcherGuard(tokio::task::JoinHandle<()>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        // The watcher holds a clone of the connection; it must not keep it alive.
        self.0.abort();
    }
}

/// Cancels the lost-token when the broker closes the connection.
struct CloseSignal(CancellationToken);

#[async_trait::async_trait]
impl ConnectionCallback for CloseSignal {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        tracing::warn!(reason = %close, "broker closed the connection");
        self.0.cancel();
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, reason: String) {
        tracing::warn!(%reason, "broker blocked the connection (resource alarm)");
    }

    async fn unblocked(&mut self, _: &Connection) {
        tracing::info!("broker unblocked the connection");
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}

/// Channel events, forwarded to whoever owns the channel. When the channel goes away amqprs
/// drops its callback, and with it the sender: the receiver then sees the end of the stream.
pub(crate) struct ChannelEvents {
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<ChannelEvent>,
    pub(crate) lost: CancellationToken,
}

#[derive(Debug)]
pub(crate) enum ChannelEvent {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
    },
    Returned {
        message_id: Option<String>,
        reason: String,
    },
    Closed(String),
    Cancelled,
}

#[async_trait::async_trait]
impl amqprs::callbacks::ChannelCallback for ChannelEvents {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        let reason = close.to_string();
        tracing::warn!(%reason, "broker closed a channel");
        let _ = self.tx.send(ChannelEvent::Closed(reason));
        // A later call on this connection would make the broker close it anyway (504).
        self.lost.cancel();
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, cancel: Cancel) -> Result<(), amqprs::error::Error> {
        tracing::warn!(consumer = %cancel.consumer_tag(), "broker cancelled a consumer");
        let _ = self.tx.send(ChannelEvent::Cancelled);
        self.lost.cancel();
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let _ = self.tx.send(ChannelEvent::Ack {
            tag: ack.delivery_tag(),
            multiple: ack.mutiple(),
        });
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let _ = self.tx.send(ChannelEvent::Nack {
            tag: nack.delivery_tag(),
            multiple: nack.multiple(),
        });
    }

    async fn publish_return(
        &mut self,
        _: &Channel,
        ret: Return,
        properties: BasicProperties,
        _: Vec<u8>,
    ) {
        let _ = self.tx.send(ChannelEvent::Returned {
            message_id: properties.message_id().cloned(),
            reason: format!("{} {}", ret.reply_code(), ret.reply_text()),
        });
    }
}

impl Drop for ChannelEvents {
    fn drop(&mut self) {
        self.lost.cancel();
    }
}

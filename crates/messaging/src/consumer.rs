use std::collections::HashMap;
use std::time::Duration;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage,
};
use amqprs::{FieldTable, FieldValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::ChannelEvents;
use crate::error::within;
use crate::topology;
use crate::{BrokerAddress, BrokerConnection, BrokerSettings, MessagingError};

/// One message handed to a consumer, to be acked with [`Consumer::ack`].
#[derive(Debug, Clone)]
pub struct Delivery {
    pub queue: &'static str,
    pub redelivered: bool,
    pub message_id: Option<String>,
    /// The AMQP `type` property (`product.change.v1`, `pipeline.heartbeat.v1`, …).
    pub message_type: Option<String>,
    /// String-valued headers (`x-request-id`, the dead-letter reasons, …).
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    channel: usize,
    tag: u64,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Consumes queues with manual acks, one channel per queue.
///
/// A channel per queue keeps each channel's delivery tags in the order its messages are
/// handed out, so acking "everything up to tag N" on a channel acks exactly what was
/// handled. Deliveries of all queues arrive merged, in per-queue order.
pub struct Consumer {
    connection: BrokerConnection,
    channels: Vec<Channel>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    forwarders: Vec<JoinHandle<()>>,
}

impl Consumer {
    /// Connects, declares the topology and starts consuming `queues` with at most
    /// `prefetch` unacked messages per queue.
    pub async fn open(
        address: &BrokerAddress,
        settings: &BrokerSettings,
        queues: &[&'static str],
        prefetch: u16,
    ) -> Result<Self, MessagingError> {
        let connection = BrokerConnection::open(address, settings).await?;
        let (tx, deliveries) = mpsc::unbounded_channel();
        let mut channels = Vec::with_capacity(queues.len());
        let mut forwarders = Vec::with_capacity(queues.len());
        for (index, queue) in queues.iter().copied().enumerate() {
            let (events, mut channel_events) = mpsc::unbounded_channel();
            let channel = connection
                .open_channel(ChannelEvents {
                    tx: events,
                    lost: connection.lost().clone(),
                })
                .await?;
            // The callback cancels `lost` on close or cancel; nothing else to read here.
            tokio::spawn(async move { while channel_events.recv().await.is_some() {} });
            if index == 0 {
                topology::declare(&channel, settings.rpc_timeout, address.quorum_group_size())
                    .await?;
            }
            // Before consuming, and never global on a quorum queue
            // (docs/dependencies.md#amqprs-consumers-and-prefetch).
            within(
                "basic.qos",
                settings.rpc_timeout,
                channel.basic_qos(BasicQosArguments::new(0, prefetch, false)),
            )
            .await?;
            let arguments = BasicConsumeArguments::new(queue, "")
                .manual_ack(true)
                .finish();
            let (_tag, messages) = within(
                "basic.consume",
                settings.rpc_timeout,
                channel.basic_consume_rx(arguments),
            )
            .await?;
            forwarders.push(tokio::spawn(forward(
                messages,
                queue,
                index,
                tx.clone(),
                connection.lost().clone(),
            )));
            channels.push(channel);
        }
        Ok(Self {
            connection,
            channels,
            deliveries,
            forwarders,
        })
    }

    /// Cancelled when the connection is lost; then drop this consumer.
    pub fn lost(&self) -> &CancellationToken {
        self.connection.lost()
    }

    /// Waits for a first delivery, then gathers more for up to `linger`, at most `max` in
    /// all. `None` once the connection is lost.
    pub async fn next_batch(&mut self, max: usize, linger: Duration) -> Option<Vec<Delivery>> {
        let first = tokio::select! {
            delivery = self.deliveries.recv() => delivery?,
            () = self.connection.lost().cancelled() => return None,
        };
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            let room = max - batch.len();
            match tokio::time::timeout_at(deadline, self.deliveries.recv_many(&mut batch, room))
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Some(batch)
    }

    /// Acks `handled`: everything up to the highest tag per channel. `handled` must hold every
    /// delivery this consumer gave out on those channels before them (batches are handled in
    /// order), which [`Consumer::next_batch`] guarantees.
    pub async fn ack(&self, handled: &[Delivery]) -> Result<(), MessagingError> {
        let mut last_tags: HashMap<usize, u64> = HashMap::new();
        for delivery in handled {
            let tag = last_tags.entry(delivery.channel).or_default();
            *tag = (*tag).max(delivery.tag);
        }
        for (channel, tag) in last_tags {
            let Some(channel) = self.channels.get(channel) else {
                continue;
            };
            // Acking on a closed channel would make the broker close the connection; the
            // messages will be redelivered instead.
            if !channel.is_open() || self.connection.lost().is_cancelled() {
                return Err(MessagingError::Closed("channel closed before ack".into()));
            }
            within(
                "basic.ack",
                self.connection.settings().rpc_timeout,
                channel.basic_ack(BasicAckArguments::new(tag, true)),
            )
            .await?;
        }
        Ok(())
    }

    /// Acks one delivery alone, leaving earlier unacked ones alone.
    pub async fn ack_one(&self, delivery: &Delivery) -> Result<(), MessagingError> {
        let channel = self
            .channels
            .get(delivery.channel)
            .filter(|c| c.is_open() && !self.connection.lost().is_cancelled())
            .ok_or_else(|| MessagingError::Closed("channel closed before ack".into()))?;
        within(
            "basic.ack",
            self.connection.settings().rpc_timeout,
            channel.basic_ack(BasicAckArguments::new(delivery.tag, false)),
        )
        .await
    }

    /// Closes the channels and the connection; unacked deliveries return to their queues.
    pub async fn close(self) {
        for forwarder in &self.forwarders {
            forwarder.abort();
        }
        let timeout = self.connection.settings().rpc_timeout;
        for channel in self.channels {
            let _ = tokio::time::timeout(timeout, channel.close()).await;
        }
        self.connection.close().await;
    }
}

async fn forward(
    mut messages: mpsc::UnboundedReceiver<ConsumerMessage>,
    queue: &'static str,
    channel: usize,
    tx: mpsc::UnboundedSender<Delivery>,
    lost: CancellationToken,
) {
    while let Some(message) = messages.recv().await {
        let Some(deliver) = message.deliver else {
            continue;
        };
        let properties = message.basic_properties;
        let delivery = Delivery {
            queue,
            redelivered: deliver.redelivered(),
            message_id: properties.as_ref().and_then(|p| p.message_id().cloned()),
            message_type: properties.as_ref().and_then(|p| p.message_type().cloned()),
            headers: properties
                .as_ref()
                .and_then(|p| p.headers())
                .map(string_headers)
                .unwrap_or_default(),
            body: message.content.unwrap_or_default(),
            channel,
            tag: deliver.delivery_tag(),
        };
        if tx.send(delivery).is_err() {
            return;
        }
    }
    // The stream ends when the channel or connection goes: nothing more will come.
    lost.cancel();
}

fn string_headers(table: &FieldTable) -> HashMap<String, String> {
    table
        .as_ref()
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                FieldValue::S(text) => text.to_string(),
                FieldValue::s(text) => text.to_string(),
                FieldValue::l(n) => n.to_string(),
                FieldValue::I(n) => n.to_string(),
                _ => return None,
            };
            Some((name.to_string(), text))
        })
        .collect()
}

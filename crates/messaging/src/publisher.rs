use std::collections::HashMap;

use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::{ChannelEvent, ChannelEvents};
use crate::error::within;
use crate::topology::{self, insert, long_str};
use crate::{BrokerAddress, BrokerConnection, BrokerSettings, MessagingError};

/// One message to publish to a queue through the default exchange.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub queue: &'static str,
    /// The broker's message id; for change events, the event id.
    pub message_id: String,
    pub message_type: &'static str,
    pub body: Vec<u8>,
    /// String headers, e.g. `x-request-id`.
    pub headers: Vec<(&'static str, String)>,
}

/// Publishes with confirms over one connection and one channel.
///
/// Messages are persistent and `mandatory`: a message the broker cannot route comes back
/// (`basic.return`) and counts as failed, instead of being acked into nowhere. Confirm tags
/// count 1, 2, 3… per channel in publish order, so all publishing goes through `&mut self`.
pub struct Publisher {
    connection: BrokerConnection,
    channel: Channel,
    events: mpsc::UnboundedReceiver<ChannelEvent>,
    next_tag: u64,
    app_id: String,
}

/// What happened to a batch: which messages the broker confirmed, and the error that stopped
/// the rest. After an error the publisher is spent: drop it and open a new one.
#[derive(Debug)]
pub struct PublishReport {
    pub confirmed: Vec<bool>,
    pub error: Option<MessagingError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Confirmed,
    Failed,
}

impl Publisher {
    /// Connects, enables confirms and declares the topology.
    pub async fn open(
        address: &BrokerAddress,
        settings: &BrokerSettings,
    ) -> Result<Self, MessagingError> {
        let connection = BrokerConnection::open(address, settings).await?;
        let (tx, events) = mpsc::unbounded_channel();
        let channel = connection
            .open_channel(ChannelEvents {
                tx,
                lost: connection.lost().clone(),
            })
            .await?;
        within(
            "confirm.select",
            settings.rpc_timeout,
            channel.confirm_select(ConfirmSelectArguments::default()),
        )
        .await?;
        topology::declare(&channel, settings.rpc_timeout, address.quorum_group_size()).await?;
        Ok(Self {
            connection,
            channel,
            events,
            next_tag: 1,
            app_id: settings.connection_name.clone(),
        })
    }

    /// Cancelled when the connection is lost; then drop this publisher.
    pub fn lost(&self) -> &CancellationToken {
        self.connection.lost()
    }

    pub fn is_usable(&self) -> bool {
        self.connection.is_usable()
    }

    /// Publishes `messages` in order and waits until the broker has confirmed or refused each,
    /// or the confirm deadline passes.
    pub async fn publish_confirmed(&mut self, messages: &[OutgoingMessage]) -> PublishReport {
        let settings = self.connection.settings().clone();
        let first_tag = self.next_tag;
        let mut outcomes = vec![Outcome::Pending; messages.len()];
        let mut index_by_id: HashMap<&str, usize> = HashMap::with_capacity(messages.len());
        let mut error = None;

        let mut published = 0;
        for (index, message) in messages.iter().enumerate() {
            if self.lost().is_cancelled() {
                error = Some(MessagingError::Closed("connection lost".into()));
                break;
            }
            let properties = self.properties(message);
            let arguments = BasicPublishArguments::new("", message.queue)
                .mandatory(true)
                .finish();
            let sent = within(
                "publish",
                settings.publish_timeout,
                self.channel
                    .basic_publish(properties, message.body.clone(), arguments),
            )
            .await;
            if let Err(e) = sent {
                error = Some(e);
                break;
            }
            index_by_id.insert(&message.message_id, index);
            self.next_tag += 1;
            published += 1;
        }

        let deadline = tokio::time::Instant::now() + settings.confirm_timeout;
        let mut pending = published;
        while pending > 0 {
            let event = tokio::select! {
                event = tokio::time::timeout_at(deadline, self.events.recv()) => event,
                () = self.connection.lost().cancelled() => Ok(Some(ChannelEvent::Closed("connection lost".into()))),
            };
            let (last, multiple, outcome) = match event {
                Err(_) => {
                    error.get_or_insert(MessagingError::Timeout {
                        operation: "publisher confirms",
                        timeout: settings.confirm_timeout,
                    });
                    break;
                }
                Ok(Some(ChannelEvent::Ack { tag, multiple })) => {
                    (tag, multiple, Outcome::Confirmed)
                }
                Ok(Some(ChannelEvent::Nack { tag, multiple })) => {
                    error.get_or_insert(MessagingError::Rejected {
                        message_id: format!("delivery tag {tag}"),
                        reason: "broker nacked the message".into(),
                    });
                    (tag, multiple, Outcome::Failed)
                }
                Ok(Some(ChannelEvent::Returned { message_id, reason })) => {
                    // A return comes before the message's ack: mark it so the ack cannot
                    // confirm it.
                    if let Some(&index) = message_id.as_deref().and_then(|id| index_by_id.get(id)) {
                        if outcomes[index] == Outcome::Pending {
                            outcomes[index] = Outcome::Failed;
                            pending -= 1;
                        }
                        error.get_or_insert(MessagingError::Rejected {
                            message_id: messages[index].message_id.clone(),
                            reason,
                        });
                    }
                    continue;
                }
                Ok(Some(ChannelEvent::Closed(reason))) => {
                    error.get_or_insert(MessagingError::Closed(reason));
                    break;
                }
                Ok(Some(ChannelEvent::Cancelled)) => continue,
                Ok(None) => {
                    error.get_or_insert(MessagingError::Closed("channel dropped".into()));
                    break;
                }
            };
            let settle_from = if multiple { first_tag } else { last };
            for tag in settle_from.max(first_tag)..=last {
                let Some(index) = tag.checked_sub(first_tag).map(|i| i as usize) else {
                    continue;
                };
                if let Some(slot) = outcomes.get_mut(index)
                    && *slot == Outcome::Pending
                {
                    *slot = outcome;
                    pending -= 1;
                }
            }
        }

        if error.is_some() {
            // Outcomes still pending are unknown: the broker may hold them. The caller will
            // publish them again (consumers are idempotent) on a new connection.
            self.connection.lost().cancel();
        }
        PublishReport {
            confirmed: outcomes.iter().map(|o| *o == Outcome::Confirmed).collect(),
            error,
        }
    }

    fn properties(&self, message: &OutgoingMessage) -> BasicProperties {
        let mut headers = FieldTable::new();
        for (key, value) in &message.headers {
            insert(&mut headers, key, FieldValue::S(long_str(value)));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        BasicProperties::default()
            .with_content_type("application/json")
            .with_persistence(true)
            .with_message_id(&message.message_id)
            .with_message_type(message.message_type)
            .with_app_id(&self.app_id)
            .with_timestamp(now)
            .with_headers(headers)
            .finish()
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(self.connection.settings().rpc_timeout, self.channel.close())
            .await;
        self.connection.close().await;
    }
}

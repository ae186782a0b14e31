//! `replicator dlq list` and `replicator dlq replay`.

use std::time::Duration;

use domain::ChangeEvent;
use messaging::topology::{DEAD_LETTER_QUEUE, queue_for};
use messaging::{
    BrokerAddress, BrokerSettings, Consumer, Delivery, MessagingError, OutgoingMessage, Publisher,
};
use serde::Serialize;

/// How long the DLQ must stay quiet before a listing or replay ends.
const IDLE: Duration = Duration::from_secs(1);
/// How long the first delivery may take: on a busy broker a fresh consumer can wait a
/// while for its first messages, and an empty answer must mean an empty queue.
const FIRST: Duration = Duration::from_secs(5);

/// One dead-lettered message, as `dlq list` prints it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub replica: Option<String>,
    pub attempts: Option<String>,
    pub original_queue: Option<String>,
    pub body: String,
}

impl DeadLetter {
    fn from(delivery: &Delivery) -> Self {
        let header = |name: &str| delivery.header(name).map(str::to_owned);
        Self {
            message_id: delivery.message_id.clone(),
            // Messages the broker dead-lettered itself (delivery limit) carry its headers.
            reason: header("x-dlq-reason").or_else(|| header("x-first-death-reason")),
            error: header("x-dlq-error"),
            replica: header("x-dlq-replica"),
            attempts: header("x-dlq-attempts").or_else(|| header("x-delivery-count")),
            original_queue: header("x-original-queue").or_else(|| header("x-first-death-queue")),
            body: String::from_utf8_lossy(&delivery.body)
                .chars()
                .take(2000)
                .collect(),
        }
    }
}

/// Up to `max` messages of the DLQ. They stay in it: nothing is acked.
pub async fn list(
    address: &BrokerAddress,
    settings: &BrokerSettings,
    max: u16,
) -> Result<Vec<DeadLetter>, MessagingError> {
    let mut consumer = Consumer::open(address, settings, &[DEAD_LETTER_QUEUE], max).await?;
    let mut listed = Vec::new();
    while listed.len() < usize::from(max) {
        let wait = if listed.is_empty() { FIRST } else { IDLE };
        match tokio::time::timeout(
            wait,
            consumer.next_batch(usize::from(max) - listed.len(), IDLE),
        )
        .await
        {
            Ok(Some(batch)) => listed.extend(batch.iter().map(DeadLetter::from)),
            Ok(None) | Err(_) => break,
        }
    }
    consumer.close().await;
    Ok(listed)
}

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub replayed: usize,
    /// Still undecodable: left in the DLQ.
    pub kept: usize,
}

/// Moves up to `max` decodable messages back to their work queue (confirmed before they
/// leave the DLQ); undecodable ones stay.
pub async fn replay(
    address: &BrokerAddress,
    settings: &BrokerSettings,
    max: u16,
) -> Result<ReplayReport, MessagingError> {
    let mut consumer = Consumer::open(address, settings, &[DEAD_LETTER_QUEUE], max).await?;
    let mut publisher = Publisher::open(address, settings).await?;
    let mut report = ReplayReport::default();
    let mut seen = 0;
    while seen < usize::from(max) {
        let wait = if seen == 0 { FIRST } else { IDLE };
        let batch =
            match tokio::time::timeout(wait, consumer.next_batch(usize::from(max) - seen, IDLE))
                .await
            {
                Ok(Some(batch)) => batch,
                Ok(None) | Err(_) => break,
            };
        seen += batch.len();
        let mut replayable = Vec::new();
        let mut outgoing = Vec::new();
        for delivery in batch {
            let Ok(event) = ChangeEvent::decode(&delivery.body) else {
                report.kept += 1;
                continue;
            };
            let mut headers = Vec::new();
            if let Some(request_id) = delivery.header("x-request-id") {
                headers.push(("x-request-id", request_id.to_owned()));
            }
            outgoing.push(OutgoingMessage {
                queue: queue_for(event.kind()),
                message_id: event.event_id.to_string(),
                message_type: messaging::topology::CHANGE_EVENT_TYPE,
                body: delivery.body.clone(),
                headers,
            });
            replayable.push(delivery);
        }
        let published = publisher.publish_confirmed(&outgoing).await;
        if let Some(error) = published.error {
            consumer.close().await;
            return Err(error);
        }
        // Only the replayed ones are acked, one by one: the kept ones must stay unacked.
        for delivery in &replayable {
            consumer.ack_one(delivery).await?;
        }
        report.replayed += replayable.len();
    }
    publisher.close().await;
    consumer.close().await;
    Ok(report)
}

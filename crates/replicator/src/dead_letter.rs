//! Messages for `products.dlq`, the same on every path: a change that arrived undecodable, a
//! change a healthy replica refused on the live path, and one it refused while catch-up or
//! `resync` copied it from the primary.

use domain::ChangeEvent;
use messaging::topology::{DEAD_LETTER_QUEUE, queue_for};
use messaging::{
    BrokerAddress, BrokerSettings, Delivery, MessagingError, OutgoingMessage, Publisher,
};
use storage::products::ProductRow;

/// Why a message is dead-lettered, and where.
pub struct Verdict<'a> {
    pub reason: &'a str,
    pub error: &'a str,
    /// The replica that refused it, or `none`.
    pub replica: &'a str,
    pub attempts: u32,
}

/// A delivered message as it arrived, with the verdict in its headers.
pub fn from_delivery(delivery: &Delivery, verdict: &Verdict<'_>) -> OutgoingMessage {
    message(
        delivery.body.clone(),
        delivery
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        delivery.queue,
        delivery.header("x-request-id"),
        verdict,
    )
}

/// A row copied from the primary that a replica refused, as the change event that would
/// have carried it, so `replicator dlq replay` can send it back to its queue.
pub fn from_copied_row(row: &ProductRow, verdict: &Verdict<'_>) -> Option<OutgoingMessage> {
    let product = row.clone().into_product().ok()?;
    // Catch-up reads the row, not an outbox entry: it has no outbox sequence number, and the
    // event schema asks for a positive one.
    let event = ChangeEvent {
        event_id: uuid::Uuid::now_v7(),
        seq: 1,
        product,
    };
    Some(message(
        event.encode(),
        event.event_id.to_string(),
        queue_for(event.kind()),
        None,
        verdict,
    ))
}

fn message(
    body: Vec<u8>,
    message_id: String,
    original_queue: &str,
    request_id: Option<&str>,
    verdict: &Verdict<'_>,
) -> OutgoingMessage {
    let mut headers = vec![
        ("x-dlq-reason", verdict.reason.to_owned()),
        ("x-dlq-error", verdict.error.chars().take(500).collect()),
        ("x-dlq-replica", verdict.replica.to_owned()),
        ("x-dlq-attempts", verdict.attempts.to_string()),
        ("x-original-queue", original_queue.to_owned()),
    ];
    if let Some(request_id) = request_id {
        headers.push(("x-request-id", request_id.to_owned()));
    }
    OutgoingMessage {
        queue: DEAD_LETTER_QUEUE,
        message_id,
        message_type: "rejected-change",
        body,
        headers,
    }
}

/// Publishes `messages` to the DLQ with confirms, and counts them under `reason`.
pub async fn publish(
    publisher: &mut Publisher,
    messages: &[OutgoingMessage],
    reason: &'static str,
) -> Result<(), MessagingError> {
    if messages.is_empty() {
        return Ok(());
    }
    let report = publisher.publish_confirmed(messages).await;
    if let Some(error) = report.error {
        return Err(error);
    }
    metrics::counter!("replicator_dead_lettered_total", "reason" => reason)
        .increment(messages.len() as u64);
    Ok(())
}

/// Opens a publisher for one hand-off and closes it again (catch-up and `resync`, where
/// refusals are rare).
pub async fn publish_once(
    address: &BrokerAddress,
    settings: &BrokerSettings,
    messages: &[OutgoingMessage],
    reason: &'static str,
) -> Result<(), MessagingError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut publisher = Publisher::open(address, settings).await?;
    let published = publish(&mut publisher, messages, reason).await;
    publisher.close().await;
    published
}

//! The queues, declared identically by every service: redeclaring a queue with different
//! arguments is a channel error (406) that takes the connection down
//! (`docs/dependencies.md#rabbitmq-quorum-queue-arguments`), so this is the only place their
//! arguments are written.

use std::time::Duration;

use amqprs::channel::{Channel, QueueDeclareArguments};
use amqprs::{FieldTable, FieldValue};
use domain::ChangeKind;

use crate::MessagingError;
use crate::error::within;

/// Upserts (creates, replaces, patches, re-creates).
pub const SYNC_QUEUE: &str = "products.sync";
/// Deletes (tombstones).
pub const DELETE_QUEUE: &str = "products.delete";
/// Messages that can never apply, with the reason in their headers.
pub const DEAD_LETTER_QUEUE: &str = "products.dlq";

/// The AMQP `type` of a change event message.
pub const CHANGE_EVENT_TYPE: &str = "product.change.v1";
/// The AMQP `type` of a pipeline heartbeat (on `products.sync`; not a change, never
/// dead-lettered). Its body is `{"beat": N, "beat_at": "<RFC 3339>"}`.
pub const HEARTBEAT_TYPE: &str = "pipeline.heartbeat.v1";

/// The queues a consumer of changes reads.
pub const WORK_QUEUES: [&str; 2] = [SYNC_QUEUE, DELETE_QUEUE];

/// Deliveries of one message before the broker dead-letters it. A lost connection also counts
/// as a delivery, so this is generous: it only stops a message that crashes its consumer
/// again and again.
pub const DELIVERY_LIMIT: i64 = 20;

/// The queue a change of this kind travels on.
pub fn queue_for(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Upsert => SYNC_QUEUE,
        ChangeKind::Delete => DELETE_QUEUE,
    }
}

/// Declares the work queues and the dead-letter queue: durable quorum queues, dead-lettering
/// at least once to `products.dlq`, with `group_size` replicas each on a cluster
/// ([`crate::BrokerAddress::quorum_group_size`]). Every service declares them alike: a queue
/// redeclared with other arguments is refused (406). The replication of a queue that exists
/// already stays as it was (`rabbitmq-queues grow` adds members).
pub async fn declare(
    channel: &Channel,
    timeout: Duration,
    group_size: Option<u8>,
) -> Result<(), MessagingError> {
    let mut dlq = QueueDeclareArguments::durable_client_named(DEAD_LETTER_QUEUE);
    dlq.arguments(quorum(group_size));
    within("declare products.dlq", timeout, channel.queue_declare(dlq)).await?;

    for queue in WORK_QUEUES {
        let mut arguments = quorum(group_size);
        insert(
            &mut arguments,
            "x-dead-letter-exchange",
            FieldValue::S(long_str("")),
        );
        insert(
            &mut arguments,
            "x-dead-letter-routing-key",
            FieldValue::S(long_str(DEAD_LETTER_QUEUE)),
        );
        // at-least-once dead-lettering needs reject-publish overflow, or the broker silently
        // falls back to at-most-once.
        insert(
            &mut arguments,
            "x-dead-letter-strategy",
            FieldValue::S(long_str("at-least-once")),
        );
        insert(
            &mut arguments,
            "x-overflow",
            FieldValue::S(long_str("reject-publish")),
        );
        // Must be an integer: a string is accepted and ignored.
        insert(
            &mut arguments,
            "x-delivery-limit",
            FieldValue::l(DELIVERY_LIMIT),
        );
        let mut declare = QueueDeclareArguments::durable_client_named(queue);
        declare.arguments(arguments);
        within(
            "declare work queue",
            timeout,
            channel.queue_declare(declare),
        )
        .await?;
    }
    Ok(())
}

fn quorum(group_size: Option<u8>) -> FieldTable {
    let mut table = FieldTable::new();
    insert(
        &mut table,
        "x-queue-type",
        FieldValue::S(long_str("quorum")),
    );
    if let Some(size) = group_size {
        // An integer, as every numeric queue argument must be.
        insert(
            &mut table,
            "x-quorum-initial-group-size",
            FieldValue::l(i64::from(size)),
        );
    }
    table
}

pub(crate) fn insert(table: &mut FieldTable, key: &str, value: FieldValue) {
    // Keys here are short ASCII constants or header names we choose; a key over 255 bytes is
    // a programming error, and skipping it is safer than panicking in a service.
    if let Ok(key) = key.try_into() {
        table.insert(key, value);
    }
}

pub(crate) fn long_str(text: &str) -> amqprs::LongStr {
    text.try_into().unwrap_or_default()
}

//! RabbitMQ for every service, through amqprs.
//!
//! amqprs has no reconnect and no timeouts
//! (`docs/dependencies.md#amqprs-has-no-reconnect-and-no-timeouts`), so this crate puts a
//! deadline on every call and never repairs a connection: on any error, timeout or close the
//! caller drops the whole [`BrokerConnection`] and opens a new one after a backoff.
//!
//! - [`BrokerAddress`]: a validated `amqp://` URL.
//! - [`topology`]: the queues and their arguments, declared the same way by every service.
//! - [`BrokerConnection`]: one connection with its lost-signal.
//! - [`Publisher`]: persistent, mandatory publishes with publisher confirms.
//! - [`Consumer`]: manual-ack consumption of several queues, in batches.

mod address;
mod connection;
mod consumer;
mod error;
mod publisher;
pub mod topology;

pub use address::BrokerAddress;
pub use connection::{BrokerConnection, BrokerSettings};
pub use consumer::{Consumer, Delivery};
pub use error::MessagingError;
pub use publisher::{OutgoingMessage, PublishReport, Publisher};

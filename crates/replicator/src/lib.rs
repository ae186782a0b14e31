//! replicator: applies every change event to every read replica.
//!
//! - [`consume`]: batches from the queues, applied everywhere, then acked; undecodable
//!   messages to the DLQ.
//! - [`apply`]: one batch on one replica, version-guarded, with retries.
//! - [`index_merge`]: merges each replica's name-index pending list off the apply path.
//! - [`catchup`]: brings a replica that missed changes level, from the primary.
//! - [`copy`]: keyset-paged copies (catch-up and `resync`); [`verify`], [`resync`], [`dlq`]:
//!   the operator commands; [`dead_letter`]: messages for `products.dlq`, the same on every
//!   path.
//! - [`commands`]: the command line (`serve`, `resync`, `verify`, `dlq`) and their reports.
//! - [`app`]: wiring; [`settings`]: configuration.

pub mod app;
pub mod apply;
pub mod catchup;
pub mod commands;
pub mod consume;
pub mod copy;
pub mod dead_letter;
pub mod dlq;
pub mod health;
pub mod index_merge;
pub mod replica;
pub mod resync;
pub mod settings;
pub mod verify;

pub use app::Application;
pub use settings::Settings;

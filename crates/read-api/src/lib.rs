//! read-api: the read side of the catalogue.
//!
//! - [`routes`]: the HTTP handlers; [`errors`] maps failures to status codes and adds
//!   `X-Served-By`.
//! - [`router`]: picks a source per read ([`strategy`]) and retries elsewhere within a
//!   deadline (each attempt through `storage::pool::with_connection`, which never reuses a
//!   timed-out connection).
//! - [`source`]: a replica or the primary, with its health state machine and weight;
//!   [`health`] probes them, [`lag`] says how far behind a replica is, [`latency`] keeps the
//!   peak-EWMA latency `p2c_ewma` compares.
//! - [`reads`]: the queries; [`lookups`] batches concurrent lookups by id on a source into
//!   one statement; [`list_query`], [`cursor`] and [`min_version`] parse requests.
//! - [`status`]: `/api/replicas`, `/readyz`, gauges; [`app`]: wiring; [`settings`].

pub mod app;
pub mod cursor;
pub mod errors;
pub mod health;
pub mod lag;
pub mod latency;
pub mod list_query;
pub mod lookups;
pub mod min_version;
pub mod openapi;
pub mod reads;
pub mod router;
pub mod routes;
pub mod settings;
pub mod source;
pub mod status;
pub mod strategy;

pub use app::Application;
pub use settings::Settings;
pub use strategy::Strategy;

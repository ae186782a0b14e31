//! The runtime every service binary shares.
//!
//! - [`config`]: defaults, then an optional TOML file, then environment variables, with
//!   unknown file keys refused and [`SecretUrl`]s that never print their password.
//! - [`groups`]: the settings groups the services share (HTTP, database pool, broker,
//!   replicas), flattened into each service's settings.
//! - [`telemetry`]: `tracing` to stdout, as text or JSON lines.
//! - [`metrics`]: the Prometheus recorder and its text rendering.
//! - [`shutdown`]: a cancellation token fired by SIGTERM or Ctrl-C.
//! - [`Supervisor`]: owns the HTTP server and the background tasks; a task that ends
//!   unexpectedly fails `/readyz` and stops the process non-zero. [`http`]: the server wiring.
//! - [`replicas`]: the replica list from `REPLICA_URLS` or `REPLICA_1_URL`/`REPLICA_2_URL`.
//! - [`runtime`]: the tokio runtime of a service's background and database work.
//! - [`Backoff`]: exponential backoff with full jitter.

mod backoff;
pub mod config;
pub mod groups;
pub mod http;
pub mod metrics;
pub mod replicas;
pub mod runtime;
mod secret;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;

pub use backoff::Backoff;
pub use secret::{SecretText, SecretUrl};
pub use supervisor::{Stopped, Supervisor, TaskHealth};

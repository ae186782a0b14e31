//! write-api: the write side of the catalogue.
//!
//! - [`catalogue`]: create, replace, patch and delete; [`change`] decides what each does to a
//!   row; [`group_commit`] runs concurrent writes in one transaction (products and outbox
//!   rows together).
//! - [`relay`]: publishes the outbox to RabbitMQ with confirms, then deletes what was confirmed.
//! - [`routes`]: the HTTP handlers; [`errors`] maps failures to status codes.
//! - [`access`]: the bearer token writes need when `WRITE_API_TOKEN` is set.
//! - [`openapi`]: the OpenAPI document and `/docs/`.
//! - [`app`]: wiring and shutdown; [`settings`]: configuration.

pub mod access;
pub mod app;
pub mod catalogue;
pub mod change;
pub mod errors;
pub mod group_commit;
pub mod openapi;
pub mod preconditions;
pub mod readiness;
pub mod relay;
pub mod routes;
pub mod settings;

pub use app::Application;
pub use settings::Settings;

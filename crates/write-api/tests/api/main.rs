//! write-api over HTTP against the real PostgreSQL and RabbitMQ: each test runs its own app on
//! a free port with its own database and vhost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod bad_input;
mod create;
mod database;
mod group_commit;
mod helpers;
mod ops;
mod relay;
mod update;

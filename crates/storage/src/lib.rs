//! PostgreSQL access for every service: schema, migrations, pools and queries.
//!
//! Query functions take a connection, never a pool, so that callers decide what shares a
//! transaction: write-api writes a product and its outbox row in one, the replicator applies a
//! batch in one. Those write-api pipelines take a shared `&AsyncPgConnection`, the rest
//! `&mut` (docs/dependencies.md "Pipelined statements").
//!
//! - [`pool`]: pools, [`pool::with_connection`] and [`pool::transaction`], which bound every
//!   call and close a connection cut short; [`session`]: sessions that keep the server's
//!   SQLSTATE; [`sqlstate`] and [`StorageError`]: the one classification of database errors.
//! - [`products`], [`outbox`], [`replica`], [`replication_status`], [`catchup`]: one file
//!   per table and its queries; [`schema`]; [`migrations`].

pub mod catchup;
mod error;
pub mod heartbeat;
pub mod migrations;
pub mod outbox;
pub mod pool;
mod prepared;
pub mod products;
pub mod replica;
pub mod replication_status;
pub mod schema;
pub mod session;
pub mod sqlstate;
pub mod staleness;

pub use diesel_async::AsyncPgConnection;
pub use error::{StorageError, Unavailable};
pub use pool::{DbPool, PoolSettings, TransactionError};
pub use sqlstate::SqlState;

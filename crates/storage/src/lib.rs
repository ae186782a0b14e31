//! PostgreSQL access for every service: schema, migrations, pools and queries.
//!
//! Query functions take a `&mut AsyncPgConnection`, never a pool, so that callers decide what
//! shares a transaction: write-api writes a product and its outbox row in one, the replicator
//! applies a batch in one.

pub mod catchup;
mod error;
pub mod migrations;
pub mod outbox;
pub mod pool;
pub mod products;
pub mod replica;
pub mod replication_status;
pub mod schema;
pub mod staleness;

pub use diesel_async::AsyncPgConnection;
pub use error::StorageError;
pub use pool::{DbPool, PoolSettings};

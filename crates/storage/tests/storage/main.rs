//! Storage against a real PostgreSQL: one database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod catchup;
mod errors;
mod failover;
mod migrations;
mod outbox;
mod products;
mod replica_apply;

use storage::AsyncPgConnection;
use test_support::TestDatabase;

/// A fresh, migrated database and a connection to it.
pub async fn migrated() -> (TestDatabase, AsyncPgConnection) {
    let db = TestDatabase::create().await;
    storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let conn = db.connect().await;
    (db, conn)
}

pub fn fields(name: &str, cents: i64, stock: i64) -> domain::ProductFields {
    domain::ProductFields {
        name: domain::ProductName::parse(name).unwrap(),
        price: domain::Price::from_cents(cents).unwrap(),
        stock: domain::Stock::new(stock).unwrap(),
    }
}

//! Storage against a real PostgreSQL: one database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod catchup;
mod errors;
mod failover;
mod migrations;
mod outbox;
mod prepared;
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

/// A new product at version 1, as write-api would make it (timestamps at PostgreSQL's
/// microsecond precision, so what is read back compares equal).
pub fn new_product(name: &str, cents: i64, stock: i64) -> domain::Product {
    let now = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
        .expect("now is in range");
    let fields = fields(name, cents, stock);
    domain::Product {
        id: domain::ProductId::generate(),
        name: fields.name,
        price: fields.price,
        stock: fields.stock,
        created_at: now,
        updated_at: now,
        version: domain::Version::FIRST,
        deleted_at: None,
    }
}

/// `product`'s tombstone, one version up.
pub fn deleted(product: &domain::Product) -> domain::Product {
    let later = product.updated_at + chrono::Duration::milliseconds(1);
    domain::Product {
        version: product.version.next(),
        updated_at: later,
        deleted_at: Some(later),
        ..product.clone()
    }
}

/// Stores `products` the way write-api does: locked by id, then written in one statement.
pub async fn stored(conn: &mut AsyncPgConnection, products: &[domain::Product]) {
    use diesel_async::AsyncConnection;
    let ids: Vec<domain::ProductId> = products.iter().map(|p| p.id).collect();
    let rows: Vec<storage::products::ProductRow> = products.iter().map(Into::into).collect();
    conn.transaction::<_, storage::StorageError, _>(async |conn| {
        storage::products::lock_group(conn, &ids).await?;
        storage::products::store(conn, &rows).await
    })
    .await
    .unwrap();
}

//! Rows a replica refuses are isolated by halving, and every other row is applied.

use std::time::Duration;

use chrono::Utc;
use diesel_async::RunQueryDsl;
use replicator::copy::apply_isolating_refusals;
use storage::pool::PoolSettings;
use storage::products::ProductRow;
use test_support::TestDatabase;
use uuid::Uuid;

fn row(name: &str) -> ProductRow {
    let now = Utc::now();
    ProductRow {
        id: Uuid::now_v7(),
        name: name.into(),
        price_cents: 100,
        stock: 1,
        created_at: now,
        updated_at: now,
        version: 1,
        deleted_at: None,
    }
}

#[tokio::test]
async fn refused_rows_are_isolated_and_the_rest_applied() {
    let db = TestDatabase::create().await;
    storage::migrations::run_pending(db.url(), Duration::from_secs(60))
        .await
        .unwrap();
    let mut conn = db.connect().await;
    diesel::sql_query(
        "ALTER TABLE products ADD CONSTRAINT no_refuse CHECK (name NOT LIKE 'refuse%')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let rows: Vec<ProductRow> = (0..37)
        .map(|i| {
            row(&format!(
                "{} {i}",
                if i % 9 == 4 { "refuse" } else { "keep" }
            ))
        })
        .collect();
    let expected_refused: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.name.starts_with("refuse"))
        .map(|r| r.id)
        .collect();
    let pool = storage::pool::build(db.url(), &PoolSettings::new("isolate-test")).unwrap();

    let isolated = apply_isolating_refusals(&pool, Duration::from_secs(10), rows)
        .await
        .unwrap();

    let mut refused: Vec<Uuid> = isolated.refused.iter().map(|(r, _)| r.id).collect();
    refused.sort();
    let mut expected = expected_refused.clone();
    expected.sort();
    assert_eq!(refused, expected);
    assert!(
        isolated
            .refused
            .iter()
            .all(|(_, why)| why.contains("no_refuse"))
    );
    assert_eq!(isolated.rows_changed, 37 - expected.len());
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let stored: Count = diesel::sql_query("SELECT count(*) AS n FROM products")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.n, 37 - expected.len() as i64);
}

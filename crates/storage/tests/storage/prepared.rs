//! The write path's hot statements are prepared once per connection, whatever the batch
//! size: planned on every call, they cost the server about as much again as running them.

use diesel_async::RunQueryDsl;
use storage::AsyncPgConnection;

use crate::{migrated, new_product, stored};

/// Statements this session holds prepared whose text starts with `prefix`.
async fn prepared(conn: &mut AsyncPgConnection, prefix: &str) -> i64 {
    // A literal query: never prepared itself, so it does not count.
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '{prefix}%')"
    )))
    .get_result(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_lock_and_the_upsert_are_prepared_once_for_every_group_size() {
    let (_db, mut conn) = migrated().await;
    for size in [1, 3, 7] {
        let group: Vec<domain::Product> = (0..size)
            .map(|n| new_product(&format!("Lamp {n}"), 100, 1))
            .collect();
        stored(&mut conn, &group).await;
    }
    assert_eq!(prepared(&mut conn, "INSERT INTO products").await, 1);
    assert_eq!(prepared(&mut conn, "SELECT now() FROM").await, 1);
}

#[tokio::test]
async fn the_outbox_insert_is_prepared_once_and_keeps_the_order_given() {
    let (_db, mut conn) = migrated().await;
    let mut written = Vec::new();
    for size in [1, 4] {
        let group: Vec<domain::Product> = (0..size)
            .map(|n| new_product(&format!("Desk {n}"), 100, 1))
            .collect();
        let changes: Vec<(&domain::Product, Option<&str>)> =
            group.iter().map(|p| (p, Some("req"))).collect();
        storage::outbox::enqueue_all(&conn, &changes).await.unwrap();
        written.extend(group.iter().map(|p| p.id.as_uuid()));
    }
    assert_eq!(prepared(&mut conn, "INSERT INTO outbox").await, 1);
    let in_seq_order: Vec<uuid::Uuid> = diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Array<diesel::sql_types::Uuid>,
    >(
        "(SELECT array_agg(product_id ORDER BY seq) FROM outbox)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(in_seq_order, written);
}

#[tokio::test]
async fn a_replicator_batch_with_its_status_line_is_prepared_once_for_every_size() {
    let (_db, mut conn) = migrated().await;
    for (seq, size) in [1, 3, 7].into_iter().enumerate() {
        let rows: Vec<storage::products::ProductRow> = (0..size)
            .map(|n| {
                storage::products::ProductRow::from(&new_product(&format!("Vase {n}"), 100, 1))
            })
            .collect();
        let status = storage::replica::AppliedBatch {
            last_event_id: uuid::Uuid::new_v4(),
            last_event_seq: seq as i64 + 1,
            newest_event_at: chrono::Utc::now(),
            events: size as i64,
        };
        let changed = storage::replica::apply_batch(&mut conn, &rows, Some(&status))
            .await
            .unwrap();
        assert_eq!(changed, size);
    }
    assert_eq!(prepared(&mut conn, "WITH applied AS").await, 1);
}

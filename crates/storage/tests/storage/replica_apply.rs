//! The apply rule as a property: any history of changes, shuffled, duplicated and split into
//! any batches, leaves a real replica equal to the final state of every product.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use proptest::prelude::*;
use storage::products::ProductRow;
use storage::replica::{apply, apply_batch, newest_per_id};
use storage::schema::products;
use uuid::Uuid;

/// One product's history: each step an upsert (name, cents, stock) or a delete.
fn history() -> impl Strategy<Value = Vec<Option<(u8, i64, i32)>>> {
    prop::collection::vec(
        prop::option::weighted(0.7, (0u8..50, 0i64..100_000, 0i32..1000)),
        1..8,
    )
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

/// The row at every version of a product with this history.
fn versions(id: Uuid, steps: &[Option<(u8, i64, i32)>]) -> Vec<ProductRow> {
    let mut rows: Vec<ProductRow> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let version = index as i64 + 1;
        let previous = rows.last().cloned();
        let row = match (step, previous) {
            (Some((name, cents, stock)), _) => ProductRow {
                id,
                name: format!("product {name}"),
                price_cents: *cents,
                stock: *stock,
                created_at: at(0),
                updated_at: at(version),
                version,
                deleted_at: None,
            },
            (None, Some(previous)) => ProductRow {
                updated_at: at(version),
                version,
                deleted_at: Some(at(version)),
                ..previous
            },
            (None, None) => ProductRow {
                id,
                name: "gone".into(),
                price_cents: 0,
                stock: 0,
                created_at: at(0),
                updated_at: at(version),
                version,
                deleted_at: Some(at(version)),
            },
        };
        rows.push(row);
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_order_any_duplicates_converge(
        histories in prop::collection::vec(history(), 1..12),
        duplicates in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        order_seed in any::<u64>(),
        batch_sizes in prop::collection::vec(1usize..7, 1..10),
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (_db, mut conn) = crate::migrated().await;
            let mut expected = HashMap::new();
            let mut changes = Vec::new();
            for steps in &histories {
                let rows = versions(Uuid::new_v4(), steps);
                expected.insert(rows[0].id, rows.last().unwrap().clone());
                changes.extend(rows);
            }
            for index in &duplicates {
                let again = changes[index.index(changes.len())].clone();
                changes.push(again);
            }
            // A deterministic shuffle from the seed (proptest shrinks the seed, not the order).
            let mut state = order_seed | 1;
            for i in (1..changes.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                changes.swap(i, (state % (i as u64 + 1)) as usize);
            }

            let mut rest = changes.as_slice();
            let mut sizes = batch_sizes.iter().cycle();
            while !rest.is_empty() {
                let size = (*sizes.next().unwrap()).min(rest.len());
                let (batch, tail) = rest.split_at(size);
                apply_batch(&mut conn, &newest_per_id(batch.iter().cloned()), None).await.unwrap();
                rest = tail;
            }

            let stored: Vec<ProductRow> = products::table
                .select(ProductRow::as_select())
                .load(&mut conn)
                .await
                .unwrap();
            let stored: HashMap<Uuid, ProductRow> = stored.into_iter().map(|r| (r.id, r)).collect();
            assert_eq!(stored, expected);
        });
    }
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let (_db, mut conn) = crate::migrated().await;
    let rows = versions(
        Uuid::new_v4(),
        &[Some((1, 100, 1)), None, Some((2, 200, 2))],
    );
    apply_batch(&mut conn, &[rows[2].clone()], None)
        .await
        .unwrap();
    let changed = apply_batch(&mut conn, &[rows[1].clone()], None)
        .await
        .unwrap();
    assert_eq!(changed, 0);
    let changed = apply_batch(&mut conn, &[rows[2].clone()], None)
        .await
        .unwrap();
    assert_eq!(changed, 0, "the same version twice changes nothing");
    let stored: ProductRow = products::table
        .select(ProductRow::as_select())
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, rows[2]);
}

/// A catch-up page and a live batch touching the same rows in different orders: each locks
/// in id order, so the second waits for the first instead of holding one row while waiting
/// for another (a deadlock PostgreSQL breaks by failing one of them).
#[tokio::test]
async fn batches_touching_the_same_rows_in_any_order_do_not_deadlock() {
    let (db, mut first) = crate::migrated().await;
    let mut ids = [Uuid::new_v4(), Uuid::new_v4()];
    ids.sort();
    let [low, high] = ids.map(|id| versions(id, &[Some((1, 100, 1)), Some((2, 200, 2))]));
    for statement in ["BEGIN", "SET LOCAL lock_timeout = '5s'"] {
        diesel::sql_query(statement)
            .execute(&mut first)
            .await
            .unwrap();
    }
    apply(&first, &[low[0].clone()]).await.unwrap();
    // Listed high first: applied in that order it would lock `high`, then wait for `low`.
    let second = {
        let mut conn = db.connect().await;
        let batch = [high[1].clone(), low[1].clone()];
        tokio::spawn(async move { apply_batch(&mut conn, &batch, None).await })
    };
    // Long enough for the second batch to queue behind `low`.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let high_from_first = apply(&first, &[high[0].clone()]).await;
    diesel::sql_query("COMMIT")
        .execute(&mut first)
        .await
        .unwrap();
    assert!(
        high_from_first.is_ok(),
        "the first batch could not take the second row: {high_from_first:?}"
    );
    assert_eq!(second.await.unwrap().unwrap(), 2);
}

/// A batch with its status line is one statement: the rows and the line land together or
/// not at all, and `last_event_at` only moves forward.
#[tokio::test]
async fn a_batch_and_its_status_line_land_together_or_not_at_all() {
    use storage::replica::AppliedBatch;
    use storage::schema::replication_status as rs;

    let (_db, mut conn) = crate::migrated().await;
    let rows = versions(Uuid::new_v4(), &[Some((1, 100, 1)), Some((2, 200, 2))]);
    let status = |seq: i64, seconds: i64| AppliedBatch {
        last_event_id: Uuid::new_v4(),
        last_event_seq: seq,
        newest_event_at: at(seconds),
        events: 1,
    };
    let line =
        async |conn: &mut storage::AsyncPgConnection| -> (i64, Option<i64>, Option<DateTime<Utc>>) {
            rs::table
                .select((rs::events_applied, rs::last_event_seq, rs::last_event_at))
                .first(conn)
                .await
                .unwrap()
        };
    let before = line(&mut conn).await.0;

    let changed = apply_batch(&mut conn, &[rows[1].clone()], Some(&status(2, 20)))
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(line(&mut conn).await, (before + 1, Some(2), Some(at(20))));

    // An older change, delivered late: no row changes, the line counts it and keeps its time.
    let changed = apply_batch(&mut conn, &[rows[0].clone()], Some(&status(1, 10)))
        .await
        .unwrap();
    assert_eq!(changed, 0);
    assert_eq!(line(&mut conn).await, (before + 2, Some(1), Some(at(20))));

    // A row the replica refuses (the price is out of range) fails the whole statement.
    let refused = ProductRow {
        id: Uuid::new_v4(),
        price_cents: -1,
        ..rows[1].clone()
    };
    let result = apply_batch(&mut conn, &[refused], Some(&status(3, 30))).await;
    assert!(result.is_err(), "a refused row must fail the batch");
    assert_eq!(line(&mut conn).await, (before + 2, Some(1), Some(at(20))));
    let stored: ProductRow = products::table
        .select(ProductRow::as_select())
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, rows[1]);
}

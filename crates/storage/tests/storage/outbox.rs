use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use domain::ChangeKind;
use storage::{StorageError, outbox};

use crate::{deleted, migrated, new_product, stored};

#[tokio::test]
async fn enqueue_claim_and_remove() {
    let (_db, mut conn) = migrated().await;
    let created = new_product("Lamp", 1999, 3);
    let deleted = deleted(&created);
    outbox::enqueue_all(&conn, &[(&created, Some("req-1")), (&deleted, None)])
        .await
        .unwrap();

    let backlog = outbox::backlog(&mut conn).await.unwrap();
    assert_eq!(backlog.rows, 2);
    assert!(backlog.oldest.is_some());

    let claimed: Vec<_> = conn
        .transaction::<_, StorageError, _>(async |conn| outbox::claim(conn, 10).await)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(claimed.len(), 2);
    assert!(claimed[0].event.seq < claimed[1].event.seq);
    assert_eq!(claimed[0].event.product, created);
    assert_eq!(claimed[0].event.kind(), ChangeKind::Upsert);
    assert_eq!(claimed[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(claimed[1].event.product, deleted);
    assert_eq!(claimed[1].event.kind(), ChangeKind::Delete);

    let seqs: Vec<i64> = claimed.iter().map(|p| p.event.seq).collect();
    assert_eq!(outbox::remove(&mut conn, &seqs).await.unwrap(), 2);
    assert_eq!(outbox::backlog(&mut conn).await.unwrap().rows, 0);
}

#[tokio::test]
async fn two_relays_never_claim_the_same_row() {
    let (db, mut conn) = migrated().await;
    let changes: Vec<_> = (0..10).map(|i| new_product("p", i, 0)).collect();
    stored(&mut conn, &changes).await;
    let changes: Vec<_> = changes.iter().map(|p| (p, None)).collect();
    outbox::enqueue_all(&conn, &changes).await.unwrap();
    let mut other = db.connect().await;
    conn.transaction::<_, StorageError, _>(async |conn| {
        let first = outbox::claim(conn, 6).await?;
        let second = other
            .transaction::<_, StorageError, _>(async |other| outbox::claim(other, 100).await)
            .await?;
        assert_eq!(first.len(), 6);
        assert_eq!(second.len(), 4, "locked rows are skipped, not waited for");
        let mine: Vec<i64> = first
            .iter()
            .map(|r| r.as_ref().unwrap().event.seq)
            .collect();
        assert!(
            second
                .iter()
                .all(|r| !mine.contains(&r.as_ref().unwrap().event.seq))
        );
        Ok(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn undecodable_rows_are_moved_aside_with_their_reason() {
    let (_db, mut conn) = migrated().await;
    let good = new_product("Lamp", 100, 1);
    outbox::enqueue_all(&conn, &[(&good, None)]).await.unwrap();
    conn.batch_execute(
        "INSERT INTO outbox (event_id, product_id, version, name, price_cents, stock, \
             created_at, updated_at) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 1, '', 1, 1, now(), now()), \
                (gen_random_uuid(), gen_random_uuid(), 1, 'ok', -5, 1, now(), now())",
    )
    .await
    .unwrap();
    let claimed = conn
        .transaction::<_, StorageError, _>(async |conn| outbox::claim(conn, 10).await)
        .await
        .unwrap();
    let bad: Vec<(i64, String)> = claimed
        .into_iter()
        .filter_map(Result::err)
        .map(|(seq, error)| (seq, error.to_string()))
        .collect();
    assert_eq!(bad.len(), 2);
    assert_eq!(outbox::dead_letter(&mut conn, &bad).await.unwrap(), 2);

    let backlog = outbox::backlog(&mut conn).await.unwrap();
    assert_eq!((backlog.rows, backlog.estimated), (1, false));
    assert_eq!(outbox::dead_letters(&mut conn).await.unwrap().rows, 2);
    #[derive(diesel::QueryableByName)]
    struct Reason {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seq: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        reason: String,
    }
    let stored: Vec<Reason> =
        diesel::sql_query("SELECT seq, reason FROM outbox_dead_letters ORDER BY seq")
            .load(&mut conn)
            .await
            .unwrap();
    for ((seq, reason), row) in bad.iter().zip(&stored) {
        assert_eq!((seq, reason), (&row.seq, &row.reason));
    }
}

#[tokio::test]
async fn a_large_backlog_is_estimated_not_counted() {
    let (_db, mut conn) = migrated().await;
    let rows = outbox::EXACT_COUNT_LIMIT + 500;
    conn.batch_execute(&format!(
        "INSERT INTO outbox (event_id, product_id, version, name, price_cents, stock, \
             created_at, updated_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 1, 'p', 1, 1, now(), now() \
         FROM generate_series(1, {rows})"
    ))
    .await
    .unwrap();
    // The live-row estimate is flushed by the backend about once a second.
    let mut backlog = outbox::backlog(&mut conn).await.unwrap();
    for _ in 0..100 {
        if backlog.rows == rows {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        backlog = outbox::backlog(&mut conn).await.unwrap();
    }
    assert_eq!(backlog.rows, rows);
    assert!(backlog.estimated);
    assert!(backlog.oldest.is_some());
}

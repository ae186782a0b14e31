use diesel_async::AsyncConnection;
use domain::{ChangeKind, ProductId};
use storage::{StorageError, outbox, products};

use crate::{fields, migrated};

#[tokio::test]
async fn enqueue_claim_and_remove() {
    let (_db, mut conn) = migrated().await;
    let id = ProductId::generate();
    let created = products::insert_new(&mut conn, id, &fields("Lamp", 1999, 3))
        .await
        .unwrap()
        .unwrap();
    outbox::enqueue(&mut conn, &created, Some("req-1"))
        .await
        .unwrap();
    let deleted = products::mark_deleted(&mut conn, &created).await.unwrap();
    outbox::enqueue(&mut conn, &deleted, None).await.unwrap();

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
    for i in 0..10 {
        let product = products::insert_new(&mut conn, ProductId::generate(), &fields("p", i, 0))
            .await
            .unwrap()
            .unwrap();
        outbox::enqueue(&mut conn, &product, None).await.unwrap();
    }
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

use diesel_async::AsyncConnection;
use domain::{ProductId, Version};
use storage::{StorageError, products};

use crate::{fields, migrated};

#[tokio::test]
async fn insert_new_creates_version_one_once() {
    let (_db, mut conn) = migrated().await;
    let id = ProductId::generate();
    let created = products::insert_new(&mut conn, id, &fields("Lamp", 1999, 3))
        .await
        .unwrap()
        .expect("inserted");
    assert_eq!(created.version, Version::FIRST);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.price.cents(), 1999);
    assert!(!created.is_deleted());

    let again = products::insert_new(&mut conn, id, &fields("Other", 1, 1))
        .await
        .unwrap();
    assert!(again.is_none(), "an existing id must not be overwritten");
    assert_eq!(products::find(&mut conn, id).await.unwrap(), Some(created));
}

#[tokio::test]
async fn overwrite_delete_and_revive_raise_the_version() {
    let (_db, mut conn) = migrated().await;
    let id = ProductId::generate();
    let v1 = products::insert_new(&mut conn, id, &fields("Lamp", 1999, 3))
        .await
        .unwrap()
        .unwrap();
    let v2 = products::overwrite(&mut conn, &v1, &fields("Lamp XL", 2999, 1))
        .await
        .unwrap();
    assert_eq!(v2.version.get(), 2);
    assert_eq!(v2.created_at, v1.created_at, "an update keeps created_at");
    assert_eq!(v2.name.as_str(), "Lamp XL");

    let v3 = products::mark_deleted(&mut conn, &v2).await.unwrap();
    assert_eq!(v3.version.get(), 3);
    assert_eq!(v3.deleted_at, Some(v3.updated_at));
    assert_eq!(v3.name, v2.name, "a tombstone keeps the last fields");

    let v4 = products::overwrite(&mut conn, &v3, &fields("Lamp again", 5, 5))
        .await
        .unwrap();
    assert_eq!(
        v4.version.get(),
        4,
        "a re-create continues from the tombstone"
    );
    assert!(!v4.is_deleted());
    assert!(v4.created_at > v1.created_at, "a re-created product is new");
}

#[tokio::test]
async fn money_round_trips_exactly() {
    let (_db, mut conn) = migrated().await;
    for cents in [0, 1, 10, 9999, 100_050, domain::Price::MAX_CENTS] {
        let id = ProductId::generate();
        products::insert_new(&mut conn, id, &fields("p", cents, 0))
            .await
            .unwrap();
        let stored = products::find(&mut conn, id).await.unwrap().unwrap();
        assert_eq!(stored.price.cents(), cents);
    }
}

#[tokio::test]
async fn lock_holds_the_row_until_commit() {
    let (db, mut conn) = migrated().await;
    let id = ProductId::generate();
    products::insert_new(&mut conn, id, &fields("Lamp", 1, 1))
        .await
        .unwrap();

    let mut other = db.connect().await;
    use diesel_async::SimpleAsyncConnection;
    other
        .batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();

    conn.transaction::<_, StorageError, _>(async |conn| {
        products::lock(conn, id).await?.expect("row");
        let blocked = other
            .transaction::<_, StorageError, _>(async |other| products::lock(other, id).await)
            .await;
        assert!(blocked.is_err(), "a second lock must wait for the first");
        Ok(())
    })
    .await
    .unwrap();
}

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use domain::ProductId;
use storage::StorageError;
use storage::products::{self, ProductRow};

use crate::{deleted, migrated, new_product, stored};

#[tokio::test]
async fn stored_products_and_tombstones_read_back_field_for_field() {
    let (_db, mut conn) = migrated().await;
    let lamp = new_product("Lamp", 1999, 3);
    stored(&mut conn, std::slice::from_ref(&lamp)).await;
    assert_eq!(
        products::find(&mut conn, lamp.id).await.unwrap(),
        Some(lamp.clone())
    );

    let tombstone = deleted(&lamp);
    stored(&mut conn, std::slice::from_ref(&tombstone)).await;
    assert_eq!(
        products::find(&mut conn, lamp.id).await.unwrap(),
        Some(tombstone)
    );
    assert_eq!(
        products::find(&mut conn, ProductId::generate())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn many_lookups_in_one_statement_return_live_rows_and_tombstones_only() {
    let (_db, mut conn) = migrated().await;
    let lamp = new_product("Lamp", 1999, 3);
    let desk = new_product("Desk", 25_000, 1);
    stored(&mut conn, &[lamp.clone(), desk.clone()]).await;
    let tombstone = deleted(&desk);
    stored(&mut conn, std::slice::from_ref(&tombstone)).await;
    let absent = ProductId::generate();

    let mut found = products::find_many(&mut conn, &[absent, desk.id, lamp.id, lamp.id])
        .await
        .unwrap();
    found.sort_by_key(|p| p.name.as_str().to_owned());
    assert_eq!(
        found,
        vec![tombstone, lamp],
        "one row per id, absent ids missing"
    );
    assert!(
        products::find_many(&mut conn, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn money_round_trips_exactly() {
    let (_db, mut conn) = migrated().await;
    let prices = [0, 1, 10, 9999, 100_050, domain::Price::MAX_CENTS];
    let all: Vec<_> = prices.iter().map(|c| new_product("p", *c, 0)).collect();
    stored(&mut conn, &all).await;
    for (product, cents) in all.iter().zip(prices) {
        let stored = products::find(&mut conn, product.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.price.cents(), cents);
    }
}

#[tokio::test]
async fn store_refuses_a_row_that_is_not_newer_than_the_stored_one() {
    let (_db, mut conn) = migrated().await;
    let lamp = new_product("Lamp", 1, 1);
    stored(&mut conn, std::slice::from_ref(&lamp)).await;
    let again = conn
        .transaction::<_, StorageError, _>(async |conn| {
            products::store(conn, &[ProductRow::from(&lamp)]).await
        })
        .await
        .unwrap_err();
    assert!(matches!(again, StorageError::Corrupt { .. }), "{again:?}");
}

#[tokio::test]
async fn lock_group_holds_every_id_until_commit_even_an_absent_one() {
    let (db, mut conn) = migrated().await;
    let lamp = new_product("Lamp", 1, 1);
    stored(&mut conn, std::slice::from_ref(&lamp)).await;
    let absent = ProductId::generate();

    let mut other = db.connect().await;
    other
        .batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();
    conn.transaction::<_, StorageError, _>(async |conn| {
        let (_, read) = products::lock_group(conn, &[absent, lamp.id]).await?;
        assert_eq!(
            read,
            std::slice::from_ref(&lamp),
            "the rows are read under the locks"
        );
        for id in [lamp.id, absent] {
            let blocked = other
                .transaction::<_, StorageError, _>(async |other| {
                    products::lock_group(other, &[id]).await
                })
                .await;
            assert!(
                blocked.is_err(),
                "a second lock on {id} must wait for the first"
            );
        }
        Ok(())
    })
    .await
    .unwrap();
    other
        .transaction::<_, StorageError, _>(async |other| {
            products::lock_group(other, &[lamp.id, absent]).await
        })
        .await
        .expect("free once the first transaction ended");
}

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

/// The locks and the read are pipelined: a group that waited for another's lock must still
/// read what that group committed (a read taken before the lock was granted would see the id
/// absent, and the group would create a product that exists).
#[tokio::test]
async fn a_group_that_waited_for_a_lock_reads_what_the_holder_committed() {
    let (db, mut holder) = migrated().await;
    let lamp = new_product("Lamp", 1, 1);
    let mut waiter = db.connect().await;
    let mut watcher = db.connect().await;
    holder
        .transaction::<_, StorageError, _>(async |holder| {
            let (_, read) = products::lock_group(holder, &[lamp.id]).await?;
            assert!(read.is_empty());
            let waiting = tokio::spawn(async move {
                waiter
                    .transaction::<_, StorageError, _>(async |waiter| {
                        products::lock_group(waiter, &[lamp.id]).await
                    })
                    .await
            });
            // The waiter's lock statement is queued behind ours before we store and commit.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while waiting_for_advisory_locks(&mut watcher).await == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the waiter never queued"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            products::store(holder, &[ProductRow::from(&lamp)]).await?;
            Ok(waiting)
        })
        .await
        .unwrap()
        .await
        .unwrap()
        .map(|(_, read)| assert_eq!(read, std::slice::from_ref(&lamp)))
        .unwrap();
}

async fn waiting_for_advisory_locks(conn: &mut diesel_async::AsyncPgConnection) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = BigInt)]
        waiting: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS waiting FROM pg_locks \
         WHERE locktype = 'advisory' AND NOT granted AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result::<Waiting>(conn)
    .await
    .unwrap()
    .waiting
}

/// Sequential scans of `products` by `lock_group` once the table has grown tenfold, on a
/// session that first ran it right after an analyse of the small table.
async fn scans_after_growth(index_scans_only: bool) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Scans {
        #[diesel(sql_type = BigInt)]
        seq_scan: i64,
    }

    let (db, mut filler) = migrated().await;
    let small: Vec<domain::Product> = (0..100)
        .map(|i| new_product(&format!("Small {i}"), 100, 1))
        .collect();
    stored(&mut filler, &small).await;
    // As autovacuum does on a young table; none may come later (it would make PostgreSQL
    // plan again).
    filler
        .batch_execute("ANALYZE products; ALTER TABLE products SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    let mut settings = storage::PoolSettings::new("plan-cache test");
    settings.max_size = 1;
    settings.index_scans_only = index_scans_only;
    let pool = storage::pool::build(db.url(), &settings).unwrap();
    let deadline = std::time::Duration::from_secs(10);
    // Five custom plans, then PostgreSQL settles on the generic one.
    for _ in 0..8 {
        let group: Vec<ProductId> = (0..32).map(|_| ProductId::generate()).collect();
        storage::pool::with_connection(&pool, deadline, async |conn| {
            products::lock_group(conn, &group).await
        })
        .await
        .unwrap();
    }
    let grown: Vec<domain::Product> = (0..2_000)
        .map(|i| new_product(&format!("Grown {i}"), 100, 1))
        .collect();
    stored(&mut filler, &grown).await;

    storage::pool::transaction::<_, StorageError, _>(&pool, deadline, async |conn| {
        products::lock_group(conn, &[grown[7].id, ProductId::generate()]).await?;
        let scans: Scans = diesel::sql_query(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'products'",
        )
        .get_result(conn)
        .await?;
        Ok(scans.seq_scan)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_plan_cached_while_the_table_was_small_does_not_scan_it_in_write_api_sessions() {
    assert!(
        scans_after_growth(false).await > 0,
        "precondition: an ordinary session keeps the sequential-scan plan it made while the \
         table was small (if PostgreSQL stops doing that, `index_scans_only` can go)"
    );
    assert_eq!(scans_after_growth(true).await, 0);
}

/// The plan of `statement` run on `pool`'s session after `setup`, as `EXPLAIN ANALYZE`
/// prints it.
async fn explained(pool: &storage::DbPool, setup: &str, statement: &str) -> String {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text)]
        plan: String,
    }

    storage::pool::with_connection(pool, std::time::Duration::from_secs(10), async |conn| {
        conn.batch_execute(setup).await?;
        conn.batch_execute(
            "CREATE OR REPLACE FUNCTION pg_temp.explained(statement text) RETURNS text LANGUAGE plpgsql AS $$ \
             DECLARE line text; plan text := ''; \
             BEGIN FOR line IN EXECUTE 'EXPLAIN ANALYZE ' || statement \
             LOOP plan := plan || line || E'\\n'; END LOOP; RETURN plan; END $$",
        )
        .await?;
        let plan: Plan = diesel::sql_query("SELECT pg_temp.explained($1) AS plan")
            .bind::<Text, _>(statement)
            .get_result(conn)
            .await?;
        Ok(plan.plan)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_statement_only_a_scan_answers_is_not_jit_compiled_in_keyed_sessions() {
    let (db, mut conn) = migrated().await;
    // The heartbeat's update: a one-row table, nothing indexed in its condition.
    let heartbeat = "UPDATE pipeline_heartbeat SET beat = beat + 1 \
                     WHERE beat_at <= clock_timestamp() - interval '1 second'";
    let mut settings = storage::PoolSettings::new("jit test");
    settings.max_size = 1;
    let ordinary = storage::pool::build(db.url(), &settings).unwrap();
    settings.index_scans_only = true;
    let keyed = storage::pool::build(db.url(), &settings).unwrap();
    // The trap, where the server can compile at all: sequential scans off and nothing else.
    use diesel_async::RunQueryDsl;
    let jit_available: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "pg_jit_available()",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    if jit_available {
        let trap = explained(&ordinary, "SET enable_seqscan = off", heartbeat).await;
        assert!(trap.contains("JIT"), "precondition: {trap}");
    }
    let plan = explained(&keyed, "", heartbeat).await;
    assert!(plan.contains("Seq Scan"), "{plan}");
    assert!(
        !plan.contains("JIT"),
        "compiled with LLVM on every run (67-330 ms in the benchmark's lag runs): {plan}"
    );
}

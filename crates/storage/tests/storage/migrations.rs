use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use test_support::TestDatabase;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn column_count(conn: &mut storage::AsyncPgConnection, table: &str) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1",
    )
    .bind::<Text, _>(table)
    .get_result::<Count>(conn)
    .await
    .unwrap()
    .n
}

/// How many migrations `migrations/` holds (one directory each), read from the tree so that
/// adding one does not mean editing this test.
static MIGRATIONS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().join("up.sql").is_file())
        })
        .count()
});

#[tokio::test]
async fn migrations_apply_revert_and_reapply() {
    let db = TestDatabase::create().await;
    let applied = storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(applied.len(), *MIGRATIONS, "{applied:?}");
    assert!(
        storage::migrations::pending(db.url(), std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );

    let reverted = storage::migrations::revert_all(db.url(), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(reverted.len(), *MIGRATIONS);
    let mut conn = db.connect().await;
    assert_eq!(column_count(&mut conn, "products").await, 0);

    assert_eq!(
        storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        *MIGRATIONS
    );
}

#[tokio::test]
async fn concurrent_runs_take_turns() {
    let db = TestDatabase::create().await;
    let (a, b) = tokio::join!(
        storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60)),
        storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60))
    );
    assert_eq!(a.unwrap().len() + b.unwrap().len(), *MIGRATIONS);
}

/// `schema.rs` is written by hand: every table has exactly the columns diesel knows, and the
/// row types read them back (the other tests write and read every column).
#[tokio::test]
async fn schema_rs_matches_the_migrations() {
    let (_db, mut conn) = crate::migrated().await;
    for (table, columns) in [
        ("products", 8),
        ("outbox", 12),
        ("replication_status", 10),
        ("pipeline_heartbeat", 3),
        ("replica_catchup", 7),
        ("replica_progress", 2),
        ("outbox_dead_letters", 14),
    ] {
        assert_eq!(column_count(&mut conn, table).await, columns, "{table}");
    }
    let status = storage::replication_status::read(&mut conn).await.unwrap();
    assert_eq!(status.events_applied, 0);
    // A database that never applied anything starts with unknown history.
    assert_eq!(status.behind_since, Some(storage::replica::UNKNOWN_HISTORY));
    assert!(status.behind_token.is_some());
}

/// A frozen link (the server accepts and never answers) costs the deadline, not for ever,
/// and the run leaves nothing behind: the call returns only once its thread is done.
#[tokio::test]
async fn a_frozen_database_costs_the_deadline_and_nothing_more() {
    let db = TestDatabase::create().await;
    let proxy = test_support::TcpProxy::start(&db.server()).await;
    proxy.set(test_support::LinkMode::Frozen);
    let deadline = std::time::Duration::from_millis(500);
    let started = std::time::Instant::now();
    let outcome = storage::migrations::run_pending(&db.url_via(&proxy.host()), deadline).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(storage::StorageError::Timeout(_))),
        "{outcome:?}"
    );
    assert!(took < deadline * 4, "took {took:?}");

    // Frozen after the connection is made, while the harness runs: the same.
    proxy.set(test_support::LinkMode::Open);
    let url = db.url_via(&proxy.host());
    let run = tokio::spawn(async move { storage::migrations::run_pending(&url, deadline).await });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    proxy.set(test_support::LinkMode::Frozen);
    let started = std::time::Instant::now();
    let outcome = run.await.unwrap();
    assert!(started.elapsed() < deadline * 4, "{outcome:?}");
}

/// The name index merges its pending list in small steps: a merge runs inside whichever
/// insert makes the list pass its limit, so at PostgreSQL's default (4 MB) every few seconds
/// of writes one statement took 60-260 ms (see the migration that sets it).
#[tokio::test]
async fn the_name_index_keeps_its_pending_list_small() {
    let db = TestDatabase::create().await;
    storage::migrations::run_pending(db.url(), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let mut conn = db.connect().await;
    // About 2.5 MB of trigram entries (2,000 names of 64 hex characters): under the default
    // limit, so without a smaller one none of it would have been merged yet.
    diesel::sql_query(
        "INSERT INTO products (id, name, price_cents, stock, created_at, updated_at, version) \
         SELECT gen_random_uuid(), md5(i::text) || md5((-i)::text), 100, 1, now(), now(), 1 \
         FROM generate_series(1, 2000) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let pending_pages = storage::products::merge_name_index_pending_list(&mut conn)
        .await
        .unwrap();
    // 256 kB is 32 pages of 8 kB; one row's entries may go past it before the merge.
    assert!(
        (1..=40).contains(&pending_pages),
        "{pending_pages} pages were pending in the name index"
    );
}

//! Host lists and `target_session_attrs=read-write`: a session finds the writable server
//! wherever it is in the list, a frozen host costs `connect_timeout` and no more, and a pool
//! drops sessions that can no longer write. Against a primary and a streaming standby of the
//! test's own ([`PgCluster`]), and the shared server behind a frozen proxy.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use storage::pool::{self, with_connection};
use storage::{AsyncPgConnection, PoolSettings, SqlState, StorageError, session};
use test_support::{LinkMode, PgCluster, TcpProxy, TestDatabase, eventually};

const DEADLINE: Duration = Duration::from_secs(5);

/// `db`'s URL with its server replaced by the host list `hosts` and `params` appended.
fn url_for(db: &TestDatabase, hosts: &[String], params: &str) -> String {
    let url = db.url_via(&hosts.join(","));
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

#[derive(diesel::QueryableByName)]
struct Server {
    #[diesel(sql_type = Integer)]
    port: i32,
    #[diesel(sql_type = Text)]
    read_only: String,
}

/// The port of the server `conn` is on, and whether its session is read-only.
async fn server_of(conn: &mut AsyncPgConnection) -> (u16, bool) {
    let server: Server = diesel::sql_query(
        "SELECT inet_server_port() AS port, current_setting('transaction_read_only') AS read_only",
    )
    .get_result(conn)
    .await
    .unwrap();
    (
        u16::try_from(server.port).unwrap(),
        server.read_only == "on",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_finds_the_primary_anywhere_in_the_list_and_follows_a_promotion() {
    let primary = PgCluster::primary().await;
    let standby = PgCluster::standby_of(&primary).await;
    let db = TestDatabase::create_on(&primary.admin_url()).await;
    let standby_first = [standby.host(), primary.host()];
    // The new database reaches the standby by replication.
    eventually(
        Duration::from_secs(30),
        "the database on the standby",
        async || {
            session::establish(&url_for(&db, &[standby.host()], ""))
                .await
                .ok()
        },
    )
    .await;

    let mut conn = session::establish(&url_for(
        &db,
        &standby_first,
        "target_session_attrs=read-write",
    ))
    .await
    .unwrap();
    assert_eq!(server_of(&mut conn).await, (primary.port(), false));

    // Without it, the first host that answers is used, standby or not (libpq's `any`).
    let mut conn = session::establish(&url_for(&db, &standby_first, ""))
        .await
        .unwrap();
    assert_eq!(server_of(&mut conn).await, (standby.port(), true));

    // `read-only` asks the opposite.
    let primary_first = [primary.host(), standby.host()];
    let mut conn = session::establish(&url_for(
        &db,
        &primary_first,
        "target_session_attrs=read-only",
    ))
    .await
    .unwrap();
    assert_eq!(server_of(&mut conn).await, (standby.port(), true));

    // No writable host: the error names each host and why it was passed over.
    let Err(error) = session::establish(&url_for(
        &db,
        &[standby.host()],
        "target_session_attrs=read-write",
    ))
    .await
    else {
        panic!("a standby alone was taken for a primary");
    };
    let text = error.to_string();
    assert!(
        text.contains(&standby.host()) && text.contains("read-only"),
        "{text}"
    );

    // A pool on the list, writing; then the primary is stopped and the standby promoted.
    let url = url_for(&db, &primary_first, "target_session_attrs=read-write");
    let mut settings = PoolSettings::new("failover-test");
    settings.max_size = 4;
    settings.connect_timeout = Duration::from_secs(1);
    let pool = pool::build(&url, &settings).unwrap();
    with_connection(&pool, DEADLINE, async |conn| {
        conn.batch_execute("CREATE TABLE t (n INT PRIMARY KEY)")
            .await?;
        Ok(())
    })
    .await
    .unwrap();
    let insert = async |n: i32| {
        pool::transaction::<_, StorageError, _>(&pool, DEADLINE, async |conn| {
            diesel::sql_query("INSERT INTO t VALUES ($1)")
                .bind::<Integer, _>(n)
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    };
    for n in 0..4 {
        insert(n).await.unwrap();
    }
    // Fast shutdown sends every WAL record to the standby before the server exits: all
    // committed rows are there to promote.
    primary.stop().await;
    let stopped = Instant::now();
    let mut refused = 0;
    let mut n = 4;
    let mut acknowledged = vec![0, 1, 2, 3];
    let mut promoted = false;
    while stopped.elapsed() < Duration::from_secs(60) {
        if !promoted && stopped.elapsed() > Duration::from_millis(500) {
            standby.promote().await;
            promoted = true;
        }
        match insert(n).await {
            Ok(()) if promoted => {
                acknowledged.push(n);
                break;
            }
            Ok(()) => panic!("a write succeeded with the primary stopped and no standby promoted"),
            Err(error) => {
                assert!(error.is_transient(), "{}", error.report());
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        n += 1;
    }
    let took = stopped.elapsed();
    println!(
        "writes succeed again {took:?} after the primary stopped ({refused} refused, all transient)"
    );
    assert_eq!(
        acknowledged.len(),
        5,
        "writes never succeeded on the promoted standby"
    );

    with_connection(&pool, DEADLINE, async |conn| {
        assert_eq!(server_of(conn).await, (standby.port(), false));
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Integer)]
            n: i32,
        }
        let rows: Vec<Row> = diesel::sql_query("SELECT n FROM t ORDER BY n")
            .load(conn)
            .await?;
        assert_eq!(rows.iter().map(|r| r.n).collect::<Vec<_>>(), acknowledged);
        Ok(())
    })
    .await
    .unwrap();
    drop(pool);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_first_host_costs_connect_timeout_and_no_more() {
    let db = TestDatabase::create().await;
    let proxy = TcpProxy::start(&db.server()).await;
    proxy.set(LinkMode::Frozen);
    let hosts = [proxy.host(), db.server()];

    let started = Instant::now();
    let url = url_for(
        &db,
        &hosts,
        "target_session_attrs=read-write&connect_timeout=1",
    );
    let mut conn = session::establish(&url).await.unwrap();
    let took = started.elapsed();
    assert!(!server_of(&mut conn).await.1);
    println!("past a frozen first host in {took:?} (connect_timeout=1)");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // With no `connect_timeout` in the URL, a pool bounds each host by its own setting and
    // allows each host that long, so the second host is reached.
    let mut settings = PoolSettings::new("failover-test");
    settings.connect_timeout = Duration::from_secs(1);
    let pool = pool::build(
        &url_for(&db, &hosts, "target_session_attrs=read-write"),
        &settings,
    )
    .unwrap();
    pool::ping(&pool, DEADLINE).await.unwrap();

    // Only the frozen host: the pool gives up within its bound, the answer is transient.
    let pool = pool::build(&db.url_via(&proxy.host()), &settings).unwrap();
    let started = Instant::now();
    let error = pool::ping(&pool, DEADLINE).await.unwrap_err();
    assert!(error.is_transient(), "{}", error.report());
    assert!(started.elapsed() < DEADLINE + Duration::from_secs(1));
}

/// A server that turned read-only under a pooled session (as a demoted primary is): the
/// write fails with SQLSTATE 25006, transient, nothing of its transaction is applied, and the
/// session is not handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refused_as_read_only_leaves_the_pool() {
    let db = TestDatabase::create().await;
    let mut settings = PoolSettings::new("failover-test");
    settings.max_size = 1;
    let pool = pool::build(db.url(), &settings).unwrap();
    let pid = with_connection(&pool, DEADLINE, async |conn| {
        conn.batch_execute(
            "CREATE TABLE t (n INT PRIMARY KEY); \
             SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY;",
        )
        .await?;
        Ok(backend_pid(conn).await)
    })
    .await
    .unwrap();

    let error = pool::transaction::<_, StorageError, _>(&pool, DEADLINE, async |conn| {
        assert_eq!(backend_pid(conn).await, pid, "the same pooled session");
        // A first statement that reads, so the write fails inside the transaction.
        diesel::sql_query("SELECT 1").execute(conn).await?;
        diesel::sql_query("INSERT INTO t VALUES (1)")
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::Refused { sqlstate, .. } if sqlstate == SqlState::READ_ONLY_SQL_TRANSACTION
        ),
        "{}",
        error.report()
    );
    assert!(error.is_transient());

    let (next_pid, count) = with_connection(&pool, DEADLINE, async |conn| {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query("INSERT INTO t VALUES (2)")
            .execute(conn)
            .await?;
        let count: Count = diesel::sql_query("SELECT count(*) AS n FROM t WHERE n = 1")
            .get_result(conn)
            .await?;
        Ok((backend_pid(conn).await, count.n))
    })
    .await
    .unwrap();
    assert_ne!(next_pid, pid, "the read-only session went back to the pool");
    assert_eq!(count, 0, "the refused transaction left nothing");
}

async fn backend_pid(conn: &mut AsyncPgConnection) -> i32 {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

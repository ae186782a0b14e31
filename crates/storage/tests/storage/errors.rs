//! Database errors classified by the SQLSTATE the real server sent, and transactions that
//! never leave a session or a lock behind.

use std::time::Duration;

use diesel::sql_types::{BigInt, Integer};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use storage::pool::{self, with_connection};
use storage::{DbPool, PoolSettings, SqlState, StorageError};
use test_support::TestDatabase;

const DEADLINE: Duration = Duration::from_secs(5);

fn pool_for(db: &TestDatabase, name: &str, statement_timeout: Duration) -> DbPool {
    let mut settings = PoolSettings::new(name);
    settings.max_size = 4;
    settings.statement_timeout = statement_timeout;
    pool::build(db.url(), &settings).unwrap()
}

async fn table(db: &TestDatabase) {
    let mut conn = db.connect().await;
    conn.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0);",
    )
    .await
    .unwrap();
}

/// Runs `sql` in a transaction that is expected to fail, and returns why.
async fn failing(pool: &DbPool, sql: &str) -> StorageError {
    pool::transaction::<_, StorageError, _>(pool, DEADLINE, async |conn| {
        conn.batch_execute(sql).await?;
        Ok(())
    })
    .await
    .unwrap_err()
}

/// Has the server raise an error with SQLSTATE `code` (the same message for every code: only
/// the code may decide).
async fn raised(pool: &DbPool, code: &str) -> StorageError {
    failing(
        pool,
        &format!("DO $$ BEGIN RAISE EXCEPTION 'not now' USING ERRCODE = '{code}'; END $$"),
    )
    .await
}

/// Ends session `pid` from another connection, as a restart or an operator does.
async fn terminate(url: &str, pid: i32) {
    let mut admin = <storage::AsyncPgConnection as diesel_async::AsyncConnection>::establish(url)
        .await
        .unwrap();
    admin
        .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
}

fn refused_with(error: &StorageError) -> Option<SqlState> {
    match error {
        StorageError::Refused { sqlstate, .. } => Some(*sqlstate),
        _ => None,
    }
}

#[derive(diesel::QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn backend_pid(conn: &mut storage::AsyncPgConnection) -> Result<i32, StorageError> {
    Ok(diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await?
        .pid)
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn sessions(db: &TestDatabase, application: &str, state: &str) -> i64 {
    let mut conn = db.connect().await;
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 AND state = $2",
    )
    .bind::<diesel::sql_types::Text, _>(application)
    .bind::<diesel::sql_types::Text, _>(state)
    .get_result::<Count>(&mut conn)
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn every_listed_sqlstate_raised_by_the_server_is_classified_by_its_code() {
    let db = TestDatabase::create().await;
    let pool = pool_for(&db, "errors-raised", DEADLINE);
    let retryable = [
        "55P03", "57014", "40001", "40P01", "57P01", "57P02", "57P03", "25006", "53300", "08006",
        "53200", "57000",
    ];
    for code in retryable {
        let error = raised(&pool, code).await;
        assert_eq!(
            refused_with(&error),
            SqlState::parse(code),
            "{code}: {error:?}"
        );
        assert!(error.is_transient(), "{code}");
    }
    for code in ["42P01", "22023", "P0001", "XX000"] {
        let error = raised(&pool, code).await;
        assert!(
            matches!(error, StorageError::Query(_)) && !error.is_transient(),
            "{code}: {error:?}"
        );
    }
}

#[tokio::test]
async fn lock_and_statement_timeouts_are_refusals_not_failures() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let pool = pool_for(&db, "errors-timeouts", Duration::from_millis(100));

    let mut holder = db.connect().await;
    holder
        .batch_execute("BEGIN; SELECT * FROM t WHERE id = 1 FOR UPDATE;")
        .await
        .unwrap();
    // The pool sets lock_timeout = statement_timeout, and the statement's timer wins a tie:
    // with a shorter lock_timeout the server answers 55P03.
    let error = failing(
        &pool,
        "SET LOCAL lock_timeout = 50; UPDATE t SET v = v + 1 WHERE id = 1",
    )
    .await;
    assert_eq!(
        refused_with(&error),
        Some(SqlState::LOCK_NOT_AVAILABLE),
        "{error:?}"
    );
    assert!(!error.worth_retrying_at_once());
    let error = failing(&pool, "UPDATE t SET v = v + 1 WHERE id = 1").await;
    assert_eq!(
        refused_with(&error),
        Some(SqlState::QUERY_CANCELED),
        "{error:?}"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();

    let error = with_connection(&pool, DEADLINE, async |conn| {
        conn.batch_execute("SELECT pg_sleep(1)").await?;
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(
        refused_with(&error),
        Some(SqlState::QUERY_CANCELED),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_deadlock_is_refused_and_worth_retrying_at_once() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let pool = pool_for(&db, "errors-deadlock", DEADLINE);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let run = |first: i32, second: i32| {
        let (pool, barrier) = (pool.clone(), barrier.clone());
        async move {
            pool::transaction::<_, StorageError, _>(&pool, DEADLINE, async |conn| {
                let lock = format!("UPDATE t SET v = v + 1 WHERE id = {first}");
                conn.batch_execute(&lock).await?;
                barrier.wait().await;
                let lock = format!("UPDATE t SET v = v + 1 WHERE id = {second}");
                conn.batch_execute(&lock).await?;
                Ok(())
            })
            .await
        }
    };
    let (a, b) = tokio::join!(run(1, 2), run(2, 1));
    let error = a
        .err()
        .or(b.err())
        .expect("one of the two is chosen as the victim");
    assert_eq!(
        refused_with(&error),
        Some(SqlState::DEADLOCK_DETECTED),
        "{error:?}"
    );
    assert!(error.worth_retrying_at_once());
}

#[tokio::test]
async fn a_read_only_session_refuses_writes_as_a_failover_would() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let mut settings = PoolSettings::new("errors-read-only");
    settings.read_only = true;
    let pool = pool::build(db.url(), &settings).unwrap();
    let error = failing(&pool, "UPDATE t SET v = 1").await;
    assert_eq!(
        refused_with(&error),
        Some(SqlState::READ_ONLY_SQL_TRANSACTION),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_session_terminated_mid_statement_is_retryable_at_once() {
    let db = TestDatabase::create().await;
    let pool = pool_for(&db, "errors-terminated", DEADLINE);
    let killer = db.url().to_owned();
    let error = pool::transaction::<_, StorageError, _>(&pool, DEADLINE, async |conn| {
        let pid = backend_pid(conn).await?;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            terminate(&killer, pid).await;
        });
        conn.batch_execute("SELECT pg_sleep(3)").await?;
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(
        refused_with(&error) == Some(SqlState::ADMIN_SHUTDOWN)
            || matches!(error, StorageError::ConnectionLost { .. }),
        "{error:?}"
    );
    assert!(error.worth_retrying_at_once(), "{error:?}");

    // Every idle session terminated, as a fast restart does: the pool hands out live ones.
    let mut admin = db.connect().await;
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'errors-terminated' AND datname = current_database()",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered = with_connection(&pool, DEADLINE, async |conn| backend_pid(conn).await).await;
    match answered {
        Ok(_) => {}
        Err(error) => assert!(error.worth_retrying_at_once(), "{error:?}"),
    }
}

#[tokio::test]
async fn a_session_lost_while_committing_leaves_the_outcome_unknown() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let pool = pool_for(&db, "errors-commit", DEADLINE);
    let killer = db.url().to_owned();
    let error = pool::transaction::<_, StorageError, _>(&pool, DEADLINE, async |conn| {
        conn.batch_execute("UPDATE t SET v = 42 WHERE id = 1")
            .await?;
        terminate(&killer, backend_pid(conn).await?).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(
        matches!(error, StorageError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert!(!error.worth_retrying_at_once());
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_commit_the_server_refuses_is_a_rollback_not_an_unknown() {
    let db = TestDatabase::create().await;
    let mut setup = db.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE u (id INT, CONSTRAINT u_id UNIQUE (id) DEFERRABLE INITIALLY DEFERRED); \
             INSERT INTO u VALUES (1);",
        )
        .await
        .unwrap();
    let pool = pool_for(&db, "errors-deferred", DEADLINE);
    let error = pool::transaction::<_, StorageError, _>(&pool, DEADLINE, async |conn| {
        conn.batch_execute("INSERT INTO u VALUES (1)").await?;
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&error, StorageError::Query(diesel::result::Error::DatabaseError(kind, _))
            if matches!(kind, diesel::result::DatabaseErrorKind::UniqueViolation)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_transaction_cut_short_leaves_no_session_idle_in_transaction_and_no_lock() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let pool = pool_for(&db, "errors-cut", DEADLINE);
    let error =
        pool::transaction::<_, StorageError, _>(&pool, Duration::from_millis(300), async |conn| {
            conn.batch_execute("SELECT * FROM t WHERE id = 1 FOR UPDATE")
                .await?;
            // Stuck in the application while holding the row: the deadline fires.
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Timeout(_)), "{error:?}");
    test_support::eventually(
        Duration::from_secs(2),
        "the session to be gone",
        async || (sessions(&db, "errors-cut", "idle in transaction").await == 0).then_some(()),
    )
    .await;
    let locked_again =
        pool::transaction::<_, StorageError, _>(&pool, Duration::from_millis(500), async |conn| {
            conn.batch_execute("SELECT * FROM t WHERE id = 1 FOR UPDATE NOWAIT")
                .await?;
            Ok(())
        })
        .await;
    assert!(locked_again.is_ok(), "{locked_again:?}");
}

#[tokio::test]
async fn a_body_error_rolls_back_and_keeps_the_connection() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let pool = pool_for(&db, "errors-body", DEADLINE);
    let first = with_connection(&pool, DEADLINE, async |conn| backend_pid(conn).await)
        .await
        .unwrap();
    let refused = pool::transaction::<(), StorageError, _>(&pool, DEADLINE, async |conn| {
        conn.batch_execute("UPDATE t SET v = 7 WHERE id = 1")
            .await?;
        Err(StorageError::Query(diesel::result::Error::NotFound))
    })
    .await;
    assert!(refused.is_err());
    let again = with_connection(&pool, DEADLINE, async |conn| backend_pid(conn).await)
        .await
        .unwrap();
    assert_eq!(first, again, "the same session, returned clean to the pool");
    let mut conn = db.connect().await;
    let v: Count = diesel::sql_query("SELECT v::bigint AS n FROM t WHERE id = 1")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(v.n, 0, "rolled back");
}

#[tokio::test]
async fn a_session_the_server_has_inside_a_transaction_is_never_handed_out_again() {
    let db = TestDatabase::create().await;
    table(&db).await;
    let pool = pool_for(&db, "errors-left-open", DEADLINE);
    // Plain SQL that diesel-async's own transaction bookkeeping does not see: the session is
    // left open, then inside a failed transaction, as the body says it succeeded.
    for (name, leftover) in [
        ("open", "BEGIN; UPDATE t SET v = 5 WHERE id = 1"),
        ("failed", "BEGIN; SELECT 1 / 0"),
    ] {
        let left = with_connection(&pool, DEADLINE, async |conn| {
            let pid = backend_pid(conn).await?;
            let _ = conn.batch_execute(leftover).await;
            Ok(pid)
        })
        .await
        .unwrap();
        let next = with_connection(&pool, DEADLINE, async |conn| {
            let pid = backend_pid(conn).await?;
            conn.batch_execute("UPDATE t SET v = v + 1 WHERE id = 2")
                .await?;
            Ok(pid)
        })
        .await;
        let next = next.unwrap_or_else(|error| panic!("{name}: {error:?}"));
        assert_ne!(
            left, next,
            "{name}: a new session, not the one left in a transaction"
        );
    }
    let mut conn = db.connect().await;
    let v: Count = diesel::sql_query(
        "SELECT (v * 10 + (SELECT v FROM t WHERE id = 2))::bigint AS n FROM t WHERE id = 1",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        v.n, 2,
        "the open transaction rolled back; both later updates committed"
    );
}

#[tokio::test]
async fn a_session_returned_mid_statement_is_closed_not_handed_out() {
    let db = TestDatabase::create().await;
    let pool = pool_for(&db, "errors-busy", DEADLINE);
    let busy = {
        let mut conn = pool.get().await.unwrap();
        let pid = backend_pid(&mut conn).await.unwrap();
        // The caller goes away mid-statement (a client gone mid-listing): the pool gets the
        // session back with its answer still to come.
        let statement = diesel::sql_query("SELECT pg_sleep(5)").execute(&mut *conn);
        let cut = tokio::time::timeout(Duration::from_millis(200), statement).await;
        assert!(cut.is_err(), "the statement was still running");
        pid
    };
    let next = with_connection(&pool, DEADLINE, async |conn| backend_pid(conn).await)
        .await
        .unwrap();
    assert_ne!(
        busy, next,
        "a new session, not the one still running a statement"
    );
}

#[tokio::test]
async fn a_session_opens_over_a_unix_socket_too() {
    let dir = "/var/run/postgresql";
    let db = TestDatabase::create().await;
    let server = db.server();
    let port = server.rsplit(':').next().unwrap_or("5432");
    if !std::path::Path::new(dir)
        .join(format!(".s.PGSQL.{port}"))
        .exists()
    {
        eprintln!("no socket for PostgreSQL on port {port} in {dir}; skipped");
        return;
    }
    let url = format!(
        "host={dir} port={port} user=catalogue password=catalogue dbname={}",
        db.name()
    );
    let mut conn = match storage::session::establish(&url).await {
        Ok(conn) => conn,
        // A stock server logs socket users in by `peer` (the OS user must be the role), so
        // `catalogue` may not log in here at all: TCP logins are what the services use, and
        // this checks the socket path only where the server's rules let the role in (the
        // development machine's `trust`; CI runs it there).
        Err(error) => {
            eprintln!("no socket login for catalogue on port {port} ({error:?}); skipped");
            return;
        }
    };
    assert!(backend_pid(&mut conn).await.unwrap() > 0);
    let error = conn
        .batch_execute("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$")
        .await
        .unwrap_err();
    assert_eq!(
        storage::session::sqlstate_of(&error, &mut conn),
        Some(SqlState::DEADLOCK_DETECTED)
    );
}

/// The relay's transaction idles while the broker confirms and commits without waiting for
/// the disk: its local settings hold for that transaction only, and a longer idle limit lets
/// it outlive the session's (four statement timeouts).
#[tokio::test]
async fn local_settings_hold_for_their_transaction_only() {
    let db = TestDatabase::create().await;
    table(&db).await;
    // Idle-in-transaction limit: 4 × 50 ms.
    let pool = pool_for(&db, "errors-idle", Duration::from_millis(50));
    let idle_past_the_limit = async |conn: &mut storage::AsyncPgConnection| {
        conn.batch_execute("UPDATE t SET v = v + 1 WHERE id = 1")
            .await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
        conn.batch_execute("UPDATE t SET v = v + 1 WHERE id = 2")
            .await?;
        synchronous_commit(conn).await
    };
    let settings = pool::LocalSettings {
        idle_limit: Some(DEADLINE),
        commit_without_flush: true,
    };
    let inside = pool::transaction_with::<_, StorageError, _>(
        &pool,
        DEADLINE,
        settings,
        idle_past_the_limit,
    )
    .await
    .expect("a transaction with a longer idle limit is not ended by the session's");
    assert_eq!(inside, "off");
    let plain = pool::transaction::<_, StorageError, _>(&pool, DEADLINE, idle_past_the_limit).await;
    assert!(plain.is_err(), "the limit still holds elsewhere: {plain:?}");
    let after = with_connection(&pool, DEADLINE, async |conn| synchronous_commit(conn).await)
        .await
        .unwrap();
    assert_eq!(
        after, "on",
        "the pooled session is back to its own settings"
    );
    let mut conn = db.connect().await;
    let v: Count = diesel::sql_query("SELECT sum(v)::bigint AS n FROM t")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        v.n, 2,
        "the first transaction committed, the plain one did not"
    );
}

async fn synchronous_commit(conn: &mut storage::AsyncPgConnection) -> Result<String, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        synchronous_commit: String,
    }
    let setting: Setting = diesel::sql_query("SHOW synchronous_commit")
        .get_result(conn)
        .await?;
    Ok(setting.synchronous_commit)
}

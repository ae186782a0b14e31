//! Database trouble and the service's own failures: (a) write-api's sessions terminated,
//! (b) one row fought over under a short statement timeout, (c) a 5,000,000-row outbox,
//! (d) a background task that dies, (e) undecodable outbox rows.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use test_support::stack::{Stack, StackOptions};
use test_support::{LinkMode, ServiceProcess, free_port, workspace_binary};

use crate::status_load::{StatusLoad, Target, primary_count, primary_execute, settle, timed_get};
use crate::steady;

/// Sessions of write-api on this stack's primary (other stacks share the server).
fn write_api_sessions(stack: &Stack, select: &str, filter: &str) -> String {
    format!(
        "SELECT {select} AS n FROM pg_stat_activity WHERE application_name = 'write-api' \
         AND datname = '{}' {filter}",
        stack.primary.name()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_api_sessions_terminated_three_times_in_10_seconds() {
    let stack = Stack::start(StackOptions::default()).await;
    let load = StatusLoad::start(&stack.client, &stack.write_url(), 16, Target::Mixed);
    steady(2).await;
    let mut terminated = Vec::new();
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(4_500)).await;
        }
        let sql = write_api_sessions(&stack, "count(pg_terminate_backend(pid))", "");
        terminated.push(primary_count(&stack, &sql).await);
    }
    steady(3).await;
    let tally = load.stop().await;
    assert!(terminated.iter().all(|n| *n > 0), "{terminated:?}");
    settle(
        "a write-api sessions terminated 3 times in 10 s",
        &stack,
        &tally,
        &format!("sessions terminated per round {terminated:?}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_32_clients_on_one_product_with_a_100_ms_statement_timeout() {
    let mut stack = Stack::start(StackOptions {
        write_apis: 0,
        ..StackOptions::default()
    })
    .await;
    let mut env = stack.write_api_env();
    env.push(("DB_STATEMENT_TIMEOUT_MS", "100".into()));
    let mut write_api = ServiceProcess::start(workspace_binary("write-api"), &[], &env);
    write_api.wait_ready(Duration::from_secs(60)).await;
    stack.write_apis.push(write_api);
    let base = stack.write_url();
    let created: Value = stack
        .client
        .post(format!("{base}/api/products"))
        .json(&json!({"name": "hot", "price": 1, "stock": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hot = created["data"]["id"].as_str().unwrap().to_owned();

    let steady_load = StatusLoad::start(&stack.client, &base, 8, Target::Mixed);
    let hammer = StatusLoad::start(&stack.client, &base, 32, Target::One(hot.clone()));
    // As an operator's long transaction would: the row held for 3 s in the middle of the run.
    let holder = {
        let mut conn = stack.primary.connect().await;
        tokio::spawn(async move {
            use diesel_async::SimpleAsyncConnection;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let hold = format!(
                "BEGIN; SELECT * FROM products WHERE id = '{hot}' FOR UPDATE; \
                 SELECT pg_sleep(3); COMMIT;"
            );
            conn.batch_execute(&hold).await.unwrap();
        })
    };
    // Writers' sessions idle in a transaction for a second would hold the hot row: count
    // them throughout (the relay's batch, idle while the broker confirms, is not one).
    let stuck_sql = write_api_sessions(
        &stack,
        "count(*)",
        "AND state = 'idle in transaction' AND now() - state_change > interval '1 second' \
         AND query NOT LIKE '%SKIP LOCKED%'",
    );
    let mut stuck_seen = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        stuck_seen = stuck_seen.max(primary_count(&stack, &stuck_sql).await);
    }
    holder.await.unwrap();
    let hot_tally = hammer.stop().await;
    let mut tally = steady_load.stop().await;
    // The relay's batch is idle in its transaction while the broker confirms, for a moment;
    // once it has published the backlog none may be left.
    let stopped = Instant::now();
    let idle_sql = write_api_sessions(&stack, "count(*)", "AND state = 'idle in transaction'");
    let mut idle_in_transaction = primary_count(&stack, &idle_sql).await;
    while idle_in_transaction > 0 && stopped.elapsed() < Duration::from_secs(10) {
        stuck_seen = stuck_seen.max(primary_count(&stack, &stuck_sql).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        idle_in_transaction = primary_count(&stack, &idle_sql).await;
    }
    let idle_for = stopped.elapsed();
    assert_eq!(stuck_seen, 0, "a session sat idle in a transaction");
    assert_eq!(
        idle_in_transaction, 0,
        "a session left idle in a transaction"
    );
    assert!(
        hot_tally.unavailable > 0,
        "the short timeout did refuse: {hot_tally:?}"
    );
    let figures = format!(
        "hot product (held by another session 3 s of the 10): {} PATCHes, {} ok, {} answered \
         503 unavailable, {} outcome_unknown, {} 500; writer sessions idle in a transaction \
         over 1 s: {stuck_seen}; none idle in a transaction {idle_for:.1?} after the load \
         stopped",
        hot_tally.requests(),
        hot_tally.acknowledged,
        hot_tally.unavailable,
        hot_tally.outcome_unknown,
        hot_tally.internal,
    );
    tally.add(&hot_tally);
    // The hot product's creation.
    tally.acknowledged += 1;
    settle(
        "b 32 clients on one product, statement timeout 100 ms",
        &stack,
        &tally,
        &figures,
    )
    .await;
}

async fn stack_with_broker_proxy() -> Stack {
    Stack::start(StackOptions {
        broker_proxy: true,
        ..StackOptions::default()
    })
    .await
}

/// Rows put in the outbox by scenario (c), numbered far above any real one.
const SYNTHETIC_SEQ: i64 = 1_000_000_000_000;
const SYNTHETIC_ROWS: i64 = 5_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_readyz_with_5_000_000_rows_in_the_outbox_and_the_broker_away() {
    let stack = stack_with_broker_proxy().await;
    let (proxy, base) = (stack.broker_proxy.as_ref().unwrap(), stack.write_url());
    let load = StatusLoad::start(&stack.client, &base, 8, Target::Mixed);
    steady(1).await;
    proxy.set(LinkMode::Cut);
    let started = Instant::now();
    primary_execute(
        &stack,
        &format!(
            "INSERT INTO outbox (seq, event_id, product_id, version, name, price_cents, stock, \
                 created_at, updated_at, enqueued_at) \
             SELECT {SYNTHETIC_SEQ} + g, '00000000-0000-7000-8000-000000000000', \
                 '00000000-0000-7000-8000-000000000000', 1, 'synthetic', 1, 1, now(), now(), \
                 now() \
             FROM generate_series(1, {SYNTHETIC_ROWS}) AS g"
        ),
    )
    .await;
    let inserted_in = started.elapsed();

    let mut times = Vec::new();
    let mut last = Value::Null;
    for _ in 0..20 {
        let (status, took, body) = timed_get(&stack.client, &format!("{base}/readyz")).await;
        assert_eq!(status, 200, "{body}");
        times.push(took);
        last = body;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, metrics_took, _) = timed_get(&stack.client, &format!("{base}/metrics")).await;
    let tally = load.stop().await;
    times.sort();
    let backlog = last["data"]["outbox"]["backlog"].as_i64().unwrap_or(0);
    assert!(backlog >= SYNTHETIC_ROWS, "{last}");
    assert_eq!(last["data"]["broker"]["connected"], false);
    let slowest = times[times.len() - 1];
    assert!(
        slowest < Duration::from_secs(1),
        "half the deadline at most: {times:?}"
    );

    // Take the synthetic rows out again, keeping the real backlog, then let it drain.
    let started = Instant::now();
    primary_execute(
        &stack,
        &format!(
            "BEGIN; \
             CREATE TEMP TABLE kept ON COMMIT DROP AS SELECT * FROM outbox WHERE seq < {SYNTHETIC_SEQ}; \
             TRUNCATE outbox; \
             INSERT INTO outbox SELECT * FROM kept; \
             COMMIT;"
        ),
    )
    .await;
    let removed_in = started.elapsed();
    proxy.set(LinkMode::Open);
    settle(
        "c 5,000,000-row outbox, broker away",
        &stack,
        &tally,
        &format!(
            "rows inserted in {inserted_in:.1?}; /readyz 200 x{} with backlog {backlog} \
             (estimated {}), median {:.1?}, slowest {slowest:.1?} (deadline 2 s); /metrics \
             {metrics_took:.1?}; synthetic rows removed in {removed_in:.1?}",
            times.len(),
            last["data"]["outbox"]["backlogEstimated"],
            times[times.len() / 2],
        ),
    )
    .await;
}

/// One of this stack's services started with `TEST_TASK_FAULT`; returns how it ended: exit
/// status, how long after the fault fired it exited, and its log.
async fn service_with_a_failing_task(
    stack: &Stack,
    service: &str,
    fault: &str,
) -> (i32, Duration, String) {
    let port = free_port();
    let log = std::env::temp_dir().join(format!(
        "{}.log",
        test_support::unique_name(&format!("{service}-fault").replace('-', "_"))
    ));
    let file = std::fs::File::create(&log).unwrap();
    let env = match service {
        "write-api" => stack.write_api_env(),
        "replicator" => stack.replicator_env(),
        _ => stack.read_api_env(),
    };
    let mut child = tokio::process::Command::new(workspace_binary(service))
        .envs(env)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,amqprs=off")
        .env("TEST_TASK_FAULT", fault)
        // As in production: printing a debug build's backtrace alone takes a few hundred ms.
        .env("RUST_BACKTRACE", "0")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the process exits by itself")
        .unwrap();
    let exited_at = SystemTime::now();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let fired_at = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "injected fault: the task ends now")
        .and_then(|line| line["timestamp"].as_str().map(str::to_owned))
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
        .unwrap_or_else(|| panic!("no fault in the log:\n{text}"));
    let fired_at = SystemTime::from(fired_at);
    let took = exited_at.duration_since(fired_at).unwrap_or_default();
    (status.code().unwrap_or(-1), took, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_background_task_that_panics_or_returns_stops_each_service() {
    let stack = Stack::start(StackOptions::default()).await;
    let load = StatusLoad::start(&stack.client, &stack.write_url(), 8, Target::Mixed);
    steady(1).await;
    let mut figures = Vec::new();
    for (service, fault, cause) in [
        (
            "write-api",
            "panic:1500",
            "panicked: injected by TEST_TASK_FAULT",
        ),
        ("write-api", "return:1500", "returned early"),
        (
            "replicator",
            "panic:1500",
            "panicked: injected by TEST_TASK_FAULT",
        ),
        ("read-api", "return:1500", "returned early"),
    ] {
        let (code, took, log) = service_with_a_failing_task(&stack, service, fault).await;
        let fault = format!("{service} {fault}");
        let named = format!("background task `injected fault` {cause}");
        assert_ne!(code, 0, "{fault}: exit status");
        assert!(
            took < Duration::from_secs(1),
            "{fault}: exited {took:?} after the fault"
        );
        let logged = log.lines().any(|line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|l| l["level"] == "ERROR" && l["error"].as_str() == Some(&named))
        });
        assert!(
            logged,
            "{fault}: no error log naming the task and cause:\n{log}"
        );
        figures.push(format!(
            "{fault}: exit code {code} {took:.0?} after the fault, logged \"{named}\""
        ));
    }
    let tally = load.stop().await;
    settle(
        "d supervisor: a task panics, a task returns, in each service",
        &stack,
        &tally,
        &figures.join("; "),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_1000_undecodable_outbox_rows_ahead_of_good_ones() {
    let stack = stack_with_broker_proxy().await;
    let (proxy, base) = (stack.broker_proxy.as_ref().unwrap(), stack.write_url());
    proxy.set(LinkMode::Cut);
    // Three ways a row can break the product rules, 1,000 rows in all, all before any real one.
    primary_execute(
        &stack,
        "INSERT INTO outbox (event_id, product_id, version, name, price_cents, stock, \
             created_at, updated_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), \
             CASE WHEN g % 3 = 0 THEN 0 ELSE 1 END, \
             CASE WHEN g % 3 = 1 THEN '' ELSE 'bad' END, \
             CASE WHEN g % 3 = 2 THEN -1 ELSE 1 END, 1, now(), now() \
         FROM generate_series(1, 1000) AS g",
    )
    .await;
    let load = StatusLoad::start(&stack.client, &base, 8, Target::Mixed);
    steady(3).await;
    let waiting = primary_count(&stack, "SELECT count(*) AS n FROM outbox").await;
    let last_waiting = primary_count(&stack, "SELECT max(seq) AS n FROM outbox").await;
    proxy.set(LinkMode::Open);
    let reopened = Instant::now();
    test_support::eventually(
        Duration::from_secs(60),
        "the bad rows to be set aside",
        async || {
            (primary_count(&stack, "SELECT count(*) AS n FROM outbox_dead_letters").await == 1000)
                .then_some(())
        },
    )
    .await;
    let set_aside_in = reopened.elapsed();
    let still_waiting = format!("SELECT count(*) AS n FROM outbox WHERE seq <= {last_waiting}");
    test_support::eventually(
        Duration::from_secs(60),
        "the good rows that waited to be published",
        async || (primary_count(&stack, &still_waiting).await == 0).then_some(()),
    )
    .await;
    let drained_in = reopened.elapsed();
    let tally = load.stop().await;
    let reasons = primary_count(
        &stack,
        "SELECT count(DISTINCT regexp_replace(reason, '[0-9]+|[0-9a-f-]{36}', '', 'g')) AS n \
         FROM outbox_dead_letters",
    )
    .await;
    let metrics = stack
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("outbox_dead_lettered_total "))
        .unwrap_or("0")
        .to_owned();
    let ready: Value = stack
        .client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logged = stack.write_apis[0]
        .log()
        .matches("moved to outbox_dead_letters")
        .count();
    assert_eq!(counted, "1000");
    assert_eq!(ready["data"]["outbox"]["deadLettered"], 1000, "{ready}");
    assert_eq!(logged, 1000);
    assert_eq!(reasons, 3, "each kind of breakage has its reason");
    settle(
        "e 1,000 undecodable outbox rows ahead of good ones",
        &stack,
        &tally,
        &format!(
            "{waiting} rows waiting when the broker returned; 1,000 set aside in \
             {set_aside_in:.1?} with {reasons} kinds of reason, the good ones published within \
             {drained_in:.1?}; metric \
             outbox_dead_lettered_total {counted}, {logged} error lines, /readyz deadLettered \
             {}",
            ready["data"]["outbox"]["deadLettered"]
        ),
    )
    .await;
}

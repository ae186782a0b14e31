//! Bounded staleness in the states between up and down: a replica frozen, cut, new, refusing
//! during catch-up, flapping; and the replicator started while one is frozen. Reads are
//! checked against what was acknowledged more than `MAX_LAG_MS` before they were asked.

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use serde_json::json;
use test_support::LinkMode;
use test_support::load::{CheckedReads, LoadReport};
use test_support::stack::{Stack, StackOptions};
use tokio_util::sync::CancellationToken;

use crate::probe::{self, Delays};
use crate::{Load, finish, steady};

fn with_read_api(proxied: &[usize]) -> StackOptions {
    StackOptions {
        proxied_replicas: proxied.to_vec(),
        read_api: true,
        ..StackOptions::default()
    }
}

/// Measures how fast replica-1 sees new writes while `during` runs.
async fn visibility_while(stack: &Stack, during: impl Future<Output = ()>) -> Delays {
    let stop = CancellationToken::new();
    let write_url = stack.write_url();
    let probe = probe::visibility(
        &stack.client,
        &write_url,
        &stack.replicas[0],
        Duration::from_millis(100),
        &stop,
    );
    let stopper = async {
        during.await;
        stop.cancel();
    };
    let (delays, ()) = tokio::join!(probe, stopper);
    delays
}

fn assert_no_stale_or_failed(scenario: &str, reads: &CheckedReads) {
    assert!(
        reads.reads > 100,
        "{scenario}: the readers made progress: {reads:?}"
    );
    assert_eq!(
        reads.stale, 0,
        "{scenario}: stale answers: {:?}",
        reads.stale_examples
    );
    assert_eq!(reads.server_errors, 0, "{scenario}: read 5xx: {reads:?}");
}

fn served(reads: &CheckedReads) -> String {
    let mut sources: Vec<_> = reads.served_by.iter().collect();
    sources.sort();
    sources
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds the probe's acknowledged creates to the load's.
fn with_probe(mut writes: LoadReport, delays: &[&Delays]) -> LoadReport {
    writes.acknowledged += delays.iter().map(|d| d.len()).sum::<usize>();
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_a_frozen_replica_costs_the_others_nothing() {
    let stack = Stack::start(with_read_api(&[1])).await;
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    let load = Load::checked(&stack);
    let before = visibility_while(&stack, steady(3)).await;
    proxy.set(LinkMode::Frozen);
    let during = visibility_while(&stack, steady(30)).await;
    proxy.set(LinkMode::Open);
    let after = visibility_while(&stack, steady(10)).await;
    let (writes, reads) = load.stop_checked().await;
    println!(
        "[fault] 8 replica-2 frozen 30 s: replica-1 sees a write before {}; during {}; after {}; \
         reads {} (stale {}, 5xx {}; {})",
        before.describe(),
        during.describe(),
        after.describe(),
        reads.reads,
        reads.stale,
        reads.server_errors,
        served(&reads)
    );
    // The design target is p99 ≤ 1 s and at worst 2 s; the bound here only has to catch a
    // frozen replica holding the others up (that took 6 s and more per batch).
    assert!(
        during.max() < Duration::from_secs(5),
        "{}",
        during.describe()
    );
    assert!(after.max() < Duration::from_secs(5), "{}", after.describe());
    assert_no_stale_or_failed("8", &reads);
    let writes = with_probe(writes, &[&before, &during, &after]);
    finish("8 replica-2 frozen 30 s", &stack, &writes, None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_a_returning_replica_serves_nothing_stale() {
    let stack = Stack::start(with_read_api(&[1])).await;
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    let load = Load::checked(&stack);
    steady(3).await;
    proxy.set(LinkMode::Cut);
    steady(20).await;
    proxy.set(LinkMode::Open);
    let back = Instant::now();
    let rejoined = rejoin_time(&stack, "replica-2", Duration::from_secs(60)).await;
    steady(5).await;
    let (writes, reads) = load.stop_checked().await;
    println!(
        "[fault] 9 replica-2 cut 20 s under creates and deletes, then back: in rotation again \
         after {} ms; reads {} (stale {}, 5xx {}; {})",
        rejoined.as_ref().map_or("never".into(), |at| at
            .duration_since(back)
            .as_millis()
            .to_string()),
        reads.reads,
        reads.stale,
        reads.server_errors,
        served(&reads)
    );
    if let Err(why) = rejoined {
        panic!("replica-2 came back into rotation: {why}");
    }
    assert_no_stale_or_failed("9", &reads);
    finish("9 replica-2 cut 20 s", &stack, &writes, None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_an_empty_replica_added_under_load() {
    let mut stack = Stack::start(StackOptions {
        read_api: true,
        attached_replicas: Some(1),
        ..StackOptions::default()
    })
    .await;
    let load = Load::checked(&stack);
    steady(6).await;
    // As docs/operations.md says: add it to the configuration and restart; nothing else.
    let added = Instant::now();
    stack.attach_all_replicas().await;
    let level = rejoin_time(&stack, "replica-2", Duration::from_secs(90)).await;
    steady(5).await;
    let (writes, reads) = load.stop_checked().await;
    println!(
        "[fault] 10 empty replica-2 added under load: serving {} ms after the restart; reads {} \
         (stale {}, 5xx {}, no answer during restarts {}; {})",
        level.as_ref().map_or("never".into(), |at| at
            .duration_since(added)
            .as_millis()
            .to_string()),
        reads.reads,
        reads.stale,
        reads.server_errors,
        reads.no_answer,
        served(&reads)
    );
    if let Err(why) = level {
        panic!("replica-2 came into rotation once level: {why}");
    }
    assert!(
        reads.served_by.get("replica-2").copied().unwrap_or(0) > 0,
        "replica-2 served once level: {reads:?}"
    );
    assert_no_stale_or_failed("10", &reads);
    finish("10 empty replica added", &stack, &writes, None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_replicator_started_while_a_replica_is_frozen() {
    let mut stack = Stack::start(StackOptions {
        proxied_replicas: vec![1],
        replicators: 0,
        ..StackOptions::default()
    })
    .await;
    stack.replica_proxies[1]
        .as_ref()
        .unwrap()
        .set(LinkMode::Frozen);
    let load = Load::start(&stack);
    let started = Instant::now();
    stack.add_replicator().await;
    let ready = started.elapsed();
    let during = visibility_while(&stack, steady(10)).await;
    stack.replica_proxies[1]
        .as_ref()
        .unwrap()
        .set(LinkMode::Open);
    steady(3).await;
    let (writes, _) = load.stop().await;
    println!(
        "[fault] 11 replicator started with replica-2 frozen: ready after {} ms; replica-1 sees \
         a write {}",
        ready.as_millis(),
        during.describe()
    );
    assert!(
        during.max() < Duration::from_secs(5),
        "{}",
        during.describe()
    );
    let writes = with_probe(writes, &[&during]);
    finish(
        "11 replicator started with a frozen replica",
        &stack,
        &writes,
        None,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_a_change_refused_during_catch_up_is_dead_lettered() {
    let stack = Stack::start(StackOptions {
        proxied_replicas: vec![1],
        ..StackOptions::default()
    })
    .await;
    stack.wait_replicas_migrated().await;
    let mut replica_2 = stack.replicas[1].connect().await;
    diesel::sql_query(
        "ALTER TABLE products ADD CONSTRAINT refuse_one \
         CHECK (name <> 'refused during catch-up')",
    )
    .execute(&mut replica_2)
    .await
    .unwrap();
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    let load = Load::start(&stack);
    steady(2).await;
    proxy.set(LinkMode::Cut);
    let refused = stack
        .client
        .post(format!("{}/api/products", stack.write_url()))
        .json(&json!({"name": "refused during catch-up", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 201);
    steady(3).await;
    proxy.set(LinkMode::Open);
    let back = Instant::now();
    test_support::eventually(
        Duration::from_secs(60),
        "the refused change in the DLQ",
        async || (stack.vhost.queue_depth("products.dlq").await == Some(1)).then_some(()),
    )
    .await;
    let dead_lettered = back.elapsed();
    test_support::eventually(Duration::from_secs(60), "the mark cleared", async || {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut primary = stack.primary.connect().await;
        let marks: Count = diesel::sql_query("SELECT count(*) AS n FROM replica_catchup")
            .get_result(&mut primary)
            .await
            .unwrap();
        (marks.n == 0).then_some(())
    })
    .await;
    let cleared = back.elapsed();
    let (writes, _) = load.stop().await;
    let (listed, text) = stack.replicator_command(&["dlq", "list"]).await;
    assert!(listed, "{text}");
    assert!(text.contains("\"reason\":\"refused_by_replica\""), "{text}");
    assert!(text.contains("\"replica\":\"replica-2\""), "{text}");
    assert!(text.contains("\"attempts\":\"2\""), "{text}");
    assert!(text.contains("refused during catch-up"), "{text}");
    test_support::eventually(Duration::from_secs(60), "replica-1 in sync", async || {
        let (_, report) = stack.replicator_command(&["verify"]).await;
        report.contains("replica-1: in sync").then_some(())
    })
    .await;
    let tallies = stack.tallies().await;
    println!(
        "[fault] 12 a change replica-2 refuses, met during catch-up: dead-lettered after {} ms, \
         mark cleared after {} ms; writes acknowledged {}; primary {} rows, replica-1 {}, \
         replica-2 {}",
        dead_lettered.as_millis(),
        cleared.as_millis(),
        writes.acknowledged,
        tallies[0].rows,
        tallies[1].rows,
        tallies[2].rows
    );
    assert_eq!(tallies[1].rows, tallies[0].rows);
    assert_eq!(
        tallies[2].rows + 1,
        tallies[0].rows,
        "replica-2 lacks exactly the refused row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_a_flapping_replica_serves_nothing_stale() {
    let stack = Stack::start(with_read_api(&[1])).await;
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    let load = Load::checked(&stack);
    let watch_stop = CancellationToken::new();
    let watcher = watch_rotation(&stack, "replica-2", &watch_stop);
    let flapping = async {
        steady(3).await;
        for _ in 0..6 {
            proxy.set(LinkMode::Cut);
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.set(LinkMode::Open);
            tokio::time::sleep(Duration::from_secs(8)).await;
        }
        steady(10).await;
        watch_stop.cancel();
    };
    let (transitions, ()) = tokio::join!(watcher, flapping);
    let (writes, reads) = load.stop_checked().await;
    println!(
        "[fault] 13 replica-2 cut 2 s in every 10 s for a minute: left rotation {} times, \
         rejoined {} times; reads {} (stale {}, 5xx {}; {})",
        transitions.left,
        transitions.rejoined,
        reads.reads,
        reads.stale,
        reads.server_errors,
        served(&reads)
    );
    assert!(transitions.left >= 1, "replica-2 left rotation when cut");
    assert_no_stale_or_failed("13", &reads);
    finish("13 flapping replica", &stack, &writes, None, 0).await;
}

/// When `replica` is next seen in rotation, within `limit`; else what read-api last said of it.
async fn rejoin_time(stack: &Stack, replica: &str, limit: Duration) -> Result<Instant, String> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    // Out first: it was cut or new.
    while Instant::now() < deadline {
        last = stack.replica_report(replica).await;
        if last.as_ref().and_then(|r| r["healthy"].as_bool()) == Some(true) {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What keeps it out says where to look: health checks, catch-up or lag.
    Err(format!(
        "{replica} still out after {limit:?}; read-api last said {}",
        last.map_or("nothing".to_owned(), |r| r.to_string())
    ))
}

#[derive(Debug, Default)]
struct Transitions {
    left: usize,
    rejoined: usize,
}

/// Counts `replica`'s moves out of and back into rotation until `stop`.
async fn watch_rotation(stack: &Stack, replica: &str, stop: &CancellationToken) -> Transitions {
    let mut transitions = Transitions::default();
    let mut last = None;
    while !stop.is_cancelled() {
        if let Some(now) = stack.in_rotation(replica).await {
            match (last, now) {
                (Some(true), false) => transitions.left += 1,
                (Some(false), true) => transitions.rejoined += 1,
                _ => {}
            }
            last = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    transitions
}

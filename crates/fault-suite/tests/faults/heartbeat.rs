//! The pipeline heartbeat: the end-to-end delay shows when nobody writes, and a stopped
//! replicator shows within two beats, while routing (by data a replica lacks) is unmoved.

use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::stack::{Stack, StackOptions};

const BEAT: Duration = Duration::from_secs(1);

async fn replicas(stack: &Stack) -> Vec<Value> {
    let read_api = stack.read_api.as_ref().unwrap().url();
    let report: Value = stack
        .client
        .get(format!("{read_api}/api/replicas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    report["data"]["replicas"].as_array().unwrap().clone()
}

fn beat_at(replica: &Value) -> Option<String> {
    replica["heartbeat"]["at"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_the_heartbeat_shows_the_pipeline_when_nobody_writes() {
    let mut stack = Stack::start(StackOptions {
        read_api: true,
        extra_env: vec![("HEARTBEAT_INTERVAL_MS", BEAT.as_millis().to_string())],
        ..StackOptions::default()
    })
    .await;
    // No writes at all: the heartbeat alone moves.
    let first = test_support::eventually(
        Duration::from_secs(30),
        "a heartbeat on both replicas",
        async || {
            let replicas = replicas(&stack).await;
            replicas
                .iter()
                .all(|r| beat_at(r).is_some())
                .then_some(replicas)
        },
    )
    .await;
    let mut beats_seen = 0;
    let mut worst_age = 0;
    let mut delays = Vec::new();
    let mut last = beat_at(&first[0]);
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let replicas = replicas(&stack).await;
        for replica in &replicas {
            assert_eq!(replica["healthy"], true, "idle and level: {replica}");
            worst_age = worst_age.max(replica["heartbeat"]["ageMs"].as_u64().unwrap_or(0));
            if let Some(delay) = replica["heartbeat"]["pipelineDelayMs"].as_u64() {
                delays.push(delay);
            }
        }
        let now = beat_at(&replicas[0]);
        if now != last {
            beats_seen += 1;
            last = now;
        }
    }
    delays.sort_unstable();
    assert!(
        beats_seen >= 5,
        "the heartbeat moved {beats_seen} times in 10 s"
    );

    // The replicator stops: the heartbeat stops getting younger, and says so within two
    // beats; routing does not care (the replicas lack nothing).
    stack.replicators[0].kill().await;
    let stopped = Instant::now();
    let noticed = test_support::eventually(
        Duration::from_secs(30),
        "the heartbeat to age past two beats",
        async || {
            let replicas = replicas(&stack).await;
            replicas
                .iter()
                .all(|r| {
                    r["heartbeat"]["ageMs"].as_u64().unwrap_or(0) > 2 * BEAT.as_millis() as u64
                })
                .then_some(replicas)
        },
    )
    .await;
    let shown_after = stopped.elapsed();
    for replica in &noticed {
        assert_eq!(
            replica["healthy"], true,
            "a stopped pipeline is not staleness: {replica}"
        );
    }
    let metrics = stack
        .client
        .get(format!(
            "{}/metrics",
            stack.read_api.as_ref().unwrap().url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("replication_lag_seconds{replica=\"replica-1\"}"),
        "{metrics}"
    );
    println!(
        "[fault] 14 pipeline heartbeat every {} ms, no writes: {beats_seen} beats seen in 10 s, \
         age at most {worst_age} ms, pipeline delay p50 {} ms max {} ms; replicator killed: \
         heartbeat age past two beats after {} ms, replicas still in rotation",
        BEAT.as_millis(),
        delays.get(delays.len() / 2).copied().unwrap_or(0),
        delays.last().copied().unwrap_or(0),
        shown_after.as_millis()
    );
    assert!(
        shown_after < BEAT * 2 + Duration::from_secs(2),
        "a stopped replicator showed after {shown_after:?}"
    );
}

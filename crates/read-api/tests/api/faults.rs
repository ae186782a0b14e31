//! A replica that dies or freezes under load: reads move to the other replica with no 5xx,
//! `/api/replicas` says why, and the replica rejoins once its link is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use service_kit::SecretUrl;
use test_support::{LinkMode, TcpProxy};
use tokio::task::JoinHandle;

use crate::helpers::{Cluster, TestApp, behind_proxy, row, spawn_app, test_settings};

/// Load tasks, each bounded in requests and time.
const WORKERS: usize = 8;
const MAX_REQUESTS_PER_WORKER: usize = 20_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(60);

/// Two replicas, replica-2 behind a proxy, no primary fallback (so every answer must come
/// from a replica), and short timeouts so a frozen link is noticed quickly.
async fn faulty_cluster(interval: Duration) -> (Cluster, TcpProxy, Arc<TestApp>, String) {
    let cluster = Cluster::new(2).await;
    let product = row("Kettle", 4_500, 9);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    let (proxy, proxied_url) = behind_proxy(&cluster.replicas[1]).await;
    let mut settings = test_settings(&cluster);
    settings.replicas.replica_urls = vec![
        SecretUrl::new(cluster.replicas[0].url()),
        SecretUrl::new(proxied_url),
    ];
    settings.fallback_to_primary = false;
    settings.db.db_pool_size = 4;
    settings.db.db_connect_timeout_ms = Duration::from_millis(500);
    settings.read_timeout_ms = Duration::from_millis(700);
    settings.request_deadline_ms = Duration::from_secs(6);
    settings.health_check_interval_ms = interval;
    // Staleness is bounded with the next check in mind; these tests are about links.
    settings.max_lag_ms = settings.max_lag_ms.max(interval.as_millis() as u64 * 2);
    settings.health_check_timeout_ms = Duration::from_millis(700);
    settings.cooldown_ms = Duration::from_millis(500);
    let app = Arc::new(spawn_app(settings).await);
    (cluster, proxy, app, format!("/api/products/{}", product.id))
}

/// Every answer's status and source, gathered by the load tasks.
type Outcomes = Vec<(u16, Option<String>)>;

fn start_load(app: &Arc<TestApp>, item: &str, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<Outcomes>> {
    (0..WORKERS)
        .map(|worker| {
            let app = app.clone();
            let stop = stop.clone();
            let paths = [item.to_owned(), "/api/products?limit=5".to_owned()];
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let mut outcomes = Vec::new();
                for i in 0..MAX_REQUESTS_PER_WORKER {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME {
                        break;
                    }
                    let answer = app.answer(&paths[(worker + i) % 2], &[]).await;
                    outcomes.push((answer.status, answer.served_by));
                }
                outcomes
            })
        })
        .collect()
}

fn reads_served(replicas: &Value, name: &str) -> u64 {
    replicas["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["readsServed"]
        .as_u64()
        .unwrap()
}

async fn wait_until_serving(app: &TestApp, name: &str, more_than: u64) {
    test_support::eventually(
        Duration::from_secs(20),
        &format!("{name} to serve reads"),
        async || (reads_served(&app.replicas().await, name) > more_than).then_some(()),
    )
    .await;
}

async fn replica_fails_under_load(mode: LinkMode) {
    let (_cluster, proxy, app, item) = faulty_cluster(Duration::from_millis(200)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&app, &item, &stop);

    wait_until_serving(&app, "replica-2", 20).await;
    proxy.set(mode);
    let broken = std::time::Instant::now();
    let down = app.wait_for_health("replica-2", false).await;
    let out_after = broken.elapsed();
    let reason = down["reason"].as_str().unwrap().to_owned();
    assert!(!reason.is_empty(), "{down}");
    assert!(down["outSince"].is_string(), "{down}");
    eprintln!("{mode:?}: replica-2 out of rotation {out_after:?} after the fault");
    // Under load a replica leaves within about a read timeout of its first failed read (the
    // bound is generous: this is not a speed test, it catches a replica left in rotation).
    assert!(
        out_after < Duration::from_secs(5),
        "{mode:?}: out after {out_after:?}"
    );

    // While it is out, the load goes to replica-1 only.
    let before = app.replicas().await;
    wait_until_serving(&app, "replica-1", reads_served(&before, "replica-1") + 200).await;
    let after = app.replicas().await;
    assert_eq!(
        reads_served(&after, "replica-2"),
        reads_served(&before, "replica-2"),
        "replica-2 served reads while out of rotation: {after}"
    );
    let still_down = app.replica("replica-2").await;
    assert_eq!(still_down["healthy"], false, "{still_down}");

    proxy.set(LinkMode::Open);
    app.wait_for_health("replica-2", true).await;
    wait_until_serving(&app, "replica-2", reads_served(&after, "replica-2") + 20).await;

    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.extend(task.await.unwrap());
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} reads failed ({mode:?}, replica-2 was out because: {reason}): {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        outcomes
            .iter()
            .all(|(_, source)| source.as_deref() != Some("primary"))
    );
    eprintln!(
        "{mode:?}: {} reads, all 200; replica-2 was out because: {reason}",
        outcomes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_replica_leaves_rotation_without_failed_reads_and_rejoins() {
    replica_fails_under_load(LinkMode::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_leaves_rotation_without_failed_reads_and_rejoins() {
    replica_fails_under_load(LinkMode::Frozen).await;
}

#[tokio::test]
async fn consecutive_read_errors_open_the_breaker_and_a_probe_closes_it() {
    // Health checks only at start-up and when a cool-down ends: read errors alone take
    // replica-2 out.
    let (_cluster, proxy, app, item) = faulty_cluster(Duration::from_secs(600)).await;
    assert_eq!(app.replica("replica-2").await["healthy"], true);

    proxy.set(LinkMode::Cut);
    let tripped =
        test_support::eventually(Duration::from_secs(20), "the breaker to open", async || {
            let answer = app.answer(&item, &[]).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(answer.served_by.as_deref(), Some("replica-1"));
            let replica = app.replica("replica-2").await;
            (replica["healthy"] == false).then_some(replica)
        })
        .await;
    let reason = tripped["reason"].as_str().unwrap();
    assert!(reason.contains("3 consecutive read errors"), "{tripped}");
    assert!(tripped["lastError"].is_string(), "{tripped}");
    assert!(
        tripped["consecutiveErrors"].as_u64().unwrap() >= 3,
        "{tripped}"
    );

    // After the cool-down a probe decides; with the link back it closes the breaker.
    proxy.set(LinkMode::Open);
    let back = app.wait_for_health("replica-2", true).await;
    assert_eq!(back["consecutiveErrors"], 0, "{back}");
    let mut sources = std::collections::HashSet::new();
    for _ in 0..4 {
        sources.insert(app.answer(&item, &[]).await.served_by.unwrap());
    }
    assert_eq!(sources.len(), 2, "{sources:?}");
}

//! How reads are spread over healthy replicas.

use std::collections::HashMap;
use std::sync::Arc;

use read_api::Strategy;

use crate::helpers::{Cluster, TestApp, row, spawn_app, test_settings};

/// Sends `total` reads, `concurrency` at a time, and counts them by `X-Served-By`.
async fn spread(
    app: &Arc<TestApp>,
    path: &str,
    total: usize,
    concurrency: usize,
) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let app = app.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in (worker..total).step_by(concurrency) {
                let answer = app.answer(&path, &[]).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
                *counts.entry(answer.served_by.unwrap()).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts = HashMap::new();
    for task in tasks {
        for (source, n) in task.await.unwrap() {
            *counts.entry(source).or_default() += n;
        }
    }
    counts
}

#[tokio::test]
async fn round_robin_spreads_reads_evenly_over_healthy_replicas() {
    let cluster = Cluster::new(2).await;
    let product = row("Pen", 150, 100);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    let app = Arc::new(spawn_app(test_settings(&cluster)).await);

    let counts = spread(&app, &format!("/api/products/{}", product.id), 1000, 1).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    for (source, n) in &counts {
        assert!(
            (475..=525).contains(n),
            "{source} served {n} of 1000: {counts:?}"
        );
    }
    assert!(!counts.contains_key("primary"));

    let replicas = app.replicas().await;
    assert_eq!(replicas["strategy"], "round_robin");
    let served: u64 = replicas["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["readsServed"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 1000);
}

#[tokio::test]
async fn random_and_least_outstanding_use_every_replica() {
    let cluster = Cluster::new(2).await;
    let product = row("Pencil", 50, 100);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    let path = format!("/api/products/{}", product.id);

    for strategy in [Strategy::Random, Strategy::LeastOutstanding] {
        let mut settings = test_settings(&cluster);
        settings.strategy = strategy;
        let app = Arc::new(spawn_app(settings).await);
        let counts = spread(&app, &path, 300, 4).await;
        assert_eq!(counts.len(), 2, "{strategy}: {counts:?}");
        for (source, n) in &counts {
            assert!(source.starts_with("replica-"), "{strategy}: {counts:?}");
            // Far from an exact half for `random`, yet never starving a replica.
            assert!(*n >= 60, "{strategy}: {source} served only {n} of 300");
        }
        assert_eq!(app.replicas().await["strategy"], strategy.to_string());
        let list = app.answer("/api/products", &[]).await;
        assert_eq!(list.status, 200);
    }
}

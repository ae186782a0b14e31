//! Lookups by id that share one statement (`read_api::lookups`) still get one verdict each.

use futures_util::future::join_all;
use service_kit::SecretUrl;
use test_support::unique_name;

use crate::helpers::{Answer, Cluster, row, spawn_app, test_settings, tombstone};

/// What one request asks for and what it must get back.
struct Case {
    path: String,
    min_version: Option<&'static str>,
    expected_status: u16,
    expected_code: Option<&'static str>,
}

#[tokio::test]
async fn concurrent_lookups_sharing_statements_each_get_their_own_verdict() {
    let cluster = Cluster::new(1).await;
    let live: Vec<_> = (0..12)
        .map(|i| row(&format!("Live {i}"), 1_000 + i, 3))
        .collect();
    let gone: Vec<_> = (0..12)
        .map(|i| tombstone(row(&format!("Gone {i}"), 2_000 + i, 1)))
        .collect();
    cluster.insert_everywhere(&live).await;
    cluster.insert_everywhere(&gone).await;

    // One connection on the replica: every lookup that arrives while it is busy waits, and
    // the waiting ones go together. No fallback, so every verdict is the replica's.
    let name = unique_name("coalesce");
    let mut settings = test_settings(&cluster);
    settings.replicas.replica_urls = vec![SecretUrl::new(format!(
        "{name}={}",
        cluster.replicas[0].url()
    ))];
    settings.db.db_pool_size = 1;
    settings.fallback_to_primary = false;
    let app = spawn_app(settings).await;

    let mut cases = Vec::new();
    for product in &live {
        cases.push(Case {
            path: format!("/api/products/{}", product.id),
            min_version: None,
            expected_status: 200,
            expected_code: None,
        });
        // The replica holds version 1 only: a read asking for 2 is refused, not served stale.
        cases.push(Case {
            path: format!("/api/products/{}", product.id),
            min_version: Some("2"),
            expected_status: 503,
            expected_code: Some("version_not_replicated"),
        });
    }
    for product in &gone {
        cases.push(Case {
            path: format!("/api/products/{}", product.id),
            min_version: None,
            expected_status: 404,
            expected_code: Some("not_found"),
        });
    }
    for _ in 0..12 {
        cases.push(Case {
            path: format!("/api/products/{}", uuid::Uuid::now_v7()),
            min_version: None,
            expected_status: 404,
            expected_code: Some("not_found"),
        });
    }

    // Bursts until one statement is seen answering several lookups (the first burst nearly
    // always does); every answer of every burst is checked.
    let mut shared = false;
    for _ in 0..5 {
        let answers: Vec<Answer> = join_all(cases.iter().map(|case| {
            let headers: Vec<(&str, &str)> = case
                .min_version
                .map(|version| ("x-min-version", version))
                .into_iter()
                .collect();
            let path = case.path.clone();
            let app = &app;
            async move { app.answer(&path, &headers).await }
        }))
        .await;
        for (case, answer) in cases.iter().zip(&answers) {
            assert_eq!(
                answer.status, case.expected_status,
                "{}: {}",
                case.path, answer.body
            );
            assert_eq!(answer.served_by.as_deref(), Some(name.as_str()));
            match case.expected_code {
                Some(code) => assert_eq!(answer.body["code"], code, "{}", case.path),
                None => {
                    let id = case.path.rsplit('/').next().unwrap();
                    assert_eq!(answer.body["data"]["id"], id);
                }
            }
        }
        let (sum, count) = batch_sizes(&app.get("/metrics").await.text().await.unwrap(), &name);
        assert!(count > 0.0, "no lookup batches recorded for {name}");
        if sum > count {
            shared = true;
            break;
        }
    }
    assert!(shared, "no statement answered more than one lookup");
}

/// `read_lookup_batch_size`'s sum and count for `source` in a `/metrics` text.
fn batch_sizes(metrics: &str, source: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let prefix = format!(r#"read_lookup_batch_size_{suffix}{{source="{source}"}} "#);
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    };
    (value("sum"), value("count"))
}

//! The seven scenarios.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use amqprs::BasicProperties;
use amqprs::channel::BasicPublishArguments;
use serde_json::json;
use test_support::LinkMode;
use test_support::stack::{Stack, StackOptions};

use crate::{Load, finish, steady};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_replicator_killed_mid_batch_then_restarted() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let load = Load::start(&stack);
    steady(3).await;
    stack.replicators[0].kill().await;
    steady(3).await;
    stack.replicators[0].restart();
    stack.replicators[0]
        .wait_ready(Duration::from_secs(30))
        .await;
    steady(2).await;
    let (writes, _) = load.stop().await;
    assert_eq!(writes.ambiguous(), 0, "{writes:?}");
    finish("1 replicator kill -9", &stack, &writes, None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_write_api_killed_with_a_backlog_then_restarted() {
    let mut stack = Stack::start(StackOptions {
        broker_proxy: true,
        ..StackOptions::default()
    })
    .await;
    let proxy = stack.broker_proxy.as_ref().unwrap();
    let load = Load::start(&stack);
    steady(2).await;
    // Writes commit but cannot be published: the outbox grows. Then write-api dies.
    proxy.set(LinkMode::Cut);
    steady(3).await;
    stack.write_apis[0].kill().await;
    proxy.set(LinkMode::Open);
    steady(1).await;
    stack.write_apis[0].restart();
    stack.write_apis[0]
        .wait_ready(Duration::from_secs(30))
        .await;
    steady(3).await;
    let (writes, _) = load.stop().await;
    finish(
        "2 write-api kill -9 with outbox backlog",
        &stack,
        &writes,
        None,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_broker_link_cut_for_15_seconds() {
    let stack = Stack::start(StackOptions {
        broker_proxy: true,
        ..StackOptions::default()
    })
    .await;
    let proxy = stack.broker_proxy.as_ref().unwrap();
    let load = Load::start(&stack);
    steady(2).await;
    proxy.set(LinkMode::Cut);
    steady(15).await;
    proxy.set(LinkMode::Open);
    steady(5).await;
    let (writes, _) = load.stop().await;
    assert_eq!(
        writes.ambiguous(),
        0,
        "writes never need the broker: {writes:?}"
    );
    finish("3 RabbitMQ cut 15 s", &stack, &writes, None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_one_replica_unreachable_for_60_seconds() {
    let stack = Stack::start(StackOptions {
        proxied_replicas: vec![1],
        read_api: true,
        ..StackOptions::default()
    })
    .await;
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    let read_api = stack.read_api.as_ref().unwrap().url();
    let load = Load::start(&stack);
    steady(3).await;
    proxy.set(LinkMode::Cut);
    // replica-1 stays in read-api's rotation (so its lag stays under max_lag_ms) the whole time.
    let mut worst_lag_ms = 0;
    for _ in 0..60 {
        steady(1).await;
        let replicas: serde_json::Value = stack
            .client
            .get(format!("{read_api}/api/replicas"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let first = &replicas["data"]["replicas"][0];
        assert_eq!(first["healthy"], true, "replica-1 left rotation: {first}");
        worst_lag_ms = worst_lag_ms.max(first["lagMs"].as_u64().unwrap_or(0));
    }
    proxy.set(LinkMode::Open);
    steady(3).await;
    let (writes, reads) = load.stop().await;
    let reads = reads.unwrap();
    println!("[fault] 4: replica-1 worst lag during the outage {worst_lag_ms} ms; reads {reads:?}");
    assert_eq!(
        reads.server_errors + reads.no_answer + reads.unexpected,
        0,
        "{reads:?}"
    );
    assert_eq!(writes.ambiguous(), 0, "{writes:?}");
    finish(
        "4 replica-2 unreachable 60 s",
        &stack,
        &writes,
        Some(&reads),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_primary_unreachable_for_15_seconds() {
    let stack = Stack::start(StackOptions {
        primary_proxy: true,
        read_api: true,
        ..StackOptions::default()
    })
    .await;
    let proxy = stack.primary_proxy.as_ref().unwrap();
    let load = Load::start(&stack);
    steady(2).await;
    proxy.set(LinkMode::Frozen);
    // A write now fails fast with a clear 503 (REQUEST_TIMEOUT_MS is 2 s here) instead of
    // hanging; the client's own timeout is 20 s.
    let started = std::time::Instant::now();
    let refused = stack
        .client
        .post(format!("{}/api/products", stack.write_url()))
        .json(&json!({"name": "during the outage", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    steady(13).await;
    proxy.set(LinkMode::Open);
    steady(6).await;
    let (writes, reads) = load.stop().await;
    let reads = reads.unwrap();
    println!("[fault] 5: a write during the outage answered 503 after {waited:?}");
    assert_eq!(
        writes.no_answer, 0,
        "no write hung past the client's timeout: {writes:?}"
    );
    assert!(
        writes.server_errors > 0,
        "writes were refused during the outage"
    );
    assert_eq!(
        reads.server_errors + reads.no_answer + reads.unexpected,
        0,
        "read-api unaffected: {reads:?}"
    );
    finish(
        "5 primary unreachable 15 s",
        &stack,
        &writes,
        Some(&reads),
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_many_instances_and_32_clients_on_10_products() {
    let stack = Stack::start(StackOptions {
        write_apis: 2,
        replicators: 3,
        ..StackOptions::default()
    })
    .await;
    let bases: Vec<String> = stack.write_apis.iter().map(|w| w.url()).collect();
    let mut ids = Vec::new();
    for n in 0..10 {
        let created: serde_json::Value = stack
            .client
            .post(format!("{}/api/products", bases[n % 2]))
            .json(&json!({"name": format!("hot {n}"), "price": 1, "stock": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["data"]["id"].as_str().unwrap().to_owned());
    }
    let clients = (0..32).map(|client| {
        let (http, bases, ids) = (stack.client.clone(), bases.clone(), ids.clone());
        async move {
            let mut seen = Vec::new();
            for n in 0..40 {
                let id = &ids[(client + n) % ids.len()];
                let response = http
                    .patch(format!("{}/api/products/{id}", bases[(client + n) % 2]))
                    .json(&json!({"stock": client * 100 + n}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                seen.push((id.clone(), body["data"]["version"].as_i64().unwrap()));
            }
            seen
        }
    });
    let seen: Vec<(String, i64)> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Versions rise strictly: no two updates of a product got the same version, and each
    // product's versions are exactly 2..=updates+1.
    let mut by_product: HashMap<&str, HashSet<i64>> = HashMap::new();
    for (id, version) in &seen {
        assert!(
            by_product.entry(id).or_default().insert(*version),
            "{id} v{version} twice"
        );
    }
    for (id, versions) in &by_product {
        let expected: HashSet<i64> = (2..=versions.len() as i64 + 1).collect();
        assert_eq!(versions, &expected, "{id}");
    }
    let writes = test_support::load::LoadReport {
        acknowledged: seen.len() + ids.len(),
        ..Default::default()
    };
    finish(
        "6 2 write-apis, 3 replicators, 32 clients on 10 products",
        &stack,
        &writes,
        None,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_poison_messages_in_each_queue() {
    let stack = Stack::start(StackOptions::default()).await;
    let load = Load::start(&stack);
    steady(2).await;
    let connection = stack.vhost.connect().await;
    let channel = connection.open_channel(None).await.unwrap();
    let unknown_version =
        br#"{"schema_version": 99, "event_id": "0193a0e0-0000-7000-8000-000000000000"}"#;
    for queue in ["products.sync", "products.delete"] {
        for body in [b"{truncated".to_vec(), unknown_version.to_vec()] {
            channel
                .basic_publish(
                    BasicProperties::default().with_persistence(true).finish(),
                    body,
                    BasicPublishArguments::new("", queue),
                )
                .await
                .unwrap();
        }
    }
    steady(3).await;
    let (writes, _) = load.stop().await;
    let _ = channel.close().await;
    let _ = connection.close().await;
    test_support::eventually(
        Duration::from_secs(60),
        "4 messages in products.dlq",
        async || (stack.vhost.queue_depth("products.dlq").await == Some(4)).then_some(()),
    )
    .await;
    let (listed, text) = stack.replicator_command(&["dlq", "list"]).await;
    assert!(listed, "{text}");
    for reason in [
        "\"reason\":\"malformed\"",
        "\"reason\":\"unsupported_schema\"",
    ] {
        assert_eq!(text.matches(reason).count(), 2, "{reason} in {text}");
    }
    finish("7 poison messages in each queue", &stack, &writes, None, 4).await;
}

//! Replicas converge to the primary under mixed writes, with one or several replicators,
//! and across a `kill -9`.

use std::time::Duration;

use test_support::stack::{Stack, StackOptions};

use crate::{stack, writes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_mixed_writes_reach_every_replica() {
    let stack = stack(2, &[], 1).await;
    let report = writes(&stack, 3000, 16).await;
    assert!(report.acknowledged > 2000, "{report:?}");
    stack.wait_converged().await;

    let (clean, text) = stack.replicator_command(&["verify"]).await;
    assert!(clean, "{text}");
    assert!(
        text.contains("replica-1: in sync") && text.contains("replica-2: in sync"),
        "{text}"
    );
    assert_eq!(stack.vhost.queue_depth("products.dlq").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicators_converge_as_one() {
    let stack = stack(2, &[], 3).await;
    writes(&stack, 1500, 16).await;
    stack.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_killed_mid_batch_converges_after_restart() {
    let mut stack = stack(2, &[], 1).await;
    let load = writes(&stack, 2000, 16);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stack.replicators[0].kill_now();
    };
    let (report, ()) = tokio::join!(load, kill);
    assert!(report.acknowledged > 1000);
    let (clean, _) = stack.replicator_command(&["verify"]).await;
    assert!(
        !clean,
        "the killed replicator cannot have applied writes made after its death"
    );

    stack.replicators[0].kill().await;
    stack.replicators[0].restart();
    stack.replicators[0]
        .wait_ready(Duration::from_secs(30))
        .await;
    stack.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_and_exits_cleanly() {
    let mut stack = stack(1, &[], 1).await;
    writes(&stack, 300, 8).await;
    stack.wait_converged().await;
    assert!(
        stack.replicators[0]
            .terminate(Duration::from_secs(20))
            .await,
        "exit status 0"
    );
    assert!(stack.replicators[0].log().contains("consumer stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_follows_a_write_to_every_replica() {
    // Tracing is under test here, not the timeouts: on a loaded machine a 1 s connect or the
    // 1 s live budget can miss a replica, which catch-up then brings the change without the
    // request's id.
    let stack = Stack::start(StackOptions {
        replicas: 2,
        replicators: 1,
        extra_env: vec![
            ("DB_CONNECT_TIMEOUT_MS", "10000".into()),
            ("APPLY_TIMEOUT_MS", "20000".into()),
            ("LIVE_APPLY_BUDGET_MS", "20000".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    // Likewise a replica still being migrated when the write lands.
    stack.wait_replicas_migrated().await;
    let request_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let response = stack
        .client
        .post(format!("{}/api/products", stack.write_url()))
        .header("x-request-id", &request_id)
        .json(&serde_json::json!({"name": "Traced", "price": 1.5, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());

    let applied = test_support::eventually(
        Duration::from_secs(30),
        "the replicator to log the request id",
        async || {
            let log = stack.replicators[0].log();
            log.lines()
                .find(|l| l.contains(&request_id) && l.contains("change applied"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(
        applied.contains("replica-1") && applied.contains("replica-2"),
        "the change reached both replicas by the live path: {applied}"
    );
    assert!(
        stack.write_apis[0]
            .log()
            .lines()
            .any(|l| l.contains(&request_id) && l.contains("change committed")),
        "write-api logs the request id with the committed change"
    );
}

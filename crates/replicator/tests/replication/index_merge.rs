//! The replicator merges each replica's name-index pending list from a session of its own,
//! so applies only append to it (`replicator::index_merge`).

use std::time::Duration;

use test_support::LinkMode;
use test_support::stack::{Stack, StackOptions};

use crate::writes;

/// Pages waiting in replica 1's name-index pending list, once 400 mixed writes converged and
/// a second passed for the merger's rounds (100 ms each). Merging is how the list is
/// read, so it is read once.
async fn pending_pages_after_writes(extra_env: Vec<(&'static str, String)>) -> i64 {
    let stack = Stack::start(StackOptions {
        replicas: 1,
        extra_env,
        ..StackOptions::default()
    })
    .await;
    writes(&stack, 400, 16).await;
    stack.wait_converged().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut conn = stack.replicas[0].connect().await;
    storage::products::merge_name_index_pending_list(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_index_pending_list_is_merged_off_the_apply_path() {
    // A few hundred names queue a few pages, far below the list's limit (32 pages): the
    // applies leave them, only the merger takes them.
    let left_by_applies =
        pending_pages_after_writes(vec![("INDEX_MERGE_INTERVAL_MS", "0".into())]).await;
    assert!(
        left_by_applies > 0,
        "without the merger the applies should have left pages pending"
    );
    assert_eq!(pending_pages_after_writes(Vec::new()).await, 0);
}

/// A replica that comes back gets what it missed by catch-up's copies, which queue index
/// entries like any apply: the merger takes them too, without waiting for a live batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_copied_by_catch_up_are_merged_too() {
    let stack = Stack::start(StackOptions {
        replicas: 2,
        proxied_replicas: vec![1],
        // No pipeline heartbeats: each is a live batch that would wake the merger anyway.
        extra_env: vec![("HEARTBEAT_INTERVAL_MS", "0".into())],
        ..StackOptions::default()
    })
    .await;
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    proxy.set(LinkMode::Cut);
    writes(&stack, 400, 16).await;
    proxy.set(LinkMode::Open);
    stack.wait_converged().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut conn = stack.replicas[1].connect().await;
    let pending = storage::products::merge_name_index_pending_list(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending, 0, "pages the copies queued were left pending");
}

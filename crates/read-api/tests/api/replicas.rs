//! Health, lag and readiness: which replicas are in rotation and why not.

use crate::helpers::{Cluster, row, spawn_app, sql, test_settings};

#[tokio::test]
async fn lagging_and_catching_up_replicas_leave_rotation_with_a_reason() {
    let cluster = Cluster::new(3).await;
    let product = row("Mug", 800, 5);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    // A change the primary made 30 s ago: replica-2, level up to 31 s ago, lacks it.
    sql(
        &cluster.primary,
        "UPDATE products SET updated_at = now() - interval '30 seconds' \
         WHERE id = (SELECT id FROM products LIMIT 1)",
    )
    .await;
    let level = "UPDATE replication_status SET last_event_at = now() - interval '1 second', \
                 last_applied_at = now() - interval '1 second', events_applied = 10";
    sql(&cluster.replicas[0], level).await;
    // replica-2's newest change is 30 s older than replica-1's: it is missing changes.
    sql(
        &cluster.replicas[1],
        "UPDATE replication_status SET last_event_at = now() - interval '31 seconds', \
         last_applied_at = now() - interval '31 seconds', events_applied = 9",
    )
    .await;
    // replica-3 is being caught up after an outage that began a minute ago.
    sql(
        &cluster.replicas[2],
        &format!(
            "{level}; UPDATE replication_status SET behind_since = now() - interval '60 seconds'"
        ),
    )
    .await;
    let app = spawn_app(test_settings(&cluster)).await;

    let healthy = app.replica("replica-1").await;
    assert_eq!(healthy["healthy"], true, "{healthy}");
    assert!(healthy["lagMs"].as_u64().unwrap() < 5000, "{healthy}");
    assert!(healthy.get("reason").is_none(), "{healthy}");

    let lagging = app.replica("replica-2").await;
    assert_eq!(lagging["healthy"], false, "{lagging}");
    let lag = lagging["lagMs"].as_u64().unwrap();
    assert!((29_000..=31_000).contains(&lag), "{lagging}");
    assert!(
        lagging["reason"].as_str().unwrap().contains("lagging"),
        "{lagging}"
    );

    let catching_up = app.replica("replica-3").await;
    assert_eq!(catching_up["healthy"], false, "{catching_up}");
    assert!(
        catching_up["lagMs"].as_u64().unwrap() >= 60_000,
        "{catching_up}"
    );
    assert!(
        catching_up["reason"]
            .as_str()
            .unwrap()
            .contains("catching up"),
        "{catching_up}"
    );
    assert!(catching_up["catchingUpSince"].is_string());

    for _ in 0..6 {
        let answer = app
            .answer(&format!("/api/products/{}", product.id), &[])
            .await;
        assert_eq!(answer.served_by.as_deref(), Some("replica-1"));
    }
    let report = app.replica("replica-1").await;
    assert_eq!(report["readsServed"], 6);
    assert_eq!(report["inFlight"], 0);
    assert_eq!(report["lastError"], serde_json::Value::Null);

    // Catch-up done and replica-2 level again: both come back by themselves.
    sql(
        &cluster.replicas[2],
        "UPDATE replication_status SET behind_since = NULL",
    )
    .await;
    sql(&cluster.replicas[1], level).await;
    app.wait_for_health("replica-2", true).await;
    app.wait_for_health("replica-3", true).await;
}

#[tokio::test]
async fn a_replica_without_schema_is_unhealthy_until_it_is_migrated() {
    let cluster = Cluster::with_unmigrated(1, 1).await;
    let product = row("Bowl", 400, 2);
    crate::helpers::insert(&cluster.primary, std::slice::from_ref(&product)).await;
    crate::helpers::insert(&cluster.replicas[0], std::slice::from_ref(&product)).await;
    let app = spawn_app(test_settings(&cluster)).await;

    let bare = app.replica("replica-2").await;
    assert_eq!(bare["healthy"], false);
    let reason = bare["reason"].as_str().unwrap();
    assert!(reason.contains("no schema"), "{reason}");
    for _ in 0..4 {
        let answer = app
            .answer(&format!("/api/products/{}", product.id), &[])
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.served_by.as_deref(), Some("replica-1"));
    }
    let ready = app.answer("/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    // read-api never migrates. Once the replicator has, the replica is still out until its
    // first full copy is done (it may lack anything), then it rejoins by itself.
    storage::migrations::run_pending(
        cluster.replicas[1].url(),
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    let unknown = test_support::eventually(
        std::time::Duration::from_secs(20),
        "the migrated replica to be seen",
        async || {
            let replica = app.replica("replica-2").await;
            let reason = replica["reason"].as_str().unwrap_or_default().to_owned();
            reason.contains("unknown history").then_some(replica)
        },
    )
    .await;
    assert_eq!(unknown["healthy"], false, "{unknown}");
    crate::helpers::insert(&cluster.replicas[1], std::slice::from_ref(&product)).await;
    sql(
        &cluster.replicas[1],
        "UPDATE replication_status SET behind_since = NULL, behind_token = NULL",
    )
    .await;
    app.wait_for_health("replica-2", true).await;
}

#[tokio::test]
async fn the_primary_serves_when_no_replica_can_and_readyz_says_so() {
    let cluster = Cluster::with_unmigrated(0, 2).await;
    let product = row("Vase", 2_500, 1);
    crate::helpers::insert(&cluster.primary, std::slice::from_ref(&product)).await;
    let path = format!("/api/products/{}", product.id);

    let with_fallback = spawn_app(test_settings(&cluster)).await;
    let answer = with_fallback.answer(&path, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.served_by.as_deref(), Some("primary"));
    let list = with_fallback.answer("/api/products", &[]).await;
    assert_eq!(list.served_by.as_deref(), Some("primary"));
    let ready = with_fallback.answer("/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["data"]["primary"]["healthy"], true);
    assert_eq!(ready.body["data"]["replicas"][0]["healthy"], false);
    with_fallback.stop().await;

    let mut settings = test_settings(&cluster);
    settings.fallback_to_primary = false;
    let without = spawn_app(settings).await;
    let answer = without.answer(&path, &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["code"], "unavailable");
    let error = answer.body["error"].as_str().unwrap();
    assert!(
        error.contains("replica-1") && error.contains("no schema"),
        "{error}"
    );
    let ready = without.answer("/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["code"], "not_ready");
    assert_eq!(ready.body["data"]["fallbackToPrimary"], false);
}

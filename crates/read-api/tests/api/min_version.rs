//! `X-Min-Version`: read-your-writes across lagging replicas.

use crate::helpers::{Cluster, row, spawn_app, test_settings, tombstone, upsert};

#[tokio::test]
async fn the_primary_answers_until_a_replica_holds_the_version() {
    let cluster = Cluster::new(2).await;
    let mut product = row("Desk", 12_000, 4);
    product.version = 2;
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    // The primary has moved on to version 3; the replicas have not seen it yet.
    let mut v3 = product.clone();
    v3.version = 3;
    v3.stock = 3;
    upsert(&cluster.primary, &v3).await;
    let app = spawn_app(test_settings(&cluster)).await;
    let path = format!("/api/products/{}", product.id);

    let plain = app.answer(&path, &[]).await;
    assert_eq!(plain.status, 200);
    assert!(plain.served_by.unwrap().starts_with("replica-"));
    assert_eq!(plain.body["data"]["version"], 2);

    for _ in 0..4 {
        let fresh = app.answer(&path, &[("x-min-version", "3")]).await;
        assert_eq!(fresh.status, 200, "{}", fresh.body);
        assert_eq!(fresh.served_by.as_deref(), Some("primary"));
        assert_eq!(fresh.body["data"]["version"], 3);
        assert_eq!(fresh.body["data"]["stock"], 3);
    }
    let old_enough = app.answer(&path, &[("x-min-version", "2")]).await;
    assert!(old_enough.served_by.unwrap().starts_with("replica-"));

    // replica-1 catches up: it alone may answer now, whichever replica is picked first.
    upsert(&cluster.replicas[0], &v3).await;
    for _ in 0..4 {
        let fresh = app.answer(&path, &[("x-min-version", "3")]).await;
        assert_eq!(fresh.status, 200, "{}", fresh.body);
        assert_eq!(fresh.served_by.as_deref(), Some("replica-1"));
        assert_eq!(fresh.body["data"]["version"], 3);
    }

    // A tombstone at the asked version (or newer) is an authoritative 404.
    let mut deleted = tombstone(v3.clone());
    deleted.version = 4;
    upsert(&cluster.replicas[1], &deleted).await;
    upsert(&cluster.primary, &deleted).await;
    for _ in 0..4 {
        let gone = app.answer(&path, &[("x-min-version", "4")]).await;
        assert_eq!(gone.status, 404, "{}", gone.body);
        assert_eq!(gone.served_by.as_deref(), Some("replica-2"));
    }
    // Nobody holds version 9: the primary answers with what it has.
    let ahead = app.answer(&path, &[("x-min-version", "9")]).await;
    assert_eq!(ahead.status, 404);
    assert_eq!(ahead.served_by.as_deref(), Some("primary"));
}

#[tokio::test]
async fn without_fallback_a_version_no_replica_holds_is_a_clear_503() {
    let cluster = Cluster::new(2).await;
    let product = row("Chair", 5_000, 1);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    let mut settings = test_settings(&cluster);
    settings.fallback_to_primary = false;
    let app = spawn_app(settings).await;
    let path = format!("/api/products/{}", product.id);

    let answer = app.answer(&path, &[("x-min-version", "2")]).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["code"], "version_not_replicated");
    assert!(answer.body["error"].as_str().unwrap().contains("version 2"));
    assert!(answer.served_by.unwrap().starts_with("replica-"));

    let current = app.answer(&path, &[("x-min-version", "1")]).await;
    assert_eq!(current.status, 200);
}

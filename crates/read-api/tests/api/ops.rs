//! `/healthz` and `/metrics`.

use service_kit::SecretUrl;
use test_support::unique_name;

use crate::helpers::{Cluster, row, spawn_app, test_settings};

#[tokio::test]
async fn healthz_answers_and_metrics_count_reads_per_source_and_outcome() {
    let cluster = Cluster::new(2).await;
    let product = row("Clock", 3_000, 1);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    // Metrics are process-wide: unique replica names keep other tests' gauges apart.
    let names = [unique_name("ops"), unique_name("ops")];
    let mut settings = test_settings(&cluster);
    settings.replicas.replica_urls = names
        .iter()
        .zip(&cluster.replicas)
        .map(|(name, db)| SecretUrl::new(format!("{name}={}", db.url())))
        .collect();
    let app = spawn_app(settings).await;

    let health = app.answer("/healthz", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["data"]["status"], "alive");

    app.answer(&format!("/api/products/{}", product.id), &[])
        .await;
    app.answer(&format!("/api/products/{}", uuid::Uuid::now_v7()), &[])
        .await;
    app.answer("/api/products", &[]).await;
    app.answer("/no/such/route", &[]).await;
    app.answer(
        &format!("/api/products/{}", product.id),
        &[("x-min-version", "5")],
    )
    .await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let [a, b] = &names;
    for expected in [
        format!(r#"reads_total{{source="{a}",outcome="ok"}}"#),
        format!(r#"reads_total{{source="{b}",outcome="not_found"}}"#),
        r#"outcome="too_old""#.to_owned(),
        r#"reads_total{source="primary",outcome="ok"}"#.to_owned(),
        format!(r#"read_duration_seconds_bucket{{source="{a}""#),
        format!(r#"replica_healthy{{replica="{a}"}} 1"#),
        format!(r#"replica_lag_seconds{{replica="{b}"}} 0"#),
        format!(r#"replica_in_flight{{replica="{a}"}} 0"#),
        "http_requests_total".to_owned(),
        r#"route="/api/products/{id}""#.to_owned(),
        r#"route="/api/products""#.to_owned(),
        r#"route="unmatched",status="404""#.to_owned(),
    ] {
        assert!(
            metrics.contains(&expected),
            "{expected} missing from /metrics"
        );
    }
}

/// The routes registered in `routes.rs` are exactly the paths of the OpenAPI document, and
/// every documented operation is served while undocumented methods on those paths are not.
#[tokio::test]
async fn the_openapi_document_lists_every_route_and_nothing_else() {
    let cluster = Cluster::new(1).await;
    let app = spawn_app(test_settings(&cluster)).await;
    test_support::openapi::assert_document_matches_routes(
        &app.client,
        &app.address,
        &[
            include_str!("../../src/routes.rs"),
            include_str!("../../src/openapi.rs"),
        ],
    )
    .await;
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), 200);
    let document: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let parameter = |path: &str, name: &str| {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    let limit = parameter("/api/products", "limit");
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &1000.into())
    );
    assert!(parameter("/api/products", "cursor")["pattern"].is_string());
    let min_version = parameter("/api/products/{id}", "X-Min-Version");
    assert_eq!(min_version["minimum"], 1);
    assert_eq!(
        min_version["type"], "integer",
        "not nullable: {min_version}"
    );
}

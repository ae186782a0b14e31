use reqwest::Method;

use crate::helpers::{body, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    let health = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = test_support::eventually(
        std::time::Duration::from_secs(10),
        "broker connected",
        async || {
            let json = body(app.request(Method::GET, "/readyz").send().await.unwrap()).await;
            (json["data"]["broker"]["connected"] == true).then_some(json)
        },
    )
    .await;
    assert_eq!(ready["success"], true);
    assert_eq!(ready["data"]["database"], "ok");
    assert_eq!(ready["data"]["outbox"]["backlog"], 0);
}

#[tokio::test]
async fn readyz_fails_when_the_primary_is_unreachable() {
    let db = std::sync::Arc::new(test_support::TestDatabase::create().await);
    let vhost = std::sync::Arc::new(test_support::TestVhost::create().await);
    let proxy = test_support::TcpProxy::start(&db.server()).await;
    let mut settings = crate::helpers::test_settings(&db, &vhost.url());
    settings.db.database_url = service_kit::SecretUrl::new(db.url_via(&proxy.host()));
    settings.request_timeout_ms = std::time::Duration::from_secs(1);
    settings.db.db_connect_timeout_ms = std::time::Duration::from_millis(500);
    let app = crate::helpers::spawn_with(settings, db, vhost).await;

    proxy.set(test_support::LinkMode::Frozen);
    let started = std::time::Instant::now();
    let ready = app.request(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let write = app
        .create_ok_status(serde_json::json!({"name": "x", "price": 1, "stock": 1}))
        .await;
    assert_eq!(write.0, 503, "{}", write.1);
    assert_eq!(write.1["code"], "unavailable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "bounded, not hanging"
    );

    proxy.set(test_support::LinkMode::Open);
    test_support::eventually(
        std::time::Duration::from_secs(15),
        "a write to succeed again",
        async || {
            let (status, _) = app
                .create_ok_status(serde_json::json!({"name": "x", "price": 1, "stock": 1}))
                .await;
            (status == 201).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_metrics_count_requests() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let generated = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(generated.headers()["x-request-id"], "bad id with spaces");

    app.create_ok("Metered", 1.0, 1).await;
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "outbox_backlog_events",
        "broker_connected",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains(r#"route="/api/products""#));
}

/// The routes registered in `routes.rs` are exactly the paths of the OpenAPI document, and
/// every documented operation is served (not answered 404/405) while undocumented methods
/// on those paths are not.
#[tokio::test]
async fn the_openapi_document_lists_every_route_and_nothing_else() {
    let app = spawn_app().await;
    test_support::openapi::assert_document_matches_routes(
        &app.client,
        &app.address,
        &[
            include_str!("../../src/routes.rs"),
            include_str!("../../src/openapi.rs"),
        ],
    )
    .await;
    let docs = app.request(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let bare = app.request(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(bare.url().path(), "/docs/", "/docs leads to the UI");
    assert_eq!(bare.status(), 200);
}

/// What the document promises about input is what the server enforces: bounds, lengths and
/// header grammars are stated, so a client generated from it does not send what is refused.
#[tokio::test]
async fn the_openapi_document_states_the_input_rules() {
    let app = spawn_app().await;
    let document: serde_json::Value = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let input = &document["components"]["schemas"]["ProductInput"]["properties"];
    assert_eq!(input["stock"]["maximum"], 2_147_483_647);
    assert_eq!(input["stock"]["minimum"], 0);
    assert_eq!(input["price"]["maximum"], 1_000_000_000);
    assert_eq!(input["price"]["multipleOf"], 0.01);
    assert_eq!(input["name"]["maxLength"], 200);
    assert_eq!(input["name"]["minLength"], 1);
    let patch = &document["components"]["schemas"]["ProductPatchInput"];
    assert_eq!(patch["minProperties"], 1);
    let parameters = document["paths"]["/api/products/{id}"]["put"]["parameters"]
        .as_array()
        .unwrap();
    let if_match = parameters.iter().find(|p| p["name"] == "If-Match").unwrap();
    assert!(if_match["schema"]["pattern"].is_string(), "{if_match}");
    assert_eq!(
        if_match["schema"]["type"], "string",
        "not nullable: {if_match}"
    );
    let post = &document["paths"]["/api/products"]["post"]["responses"];
    for status in ["201", "400", "401", "409", "413", "415", "503"] {
        assert!(post[status].is_object(), "POST documents {status}");
    }
}

//! A busy or restarting primary answers 503 with `Retry-After`, never 500; undecodable
//! outbox rows are set aside.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use messaging::topology::SYNC_QUEUE;
use reqwest::Method;
use serde_json::json;
use test_support::{TestDatabase, TestVhost, eventually};

use crate::helpers::{body, spawn_app, spawn_with, test_settings};
use crate::relay::wait_for_empty_outbox;

/// Puts `count` rows for products named `name` straight into the outbox.
async fn insert_outbox_rows(app: &crate::helpers::TestApp, count: u32, name: &str) {
    let mut conn = app.db.connect().await;
    conn.batch_execute(&format!(
        "INSERT INTO outbox (event_id, product_id, version, name, price_cents, stock, \
             created_at, updated_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 1, '{name}', 1, 1, now(), now() \
         FROM generate_series(1, {count})"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_row_locked_past_the_statement_timeout_is_a_503_with_retry_after() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    let mut settings = test_settings(&db, &vhost.url());
    settings.db_statement_timeout_ms = Duration::from_millis(100);
    let app = spawn_with(settings, db, vhost).await;
    let created = app.create_ok("Locked", 1.0, 1).await;
    let id = created["id"].as_str().unwrap().to_owned();

    let mut holder = app.db.connect().await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM products WHERE id = '{id}' FOR UPDATE;"
        ))
        .await
        .unwrap();
    let response = app
        .send(
            Method::PATCH,
            &format!("/api/products/{id}"),
            &json!({"stock": 5}),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer = body(response).await;
    assert_eq!(answer["success"], false);
    assert_eq!(answer["code"], "unavailable");
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains("nothing was written"), "{message}");
    assert!(
        !message.contains("SQLSTATE") && !message.contains("lock"),
        "no internals: {message}"
    );

    holder.batch_execute("ROLLBACK").await.unwrap();
    let response = app
        .send(
            Method::PATCH,
            &format!("/api/products/{id}"),
            &json!({"stock": 5}),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn writes_survive_every_session_being_terminated() {
    let app = spawn_app().await;
    // Fill the pool with sessions, then end them all, as a fast restart of the primary does.
    let writes =
        (0..8).map(|n| app.create(json!({"name": format!("before {n}"), "price": 1, "stock": 1})));
    for response in futures_util::future::join_all(writes).await {
        assert_eq!(response.status(), 201);
    }
    let mut admin = app.db.connect().await;
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'write-api' AND datname = current_database()",
        )
        .await
        .unwrap();
    let writes =
        (0..8).map(|n| app.create(json!({"name": format!("after {n}"), "price": 1, "stock": 1})));
    for response in futures_util::future::join_all(writes).await {
        let status = response.status();
        let answer = body(response).await;
        assert!(status == 201 || status == 503, "{status}: {answer}");
        assert_ne!(answer["code"], "internal");
    }
}

#[tokio::test]
async fn undecodable_outbox_rows_are_set_aside_and_the_rest_published() {
    let app = spawn_app().await;
    app.create_ok("first", 1.0, 1).await;
    wait_for_empty_outbox(&app).await;
    app.drain_queue(SYNC_QUEUE).await;

    // An empty name: the relay cannot make a change event of these.
    insert_outbox_rows(&app, 600, "").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let data = app.create_ok(&format!("after {n}"), 1.0, n).await;
        ids.push(data["id"].as_str().unwrap().to_owned());
    }
    wait_for_empty_outbox(&app).await;
    let published: Vec<String> = app
        .drain_queue(SYNC_QUEUE)
        .await
        .iter()
        .map(|e| e.product_id().to_string())
        .collect();
    assert_eq!(published, ids);

    let ready = body(app.request(Method::GET, "/readyz").send().await.unwrap()).await;
    assert_eq!(ready["data"]["outbox"]["deadLettered"], 600, "{ready}");
    assert_eq!(ready["data"]["tasks"], "ok");
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("outbox_dead_lettered_total"), "{metrics}");
    assert!(metrics.contains("outbox_dead_letters 600"), "{metrics}");
}

#[tokio::test]
async fn readyz_stays_cheap_and_green_with_a_backlog_past_the_exact_count() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    // The broker never answers: the backlog stays.
    let settings = test_settings(&db, "amqp://guest:guest@127.0.0.1:1/%2f");
    let app = spawn_with(settings, db, vhost).await;
    insert_outbox_rows(&app, 20_000, "p").await;
    let ready = eventually(
        Duration::from_secs(10),
        "an estimated backlog",
        async || {
            let response = app.request(Method::GET, "/readyz").send().await.unwrap();
            assert_eq!(response.status(), 200);
            let ready = body(response).await;
            // The statistics catch up within a second or so; until then the count's floor shows.
            (ready["data"]["outbox"]["backlog"] == 20000).then_some(ready)
        },
    )
    .await;
    assert_eq!(ready["data"]["outbox"]["backlogEstimated"], true, "{ready}");
}

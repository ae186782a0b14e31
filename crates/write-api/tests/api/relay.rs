//! The outbox relay: what it publishes, and that nothing is lost when the broker goes away.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use domain::{ChangeKind, ProductId};
use messaging::topology::{DELETE_QUEUE, SYNC_QUEUE};
use reqwest::Method;
use serde_json::json;
use test_support::{LinkMode, TcpProxy, TestDatabase, TestVhost, eventually};

use crate::helpers::{TestApp, body, product, spawn_app, spawn_with, test_settings};

pub async fn wait_for_empty_outbox(app: &TestApp) {
    eventually(Duration::from_secs(20), "an empty outbox", async || {
        (app.outbox_backlog().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_change_is_published_once_confirmed_to_its_queue() {
    let app = spawn_app().await;
    let created = app.create_ok("Lamp", 19.99, 3).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/products/{id}");
    app.send(Method::PATCH, &path, &json!({"stock": 2})).await;
    app.request(Method::DELETE, &path)
        .header("x-request-id", "delete-req-1")
        .send()
        .await
        .unwrap();

    wait_for_empty_outbox(&app).await;
    let upserts = app.drain_queue(SYNC_QUEUE).await;
    let deletes = app.drain_queue(DELETE_QUEUE).await;
    assert_eq!(upserts.len(), 2);
    assert_eq!(deletes.len(), 1);

    let product_id = ProductId::parse(&id).unwrap();
    assert!(
        upserts
            .iter()
            .all(|e| e.product_id() == product_id && e.kind() == ChangeKind::Upsert)
    );
    assert_eq!(upserts[0].version().get(), 1);
    assert_eq!(upserts[1].version().get(), 2);
    assert_eq!(upserts[1].product.stock.units(), 2);
    assert!(upserts[0].seq < upserts[1].seq);

    let delete = &deletes[0];
    assert_eq!(delete.kind(), ChangeKind::Delete);
    assert_eq!(delete.version().get(), 3);
    assert_eq!(delete.product.deleted_at, Some(delete.occurred_at()));
    // The event carries the primary's row field for field.
    let mut conn = app.db.connect().await;
    let stored = storage::products::find(&mut conn, product_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delete.product, stored);
}

#[tokio::test]
async fn writes_succeed_while_the_broker_is_down_and_drain_when_it_returns() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let settings = test_settings(&db, &vhost.url_via(&proxy.host()));
    let app = spawn_with(settings, db, vhost).await;
    app.create_ok("before", 1.0, 1).await;
    wait_for_empty_outbox(&app).await;

    proxy.set(LinkMode::Cut);
    let mut ids = Vec::new();
    for n in 0..30 {
        let data = app.create_ok(&format!("during {n}"), 1.0, n).await;
        ids.push(data["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.outbox_backlog().await, 30, "held in the outbox");
    let ready = body(app.request(Method::GET, "/readyz").send().await.unwrap()).await;
    assert_eq!(ready["data"]["broker"]["connected"], false);
    assert_eq!(ready["data"]["outbox"]["backlog"], 30);

    proxy.set(LinkMode::Open);
    wait_for_empty_outbox(&app).await;
    let published: HashSet<String> = app
        .drain_queue(SYNC_QUEUE)
        .await
        .iter()
        .map(|e| e.product_id().to_string())
        .collect();
    for id in &ids {
        assert!(published.contains(id), "{id} was lost");
    }
}

#[tokio::test]
async fn a_frozen_broker_link_is_abandoned_and_the_backlog_drains_after() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let settings = test_settings(&db, &vhost.url_via(&proxy.host()));
    let app = spawn_with(settings, db, vhost).await;
    wait_for_empty_outbox(&app).await;

    proxy.set(LinkMode::Frozen);
    for n in 0..10 {
        app.create_ok(&format!("frozen {n}"), 1.0, n).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set(LinkMode::Open);
    wait_for_empty_outbox(&app).await;
    let names: HashSet<String> = app
        .drain_queue(SYNC_QUEUE)
        .await
        .iter()
        .map(|e| e.product.name.to_string())
        .collect();
    assert!((0..10).all(|n| names.contains(&format!("frozen {n}"))));
}

#[tokio::test]
async fn a_backlog_left_by_a_stopped_instance_is_published_by_the_next() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.set(LinkMode::Cut);
    let first = spawn_with(
        test_settings(&db, &vhost.url_via(&proxy.host())),
        db.clone(),
        vhost.clone(),
    )
    .await;
    for n in 0..20 {
        first.create_ok(&format!("orphan {n}"), 2.0, n).await;
    }
    first.stop().await;
    assert_eq!(
        {
            let mut conn = db.connect().await;
            storage::outbox::backlog(&mut conn).await.unwrap().rows
        },
        20
    );

    let second = spawn_with(test_settings(&db, &vhost.url()), db.clone(), vhost.clone()).await;
    wait_for_empty_outbox(&second).await;
    assert_eq!(second.drain_queue(SYNC_QUEUE).await.len(), 20);
}

#[tokio::test]
async fn two_instances_on_one_primary_lose_and_wedge_nothing() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    let mut settings = test_settings(&db, &vhost.url());
    settings.relay_batch_size = 7;
    let a = spawn_with(settings.clone(), db.clone(), vhost.clone()).await;
    let b = spawn_with(settings, db.clone(), vhost.clone()).await;

    let writes = (0..120).map(|n| {
        let app = if n % 2 == 0 { &a } else { &b };
        async move {
            let response = app.create(product(&format!("p{n}"), 1.0, n)).await;
            assert_eq!(response.status(), 201);
        }
    });
    futures_util::future::join_all(writes).await;

    wait_for_empty_outbox(&a).await;
    let events = a.drain_queue(SYNC_QUEUE).await;
    let distinct: HashSet<String> = events.iter().map(|e| e.product.name.to_string()).collect();
    assert_eq!(distinct.len(), 120, "every write published");
}

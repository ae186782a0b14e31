use messaging::topology::SYNC_QUEUE;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{body, spawn_app};

#[tokio::test]
async fn post_creates_a_product_in_the_seed_envelope() {
    let app = spawn_app().await;
    let response = app
        .create(json!({"name": "  Sample Product ", "price": 99.99, "stock": 100}))
        .await;
    assert_eq!(response.status(), 201);
    let headers = response.headers().clone();
    let json = body(response).await;
    assert_eq!(json["success"], true);
    assert_eq!(json["message"], "Product created successfully");
    let data = &json["data"];
    assert_eq!(data["name"], "Sample Product");
    assert_eq!(data["price"], 99.99);
    assert_eq!(data["stock"], 100);
    assert_eq!(data["version"], 1);
    assert_eq!(data["createdAt"], data["updatedAt"]);
    let id = data["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/api/products/{id}").as_str());
    assert_eq!(headers["etag"], "\"1\"");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn post_keeps_a_client_id_and_refuses_it_twice() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let product = json!({"id": id, "name": "Lamp", "price": 10, "stock": 1});
    let first = app.create(product.clone()).await;
    assert_eq!(first.status(), 201);
    assert_eq!(body(first).await["data"]["id"], id.as_str());

    let second = app.create(product).await;
    assert_eq!(second.status(), 409);
    let error = body(second).await;
    assert_eq!(error["success"], false);
    assert_eq!(error["code"], "already_exists");

    // The refused write published nothing.
    crate::relay::wait_for_empty_outbox(&app).await;
    let events = app.drain_queue(SYNC_QUEUE).await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn post_brings_a_deleted_id_back_at_the_next_version() {
    let app = spawn_app().await;
    let created = app.create_ok("Lamp", 5.0, 1).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/products/{id}");
    assert_eq!(
        app.request(Method::DELETE, &path)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let again = app
        .create(json!({"id": id, "name": "Lamp II", "price": 6, "stock": 2}))
        .await;
    assert_eq!(again.status(), 201);
    let data = body(again).await["data"].clone();
    assert_eq!(data["version"], 3, "create 1, delete 2, re-create 3");
    assert_eq!(data["name"], "Lamp II");
    assert_ne!(data["createdAt"], created["createdAt"]);
}

#[tokio::test]
async fn prices_round_trip_exactly() {
    let app = spawn_app().await;
    for (sent, expected) in [
        ("0.1", 0.1),
        ("0.01", 0.01),
        ("19.99", 19.99),
        ("1e2", 100.0),
        ("1000000000", 1_000_000_000.0),
        ("123456789.12", 123_456_789.12),
    ] {
        let raw = format!(r#"{{"name":"p","price":{sent},"stock":0}}"#);
        let response = app
            .request(Method::POST, "/api/products")
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{sent}");
        let text = response.text().await.unwrap();
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(data["data"]["price"].as_f64(), Some(expected), "{sent}");
        let id = data["data"]["id"].as_str().unwrap();
        let mut conn = app.db.connect().await;
        let stored = storage::products::find(&mut conn, domain::ProductId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.price.to_string(), format!("{expected:.2}"));
    }
}

//! `WRITE_API_TOKEN`: writes need the bearer token; probes do not.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use test_support::{TestDatabase, TestVhost};

use crate::helpers::{spawn_with, test_settings};

#[tokio::test]
async fn writes_need_the_bearer_token_when_one_is_set() {
    let db = Arc::new(TestDatabase::create().await);
    let vhost = Arc::new(TestVhost::create().await);
    let mut settings = test_settings(&db, &vhost.url());
    settings.write_api_token = service_kit::SecretText::new("s3cret-token");
    let app = spawn_with(settings, db, vhost).await;
    let body = json!({"name": "Lamp", "price": 1, "stock": 1});

    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("s3cret-token"),
        Some("Bearer s3cret-toke"),
    ] {
        let mut request = app.request(Method::POST, "/api/products").json(&body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "unauthorized");
        assert_eq!(answer["success"], false);
    }
    let delete = app
        .request(
            Method::DELETE,
            &format!("/api/products/{}", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 401);
    let mut conn = app.db.connect().await;
    let stored = storage::replica::summarize(&mut conn).await.unwrap();
    assert_eq!(stored.all_rows, 0, "nothing written");

    let created = app
        .request(Method::POST, "/api/products")
        .header("authorization", "Bearer s3cret-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let response = app.request(Method::GET, probe).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe} stays open");
    }
}

use reqwest::Method;
use serde_json::json;

use crate::helpers::{body, spawn_app};

#[tokio::test]
async fn put_creates_then_replaces() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    let path = format!("/api/products/{id}");

    let created = app
        .send(
            Method::PUT,
            &path,
            &json!({"name": "Desk", "price": 120, "stock": 4}),
        )
        .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], path.as_str());
    let first = body(created).await["data"].clone();
    assert_eq!(first["version"], 1);

    let replaced = app
        .send(
            Method::PUT,
            &path,
            &json!({"id": id, "name": "Desk L", "price": 150.5, "stock": 2}),
        )
        .await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(replaced.headers()["etag"], "\"2\"");
    let json = body(replaced).await;
    assert_eq!(json["message"], "Product updated successfully");
    assert_eq!(json["data"]["version"], 2);
    assert_eq!(json["data"]["price"], 150.5);
    assert_eq!(json["data"]["createdAt"], first["createdAt"]);
    assert_ne!(json["data"]["updatedAt"], first["updatedAt"]);
}

#[tokio::test]
async fn patch_changes_only_given_fields_and_needs_a_live_product() {
    let app = spawn_app().await;
    let created = app.create_ok("Chair", 40.0, 10).await;
    let path = format!("/api/products/{}", created["id"].as_str().unwrap());

    let patched = app.send(Method::PATCH, &path, &json!({"stock": 7})).await;
    assert_eq!(patched.status(), 200);
    let data = body(patched).await["data"].clone();
    assert_eq!(data["stock"], 7);
    assert_eq!(data["name"], "Chair");
    assert_eq!(data["price"], 40.0);
    assert_eq!(data["version"], 2);

    let missing = format!("/api/products/{}", uuid::Uuid::now_v7());
    let response = app
        .send(Method::PATCH, &missing, &json!({"stock": 1}))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(body(response).await["code"], "not_found");
}

#[tokio::test]
async fn delete_answers_the_seed_envelope_and_then_404() {
    let app = spawn_app().await;
    let created = app.create_ok("Bin", 3.0, 1).await;
    let path = format!("/api/products/{}", created["id"].as_str().unwrap());

    let deleted = app.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.headers()["etag"],
        "\"2\"",
        "a delete raises the version"
    );
    assert_eq!(
        body(deleted).await,
        json!({"success": true, "data": null, "message": "Product deleted successfully"})
    );

    for method in [Method::DELETE, Method::PATCH] {
        let again = app.send(method, &path, &json!({"stock": 1})).await;
        assert_eq!(again.status(), 404);
    }

    // PUT on a deleted id re-creates it.
    let recreated = app
        .send(
            Method::PUT,
            &path,
            &json!({"name": "Bin", "price": 3, "stock": 1}),
        )
        .await;
    assert_eq!(recreated.status(), 201);
    assert_eq!(body(recreated).await["data"]["version"], 3);
}

#[tokio::test]
async fn if_match_guards_every_change() {
    let app = spawn_app().await;
    let created = app.create_ok("Vase", 12.0, 1).await;
    let path = format!("/api/products/{}", created["id"].as_str().unwrap());
    let full = json!({"name": "Vase", "price": 13, "stock": 1});

    let stale = app
        .request(Method::PUT, &path)
        .header("if-match", "\"7\"")
        .json(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    assert_eq!(body(stale).await["code"], "precondition_failed");

    let fresh = app
        .request(Method::PUT, &path)
        .header("if-match", "\"1\"")
        .json(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);

    let patch = app
        .request(Method::PATCH, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"stock": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 412, "version 1 is gone");

    let any = app
        .request(Method::PATCH, &path)
        .header("if-match", "*")
        .json(&json!({"stock": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(any.status(), 200);

    let delete_stale = app
        .request(Method::DELETE, &path)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(delete_stale.status(), 412);
    let delete = app
        .request(Method::DELETE, &path)
        .header("if-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);

    // If-Match on an absent product cannot match: PUT does not create.
    let absent = format!("/api/products/{}", uuid::Uuid::now_v7());
    let put_absent = app
        .request(Method::PUT, &absent)
        .header("if-match", "*")
        .json(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(put_absent.status(), 412);
}

#[tokio::test]
async fn concurrent_writes_to_one_product_raise_the_version_one_by_one() {
    let app = spawn_app().await;
    let created = app.create_ok("Counter", 1.0, 0).await;
    let path = format!("/api/products/{}", created["id"].as_str().unwrap());
    let writes = (1..=20).map(|stock| {
        let app = &app;
        let path = path.clone();
        async move {
            let response = app
                .send(Method::PATCH, &path, &json!({"stock": stock}))
                .await;
            assert_eq!(response.status(), 200);
            body(response).await["data"]["version"].as_i64().unwrap()
        }
    });
    let mut versions = futures_util::future::join_all(writes).await;
    versions.sort_unstable();
    assert_eq!(versions, (2..=21).collect::<Vec<_>>());
}

//! Every bad request gets a 400 (or 405) in the envelope with a stable code.

use crate::helpers::{Cluster, row, spawn_app, test_settings};

#[tokio::test]
async fn bad_query_parameters_cursors_and_versions_are_400_with_a_code() {
    let cluster = Cluster::new(1).await;
    let product = row("Lamp", 1_000, 1);
    cluster
        .insert_everywhere(std::slice::from_ref(&product))
        .await;
    let app = spawn_app(test_settings(&cluster)).await;
    let item = format!("/api/products/{}", product.id);

    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "unknown parameter",
            "/api/products?colour=red".into(),
            vec![],
            "invalid_query",
        ),
        (
            "repeated parameter",
            "/api/products?limit=1&limit=2".into(),
            vec![],
            "invalid_query",
        ),
        (
            "limit 0",
            "/api/products?limit=0".into(),
            vec![],
            "invalid_query",
        ),
        (
            "limit too big",
            "/api/products?limit=1001".into(),
            vec![],
            "invalid_query",
        ),
        (
            "limit not a number",
            "/api/products?limit=ten".into(),
            vec![],
            "invalid_query",
        ),
        (
            "price with 3 decimals",
            "/api/products?minPrice=1.005".into(),
            vec![],
            "invalid_query",
        ),
        (
            "negative price",
            "/api/products?maxPrice=-1".into(),
            vec![],
            "invalid_query",
        ),
        (
            "price too big",
            "/api/products?maxPrice=1000000000.01".into(),
            vec![],
            "invalid_query",
        ),
        (
            "price not a number",
            "/api/products?minPrice=cheap".into(),
            vec![],
            "invalid_query",
        ),
        (
            "min above max",
            "/api/products?minPrice=5&maxPrice=4".into(),
            vec![],
            "invalid_query",
        ),
        (
            "inStock not a bool",
            "/api/products?inStock=yes".into(),
            vec![],
            "invalid_query",
        ),
        (
            "empty name",
            "/api/products?name=".into(),
            vec![],
            "invalid_query",
        ),
        (
            "garbage cursor",
            "/api/products?cursor=not-a-cursor".into(),
            vec![],
            "invalid_cursor",
        ),
        (
            "non-UUID id",
            "/api/products/42".into(),
            vec![],
            "invalid_id",
        ),
        (
            "min version 0",
            item.clone(),
            vec![("x-min-version", "0")],
            "invalid_min_version",
        ),
        (
            "min version text",
            item.clone(),
            vec![("x-min-version", "new")],
            "invalid_min_version",
        ),
        (
            "min version negative",
            item.clone(),
            vec![("x-min-version", "-3")],
            "invalid_min_version",
        ),
    ];
    for (what, path, headers, code) in cases {
        let answer = app.answer(&path, &headers).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.body);
        assert_eq!(answer.body["success"], false, "{what}");
        assert_eq!(answer.body["code"], code, "{what}: {}", answer.body);
        assert!(
            answer.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no message"
        );
        assert_eq!(answer.served_by, None, "{what}: no source was asked");
    }

    // Several problems are reported together.
    let answer = app.answer("/api/products?limit=0&inStock=maybe", &[]).await;
    let error = answer.body["error"].as_str().unwrap();
    assert!(
        error.contains("limit") && error.contains("inStock"),
        "{error}"
    );

    let write = app
        .client
        .post(format!("{}/api/products", app.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 405);
    assert_eq!(write.headers()["allow"], "GET");
    let nowhere = app.answer("/api/nothing", &[]).await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.body["code"], "not_found");
}

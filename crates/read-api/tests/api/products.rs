//! Listing and looking up products: pagination, filters, 404s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::Value;

use crate::helpers::{
    Cluster, ids, insert, now_micros, row, row_at, spawn_app, test_settings, tombstone,
};

#[tokio::test]
async fn pages_walk_every_row_exactly_once_while_newer_rows_arrive() {
    let cluster = Cluster::new(2).await;
    // 120 live rows in groups of three sharing a created_at (the id breaks ties), and
    // tombstones among them that must never show.
    let start = now_micros() - TimeDelta::hours(1);
    let mut rows = Vec::new();
    for i in 0..40 {
        let at = start + TimeDelta::seconds(i);
        for j in 0..3 {
            rows.push(row_at(&format!("item {i}-{j}"), 100 + i, 1, at));
        }
        rows.push(tombstone(row_at(&format!("gone {i}"), 1, 1, at)));
    }
    cluster.insert_everywhere(&rows).await;
    let live: HashSet<String> = rows
        .iter()
        .filter(|r| r.deleted_at.is_none())
        .map(|r| r.id.to_string())
        .collect();
    let app = spawn_app(test_settings(&cluster)).await;

    // Rows keep arriving on both replicas while the client pages.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let replicas = cluster.replicas.clone();
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && written < 500 {
                let new = row(&format!("new {written}"), 1, 1);
                for replica in &replicas {
                    insert(replica, std::slice::from_ref(&new)).await;
                }
                written += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };

    let mut seen: Vec<String> = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut served_by = HashSet::new();
    for page in 0.. {
        assert!(page < 200, "pagination does not end");
        let path = match &cursor {
            Some(c) => format!("/api/products?limit=7&cursor={c}"),
            None => "/api/products?limit=7".to_owned(),
        };
        let answer = app.answer(&path, &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        served_by.insert(answer.served_by.unwrap());
        let items = answer.body["data"].as_array().unwrap();
        assert!(items.len() <= 7);
        for item in items {
            keys.push((
                item["createdAt"].as_str().unwrap().to_owned(),
                item["id"].as_str().unwrap().to_owned(),
            ));
        }
        seen.extend(ids(&answer.body));
        match &answer.body["nextCursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => break,
            other => panic!("nextCursor {other}"),
        }
        if seen.len() >= live.len() {
            // Past the seeded rows, the writer's rows keep the walk going: stop it so the
            // walk can reach its last page.
            stop.store(true, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was shown twice");
    for id in &live {
        assert!(unique.contains(id), "seeded row {id} was skipped");
    }
    assert!(
        seen.len() <= live.len() + written,
        "tombstones or strangers shown"
    );
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "pages are in (createdAt, id) order");
    assert_eq!(served_by.len(), 2, "both replicas served pages");
}

#[tokio::test]
async fn filters_narrow_the_list_and_match_wildcards_literally() {
    let cluster = Cluster::new(1).await;
    let rows = vec![
        row("Red Apple", 150, 3),
        row("green APPLE", 99, 0),
        row("100% juice", 500, 10),
        row("under_score", 1_000, 1),
        row("back\\slash", 2_000, 0),
        row("Banana", 25, 7),
        tombstone(row("apple tombstone", 150, 3)),
    ];
    cluster.insert_everywhere(&rows).await;
    let app = spawn_app(test_settings(&cluster)).await;

    let names = async |query: &str| -> Vec<String> {
        let answer = app.answer(&format!("/api/products?{query}"), &[]).await;
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        let mut names: Vec<String> = answer.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };

    assert_eq!(names("").await.len(), 6);
    assert_eq!(names("name=apple").await, ["Red Apple", "green APPLE"]);
    assert_eq!(names("name=%25").await, ["100% juice"]);
    assert_eq!(names("name=_").await, ["under_score"]);
    assert_eq!(names("name=%5C").await, ["back\\slash"]);
    assert_eq!(names("name=zzz").await, Vec::<String>::new());
    assert_eq!(
        names("minPrice=5").await,
        ["100% juice", "back\\slash", "under_score"]
    );
    assert_eq!(names("maxPrice=0.99").await, ["Banana", "green APPLE"]);
    assert_eq!(
        names("minPrice=1.5&maxPrice=10").await,
        ["100% juice", "Red Apple", "under_score"]
    );
    assert_eq!(names("minPrice=1.50&maxPrice=1.5").await, ["Red Apple"]);
    // A range with its bounds crossed holds nothing; it is not an error (the OpenAPI document
    // cannot state that rule, so a client generated from it may well send one).
    assert_eq!(
        names("minPrice=5&maxPrice=4.99").await,
        Vec::<String>::new()
    );
    assert_eq!(names("inStock=false").await, ["back\\slash", "green APPLE"]);
    assert_eq!(
        names("inStock=true").await,
        ["100% juice", "Banana", "Red Apple", "under_score"]
    );
    assert_eq!(
        names("inStock=true&name=APPLE&maxPrice=2").await,
        ["Red Apple"]
    );

    // Filters and pagination together: two pages of the in-stock rows.
    let first = app.answer("/api/products?inStock=true&limit=3", &[]).await;
    assert_eq!(ids(&first.body).len(), 3);
    let cursor = first.body["nextCursor"].as_str().unwrap();
    let second = app
        .answer(
            &format!("/api/products?inStock=true&limit=3&cursor={cursor}"),
            &[],
        )
        .await;
    assert_eq!(ids(&second.body).len(), 1);
    assert_eq!(second.body["nextCursor"], Value::Null);
}

#[tokio::test]
async fn a_product_is_found_by_id_and_absent_or_deleted_ids_are_404() {
    let cluster = Cluster::new(2).await;
    let live = row("Laptop", 99_999, 10);
    let gone = tombstone(row("Old laptop", 100, 1));
    cluster
        .insert_everywhere(&[live.clone(), gone.clone()])
        .await;
    let app = spawn_app(test_settings(&cluster)).await;

    let found = app.answer(&format!("/api/products/{}", live.id), &[]).await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(found.served_by.unwrap().starts_with("replica-"));
    assert_eq!(found.body["success"], true);
    assert_eq!(found.body["message"], "Product retrieved successfully");
    let data = &found.body["data"];
    assert_eq!(data["id"], live.id.to_string());
    assert_eq!(data["name"], "Laptop");
    assert_eq!(data["price"], 999.99);
    assert_eq!(data["stock"], 10);
    assert_eq!(data["version"], 1);
    let created: chrono::DateTime<chrono::Utc> =
        data["createdAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(created, live.created_at);

    for id in [gone.id, uuid::Uuid::now_v7()] {
        let missing = app.answer(&format!("/api/products/{id}"), &[]).await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert_eq!(missing.body["success"], false);
        assert_eq!(missing.body["code"], "not_found");
        assert!(missing.served_by.is_some(), "a 404 names its source");
    }

    let listed = app.answer("/api/products", &[]).await;
    assert_eq!(ids(&listed.body), [live.id.to_string()]);
    assert_eq!(listed.body["message"], "Products retrieved successfully");

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..4 {
        let answer = app.answer(&format!("/api/products/{}", live.id), &[]).await;
        *counts.entry(answer.served_by.unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), 2, "{counts:?}");
}

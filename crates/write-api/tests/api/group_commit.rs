//! Group commit seen from outside: concurrent writes share transactions, yet each gets the
//! answer it would get alone, and changes of one product stay a single ordered history.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, body, spawn_app, spawn_with, test_settings};

/// Many concurrent PATCHes of one product: none is lost and their versions are one unbroken
/// run, each published once in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_product_get_consecutive_versions() {
    let app = spawn_app().await;
    let id = app.create_ok("Lamp", 10.0, 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/products/{id}");
    let answers = join_all((1..=64).map(|stock| {
        app.request(Method::PATCH, &path)
            .json(&json!({ "stock": stock }))
            .send()
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    let mut versions = BTreeSet::new();
    for answer in answers {
        assert_eq!(answer.status(), 200);
        versions.insert(body(answer).await["data"]["version"].as_i64().unwrap());
    }
    assert_eq!(versions, (2..=65).collect(), "every change its own version");

    let events = eventually_drained(&app, "products.sync", 65).await;
    let published: Vec<i64> = events
        .iter()
        .filter(|event| event.product.id.to_string() == id)
        .map(|event| event.product.version.get())
        .collect();
    assert_eq!(published, (1..=65).collect::<Vec<_>>());
    // The row holds the last change.
    assert_eq!(stored_version(&app, &id).await, 65);
}

/// In one burst, writes that must fail (unknown id, stale If-Match, bad input) fail alone:
/// the others commit and only they reach the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_nobody_else_in_its_group() {
    let app = spawn_app().await;
    let existing = app.create_ok("Chair", 20.0, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outbox_before = app.outbox_rows_written().await;
    let unknown = format!("/api/products/{}", uuid::Uuid::now_v7());
    let existing_path = format!("/api/products/{existing}");
    let mut requests = Vec::new();
    for index in 0..24 {
        let request = match index % 4 {
            0 => app
                .request(Method::POST, "/api/products")
                .json(&json!({"name": format!("new {index}"), "price": 1, "stock": 1})),
            1 => app
                .request(Method::PATCH, &unknown)
                .json(&json!({"stock": index})),
            2 => app
                .request(Method::PATCH, &existing_path)
                .header("if-match", "\"999\"")
                .json(&json!({"stock": index})),
            _ => app
                .request(Method::PATCH, &existing_path)
                .json(&json!({"stock": index})),
        };
        requests.push(async move { (index % 4, request.send().await.unwrap().status()) });
    }
    let answers = join_all(requests).await;
    for (kind, status) in &answers {
        let expected = [201, 404, 412, 200][*kind];
        assert_eq!(status.as_u16(), expected, "write kind {kind}");
    }
    // 6 creates and 6 PATCHes committed; nothing else was written.
    assert_eq!(app.outbox_rows_written().await - outbox_before, 12);
    assert_eq!(stored_version(&app, &existing).await, 7);
}

/// After a burst that kept every committer busy, a lone write is answered at once: no
/// committer waits on a queue that another idle one holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_burst_is_not_held_back() {
    let db = std::sync::Arc::new(test_support::TestDatabase::create().await);
    let vhost = std::sync::Arc::new(test_support::TestVhost::create().await);
    let mut settings = test_settings(&db, &vhost.url());
    // A long window makes a committer that waits for more writes easy to catch.
    settings.group_commit_window_us = 50_000;
    settings.request_timeout_ms = Duration::from_secs(2);
    let app = spawn_with(settings, db, vhost).await;
    for _ in 0..5 {
        let burst = join_all((0..32).map(|index| {
            app.create(json!({"name": format!("burst {index}"), "price": 1, "stock": 1}))
        }))
        .await;
        assert!(burst.iter().all(|answer| answer.status() == 201));
        for index in 0..4 {
            let (status, answer) = app
                .create_ok_status(json!({"name": format!("alone {index}"), "price": 1, "stock": 1}))
                .await;
            assert_eq!(status, 201, "{answer}");
        }
    }
}

/// Drains `queue` until at least `count` change events came off it.
async fn eventually_drained(app: &TestApp, queue: &str, count: usize) -> Vec<domain::ChangeEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} events published",
            events.len()
        );
        events.extend(app.drain_queue(queue).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events
}

/// The version the primary holds for product `id`.
async fn stored_version(app: &TestApp, id: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        version: i64,
    }
    let mut conn = app.db.connect().await;
    diesel::sql_query("SELECT version FROM products WHERE id = $1::uuid")
        .bind::<diesel::sql_types::Text, _>(id)
        .get_result::<Version>(&mut conn)
        .await
        .unwrap()
        .version
}

/// The database fails a group's transaction part-way (here a trigger refuses one write with
/// `query_canceled`, as a statement timeout or a cancel would): the group is all or nothing.
/// Every write answered 201 is stored and published once; every write answered 503 is neither,
/// and the group-mates of the failing write are among the 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_database_fails_part_way_leaves_nothing_behind() {
    use diesel_async::RunQueryDsl;
    let db = std::sync::Arc::new(test_support::TestDatabase::create().await);
    let vhost = std::sync::Arc::new(test_support::TestVhost::create().await);
    let mut settings = test_settings(&db, &vhost.url());
    // One committer and a long window: a burst shares a few groups.
    settings.group_commit_committers = 1;
    settings.group_commit_window_us = 50_000;
    let app = spawn_with(settings, db, vhost).await;
    let mut conn = app.db.connect().await;
    diesel::sql_query(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.name LIKE 'poison%' THEN RAISE EXCEPTION 'poisoned' USING ERRCODE = '57014'; \
         END IF; RETURN NEW; END $$",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON products \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let mut created = 0;
    let mut failed_alongside = 0;
    for round in 0..3 {
        let names: Vec<String> = (0..16)
            .map(|index| match index {
                7 => format!("poison {round}"),
                _ => format!("round {round} product {index}"),
            })
            .collect();
        let answers = join_all(
            names
                .iter()
                .map(|name| app.create(json!({"name": name, "price": 1, "stock": 1}))),
        )
        .await;
        for (name, answer) in names.iter().zip(answers) {
            let status = answer.status().as_u16();
            let stored = stored_named(&app, name).await;
            match status {
                201 => {
                    assert!(!name.starts_with("poison"), "{name} was accepted");
                    assert_eq!(stored, 1, "{name} answered 201");
                    created += 1;
                }
                503 => {
                    assert_eq!(stored, 0, "{name} answered 503 but is stored");
                    if !name.starts_with("poison") {
                        failed_alongside += 1;
                    }
                }
                other => panic!("{name}: {other}"),
            }
        }
    }
    assert!(
        failed_alongside > 0,
        "the failing write never shared a group: the test showed nothing"
    );
    // Each stored write was published once, and nothing else was.
    let events = eventually_drained(&app, "products.sync", created).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = app.drain_queue("products.sync").await;
    assert_eq!(events.len() + late.len(), created);
    assert!(
        events
            .iter()
            .all(|e| !e.product.name.as_str().starts_with("poison"))
    );
}

/// How many rows of the primary carry `name`.
async fn stored_named(app: &TestApp, name: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = app.db.connect().await;
    diesel::sql_query("SELECT count(*) AS n FROM products WHERE name = $1")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

//! A mixed write load through write-api's HTTP API.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// What a load did: writes write-api acknowledged (2xx), and ids touched.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub acknowledged: usize,
    pub failed: usize,
}

#[derive(Default)]
struct Ids {
    live: Vec<Uuid>,
    deleted: Vec<Uuid>,
}

/// `operations` writes, `concurrency` at a time: creates (POST and PUT), patches, deletes
/// and re-creates of deleted ids.
pub async fn mixed_writes(
    client: &reqwest::Client,
    base: &str,
    operations: usize,
    concurrency: usize,
) -> LoadReport {
    let ids = Arc::new(Mutex::new(Ids::default()));
    let results: Vec<Option<bool>> = futures_util::stream::iter(0..operations)
        .map(|n| {
            let ids = ids.clone();
            async move { one_write(client, base, &ids, n).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut report = LoadReport::default();
    for result in results.into_iter().flatten() {
        if result {
            report.acknowledged += 1;
        } else {
            report.failed += 1;
        }
    }
    report
}

fn body(n: usize) -> Value {
    let mut rng = rand::rng();
    json!({
        "name": format!("product {n}"),
        "price": f64::from(rng.random_range(0..100_000u32)) / 100.0,
        "stock": rng.random_range(0..500),
    })
}

/// One random write; `None` when it was skipped (nothing to act on yet) or lost a benign
/// race (404/412/409 under concurrency).
async fn one_write(
    client: &reqwest::Client,
    base: &str,
    ids: &Mutex<Ids>,
    n: usize,
) -> Option<bool> {
    let roll = rand::rng().random_range(0..100);
    let (request, action) = {
        let mut ids = ids.lock().unwrap();
        let pick = |list: &Vec<Uuid>| {
            (!list.is_empty()).then(|| list[rand::rng().random_range(0..list.len())])
        };
        match roll {
            0..35 => (
                client.post(format!("{base}/api/products")).json(&body(n)),
                "create",
            ),
            35..45 => {
                let id = Uuid::now_v7();
                ids.live.push(id);
                (
                    client
                        .put(format!("{base}/api/products/{id}"))
                        .json(&body(n)),
                    "put-new",
                )
            }
            45..70 => {
                let id = pick(&ids.live)?;
                (
                    client
                        .patch(format!("{base}/api/products/{id}"))
                        .json(&json!({"stock": n % 1000})),
                    "patch",
                )
            }
            70..88 => {
                let id = pick(&ids.live)?;
                ids.live.retain(|x| *x != id);
                ids.deleted.push(id);
                (client.delete(format!("{base}/api/products/{id}")), "delete")
            }
            _ => {
                let id = pick(&ids.deleted)?;
                ids.deleted.retain(|x| *x != id);
                ids.live.push(id);
                (
                    client
                        .put(format!("{base}/api/products/{id}"))
                        .json(&body(n)),
                    "recreate",
                )
            }
        }
    };
    let response = request.send().await.ok()?;
    let status = response.status();
    if action == "create" && status == StatusCode::CREATED {
        let created: Value = response.json().await.ok()?;
        let id = created["data"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())?;
        ids.lock().unwrap().live.push(id);
        return Some(true);
    }
    if status.is_success() {
        Some(true)
    } else if [
        StatusCode::NOT_FOUND,
        StatusCode::CONFLICT,
        StatusCode::PRECONDITION_FAILED,
    ]
    .contains(&status)
    {
        None
    } else {
        Some(false)
    }
}

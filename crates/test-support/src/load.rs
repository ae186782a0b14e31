//! Mixed write load through write-api's HTTP API, and a read load through read-api.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a load saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Writes answered 2xx: each raised one product's version by one.
    pub acknowledged: usize,
    /// 404, 409 or 412 from a race between clients: nothing written.
    pub refused: usize,
    /// 5xx answers. Nothing was written unless the commit itself was cut short.
    pub server_errors: usize,
    /// No answer (timeout, connection refused): the write may or may not have happened.
    pub no_answer: usize,
    /// Other 4xx: a bug in the load or the service.
    pub unexpected: usize,
}

impl LoadReport {
    /// Writes whose outcome the client cannot know.
    pub fn ambiguous(&self) -> usize {
        self.server_errors + self.no_answer
    }
}

#[derive(Default)]
struct Ids {
    live: Vec<Uuid>,
    deleted: Vec<Uuid>,
}

#[derive(Default)]
struct Counters {
    acknowledged: AtomicUsize,
    refused: AtomicUsize,
    server_errors: AtomicUsize,
    no_answer: AtomicUsize,
    unexpected: AtomicUsize,
}

/// Runs `operations` writes (or until `stop`, whichever first), `concurrency` at a time,
/// spread over `bases` (write-api base URLs): creates (POST and PUT), patches, deletes and
/// re-creates of deleted ids.
pub async fn mixed_writes(
    client: &reqwest::Client,
    bases: &[String],
    operations: usize,
    concurrency: usize,
    stop: &CancellationToken,
) -> LoadReport {
    let ids = Arc::new(Mutex::new(Ids::default()));
    let counters = Arc::new(Counters::default());
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (ids, counters, next) = (ids.clone(), counters.clone(), next.clone());
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= operations || stop.is_cancelled() {
                    return;
                }
                let base = &bases[n % bases.len()];
                one_write(client, base, &ids, &counters, n).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
    LoadReport {
        acknowledged: counters.acknowledged.load(Ordering::Relaxed),
        refused: counters.refused.load(Ordering::Relaxed),
        server_errors: counters.server_errors.load(Ordering::Relaxed),
        no_answer: counters.no_answer.load(Ordering::Relaxed),
        unexpected: counters.unexpected.load(Ordering::Relaxed),
    }
}

fn body(n: usize) -> Value {
    let mut rng = rand::rng();
    json!({
        "name": format!("product {n}"),
        "price": f64::from(rng.random_range(0..100_000u32)) / 100.0,
        "stock": rng.random_range(0..500),
    })
}

async fn one_write(
    client: &reqwest::Client,
    base: &str,
    ids: &Mutex<Ids>,
    counters: &Counters,
    n: usize,
) {
    let roll = rand::rng().random_range(0..100);
    let (request, action) = {
        let mut ids = ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pick = |list: &Vec<Uuid>| {
            (!list.is_empty()).then(|| list[rand::rng().random_range(0..list.len())])
        };
        let target = match roll {
            45..88 => pick(&ids.live),
            88.. => pick(&ids.deleted),
            _ => None,
        };
        match (roll, target) {
            (35..45, _) => {
                let id = Uuid::now_v7();
                ids.live.push(id);
                (
                    client
                        .put(format!("{base}/api/products/{id}"))
                        .json(&body(n)),
                    "put-new",
                )
            }
            (45..70, Some(id)) => (
                client
                    .patch(format!("{base}/api/products/{id}"))
                    .json(&json!({"stock": n % 1000})),
                "patch",
            ),
            (70..88, Some(id)) => {
                ids.live.retain(|x| *x != id);
                ids.deleted.push(id);
                (client.delete(format!("{base}/api/products/{id}")), "delete")
            }
            (88.., Some(id)) => {
                ids.deleted.retain(|x| *x != id);
                ids.live.push(id);
                (
                    client
                        .put(format!("{base}/api/products/{id}"))
                        .json(&body(n)),
                    "recreate",
                )
            }
            _ => (
                client.post(format!("{base}/api/products")).json(&body(n)),
                "create",
            ),
        }
    };
    let Ok(response) = request.send().await else {
        counters.no_answer.fetch_add(1, Ordering::Relaxed);
        // A service that is down refuses at once: do not spin.
        tokio::time::sleep(Duration::from_millis(20)).await;
        return;
    };
    let status = response.status();
    let counter = if status.is_success() {
        if action == "create"
            && let Ok(created) = response.json::<Value>().await
            && let Some(id) = created["data"]["id"].as_str().and_then(|s| s.parse().ok())
        {
            ids.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .live
                .push(id);
        }
        &counters.acknowledged
    } else if [
        StatusCode::NOT_FOUND,
        StatusCode::CONFLICT,
        StatusCode::PRECONDITION_FAILED,
    ]
    .contains(&status)
    {
        &counters.refused
    } else if status.is_server_error() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        &counters.server_errors
    } else {
        &counters.unexpected
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What a read load saw.
#[derive(Debug, Default, Clone)]
pub struct ReadReport {
    pub ok: usize,
    pub not_found: usize,
    pub server_errors: usize,
    pub no_answer: usize,
    /// Other 4xx: a bug.
    pub unexpected: usize,
}

/// Reads pages and single products from read-api until `stop`, `concurrency` at a time.
pub async fn reads_until(
    client: &reqwest::Client,
    base: &str,
    concurrency: usize,
    stop: &CancellationToken,
) -> ReadReport {
    let report = Arc::new(Mutex::new(ReadReport::default()));
    let workers = (0..concurrency).map(|worker| {
        let report = report.clone();
        async move {
            let mut n = worker;
            while !stop.is_cancelled() {
                n += 1;
                let url = if n % 2 == 0 {
                    format!("{base}/api/products?limit=20")
                } else {
                    format!("{base}/api/products/{}", Uuid::now_v7())
                };
                let outcome = client.get(url).send().await.map(|r| r.status());
                record(&report, outcome);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
    let report = report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.clone()
}

fn record(report: &Mutex<ReadReport>, outcome: Result<StatusCode, reqwest::Error>) {
    let mut report = report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match outcome {
        Ok(status) if status.is_success() => report.ok += 1,
        Ok(StatusCode::NOT_FOUND) => report.not_found += 1,
        Ok(status) if status.is_server_error() => report.server_errors += 1,
        Ok(_) => report.unexpected += 1,
        Err(_) => report.no_answer += 1,
    }
}

//! Mixed write load through write-api's HTTP API, and a read load through read-api.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    mixed_writes_recorded(client, bases, operations, concurrency, stop, None).await
}

/// [`mixed_writes`], recording every write in `history` (for reads to be checked against).
pub async fn mixed_writes_recorded(
    client: &reqwest::Client,
    bases: &[String],
    operations: usize,
    concurrency: usize,
    stop: &CancellationToken,
    history: Option<&History>,
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
                one_write(client, base, &ids, &counters, n, history).await;
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
    history: Option<&History>,
) {
    let roll = rand::rng().random_range(0..100);
    let (request, action, target) = {
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
                    id,
                )
            }
            (45..70, Some(id)) => (
                client
                    .patch(format!("{base}/api/products/{id}"))
                    .json(&json!({"stock": n % 1000})),
                "patch",
                id,
            ),
            (70..88, Some(id)) => {
                ids.live.retain(|x| *x != id);
                ids.deleted.push(id);
                (
                    client.delete(format!("{base}/api/products/{id}")),
                    "delete",
                    id,
                )
            }
            (88.., Some(id)) => {
                ids.deleted.retain(|x| *x != id);
                ids.live.push(id);
                (
                    client
                        .put(format!("{base}/api/products/{id}"))
                        .json(&body(n)),
                    "recreate",
                    id,
                )
            }
            _ => {
                // The id is ours, so the write can be recorded before its answer.
                let id = Uuid::now_v7();
                let mut created = body(n);
                created["id"] = json!(id);
                ids.live.push(id);
                (
                    client.post(format!("{base}/api/products")).json(&created),
                    "create",
                    id,
                )
            }
        }
    };
    let live = action != "delete";
    let sent = history.map(|h| h.sent(target, live));
    let Ok(response) = request.send().await else {
        counters.no_answer.fetch_add(1, Ordering::Relaxed);
        // Outcome unknown: it stays in the history as sent, with no version.
        // A service that is down refuses at once: do not spin.
        tokio::time::sleep(Duration::from_millis(20)).await;
        return;
    };
    let status = response.status();
    let counter = if status.is_success() {
        let etag_version = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse::<i64>().ok());
        if let (Some(history), Some(sent)) = (history, sent) {
            history.acknowledged(target, sent, etag_version);
        }
        &counters.acknowledged
    } else if [
        StatusCode::NOT_FOUND,
        StatusCode::CONFLICT,
        StatusCode::PRECONDITION_FAILED,
    ]
    .contains(&status)
    {
        if let (Some(history), Some(sent)) = (history, sent) {
            history.refused(target, sent);
        }
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

/// Every write a load sent, by product, with when it was sent and acknowledged: what a read
/// answer may be checked against.
#[derive(Default)]
pub struct History {
    products: Mutex<HashMap<Uuid, Vec<Sent>>>,
}

/// One write of one product.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    /// Leaves the product live (anything but a delete).
    live: bool,
    /// Set once answered 2xx, with the version the answer carried.
    acknowledged: Option<(Instant, i64)>,
    /// Answered "not done" (404, 409, 412): nothing was written.
    refused: bool,
}

/// A handle on one recorded write.
#[derive(Debug, Clone, Copy)]
pub struct SentWrite {
    index: usize,
}

/// What the history says a read may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    /// Older than every answer the history allows.
    Stale,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Sent>>> {
        self.products
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sent(&self, id: Uuid, live: bool) -> SentWrite {
        let mut products = self.lock();
        let writes = products.entry(id).or_default();
        writes.push(Sent {
            at: Instant::now(),
            live,
            acknowledged: None,
            refused: false,
        });
        SentWrite {
            index: writes.len() - 1,
        }
    }

    fn acknowledged(&self, id: Uuid, write: SentWrite, version: Option<i64>) {
        if let Some(sent) = self
            .lock()
            .get_mut(&id)
            .and_then(|w| w.get_mut(write.index))
        {
            sent.acknowledged = version.map(|v| (Instant::now(), v));
        }
    }

    fn refused(&self, id: Uuid, write: SentWrite) {
        if let Some(sent) = self
            .lock()
            .get_mut(&id)
            .and_then(|w| w.get_mut(write.index))
        {
            sent.refused = true;
        }
    }

    /// Some product ids, for readers to pick from.
    pub fn sample_ids(&self, max: usize) -> Vec<Uuid> {
        let products = self.lock();
        let mut ids: Vec<Uuid> = products.keys().copied().collect();
        let mut rng = rand::rng();
        use rand::seq::SliceRandom;
        ids.shuffle(&mut rng);
        ids.truncate(max);
        ids
    }

    /// Checks an answer about `id` read between `asked` and `answered`: it must hold every
    /// write acknowledged before `asked - max_lag`. `found` is the answer's version, or
    /// `None` for a 404.
    pub fn check(
        &self,
        id: Uuid,
        asked: Instant,
        answered: Instant,
        max_lag: Duration,
        found: Option<i64>,
    ) -> Verdict {
        let products = self.lock();
        let Some(writes) = products.get(&id) else {
            return Verdict::Fresh;
        };
        let Some(horizon) = asked.checked_sub(max_lag) else {
            return Verdict::Fresh;
        };
        // The newest state every answer must reflect by now.
        let required = writes
            .iter()
            .filter_map(|w| w.acknowledged.map(|(at, version)| (at, version, w.live)))
            .filter(|(at, _, _)| *at <= horizon)
            .max_by_key(|(_, version, _)| *version);
        let Some((_, required_version, required_live)) = required else {
            return Verdict::Fresh;
        };
        match found {
            Some(version) if version >= required_version => Verdict::Fresh,
            Some(_) => Verdict::Stale,
            None if !required_live => Verdict::Fresh,
            None => {
                // A 404 for a product live at the required version is right only if a later
                // delete may already have happened.
                let later_delete = writes.iter().any(|w| {
                    !w.live
                        && !w.refused
                        && w.at <= answered
                        && w.acknowledged.is_none_or(|(_, v)| v > required_version)
                });
                if later_delete {
                    Verdict::Fresh
                } else {
                    Verdict::Stale
                }
            }
        }
    }
}

/// What a checked read load saw.
#[derive(Debug, Default, Clone)]
pub struct CheckedReads {
    pub reads: usize,
    /// Answers older than `max_lag` allows.
    pub stale: usize,
    pub server_errors: usize,
    pub no_answer: usize,
    /// Answers per `X-Served-By`.
    pub served_by: HashMap<String, usize>,
    /// The first few stale answers, for the failure message.
    pub stale_examples: Vec<String>,
}

/// Reads products by id from read-api until `stop`, `concurrency` at a time, checking each
/// answer against `history` with `max_lag`.
pub async fn checked_reads_until(
    client: &reqwest::Client,
    base: &str,
    concurrency: usize,
    history: &History,
    max_lag: Duration,
    stop: &CancellationToken,
) -> CheckedReads {
    let report = Mutex::new(CheckedReads::default());
    let workers = (0..concurrency).map(|_| async {
        while !stop.is_cancelled() {
            let ids = history.sample_ids(20);
            if ids.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            for id in ids {
                if stop.is_cancelled() {
                    break;
                }
                let asked = Instant::now();
                let answer = client.get(format!("{base}/api/products/{id}")).send().await;
                let outcome = match answer {
                    Ok(response) => {
                        let status = response.status();
                        let served_by = response
                            .headers()
                            .get("x-served-by")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        Ok((status, served_by, body["data"]["version"].as_i64()))
                    }
                    Err(error) => Err(error),
                };
                let answered = Instant::now();
                let mut report = report
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                report.reads += 1;
                match outcome {
                    Ok((status, served_by, version)) => {
                        if status.is_server_error() {
                            report.server_errors += 1;
                            continue;
                        }
                        let found = if status == StatusCode::NOT_FOUND {
                            None
                        } else {
                            version
                        };
                        if history.check(id, asked, answered, max_lag, found) == Verdict::Stale {
                            report.stale += 1;
                            if report.stale_examples.len() < 5 {
                                report.stale_examples.push(format!(
                                    "{id}: {status} version {version:?} from {served_by}"
                                ));
                            }
                        }
                        *report.served_by.entry(served_by).or_default() += 1;
                    }
                    Err(_) => report.no_answer += 1,
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    report
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! A POST/PATCH load that tells every answer apart (a 503 `unavailable` from an
//! `outcome_unknown`, a 500 from both), the end-state check the database scenarios share, and
//! the SQL they run on the primary.

use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::stack::Stack;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every answer the load got, by kind.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// 2xx: each raised one product's version by one.
    pub acknowledged: usize,
    /// 503 `unavailable`: nothing was written.
    pub unavailable: usize,
    /// 503 `outcome_unknown`: the write may have happened.
    pub outcome_unknown: usize,
    /// 500: a bug.
    pub internal: usize,
    /// Any other 5xx.
    pub other_5xx: usize,
    /// 404, 409 or 412.
    pub refused: usize,
    /// Other 4xx.
    pub unexpected: usize,
    /// No answer at all: the write may have happened.
    pub no_answer: usize,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.acknowledged += other.acknowledged;
        self.unavailable += other.unavailable;
        self.outcome_unknown += other.outcome_unknown;
        self.internal += other.internal;
        self.other_5xx += other.other_5xx;
        self.refused += other.refused;
        self.unexpected += other.unexpected;
        self.no_answer += other.no_answer;
    }

    /// Writes that may or may not have happened.
    pub fn ambiguous(&self) -> usize {
        self.outcome_unknown + self.no_answer + self.other_5xx
    }

    pub fn requests(&self) -> usize {
        self.acknowledged
            + self.unavailable
            + self.outcome_unknown
            + self.internal
            + self.other_5xx
            + self.refused
            + self.unexpected
            + self.no_answer
    }

    pub async fn record(&mut self, outcome: Result<reqwest::Response, reqwest::Error>) -> bool {
        let Ok(response) = outcome else {
            self.no_answer += 1;
            return false;
        };
        let status = response.status();
        if status.is_success() {
            self.acknowledged += 1;
            return true;
        }
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    response.headers().contains_key("retry-after"),
                    "a 503 without Retry-After"
                );
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match body["code"].as_str() {
                    Some("outcome_unknown") => self.outcome_unknown += 1,
                    Some("unavailable") => self.unavailable += 1,
                    _ => self.other_5xx += 1,
                }
            }
            StatusCode::INTERNAL_SERVER_ERROR => self.internal += 1,
            StatusCode::NOT_FOUND | StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => {
                self.refused += 1
            }
            status if status.is_server_error() => self.other_5xx += 1,
            _ => self.unexpected += 1,
        }
        false
    }
}

/// What the clients write.
#[derive(Clone)]
pub enum Target {
    /// Each client creates products (POST with its own id) and patches its own.
    Mixed,
    /// Every client patches this one product.
    One(String),
}

/// Clients writing through one write-api until stopped.
pub struct StatusLoad {
    stop: CancellationToken,
    clients: Vec<JoinHandle<Tally>>,
}

impl StatusLoad {
    pub fn start(client: &reqwest::Client, base: &str, clients: usize, target: Target) -> Self {
        let stop = CancellationToken::new();
        let clients = (0..clients)
            .map(|n| {
                let (client, base, target, stop) = (
                    client.clone(),
                    base.to_owned(),
                    target.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move { run_client(&client, &base, n, &target, &stop).await })
            })
            .collect();
        Self { stop, clients }
    }

    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        let mut total = Tally::default();
        for client in self.clients {
            total.add(&client.await.unwrap());
        }
        total
    }
}

async fn run_client(
    client: &reqwest::Client,
    base: &str,
    seed: usize,
    target: &Target,
    stop: &CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut mine: Vec<Uuid> = Vec::new();
    let mut n = seed;
    while !stop.is_cancelled() {
        n += 1;
        let patch = |id: &str| {
            client
                .patch(format!("{base}/api/products/{id}"))
                .json(&json!({"stock": n % 1000}))
                .send()
        };
        let ok = match target {
            Target::One(id) => tally.record(patch(id).await).await,
            Target::Mixed if mine.is_empty() || n.is_multiple_of(3) => {
                let id = Uuid::now_v7();
                let created = client
                    .post(format!("{base}/api/products"))
                    .json(&json!({"id": id, "name": format!("product {n}"), "price": 1.5, "stock": 1}))
                    .send()
                    .await;
                let ok = tally.record(created).await;
                if ok {
                    mine.push(id);
                }
                ok
            }
            Target::Mixed => {
                let id = mine[n % mine.len()];
                tally.record(patch(&id.to_string()).await).await
            }
        };
        if !ok {
            // A refused write comes back fast: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tally
}

/// Waits for the stack to converge and checks what every database scenario promises: no
/// 500, every 503 with its `Retry-After` (checked as answers came), the primary holding every
/// acknowledged write and none of those answered `unavailable`, replicas equal to the
/// primary, nothing dead-lettered. Prints the scenario's line with `figures` appended.
pub async fn settle(scenario: &str, stack: &Stack, tally: &Tally, figures: &str) {
    stack.wait_converged().await;
    let dlq = stack.vhost.queue_depth("products.dlq").await.unwrap_or(0);
    let tallies = stack.tallies().await;
    let primary = &tallies[0];
    let replicas: Vec<String> = tallies[1..]
        .iter()
        .map(|t| format!("{} {}", t.name, t.version_sum))
        .collect();
    println!(
        "[fault] {scenario}: {} writes: acknowledged {}, 503 unavailable {}, 503 outcome_unknown \
         {}, 500 {}, other 5xx {}, no answer {}, 4xx {}; primary holds {} writes, {}; {figures}",
        tally.requests(),
        tally.acknowledged,
        tally.unavailable,
        tally.outcome_unknown,
        tally.internal,
        tally.other_5xx,
        tally.no_answer,
        tally.refused + tally.unexpected,
        primary.version_sum,
        replicas.join(", "),
    );
    assert_eq!(
        tally.internal, 0,
        "{scenario}: no write may answer 500: {tally:?}"
    );
    assert_eq!(
        tally.other_5xx + tally.unexpected,
        0,
        "{scenario}: {tally:?}"
    );
    assert!(tally.acknowledged > 0, "{scenario}: the load made progress");
    let held = usize::try_from(primary.version_sum).unwrap();
    assert!(
        held >= tally.acknowledged && held <= tally.acknowledged + tally.ambiguous(),
        "{scenario}: the primary holds {held} writes; {} acknowledged, {} ambiguous, and a \
         503 `unavailable` must have written nothing",
        tally.acknowledged,
        tally.ambiguous()
    );
    for replica in &tallies[1..] {
        assert_eq!(
            replica.version_sum, primary.version_sum,
            "{scenario}: {}",
            replica.name
        );
    }
    assert_eq!(dlq, 0, "{scenario}: messages in products.dlq");
}

/// Runs `sql` on the primary and returns the first column of its one row (a count).
pub async fn primary_count(stack: &Stack, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = stack.primary.connect().await;
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

/// Runs statements on the primary.
pub async fn primary_execute(stack: &Stack, sql: &str) {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = stack.primary.connect().await;
    conn.batch_execute(sql).await.unwrap();
}

/// Time for `GET path` on `base` to answer, and its status.
pub async fn timed_get(client: &reqwest::Client, url: &str) -> (StatusCode, Duration, Value) {
    let started = std::time::Instant::now();
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    let took = started.elapsed();
    (status, took, response.json().await.unwrap_or(Value::Null))
}

//! How long a write takes to become visible on one replica.

use std::time::{Duration, Instant};

use diesel::sql_types::Uuid as SqlUuid;
use diesel_async::RunQueryDsl;
use serde_json::json;
use test_support::TestDatabase;
use tokio_util::sync::CancellationToken;

/// Visibility delays, sorted.
#[derive(Debug, Default)]
pub struct Delays(Vec<Duration>);

impl Delays {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        format!(
            "n {} p50 {} ms p99 {} ms max {} ms",
            self.len(),
            self.quantile(0.5).as_millis(),
            self.quantile(0.99).as_millis(),
            self.max().as_millis()
        )
    }
}

/// Until `stop`: creates a product through write-api every `every` and polls `replica`
/// (directly, every 5 ms) until the row is there; returns each write's delay from its 201 to
/// being visible (writes that got no 201 are skipped).
pub async fn visibility(
    client: &reqwest::Client,
    write_base: &str,
    replica: &TestDatabase,
    every: Duration,
    stop: &CancellationToken,
) -> Delays {
    let mut conn = replica.connect().await;
    let mut delays = Vec::new();
    while !stop.is_cancelled() {
        let id = uuid::Uuid::now_v7();
        let created = client
            .post(format!("{write_base}/api/products"))
            .json(&json!({"id": id, "name": "visibility probe", "price": 1, "stock": 1}))
            .send()
            .await;
        if created.is_ok_and(|r| r.status() == 201) {
            let acknowledged = Instant::now();
            loop {
                let found = diesel::sql_query("SELECT 1 FROM products WHERE id = $1")
                    .bind::<SqlUuid, _>(id)
                    .execute(&mut conn)
                    .await
                    .unwrap_or(0);
                if found == 1 {
                    delays.push(acknowledged.elapsed());
                    break;
                }
                if acknowledged.elapsed() > Duration::from_secs(60) {
                    delays.push(acknowledged.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(every).await;
    }
    delays.sort();
    Delays(delays)
}

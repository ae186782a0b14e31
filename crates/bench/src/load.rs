//! The load generator: `concurrency` workers run one operation in a loop, closed-loop (each
//! worker sends its next request when the last one answered) or paced to a fixed rate
//! (open-loop, for the lag measurement). Only operations that start after the warm-up are
//! recorded; every worker keeps its own tally, merged at the end, so workers never contend.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::cpu::{CpuUse, Snapshot};

/// What one operation reports: the id it created, if any, or why it failed (a short label
/// such as `HTTP 503` or `timeout`, so errors can be counted by kind).
pub type OpResult = Result<Option<Uuid>, String>;

/// How long and how hard to push.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per second across all workers (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    /// Stop after this many operations in all (warm-up included), whatever the duration.
    pub max_ops: Option<u64>,
    /// Keep at most this many created ids.
    pub keep_ids: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_micros(hist: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if hist.is_empty() {
            return Self::default();
        }
        Self {
            count: hist.len(),
            mean_ms: hist.mean() / 1000.0,
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
        }
    }
}

/// The outcome of one measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub seconds: f64,
    /// Successful operations per second.
    pub rps: f64,
    pub ok: u64,
    pub errors: u64,
    /// Failed operations by kind.
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Latency,
    /// Successful operations completed in each second of the measured window.
    pub per_second: Vec<u64>,
    /// Requested rate, for a paced run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rps: Option<f64>,
    /// For read-api runs: answers by the source named in `X-Served-By`, warm-up included.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub served_by: BTreeMap<String, u64>,
    #[serde(skip)]
    pub ids: Vec<Uuid>,
    /// When the measured window began, for lining up lag samples.
    #[serde(skip)]
    pub window: Option<(Instant, Instant)>,
    /// CPU time by process over the measured window (not for runs bounded by count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
}

/// Microsecond histogram bounds: 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    per_second: Vec<u64>,
    ids: Vec<Uuid>,
}

/// Runs `op` under `spec` and tallies what it measured.
pub async fn run<F, Fut>(spec: &LoadSpec, op: F) -> anyhow::Result<Throughput>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OpResult> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let pacer = spec.rate.map(|rate| Pacer::start(rate, end));
    let issued = Arc::new(AtomicU64::new(0));
    let keep_per_worker = spec.keep_ids.div_ceil(spec.concurrency.max(1));
    let cpu_at_start = spec.max_ops.is_none().then(|| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            tokio::task::spawn_blocking(Snapshot::take)
                .await
                .ok()
                .flatten()
        })
    });

    let mut workers = JoinSet::new();
    for _ in 0..spec.concurrency.max(1) {
        let op = Arc::clone(&op);
        let permits = pacer.as_ref().map(|p| Arc::clone(&p.permits));
        let issued = Arc::clone(&issued);
        let max_ops = spec.max_ops;
        let mut tally = Tally {
            hist: new_histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
            per_second: Vec::new(),
            ids: Vec::new(),
        };
        workers.spawn(async move {
            loop {
                if let Some(permits) = &permits {
                    // Closed at the end of the run: then no more requests.
                    match permits.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                let began = Instant::now();
                if began >= end {
                    break;
                }
                if let Some(max) = max_ops
                    && issued.fetch_add(1, Ordering::Relaxed) >= max
                {
                    break;
                }
                let outcome = op().await;
                if began < measure_from && max_ops.is_none() {
                    continue;
                }
                let done = Instant::now();
                match outcome {
                    Ok(id) => {
                        tally.ok += 1;
                        let micros = u64::try_from(done.duration_since(began).as_micros())
                            .unwrap_or(u64::MAX);
                        tally.hist.saturating_record(micros.max(1));
                        let second = done.saturating_duration_since(measure_from).as_secs();
                        let second = usize::try_from(second).unwrap_or(usize::MAX);
                        if second < 100_000 {
                            if tally.per_second.len() <= second {
                                tally.per_second.resize(second + 1, 0);
                            }
                            tally.per_second[second] += 1;
                        }
                        if let Some(id) = id
                            && tally.ids.len() < keep_per_worker
                        {
                            tally.ids.push(id);
                        }
                    }
                    Err(kind) => *tally.errors.entry(kind).or_default() += 1,
                }
            }
            tally
        });
    }

    let mut total = Tally {
        hist: new_histogram()?,
        ok: 0,
        errors: BTreeMap::new(),
        per_second: Vec::new(),
        ids: Vec::new(),
    };
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a load worker failed")?;
        total.hist.add(&tally.hist).context("merging histograms")?;
        total.ok += tally.ok;
        for (kind, n) in tally.errors {
            *total.errors.entry(kind).or_default() += n;
        }
        if total.per_second.len() < tally.per_second.len() {
            total.per_second.resize(tally.per_second.len(), 0);
        }
        for (i, n) in tally.per_second.into_iter().enumerate() {
            total.per_second[i] += n;
        }
        total.ids.extend(tally.ids);
    }
    if let Some(pacer) = pacer {
        pacer.stop();
    }
    let finished = Instant::now();
    let cpu = async {
        let start = cpu_at_start?.await.ok()??;
        let end = tokio::task::spawn_blocking(Snapshot::take).await.ok()??;
        Some(start.until(&end))
    }
    .await;
    // A run bounded by count may end before the nominal duration.
    let seconds = if spec.max_ops.is_some() {
        finished.duration_since(start).as_secs_f64()
    } else {
        spec.duration.as_secs_f64()
    };
    total
        .per_second
        .truncate(spec.duration.as_secs().try_into().unwrap_or(usize::MAX));
    let errors = total.errors.values().sum();
    Ok(Throughput {
        concurrency: spec.concurrency,
        seconds,
        rps: if seconds > 0.0 {
            total.ok as f64 / seconds
        } else {
            0.0
        },
        ok: total.ok,
        errors,
        error_kinds: total.errors,
        latency: Latency::from_micros(&total.hist),
        per_second: total.per_second,
        target_rps: spec.rate,
        served_by: BTreeMap::new(),
        ids: total.ids,
        window: Some((measure_from, end.min(finished))),
        cpu,
    })
}

/// Hands out permits at a steady rate, topping up every few milliseconds.
struct Pacer {
    permits: Arc<Semaphore>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Pacer {
    const TICK: Duration = Duration::from_millis(5);

    fn start(rate: f64, end: Instant) -> Self {
        let permits = Arc::new(Semaphore::new(0));
        let feed = Arc::clone(&permits);
        let ticker = tokio::spawn(async move {
            let begun = Instant::now();
            let mut granted: u64 = 0;
            let mut interval = tokio::time::interval(Self::TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let due = (now.duration_since(begun).as_secs_f64() * rate) as u64;
                if due > granted {
                    let add = usize::try_from(due - granted).unwrap_or(usize::MAX);
                    feed.add_permits(add.min(Semaphore::MAX_PERMITS / 2));
                    granted = due;
                }
            }
            feed.close();
        });
        Self { permits, ticker }
    }

    fn stop(self) {
        self.permits.close();
        self.ticker.abort();
    }
}

/// Turns a reqwest error into a short label.
pub fn http_error_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else if error.is_body() || error.is_decode() {
        "bad body".into()
    } else {
        "transport".into()
    }
}

/// Shortens a database error to a label (the first words of its message).
pub fn db_error_kind(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    let short: String = text.chars().take(60).collect();
    format!("db: {short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_successes_and_errors_after_the_warmup() {
        let spec = LoadSpec {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            rate: None,
            max_ops: None,
            keep_ids: 10,
        };
        let n = Arc::new(AtomicU64::new(0));
        let result = run(&spec, move || {
            let n = Arc::clone(&n);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if n.fetch_add(1, Ordering::Relaxed).is_multiple_of(10) {
                    Err("boom".to_owned())
                } else {
                    Ok(Some(Uuid::new_v4()))
                }
            }
        })
        .await
        .unwrap();
        assert!(result.ok > 50, "{result:?}");
        assert!(result.errors > 0);
        assert_eq!(result.error_kinds.get("boom"), Some(&result.errors));
        assert!(result.ids.len() <= 12);
        assert!(result.latency.p50_ms >= 4.0);
    }

    #[tokio::test]
    async fn a_paced_run_keeps_to_its_rate() {
        let spec = LoadSpec {
            concurrency: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(1000),
            rate: Some(200.0),
            max_ops: None,
            keep_ids: 0,
        };
        let result = run(&spec, || async { Ok(None) }).await.unwrap();
        assert!((150.0..=250.0).contains(&result.rps), "rate {}", result.rps);
    }

    #[tokio::test]
    async fn a_counted_run_stops_at_its_count() {
        let spec = LoadSpec {
            concurrency: 3,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(60),
            rate: None,
            max_ops: Some(100),
            keep_ids: 1000,
        };
        let result = run(&spec, || async { Ok(Some(Uuid::new_v4())) })
            .await
            .unwrap();
        assert_eq!(result.ok, 100);
        assert_eq!(result.ids.len(), 100);
    }
}

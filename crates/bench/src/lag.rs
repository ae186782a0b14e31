//! Replication lag as a client sees it: from a write's 201 until the product can be read on
//! every replica, polled directly by id.
//!
//! One poller per replica asks, every `poll` interval, which of the pending ids it holds
//! (`SELECT id FROM products WHERE id = ANY($1)`, one query per round whatever the load), so
//! the probing costs the replicas little. A write counts as visible on a replica when the
//! answer that first holds it arrives: an upper bound, at most one round (interval plus
//! query time) late. Both ends are timed by this process's monotonic clock, so server clocks
//! do not matter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::load::{Latency, new_histogram};

/// Ids waiting at once, at most; past it new writes are not tracked (and counted).
const MAX_PENDING: usize = 20_000;
/// Ids asked for in one query, at most.
const MAX_PER_QUERY: usize = 5_000;

struct Pending {
    acked: Instant,
    seen: Vec<Option<Instant>>,
}

/// One write seen on every replica.
#[derive(Debug, Clone, Copy)]
pub struct LagSample {
    /// When its 201 arrived.
    pub acked: Instant,
    pub lag: Duration,
}

#[derive(Default)]
struct State {
    pending: HashMap<Uuid, Pending>,
    done: Vec<LagSample>,
    /// Not seen on every replica within the timeout.
    missed: u64,
    /// Not tracked because too many were pending.
    untracked: u64,
}

/// The table whose rows the pollers look for.
#[derive(Debug, Clone, Copy)]
pub enum Probed {
    /// `products`, which the replicator fills.
    Products,
    /// The logical-replication baseline's table, which PostgreSQL's subscriptions fill.
    LogicalBaseline,
}

impl Probed {
    async fn existing(
        self,
        conn: &mut AsyncPgConnection,
        ids: &[Uuid],
    ) -> anyhow::Result<Vec<Uuid>> {
        match self {
            Probed::Products => Ok(storage::replica::existing_ids(conn, ids).await?),
            Probed::LogicalBaseline => Ok(crate::logical::existing_ids(conn, ids).await?),
        }
    }
}

/// Tracks writes until every replica shows them.
pub struct LagTracker {
    state: Mutex<State>,
    probed: Probed,
    replicas: usize,
    timeout: Duration,
    stop: AtomicBool,
}

impl LagTracker {
    /// Starts one poller per replica URL, looking in `probed`.
    pub async fn start(
        replica_urls: &[String],
        probed: Probed,
        poll: Duration,
        timeout: Duration,
    ) -> anyhow::Result<(Arc<Self>, LagPollers)> {
        let tracker = Arc::new(Self {
            state: Mutex::new(State::default()),
            probed,
            replicas: replica_urls.len(),
            timeout,
            stop: AtomicBool::new(false),
        });
        let mut pollers = JoinSet::new();
        for (index, url) in replica_urls.iter().enumerate() {
            let conn = AsyncPgConnection::establish(url)
                .await
                .with_context(|| format!("connecting to replica {} for lag polling", index + 1))?;
            let tracker = Arc::clone(&tracker);
            let url = url.clone();
            pollers.spawn(async move { tracker.poll(index, url, conn, poll).await });
        }
        Ok((tracker, LagPollers(pollers)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a poller died mid-update; the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows `id`, acknowledged at `acked`.
    pub fn track(&self, id: Uuid, acked: Instant) {
        let mut state = self.lock();
        if state.pending.len() >= MAX_PENDING {
            state.untracked += 1;
            return;
        }
        state.pending.insert(
            id,
            Pending {
                acked,
                seen: vec![None; self.replicas],
            },
        );
    }

    async fn poll(
        &self,
        replica: usize,
        url: String,
        conn: AsyncPgConnection,
        every: Duration,
    ) -> anyhow::Result<()> {
        let mut conn = Some(conn);
        loop {
            let wanted: Vec<Uuid> = {
                let mut state = self.lock();
                self.expire(&mut state);
                if self.stop.load(Ordering::Acquire) && state.pending.is_empty() {
                    return Ok(());
                }
                state
                    .pending
                    .iter()
                    .filter(|(_, p)| p.seen[replica].is_none())
                    .map(|(id, _)| *id)
                    .take(MAX_PER_QUERY)
                    .collect()
            };
            if !wanted.is_empty() {
                // A failed query or connection is retried with a new connection: the
                // writes stay pending meanwhile (and time out if it lasts).
                let found = match conn.as_mut() {
                    Some(c) => self.probed.existing(c, &wanted).await,
                    None => Err(anyhow::anyhow!("not connected")),
                };
                let found = match found {
                    Ok(found) => found,
                    Err(error) => {
                        tracing::warn!(replica = replica + 1, %error, "lag poll failed; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        conn = AsyncPgConnection::establish(&url).await.ok();
                        continue;
                    }
                };
                let answered = Instant::now();
                let mut state = self.lock();
                for id in found {
                    let complete = match state.pending.get_mut(&id) {
                        Some(pending) => {
                            pending.seen[replica] = Some(answered);
                            pending.seen.iter().all(Option::is_some)
                        }
                        None => false,
                    };
                    if complete && let Some(pending) = state.pending.remove(&id) {
                        let last = pending.seen.iter().flatten().max().copied();
                        let lag = last.unwrap_or(answered).duration_since(pending.acked);
                        state.done.push(LagSample {
                            acked: pending.acked,
                            lag,
                        });
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    fn expire(&self, state: &mut State) {
        let now = Instant::now();
        let before = state.pending.len();
        state
            .pending
            .retain(|_, p| now.duration_since(p.acked) < self.timeout);
        state.missed += (before - state.pending.len()) as u64;
    }

    /// Everything measured so far, and how many were missed or untracked.
    fn snapshot(&self) -> (Vec<LagSample>, u64, u64, usize) {
        let state = self.lock();
        (
            state.done.clone(),
            state.missed,
            state.untracked,
            state.pending.len(),
        )
    }
}

/// The running pollers of a tracker.
pub struct LagPollers(JoinSet<anyhow::Result<()>>);

impl LagPollers {
    /// Stops tracking: waits until every pending write is seen (or timed out), then returns
    /// the samples and how long the last ones took to drain.
    pub async fn finish(mut self, tracker: &LagTracker) -> anyhow::Result<Collected> {
        let stopped = Instant::now();
        tracker.stop.store(true, Ordering::Release);
        let mut error = None;
        while let Some(joined) = self.0.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error = Some(e),
                Err(e) => error = Some(anyhow::anyhow!("lag poller failed: {e}")),
            }
        }
        if let Some(error) = error {
            return Err(error);
        }
        let (samples, missed, untracked, _) = tracker.snapshot();
        Ok(Collected {
            samples,
            missed,
            untracked,
            drained_after: stopped.elapsed(),
        })
    }
}

/// What a tracker measured.
pub struct Collected {
    pub samples: Vec<LagSample>,
    pub missed: u64,
    pub untracked: u64,
    /// From the end of the load until the last tracked write was seen everywhere.
    pub drained_after: Duration,
}

/// Lag percentiles over a set of samples.
pub fn summarize(samples: &[LagSample]) -> anyhow::Result<Latency> {
    let mut hist: Histogram<u64> = new_histogram()?;
    for sample in samples {
        let micros = u64::try_from(sample.lag.as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(micros.max(1));
    }
    Ok(Latency::from_micros(&hist))
}

/// Lag at full load, and whether it stayed bounded.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub tracked: u64,
    pub missed: u64,
    pub untracked: u64,
    pub overall: Latency,
    pub first_third: Latency,
    pub last_third: Latency,
    /// Seconds from the end of the load until every tracked write was on every replica.
    pub drain_seconds: f64,
    pub bounded: bool,
    pub verdict: String,
    /// p50 and p99 (ms) of the writes acknowledged in each second of the window.
    pub per_second_p50_ms: Vec<f64>,
    pub per_second_p99_ms: Vec<f64>,
}

/// Bounded means: nothing timed out or went untracked, and the last third's p99 is no more
/// than twice the first third's plus 20 ms (noise on a busy 2-core machine). A backlog that
/// grows for the whole run fails this by far.
pub fn trend(collected: &Collected, window: (Instant, Instant)) -> anyhow::Result<Trend> {
    let (from, to) = window;
    let length = to.saturating_duration_since(from);
    let third = length / 3;
    let in_window: Vec<LagSample> = collected
        .samples
        .iter()
        .copied()
        .filter(|s| s.acked >= from && s.acked < to)
        .collect();
    let first: Vec<LagSample> = in_window
        .iter()
        .copied()
        .filter(|s| s.acked < from + third)
        .collect();
    let last: Vec<LagSample> = in_window
        .iter()
        .copied()
        .filter(|s| s.acked >= to - third)
        .collect();
    let first_third = summarize(&first)?;
    let last_third = summarize(&last)?;
    let grows = last_third.p99_ms > 2.0 * first_third.p99_ms + 20.0;
    let bounded = !grows && collected.missed == 0 && collected.untracked == 0;
    let verdict = if collected.missed > 0 {
        format!(
            "unbounded: {} writes not on every replica within the timeout",
            collected.missed
        )
    } else if collected.untracked > 0 {
        format!(
            "unbounded: over {MAX_PENDING} writes pending at once ({} not tracked)",
            collected.untracked
        )
    } else if grows {
        format!(
            "grows: p99 {:.1} ms in the first third, {:.1} ms in the last",
            first_third.p99_ms, last_third.p99_ms
        )
    } else {
        format!(
            "bounded: p99 {:.1} ms in the first third, {:.1} ms in the last",
            first_third.p99_ms, last_third.p99_ms
        )
    };
    let seconds = usize::try_from(length.as_secs()).unwrap_or(0);
    let mut per_second_p50_ms = Vec::with_capacity(seconds);
    let mut per_second_p99_ms = Vec::with_capacity(seconds);
    for s in 0..seconds {
        let lo = from + Duration::from_secs(s as u64);
        let hi = lo + Duration::from_secs(1);
        let bucket: Vec<LagSample> = in_window
            .iter()
            .copied()
            .filter(|x| x.acked >= lo && x.acked < hi)
            .collect();
        let summary = summarize(&bucket)?;
        per_second_p50_ms.push(summary.p50_ms);
        per_second_p99_ms.push(summary.p99_ms);
    }
    Ok(Trend {
        tracked: in_window.len() as u64,
        missed: collected.missed,
        untracked: collected.untracked,
        overall: summarize(&in_window)?,
        first_third,
        last_third,
        drain_seconds: collected.drained_after.as_secs_f64(),
        bounded,
        verdict,
        per_second_p50_ms,
        per_second_p99_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(lags_ms: &[u64], from: Instant) -> Collected {
        let step = Duration::from_millis(30_000 / lags_ms.len() as u64);
        Collected {
            samples: lags_ms
                .iter()
                .enumerate()
                .map(|(i, ms)| LagSample {
                    acked: from + step * i as u32,
                    lag: Duration::from_millis(*ms),
                })
                .collect(),
            missed: 0,
            untracked: 0,
            drained_after: Duration::ZERO,
        }
    }

    #[test]
    fn steady_lag_is_bounded_and_growing_lag_is_not() {
        let from = Instant::now();
        let window = (from, from + Duration::from_secs(30));
        let steady: Vec<u64> = (0..300).map(|i| 10 + i % 5).collect();
        let t = trend(&collected(&steady, from), window).unwrap();
        assert!(t.bounded, "{}", t.verdict);
        assert_eq!(t.per_second_p50_ms.len(), 30);

        let growing: Vec<u64> = (0..300).map(|i| 10 + i * 20).collect();
        let t = trend(&collected(&growing, from), window).unwrap();
        assert!(!t.bounded, "{}", t.verdict);
        assert!(t.verdict.starts_with("grows"));
    }

    #[test]
    fn a_missed_write_is_unbounded() {
        let from = Instant::now();
        let mut c = collected(&[5; 90], from);
        c.missed = 1;
        let t = trend(&c, (from, from + Duration::from_secs(30))).unwrap();
        assert!(!t.bounded);
    }
}

//! The results of one run and the targets they are held to.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catchup::Catchup;
use crate::lag::Trend;
use crate::load::{Latency, Throughput};
use crate::logical::{LogicalCatchup, LogicalWrites};
use crate::scaling::{self, ScalingRun};
use crate::services::Memory;
use crate::strategies::StrategyRun;

/// A figure, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure<T> {
    Measured(T),
    Unavailable { reason: String },
}

impl<T> Figure<T> {
    pub fn from_result(result: anyhow::Result<T>) -> Self {
        match result {
            Ok(value) => Figure::Measured(value),
            Err(error) => Figure::Unavailable {
                reason: format!("{error:#}"),
            },
        }
    }

    pub fn get(&self) -> Option<&T> {
        match self {
            Figure::Measured(value) => Some(value),
            Figure::Unavailable { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Figure::Measured(_) => None,
            Figure::Unavailable { reason } => Some(reason),
        }
    }
}

/// A product figure beside its PostgreSQL baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub product: Figure<Throughput>,
    pub baseline: Figure<Throughput>,
    /// product ÷ baseline, requests per second.
    pub ratio: Option<f64>,
}

impl Pair {
    pub fn new(product: Figure<Throughput>, baseline: Figure<Throughput>) -> Self {
        let ratio = match (product.get(), baseline.get()) {
            (Some(p), Some(b)) if b.rps > 0.0 => Some(p.rps / b.rps),
            _ => None,
        };
        Self {
            product,
            baseline,
            ratio,
        }
    }
}

/// Lag at half of the measured write rate.
#[derive(Debug, Clone, Serialize)]
pub struct HalfLoadLag {
    pub write: Throughput,
    pub tracked: u64,
    pub missed: u64,
    pub lag: Latency,
    pub per_second_p50_ms: Vec<f64>,
    pub per_second_p99_ms: Vec<f64>,
}

/// One line of the targets table.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub wanted: String,
    pub measured: String,
    /// `None` when the figure could not be measured.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub write_concurrency: Vec<usize>,
    pub read_concurrency: usize,
    pub lag_duration_s: u64,
    pub lag_poll_ms: u64,
    pub catchup_changes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub started_at: String,
    pub finished_at: String,
    pub cores: usize,
    pub git: Option<String>,
    /// What the broker was (bench.sh says: a node of the benchmark's own and its settings).
    pub broker: Option<String>,
    pub settings: Settings,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub meta: Meta,
    /// Per concurrency: write-api vs the same transaction sent straight to the primary.
    pub writes: BTreeMap<usize, Pair>,
    /// The same inserts through PostgreSQL's logical replication, at the top concurrency.
    pub writes_logical: Figure<LogicalWrites>,
    /// Lag while the writes above ran at full rate, per concurrency.
    pub lag_full_load: BTreeMap<usize, Figure<Trend>>,
    pub lag_half_load: Figure<HalfLoadLag>,
    pub catchup: Figure<Catchup>,
    pub catchup_baseline: Figure<LogicalCatchup>,
    pub read_by_id: Pair,
    /// The same lookups by id through pgpool-II, beside the same direct SQL baseline.
    pub read_by_id_pgpool: Pair,
    pub read_list: Pair,
    /// read-api's strategies, the reference run first (nothing slowed).
    pub strategies: Figure<Vec<StrategyRun>>,
    /// read-api's queries with 10k and 1M products; `None` when not asked for (`--scaling`).
    pub scaling: Option<Figure<Vec<ScalingRun>>>,
    pub memory: BTreeMap<String, Memory>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

/// Memory limit per service under load, MiB.
pub const MEMORY_LIMIT_MB: f64 = 40.0;

impl Report {
    /// Fills `targets` from the figures.
    pub fn judge(&mut self) {
        let mut targets = Vec::new();
        let top = self.meta.settings.write_concurrency.iter().max().copied();
        let write = top.and_then(|c| self.writes.get(&c));
        targets.push(ratio_target(
            &format!("write-api POST at concurrency {}", top.unwrap_or(64)),
            write,
        ));
        targets.push(ratio_target(
            "read-api GET /api/products/{id}",
            Some(&self.read_by_id),
        ));
        targets.push(self.logical_write_target(top));
        targets.push(self.logical_lag_target(top));
        targets.push(self.pgpool_target());
        targets.push(match self.lag_half_load.get() {
            Some(half) => Target {
                name: "replication lag at half load".into(),
                wanted: "p99 ≤ 50 ms".into(),
                measured: format!(
                    "p99 {:.1} ms (p50 {:.1}, max {:.1}; {} missed)",
                    half.lag.p99_ms, half.lag.p50_ms, half.lag.max_ms, half.missed
                ),
                met: Some(half.lag.p99_ms <= 50.0 && half.missed == 0 && half.tracked > 0),
            },
            None => unavailable(
                "replication lag at half load",
                "p99 ≤ 50 ms",
                &self.lag_half_load,
            ),
        });
        let full = top.and_then(|c| self.lag_full_load.get(&c));
        targets.push(match full.and_then(Figure::get) {
            Some(trend) => Target {
                name: "replication lag at full load".into(),
                wanted: "bounded".into(),
                measured: trend.verdict.clone(),
                met: Some(trend.bounded),
            },
            None => Target {
                name: "replication lag at full load".into(),
                wanted: "bounded".into(),
                measured: full
                    .and_then(Figure::reason)
                    .unwrap_or("not measured")
                    .to_owned(),
                met: None,
            },
        });
        targets.push(match self.catchup.get() {
            Some(c) => Target {
                name: "catch-up across two replicas".into(),
                wanted: "≥ 20,000 changes/s".into(),
                measured: format!(
                    "{:.0} changes/s ({} changes in {:.2} s)",
                    c.changes_per_second, c.changes, c.seconds
                ),
                met: Some(c.changes_per_second >= 20_000.0),
            },
            None => unavailable(
                "catch-up across two replicas",
                "≥ 20,000 changes/s",
                &self.catchup,
            ),
        });
        targets.push(self.logical_catchup_target());
        for service in crate::services::SERVICES {
            let peak = self.memory.get(service).and_then(|m| m.peak_mb);
            targets.push(Target {
                name: format!("{service} memory under load"),
                wanted: format!("≤ {MEMORY_LIMIT_MB:.0} MiB RSS"),
                measured: peak.map_or("not measured".into(), |p| format!("peak {p:.1} MiB")),
                met: peak.map(|p| p <= MEMORY_LIMIT_MB),
            });
        }
        targets.push(self.slow_replica_target());
        if let Some(target) = self.scaling_target() {
            targets.push(target);
        }
        self.targets = targets;
    }

    /// write-api's rate at the top concurrency against logical replication's rate of the same
    /// inserts at the same concurrency.
    fn logical_write_target(&self, top: Option<usize>) -> Target {
        let name = format!(
            "write-api POST vs PostgreSQL logical replication at concurrency {}",
            top.unwrap_or(64)
        );
        let wanted = "≥ 1.0 × logical replication's rate";
        let api = top
            .and_then(|c| self.writes.get(&c))
            .and_then(|p| p.product.get());
        match (api, self.writes_logical.get()) {
            (Some(api), Some(logical)) if logical.write.rps > 0.0 => {
                let ratio = api.rps / logical.write.rps;
                Target {
                    name,
                    wanted: wanted.into(),
                    measured: format!(
                        "{ratio:.2} × ({:.0} vs {:.0} req/s)",
                        api.rps, logical.write.rps
                    ),
                    met: Some(ratio >= 1.0),
                }
            }
            _ => unavailable(&name, wanted, &self.writes_logical),
        }
    }

    /// write-api's replica-visible lag during its top-concurrency run against logical
    /// replication's during the same inserts.
    fn logical_lag_target(&self, top: Option<usize>) -> Target {
        let name = "replication lag at full load vs PostgreSQL logical replication";
        let wanted = "p99 ≤ 2 × logical replication's";
        let api = top
            .and_then(|c| self.lag_full_load.get(&c))
            .and_then(Figure::get);
        match (api, self.writes_logical.get()) {
            (Some(api), Some(logical)) if logical.lag.tracked > 0 && api.tracked > 0 => Target {
                name: name.into(),
                wanted: wanted.into(),
                measured: format!(
                    "p99 {:.1} ms vs {:.1} ms",
                    api.overall.p99_ms, logical.lag.overall.p99_ms
                ),
                met: Some(
                    api.overall.p99_ms <= 2.0 * logical.lag.overall.p99_ms
                        && api.missed == 0
                        && api.untracked == 0,
                ),
            },
            _ => unavailable(name, wanted, &self.writes_logical),
        }
    }

    /// The replicator's catch-up against logical replication's of the same backlog.
    fn logical_catchup_target(&self) -> Target {
        let name = "catch-up vs PostgreSQL logical replication";
        let wanted = "≥ 1.0 × logical replication's catch-up";
        match (self.catchup.get(), self.catchup_baseline.get()) {
            (Some(c), Some(l)) if l.rows_per_second > 0.0 => {
                let ratio = c.changes_per_second / l.rows_per_second;
                Target {
                    name: name.into(),
                    wanted: wanted.into(),
                    measured: format!(
                        "{ratio:.2} × ({:.0} vs {:.0} changes/s)",
                        c.changes_per_second, l.rows_per_second
                    ),
                    met: Some(ratio >= 1.0),
                }
            }
            (None, _) => unavailable(name, wanted, &self.catchup),
            _ => unavailable(name, wanted, &self.catchup_baseline),
        }
    }

    /// Every listed query's p99 at 1M rows and concurrency 16; none when the table was not
    /// asked for.
    fn scaling_target(&self) -> Option<Target> {
        let name = format!(
            "every listed query at {} rows, concurrency {}",
            scaling::JUDGED_ROWS,
            scaling::JUDGED_CONCURRENCY
        );
        let wanted = format!("p99 ≤ {:.0} ms, no errors", scaling::P99_LIMIT_MS);
        let runs = match self.scaling.as_ref()? {
            Figure::Measured(runs) => runs,
            figure => return Some(unavailable(&name, &wanted, figure)),
        };
        let judged: Vec<&ScalingRun> = runs
            .iter()
            .filter(|r| {
                r.rows == scaling::JUDGED_ROWS && r.concurrency == scaling::JUDGED_CONCURRENCY
            })
            .collect();
        let worst = judged
            .iter()
            .filter_map(|r| r.reads.get().map(|t| (r, t)))
            .max_by(|a, b| a.1.latency.p99_ms.total_cmp(&b.1.latency.p99_ms));
        let failed: Vec<&str> = judged
            .iter()
            .filter(|r| {
                r.reads
                    .get()
                    .is_none_or(|t| t.errors > 0 || t.latency.p99_ms > scaling::P99_LIMIT_MS)
            })
            .map(|r| r.query.as_str())
            .collect();
        Some(Target {
            name,
            wanted,
            measured: match worst {
                Some((run, t)) if failed.is_empty() => {
                    format!("worst p99 {:.1} ms ({})", t.latency.p99_ms, run.query)
                }
                Some((run, t)) => format!(
                    "worst p99 {:.1} ms ({}); over the limit or failing: {}",
                    t.latency.p99_ms,
                    run.query,
                    failed.join(", ")
                ),
                None => "no run measured".into(),
            },
            met: Some(!judged.is_empty() && failed.is_empty()),
        })
    }

    /// read-api's ratio to direct SQL by id above pgpool-II's, measured in the same run.
    fn pgpool_target(&self) -> Target {
        let name = "read-api GET /api/products/{id} vs pgpool-II";
        let wanted = "ratio to direct SQL above pgpool-II's";
        match (self.read_by_id.ratio, self.read_by_id_pgpool.ratio) {
            (Some(read_api), Some(pgpool)) => Target {
                name: name.into(),
                wanted: wanted.into(),
                measured: format!("read-api {read_api:.2} × vs pgpool-II {pgpool:.2} ×"),
                met: Some(read_api > pgpool),
            },
            _ => unavailable(name, wanted, &self.read_by_id_pgpool.product),
        }
    }

    /// p2c_ewma with one replica slowed: at most 10 % of reads to it, and p99 within twice
    /// the reference run's (nothing slowed).
    fn slow_replica_target(&self) -> Target {
        let name = "p2c_ewma with one replica slowed";
        let wanted = "slowed share ≤ 10 %, p99 ≤ 2 × unslowed p99";
        let runs = match &self.strategies {
            Figure::Measured(runs) => runs,
            figure => return unavailable(name, wanted, figure),
        };
        let reference = runs.iter().find(|r| r.slowed_ms == 0);
        let p2c = runs
            .iter()
            .find(|r| r.slowed_ms > 0 && r.strategy == "p2c_ewma");
        match (reference, p2c) {
            (Some(reference), Some(p2c)) => Target {
                name: format!("p2c_ewma with one replica slowed by {} ms", p2c.slowed_ms),
                wanted: wanted.into(),
                measured: format!(
                    "share {:.1} %, p99 {:.1} ms vs {:.1} ms unslowed",
                    p2c.slow_share * 100.0,
                    p2c.reads.latency.p99_ms,
                    reference.reads.latency.p99_ms
                ),
                met: Some(
                    p2c.slow_share <= 0.10
                        && p2c.reads.latency.p99_ms <= 2.0 * reference.reads.latency.p99_ms
                        && p2c.reads.errors == 0,
                ),
            },
            _ => Target {
                name: name.into(),
                wanted: wanted.into(),
                measured: "p2c_ewma not among the strategies run".into(),
                met: None,
            },
        }
    }
}

fn ratio_target(name: &str, pair: Option<&Pair>) -> Target {
    let wanted = "≥ 1.0 × direct SQL".to_owned();
    match pair {
        Some(pair) => match (pair.ratio, pair.product.get(), pair.baseline.get()) {
            (Some(ratio), Some(p), Some(b)) => Target {
                name: name.into(),
                wanted,
                measured: format!("{ratio:.2} × ({:.0} vs {:.0} req/s)", p.rps, b.rps),
                met: Some(ratio >= 1.0),
            },
            _ => Target {
                name: name.into(),
                wanted,
                measured: pair
                    .product
                    .reason()
                    .or(pair.baseline.reason())
                    .unwrap_or("not measured")
                    .to_owned(),
                met: None,
            },
        },
        None => Target {
            name: name.into(),
            wanted,
            measured: "not measured".into(),
            met: None,
        },
    }
}

fn unavailable<T>(name: &str, wanted: &str, figure: &Figure<T>) -> Target {
    Target {
        name: name.into(),
        wanted: wanted.into(),
        measured: figure.reason().unwrap_or("not measured").to_owned(),
        met: None,
    }
}

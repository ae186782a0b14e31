//! `bench`: how close the catalogue comes to what PostgreSQL itself can do, measured against
//! the running stack with every figure beside its baseline from the same run.
//!
//! Normally run by `deploy/local/bench.sh` (`make bench`, `make bench-quick`), which gives
//! the services a fresh `bench` database on each cluster and a fresh `bench` vhost.

mod catchup;
mod chart;
mod cli;
mod cpu;
mod lag;
mod load;
mod logical;
mod markdown;
mod phases;
mod reads;
mod report;
mod rows;
mod scaling;
mod services;
mod strategies;
mod writes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::catchup::Databases;
use crate::cli::{Args, Phase};
use crate::phases::{Context, ReadPairs, WriteFigures};
use crate::report::{Figure, Meta, Pair, Report, Settings};
use crate::services::{MemoryWatch, PidFiles};

fn skipped<T>() -> Figure<T> {
    Figure::Unavailable {
        reason: "skipped (--skip)".into(),
    }
}

fn git_revision() -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rev = run(&["rev-parse", "--short", "HEAD"])?;
    let dirty = run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{rev} (uncommitted changes)")
    } else {
        rev
    })
}

/// How each figure is made, for the report's readers.
fn notes(args: &Args) -> Vec<String> {
    vec![
        "Load comes from this tool on the same machine as the services and PostgreSQL, so \
         product and baseline share the cores alike; figures on a busy machine are noisy."
            .into(),
        "Write baseline: per request, one transaction with the same product insert and outbox \
         insert write-api runs (diesel-async, pooled, one connection per concurrent request), \
         into copies of the two tables so write-api's relay does not publish them."
            .into(),
        format!(
            "Lag: the tool polls both replicas every {} ms for the ids of tracked writes \
             (`id = ANY(…)`), timing from the 201 to the answer that first shows the row on the \
             last replica: an upper bound, at most one poll round late. At full load 1 write in {} \
             is tracked; bounded means nothing timed out and the last third's p99 is at \
             most twice the first third's plus 20 ms. The half-load run starts once the \
             outbox is empty and both replicas are level with the primary.",
            args.lag_poll_ms, args.lag_sample_every
        ),
        "Every write run (write-api's and both baselines'), the half-load run and the reads \
         start right after a CHECKPOINT on the primary and both replicas, so that none pays \
         for the dirty pages the run before it left."
            .into(),
        "Catch-up: the replicator is stopped (SIGTERM), the changes are written through \
         write-api and published to RabbitMQ, then the replicator starts; the time runs from \
         its start until both replicas' replication_status shows every change applied and \
         `replicator verify` confirms it (progress read every 20 ms), start-up included. \
         changes/s counts each change once though it lands on both replicas."
            .into(),
        "Read baseline: the same statements read-api runs (lookup by id; first page of the \
         keyset listing, 101 rows) from pools on the replicas, alternating between them."
            .into(),
        "Memory: VmRSS and VmHWM from /proc/<pid>/status; the peak is the high-water mark over \
         the service's whole life, start-up included."
            .into(),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let started_at = chrono::Utc::now();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    phases::ready(&client, &args.write_url, "write-api").await?;

    let pids = PidFiles::new(args.pid_dir.clone());
    let memory = MemoryWatch::start(pids.clone());
    let dbs = Databases {
        primary: args.primary_url.clone(),
        replicas: args.replica_urls(),
    };
    let mut ctx = Context {
        dbs,
        client,
        memory,
        pids,
        ids: Vec::new(),
        args,
    };

    let scaling = if ctx.args.scaling {
        Some(Figure::from_result(phases::scaling(&ctx).await))
    } else {
        None
    };

    let WriteFigures {
        pairs: writes,
        lags: lag_full_load,
        logical: writes_logical,
    } = if ctx.args.runs(Phase::Writes) {
        phases::writes(&mut ctx).await?
    } else {
        WriteFigures {
            pairs: BTreeMap::new(),
            lags: BTreeMap::new(),
            logical: skipped(),
        }
    };

    let lag_half_load = if ctx.args.runs(Phase::Lag) {
        let rate = ctx.args.lag_rate.or_else(|| {
            phases::full_rate(&writes, ctx.args.top_write_concurrency()).map(|r| r / 2.0)
        });
        match rate {
            Some(rate) => Figure::from_result(phases::half_load_lag(&mut ctx, rate).await),
            None => Figure::Unavailable {
                reason: "no write-api rate measured to halve (give --lag-rate)".into(),
            },
        }
    } else {
        skipped()
    };

    let reads = if ctx.args.runs(Phase::Reads) {
        match phases::reads(&mut ctx).await {
            Ok(pairs) => pairs,
            Err(error) => {
                let reason = format!("{error:#}");
                let failed = || {
                    let figure = || Figure::Unavailable {
                        reason: reason.clone(),
                    };
                    Pair::new(figure(), figure())
                };
                ReadPairs {
                    by_id: failed(),
                    by_id_pgpool: failed(),
                    list: failed(),
                }
            }
        }
    } else {
        let skipped = || Pair::new(skipped(), skipped());
        ReadPairs {
            by_id: skipped(),
            by_id_pgpool: skipped(),
            list: skipped(),
        }
    };

    let strategies = if ctx.args.runs(Phase::Strategies) {
        Figure::from_result(phases::strategies(&mut ctx).await)
    } else {
        skipped()
    };

    let (catchup, catchup_baseline) = if ctx.args.runs(Phase::Catchup) {
        phases::catchup(&mut ctx).await
    } else {
        (skipped(), skipped())
    };

    // Let the services settle before the idle-at-end memory figure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let memory = ctx.memory.finish();
    let finished_at = chrono::Utc::now();
    let args = &ctx.args;
    let mut report = Report {
        meta: Meta {
            started_at: started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            finished_at: finished_at.format("%H:%M:%S UTC").to_string(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            git: git_revision(),
            broker: args.broker.clone(),
            settings: Settings {
                quick: args.quick,
                warmup_s: args.warmup().as_secs(),
                duration_s: args.duration().as_secs(),
                write_concurrency: args.write_concurrency.clone(),
                read_concurrency: args.read_concurrency,
                lag_duration_s: args.lag_duration().as_secs(),
                lag_poll_ms: args.lag_poll_ms,
                catchup_changes: args.catchup_changes(),
            },
        },
        writes,
        writes_logical,
        lag_full_load,
        lag_half_load,
        catchup,
        catchup_baseline,
        read_by_id: reads.by_id,
        read_by_id_pgpool: reads.by_id_pgpool,
        read_list: reads.list,
        strategies,
        scaling,
        memory,
        targets: Vec::new(),
        notes: notes(args),
    };
    report.judge();

    let stem = format!(
        "{}{}",
        started_at.format("%Y-%m-%dT%H%M%SZ"),
        if args.quick { "-quick" } else { "" }
    );
    let written = write_outputs(&report, &args.out_dir, &stem, args.font.as_deref())?;
    print_report(&markdown::render(&report), &written);
    Ok(())
}

/// Writes `<stem>.md`, `<stem>.json` and `<stem>.png`; returns their paths.
fn write_outputs(
    report: &Report,
    dir: &Path,
    stem: &str,
    font: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    let md = dir.join(format!("{stem}.md"));
    let json = dir.join(format!("{stem}.json"));
    let png = dir.join(format!("{stem}.png"));
    std::fs::write(&md, markdown::render(report))
        .with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let with_text = chart::load_font(font);
    if !with_text {
        tracing::warn!("no font file found (give --font): the chart has no text");
    }
    chart::draw(report, &png, with_text)?;
    Ok(vec![md, json, png])
}

#[expect(clippy::print_stdout, reason = "the report is this program's output")]
fn print_report(markdown: &str, written: &[PathBuf]) {
    println!("{markdown}");
    for path in written {
        println!("wrote {}", path.display());
    }
}

//! Catch-up: with the replicator stopped, changes pile up in RabbitMQ; then it starts, and we
//! time how fast it brings both replicas level, until `replicator verify` is clean.
//!
//! Progress is read from each replica's `replication_status.events_applied` every 20 ms;
//! once both show every change applied, `replicator verify` (row counts and a checksum of
//! every `(id, version)` against the primary) must confirm it, else polling goes on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::load::{self, LoadSpec, Throughput};
use crate::services::{self, MemoryWatch, PidFiles};
use crate::writes::{self, Sequence};

/// How often catch-up progress is read: the resolution of the catch-up time.
const POLL: Duration = Duration::from_millis(20);

/// The databases under test.
#[derive(Debug, Clone)]
pub struct Databases {
    pub primary: String,
    pub replicas: Vec<String>,
}

async fn connect(url: &str, what: &str) -> anyhow::Result<AsyncPgConnection> {
    AsyncPgConnection::establish(url)
        .await
        .with_context(|| format!("connecting to {what}"))
}

/// Rows in the primary's outbox: changes not yet confirmed by the broker.
pub async fn outbox_backlog(conn: &mut AsyncPgConnection) -> anyhow::Result<i64> {
    use storage::schema::outbox;
    Ok(outbox::table.count().get_result(conn).await?)
}

/// Whether every replica holds the primary's rows and versions (the comparison
/// `replicator verify` makes).
pub async fn replicas_level(dbs: &Databases) -> anyhow::Result<bool> {
    let mut primary = connect(&dbs.primary, "the primary").await?;
    let expected = storage::replica::summarize(&mut primary).await?;
    for (i, url) in dbs.replicas.iter().enumerate() {
        let mut conn = connect(url, &format!("replica {}", i + 1)).await?;
        if storage::replica::summarize(&mut conn).await? != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Waits until the outbox is empty and every replica equals the primary.
pub async fn settle(dbs: &Databases, patience: Duration) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let mut primary = connect(&dbs.primary, "the primary").await?;
    loop {
        if outbox_backlog(&mut primary).await? == 0 && replicas_level(dbs).await? {
            return Ok(began.elapsed());
        }
        if began.elapsed() > patience {
            bail!("replicas not level with the primary after {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn events_applied(conns: &mut [AsyncPgConnection]) -> anyhow::Result<Vec<i64>> {
    let mut applied = Vec::with_capacity(conns.len());
    for conn in conns.iter_mut() {
        applied.push(
            storage::replication_status::read(conn)
                .await?
                .events_applied,
        );
    }
    Ok(applied)
}

/// `replicator verify`: true when it exits 0.
pub async fn verify(binary: &Path) -> anyhow::Result<bool> {
    let output = tokio::process::Command::new(binary)
        .arg("verify")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("running {} verify", binary.display()))?;
    if !output.status.success() {
        tracing::info!(
            stdout = %String::from_utf8_lossy(&output.stdout).trim(),
            "replicator verify: not level yet"
        );
    }
    Ok(output.status.success())
}

/// What catch-up measured.
#[derive(Debug, Clone, Serialize)]
pub struct Catchup {
    /// Changes written while the replicator was stopped (201s).
    pub changes: u64,
    pub write: Throughput,
    /// From the last write until the relay had published everything (outbox empty).
    pub publish_seconds: f64,
    /// From starting the replicator to the first change applied on every replica.
    pub first_apply_seconds: f64,
    /// From starting the replicator until both replicas had every change (confirmed by
    /// `replicator verify`).
    pub seconds: f64,
    /// Changes per second, each applied on both replicas: `changes / seconds`.
    pub changes_per_second: f64,
    /// The same counted per replica apply: `replicas × changes / seconds`.
    pub replica_applies_per_second: f64,
    /// How long the confirming `replicator verify` took.
    pub verify_seconds: f64,
    /// `(seconds since start, changes applied on the slowest replica)`, every 20 ms.
    pub progress: Vec<(f64, i64)>,
    #[serde(skip)]
    pub ids: Vec<Uuid>,
}

/// Everything the catch-up measurement needs.
pub struct CatchupPlan<'a> {
    pub dbs: &'a Databases,
    pub client: reqwest::Client,
    pub write_url: &'a str,
    pub changes: u64,
    pub concurrency: usize,
    pub replicator_bin: PathBuf,
    pub replicator_port: u16,
    pub replicator_log: PathBuf,
    pub pids: &'a PidFiles,
    pub memory: &'a MemoryWatch,
}

pub async fn measure(plan: CatchupPlan<'_>) -> anyhow::Result<Catchup> {
    let dbs = plan.dbs;
    settle(dbs, Duration::from_secs(180))
        .await
        .context("waiting for the replicas to be level before catch-up")?;
    let mut replica_conns = Vec::new();
    for (i, url) in dbs.replicas.iter().enumerate() {
        replica_conns.push(connect(url, &format!("replica {}", i + 1)).await?);
    }
    let before = events_applied(&mut replica_conns).await?;

    let pid = plan.pids.pid("replicator").context(
        "the replicator's pid is unknown: run through deploy/local/bench.sh or pass --pid-dir",
    )?;
    plan.memory.note_restart("replicator");
    tracing::info!(pid, "stopping the replicator");
    services::terminate(pid, Duration::from_secs(60)).await?;

    tracing::info!(
        changes = plan.changes,
        "writing while the replicator is stopped"
    );
    let spec = LoadSpec {
        concurrency: plan.concurrency,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        rate: None,
        max_ops: Some(plan.changes),
        keep_ids: usize::try_from(plan.changes).unwrap_or(usize::MAX),
    };
    let op = writes::api_create(
        plan.client.clone(),
        plan.write_url,
        Sequence::default(),
        None,
    );
    let write = load::run(&spec, op).await?;
    let changes = write.ok;
    if changes == 0 {
        bail!(
            "no write succeeded while the replicator was stopped: {:?}",
            write.error_kinds
        );
    }

    let published = Instant::now();
    let mut primary = connect(&dbs.primary, "the primary").await?;
    while outbox_backlog(&mut primary).await? > 0 {
        if published.elapsed() > Duration::from_secs(600) {
            bail!("the outbox did not drain within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let publish_seconds = published.elapsed().as_secs_f64();

    tracing::info!("starting the replicator again");
    let started = Instant::now();
    services::start_replicator(
        &plan.replicator_bin,
        plan.replicator_port,
        &plan.replicator_log,
        plan.pids,
    )?;
    let target = i64::try_from(changes).unwrap_or(i64::MAX);
    let patience = Duration::from_secs(120 + changes / 500);
    let mut progress = Vec::new();
    let mut first_apply = None;
    let mut last_verify: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let applied = events_applied(&mut replica_conns).await?;
        let slowest = applied
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .min()
            .unwrap_or(0);
        let elapsed = now.duration_since(started);
        progress.push((elapsed.as_secs_f64(), slowest));
        if slowest > 0 && first_apply.is_none() {
            first_apply = Some(elapsed);
        }
        if slowest >= target && last_verify.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let checked = Instant::now();
            last_verify = Some(checked);
            if verify(&plan.replicator_bin).await? {
                let seconds = elapsed.as_secs_f64();
                let rate = changes as f64 / seconds;
                return Ok(Catchup {
                    changes,
                    ids: write.ids.clone(),
                    write,
                    publish_seconds,
                    first_apply_seconds: first_apply.unwrap_or(elapsed).as_secs_f64(),
                    seconds,
                    changes_per_second: rate,
                    replica_applies_per_second: rate * dbs.replicas.len() as f64,
                    verify_seconds: checked.elapsed().as_secs_f64(),
                    progress,
                });
            }
        }
        if elapsed > patience {
            bail!(
                "replicas not level {patience:?} after the replicator started \
                 (slowest replica applied {slowest} of {changes})"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

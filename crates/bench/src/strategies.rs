//! read-api's routing strategies compared under one slow replica: each run starts its own
//! read-api (the release binary, on a free port) over the two bench replicas, the second
//! reached through a TCP proxy that holds back every answer by `--slow-replica-ms`, and reads
//! by id at the read concurrency. One run with the proxy open, under the default strategy,
//! is the reference.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use test_support::{LinkMode, TcpProxy, free_port};
use uuid::Uuid;

use crate::load::{self, LoadSpec, Throughput};
use crate::reads::{self, ServedBy};

/// The name the slowed replica is given in `REPLICA_URLS`.
pub const SLOW: &str = "replica-2";

/// One strategy's run.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyRun {
    pub strategy: String,
    /// How much every answer of `replica-2` was held back (0: not slowed).
    pub slowed_ms: u64,
    pub reads: Throughput,
    /// The slowed replica's share of the answers.
    pub slow_share: f64,
}

/// What the runs need.
pub struct Plan<'a> {
    pub binary: &'a Path,
    pub replica_urls: [&'a str; 2],
    pub slow: Duration,
    pub spec: LoadSpec,
    pub ids: Arc<Vec<Uuid>>,
    pub client: reqwest::Client,
    pub log_dir: &'a Path,
}

/// The reference run, then every strategy with `replica-2` slowed.
pub async fn compare(plan: &Plan<'_>, strategies: &[&str]) -> anyhow::Result<Vec<StrategyRun>> {
    let mut runs = vec![run(plan, "round_robin", Duration::ZERO).await?];
    for strategy in strategies {
        runs.push(run(plan, strategy, plan.slow).await?);
    }
    Ok(runs)
}

async fn run(plan: &Plan<'_>, strategy: &str, slow: Duration) -> anyhow::Result<StrategyRun> {
    let target = host_and_port(plan.replica_urls[1])?;
    let proxy = TcpProxy::start(&target).await;
    if !slow.is_zero() {
        proxy.set(LinkMode::Slow(slow));
    }
    let slowed_url = plan.replica_urls[1].replacen(&target, &proxy.host(), 1);
    let port = free_port();
    let log = plan.log_dir.join(format!("read-api-{strategy}.log"));
    let replicas = format!("replica-1={},{SLOW}={slowed_url}", plan.replica_urls[0]);
    let mut child = start_read_api(plan.binary, port, strategy, &replicas, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    let outcome = async {
        wait_ready(&plan.client, &base, &mut child).await?;
        // The slowed replica must be in rotation, alive but slow: that is what is compared.
        reads::replicas_in_rotation(&plan.client, &base).await?;
        tracing::info!(
            strategy,
            slowed_ms = slow.as_millis(),
            "reads by id under one slow replica"
        );
        let served_by = ServedBy::default();
        let op = reads::api_get(
            plan.client.clone(),
            &base,
            Arc::clone(&plan.ids),
            served_by.clone(),
        );
        let mut reads = load::run(&plan.spec, op).await?;
        reads.served_by = served_by.take();
        let total: u64 = reads.served_by.values().sum();
        let slow_share =
            reads.served_by.get(SLOW).copied().unwrap_or(0) as f64 / total.max(1) as f64;
        anyhow::Ok(StrategyRun {
            strategy: strategy.to_owned(),
            slowed_ms: u64::try_from(slow.as_millis()).unwrap_or(u64::MAX),
            reads,
            slow_share,
        })
    }
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    outcome
}

/// Waits up to 30 s for the new read-api to be ready, failing at once if it exits.
async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    child: &mut tokio::process::Child,
) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = crate::phases::ready(client, base, "read-api").await;
        if answer.is_ok() || tokio::time::Instant::now() >= until {
            return answer;
        }
        if let Some(status) = child.try_wait()? {
            bail!("read-api exited ({status}) before it was ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts read-api with this process's environment (the bench's primary URL) on `replicas`,
/// reading from the replicas only.
fn start_read_api(
    binary: &Path,
    port: u16,
    strategy: &str,
    replicas: &str,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = tokio::process::Command::new(binary);
    command
        .env("PORT", port.to_string())
        .env("STRATEGY", strategy)
        .env("REPLICA_URLS", replicas)
        .env("FALLBACK_TO_PRIMARY", "false")
        // A health check is several round trips (connect, scram, queries), each held back by
        // the slowed replica's delay: with the default 500 ms bound it never passed there
        // (2026-12-06T021753Z, scram on the replica clusters), and the comparison measured
        // one replica alone.
        .env("HEALTH_CHECK_TIMEOUT_MS", "3000")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// `host:port` of a `postgres://user:password@host:port/db` URL.
fn host_and_port(url: &str) -> anyhow::Result<String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if !host.contains(':') {
        bail!("the replica URL must name its port, to put a proxy in front of it");
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_host_and_port_of_a_replica_url() {
        assert_eq!(
            host_and_port("postgres://u:p@127.0.0.1:5434/bench").unwrap(),
            "127.0.0.1:5434"
        );
        assert!(host_and_port("postgres://u:p@db/bench").is_err());
    }
}

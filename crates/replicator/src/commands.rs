//! The replicator's command line: `serve` (the default), `resync`, `verify` and `dlq`. Each
//! command returns a report the binary prints; the exit code says whether all is well.

use std::fmt;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use storage::replica::TableSummary;

use crate::catchup::RoundReport;
use crate::dlq::{DeadLetter, ReplayReport};
use crate::resync::Progress;
use crate::verify::Verdict;
use crate::{Application, Settings, app};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the queues and apply changes (the default).
    Serve,
    /// Copy the whole table from the primary to the replicas, online.
    Resync {
        /// Only this replica (default: all).
        #[arg(long)]
        replica: Option<String>,
    },
    /// Compare every replica with the primary; exit 1 when one differs.
    Verify,
    /// Inspect or replay the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print dead-lettered messages as JSON lines; they stay in the queue.
    List {
        #[arg(long, default_value_t = 100)]
        max: u16,
    },
    /// Send decodable dead-lettered messages back to their work queue.
    Replay {
        #[arg(long, default_value_t = 1000)]
        max: u16,
    },
}

/// Runs `command`. What a command reports goes to stdout, for the people and scripts that
/// run it.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(settings).await.map(|()| ExitCode::SUCCESS),
        Command::Resync { replica } => {
            let report = resync(&settings, replica.as_deref(), Progress::Bar).await?;
            for (replica, round) in &report.replicas {
                tracing::info!(%replica, copied = round.copied, removed = round.removed, refused = round.refused, level = round.level, "resync done");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let report = verify(&settings).await?;
            write_stdout(&report.to_string())?;
            Ok(if report.in_sync() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Dlq {
            command: DlqCommand::List { max },
        } => {
            let listed = dlq_list(&settings, max).await?;
            let mut out = String::new();
            for letter in &listed {
                out.push_str(&serde_json::to_string(letter)?);
                out.push('\n');
            }
            write_stdout(&out)?;
            tracing::info!(count = listed.len(), "dead-lettered messages listed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq {
            command: DlqCommand::Replay { max },
        } => {
            let report = dlq_replay(&settings, max).await?;
            write_stdout(&format!("{}\n", serde_json::to_string(&report)?))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Consumes and applies until a shutdown signal.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = service_kit::shutdown::on_signal();
    let replicas: Vec<String> = settings
        .replicas
        .targets()?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let broker = settings.broker.rabbitmq_url.to_string();
    let app = Application::build(settings, shutdown).await?;
    tracing::info!(port = app.port(), %broker, ?replicas, "replicator running");
    app.run_until_stopped().await
}

/// What `resync` did, per replica, in the order they were copied.
#[derive(Debug, Default)]
pub struct ResyncReport {
    pub replicas: Vec<(String, RoundReport)>,
}

/// Copies the whole table to every replica, or to `only`.
pub async fn resync(
    settings: &Settings,
    only: Option<&str>,
    progress: Progress,
) -> anyhow::Result<ResyncReport> {
    let primary = app::primary(settings)?;
    let replicas = app::replicas(settings)?;
    if let Some(name) = only
        && !replicas.iter().any(|r| r.name == name)
    {
        anyhow::bail!("no replica named {name}");
    }
    let holder = uuid::Uuid::new_v4();
    let mut report = ResyncReport::default();
    for replica in replicas
        .iter()
        .filter(|r| only.is_none_or(|name| r.name == name))
    {
        let catch_up = app::catch_up(settings, replica.clone(), primary.clone(), holder)?;
        let round = crate::resync::resync(&catch_up, progress)
            .await
            .with_context(|| format!("resyncing {}", replica.name))?;
        report.replicas.push((replica.name.clone(), round));
    }
    Ok(report)
}

/// The primary's table and each replica's verdict.
#[derive(Debug)]
pub struct VerifyReport {
    pub primary: TableSummary,
    pub verdicts: Vec<Verdict>,
}

impl VerifyReport {
    pub fn in_sync(&self) -> bool {
        self.verdicts.iter().all(|v| v.in_sync)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "primary: {} live rows, {} rows with tombstones",
            self.primary.live_rows, self.primary.all_rows
        )?;
        for verdict in &self.verdicts {
            match &verdict.problem {
                None => writeln!(f, "{}: in sync", verdict.replica)?,
                Some(problem) => writeln!(f, "{}: DIFFERS: {problem}", verdict.replica)?,
            }
        }
        Ok(())
    }
}

/// Compares every replica with the primary.
pub async fn verify(settings: &Settings) -> anyhow::Result<VerifyReport> {
    let primary = app::primary(settings)?;
    let replicas = app::replicas(settings)?;
    let (primary, verdicts) = crate::verify::verify(&primary, &replicas, settings.apply_timeout_ms)
        .await
        .context("reading the primary")?;
    Ok(VerifyReport { primary, verdicts })
}

/// Up to `max` dead-lettered messages, left in the queue.
pub async fn dlq_list(settings: &Settings, max: u16) -> anyhow::Result<Vec<DeadLetter>> {
    let address = settings.broker_address()?;
    let broker = settings.broker_settings("replicator-dlq");
    Ok(crate::dlq::list(&address, &broker, max).await?)
}

/// Sends up to `max` decodable dead-lettered messages back to their work queue.
pub async fn dlq_replay(settings: &Settings, max: u16) -> anyhow::Result<ReplayReport> {
    let address = settings.broker_address()?;
    let broker = settings.broker_settings("replicator-dlq");
    Ok(crate::dlq::replay(&address, &broker, max).await?)
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

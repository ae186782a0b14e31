use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use replicator::{Application, Settings, app};

/// replicator: keeps the read replicas equal to the primary.
///
/// Settings come from defaults, an optional TOML file (CONFIG_FILE or
/// config/replicator.toml) and environment variables (RABBITMQ_URL, REPLICA_URLS or
/// REPLICA_1_URL/REPLICA_2_URL, DATABASE_URL, …).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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

#[derive(Subcommand)]
enum DlqCommand {
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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let settings: Settings =
        service_kit::config::load("replicator").context("loading replicator settings")?;
    service_kit::telemetry::init(&settings.log_format);

    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = service_kit::shutdown::on_signal();
            let app = Application::build(settings.clone(), shutdown).await?;
            tracing::info!(
                port = app.port(),
                broker = %settings.rabbitmq_url,
                replicas = ?settings.replicas()?.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                "replicator running"
            );
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resync { replica } => resync(&settings, replica.as_deref()).await,
        Command::Verify => verify(&settings).await,
        Command::Dlq { command } => dlq(&settings, command).await,
    }
}

async fn resync(settings: &Settings, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let primary = app::primary(settings)?;
    let replicas = app::replicas(settings)?;
    if let Some(name) = only
        && !replicas.iter().any(|r| r.name == name)
    {
        anyhow::bail!("no replica named {name}");
    }
    let holder = uuid::Uuid::new_v4();
    for replica in replicas
        .iter()
        .filter(|r| only.is_none_or(|name| r.name == name))
    {
        let catch_up = app::catch_up(settings, replica.clone(), primary.clone(), holder)?;
        let report = replicator::resync::resync(&catch_up, replicator::resync::Progress::Bar)
            .await
            .with_context(|| format!("resyncing {}", replica.name))?;
        tracing::info!(replica = %replica.name, copied = report.copied, removed = report.removed, refused = report.refused, level = report.level, "resync done");
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(settings: &Settings) -> anyhow::Result<ExitCode> {
    let primary = app::primary(settings)?;
    let replicas = app::replicas(settings)?;
    let (expected, verdicts) =
        replicator::verify::verify(&primary, &replicas, settings.apply_timeout_ms)
            .await
            .context("reading the primary")?;
    let mut report = format!(
        "primary: {} live rows, {} rows with tombstones\n",
        expected.live_rows, expected.all_rows
    );
    for verdict in &verdicts {
        match &verdict.problem {
            None => report.push_str(&format!("{}: in sync\n", verdict.replica)),
            Some(problem) => report.push_str(&format!("{}: DIFFERS: {problem}\n", verdict.replica)),
        }
    }
    write_stdout(&report)?;
    Ok(if verdicts.iter().all(|v| v.in_sync) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let address = messaging::BrokerAddress::parse(settings.rabbitmq_url.expose())?;
    let broker = settings.broker_settings("replicator-dlq");
    match command {
        DlqCommand::List { max } => {
            let listed = replicator::dlq::list(&address, &broker, max).await?;
            let mut out = String::new();
            for letter in &listed {
                out.push_str(&serde_json::to_string(letter)?);
                out.push('\n');
            }
            write_stdout(&out)?;
            tracing::info!(count = listed.len(), "dead-lettered messages listed");
        }
        DlqCommand::Replay { max } => {
            let report = replicator::dlq::replay(&address, &broker, max).await?;
            write_stdout(&format!("{}\n", serde_json::to_string(&report)?))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Command output goes to stdout (logs go there too, but commands are run by people and
/// scripts that read this).
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

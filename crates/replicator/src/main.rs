use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use replicator::Settings;
use replicator::commands::{self, Command};

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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let settings: Settings =
        service_kit::config::load("replicator").context("loading replicator settings")?;
    service_kit::telemetry::init(settings.log_format);
    commands::run(cli.command.unwrap_or(Command::Serve), settings).await
}

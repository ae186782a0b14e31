use anyhow::Context;
use clap::{Parser, Subcommand};
use write_api::{Application, Settings};

/// write-api: the write side of the replicated product catalogue.
///
/// Settings come from defaults, an optional TOML file (CONFIG_FILE or
/// config/write-api.toml) and environment variables (DATABASE_URL, RABBITMQ_URL, PORT, …).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and relay the outbox (the default).
    Serve,
    /// Apply pending migrations to the primary, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings =
        service_kit::config::load("write-api").context("loading write-api settings")?;
    service_kit::telemetry::init(settings.log_format);

    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = service_kit::shutdown::on_signal();
            let app = Application::build(settings.clone(), shutdown).await?;
            tracing::info!(
                port = app.port(),
                database = %settings.db.database_url,
                broker = %settings.broker.rabbitmq_url,
                "write-api listening"
            );
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let applied = storage::migrations::run_pending(
                settings.db.database_url.expose(),
                write_api::app::STARTUP_DB_WAIT,
            )
            .await
            .context("applying migrations to the primary")?;
            tracing::info!(count = applied.len(), ?applied, "migrations applied");
            Ok(())
        }
    }
}

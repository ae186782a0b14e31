use anyhow::Context;
use clap::Parser;
use read_api::{Application, Settings};

/// read-api: the read side of the replicated product catalogue.
///
/// Settings come from defaults, an optional TOML file (CONFIG_FILE or config/read-api.toml)
/// and environment variables (REPLICA_URLS or REPLICA_1_URL/REPLICA_2_URL, DATABASE_URL,
/// PORT, STRATEGY, …). read-api never migrates a database.
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    let settings: Settings =
        service_kit::config::load("read-api").context("loading read-api settings")?;
    service_kit::runtime::build(settings.db_threads)
        .context("starting the runtime")?
        .block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    service_kit::telemetry::init(settings.log_format);

    let shutdown = service_kit::shutdown::on_signal();
    let replicas: Vec<String> = settings
        .replicas
        .targets()?
        .into_iter()
        .map(|t| format!("{}={}", t.name, t.url))
        .collect();
    let app = Application::build(settings.clone(), shutdown).await?;
    tracing::info!(
        port = app.port(),
        ?replicas,
        primary = %settings.db.database_url,
        fallback_to_primary = settings.fallback_to_primary,
        strategy = %settings.strategy,
        db_threads = service_kit::runtime::worker_threads(settings.db_threads),
        "read-api listening"
    );
    app.run_until_stopped().await
}

//! Logs: `tracing` events to stdout, as readable text or as JSON lines.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, for people.
    #[default]
    #[serde(alias = "TEXT", alias = "Text")]
    Text,
    /// One JSON object per line, for log collectors.
    #[serde(alias = "JSON", alias = "Json")]
    Json,
}

/// The filter when `RUST_LOG` is not set. amqprs (with its `traces` feature) logs errors during
/// every ordinary reconnect; our own reconnect events say what matters. actix-http logs a
/// client's unparsable request as an error, though it is the client's (it gets a 400)
/// (`docs/dependencies.md#tracing-subscriber-and-the-log-filter`).
const DEFAULT_FILTER: &str = "info,amqprs=warn,actix_server=warn,actix_http::h1::dispatcher=off";

/// Installs the global subscriber; the level comes from `RUST_LOG`. Colours only when stdout
/// is a terminal: a log file or collector gets no escape codes (and every request span's
/// fields are formatted without them, which read-api's profile showed at 1–2 % of its CPU).
/// Safe to call more than once (tests): later calls do nothing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = if format == LogFormat::Json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

//! Logs: `tracing` events to stdout, as readable text or as JSON lines.

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set. amqprs (with its `traces` feature) logs errors during
/// every ordinary reconnect; our own reconnect events say what matters. actix-http logs a
/// client's unparsable request as an error, though it is the client's (it gets a 400)
/// (`docs/dependencies.md#tracing-subscriber-and-the-log-filter`).
const DEFAULT_FILTER: &str = "info,amqprs=warn,actix_server=warn,actix_http::h1::dispatcher=off";

/// Installs the global subscriber. `format` is `text` or `json` (`LOG_FORMAT`); the level
/// comes from `RUST_LOG`. Safe to call more than once (tests): later calls do nothing.
pub fn init(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if format.eq_ignore_ascii_case("json") {
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

/// Checks a `LOG_FORMAT` value.
pub fn is_valid_format(format: &str) -> bool {
    format.eq_ignore_ascii_case("json") || format.eq_ignore_ascii_case("text")
}

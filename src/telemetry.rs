//! Tracing set-up, done once per process. Log lines go to stderr (the Functions host collects them);
//! the level comes from `RUST_LOG` (default `info`), the format from `PROCFWK_LOG_FORMAT` (`text` or `json`).

use tracing_subscriber::{fmt, EnvFilter};

/// Install the global subscriber. Safe to call more than once (later calls are ignored).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PROCFWK_LOG_FORMAT")
        .map(|v| v.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

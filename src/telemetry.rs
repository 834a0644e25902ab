//! Tracing set-up, done once per process. Log lines go to stderr (the Functions host collects them);
//! the level comes from `RUST_LOG` (default `info`), the format from `PROCFWK_LOG_FORMAT` (`text` or `json`).
//!
//! Libraries below us are held at `info` whatever `RUST_LOG` says: at `debug`, `azure_core` 0.21 prints
//! whole requests and its `Headers` debug output shows the `Authorization` header (it redacts every
//! *other* header instead), and HTTP libraries can print header values at `trace`. Tokens and function
//! keys must never reach a log, so those targets cannot be turned up.

use tracing_subscriber::{fmt, EnvFilter};

/// Targets that could print secrets at debug/trace level, and the most verbose level they may have.
const CLAMPED: &[&str] = &[
    "azure_core=info",
    "azure_identity=info",
    "azure_mgmt_datafactory=info",
    "oauth2=info",
    "reqwest=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "warp=info",
    "tiberius=info",
    "rustls=info",
];

/// The filter directives: the user's `RUST_LOG` (or `info`) followed by the clamps, which win.
pub fn directives(user: Option<&str>) -> String {
    let base = user
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let mut parts: Vec<&str> = base
        .split(',')
        .filter(|d| !CLAMPED.iter().any(|c| target_of(c) == target_of(d)))
        .collect();
    parts.extend_from_slice(CLAMPED);
    parts.join(",")
}

fn target_of(directive: &str) -> &str {
    directive.split('=').next().unwrap_or(directive).trim()
}

/// Install the global subscriber with `default_level` unless `RUST_LOG` says otherwise. Safe to call more
/// than once (later calls are ignored).
pub fn init(default_level: &str) {
    let user = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let wanted = user.as_deref().unwrap_or(default_level);
    let filter = EnvFilter::try_new(directives(Some(wanted)))
        .unwrap_or_else(|_| EnvFilter::new(directives(None)));
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

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn library_targets_are_clamped() {
        let d = directives(Some("trace,azure_core=trace"));
        assert!(d.starts_with("trace,"));
        assert!(!d.contains("azure_core=trace"));
        assert!(d.contains("azure_core=info"));
        assert!(directives(None).starts_with("info,"));
    }
}

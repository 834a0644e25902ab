//! The one HTTP client of the process (connection pool, TLS sessions), shared by token requests, Key
//! Vault and ARM calls. It follows no redirect: a 3xx is an answer, never a new destination for a token. (How many ARM calls may be in flight at once is decided by the Data Factory
//! adapter, before a request is even built.)

use super::upstream::{Service, UpstreamError};
use crate::config::Settings;
use azure_core::HttpClient;
use std::sync::Arc;

/// Build the process-wide client. Called once at start-up.
pub fn shared_client(settings: &Settings) -> Result<Arc<dyn HttpClient>, UpstreamError> {
    let client = reqwest::Client::builder()
        .timeout(settings.http_timeout)
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(settings.upstream_concurrency)
        .tcp_nodelay(true)
        // No redirect is ever followed: a token goes only to the URL it was meant for.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("procfwk-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Unreachable {
            service: Service::Arm,
            message: format!("could not build the HTTP client: {e}"),
        })?;
    Ok(Arc::new(client))
}

//! The one HTTP client of the process (connection pool, TLS sessions), shared by token requests, Key
//! Vault and ARM calls.

use super::upstream::{Service, UpstreamError};
use crate::config::Settings;
use std::sync::Arc;

/// Build the process-wide client. Called once at start-up.
pub fn shared_client(
    settings: &Settings,
) -> Result<Arc<dyn azure_core::HttpClient>, UpstreamError> {
    let client = reqwest::Client::builder()
        .timeout(settings.http_timeout)
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!("procfwk-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Unreachable {
            service: Service::Arm,
            message: format!("could not build the HTTP client: {e}"),
        })?;
    Ok(Arc::new(client))
}

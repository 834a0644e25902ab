//! The outside world: one HTTP client per process, ARM retries (within the invocation's time budget,
//! [`crate::policy::budget`]), credentials with their token cache, Key Vault, Data Factory, Compute VMs
//! (the VM power port), and the two metadata store backends (SQLite embedded, Azure SQL through tiberius)
//! behind the store interface.

pub mod compute;
pub mod datafactory;
pub mod http;
pub mod identity;
pub mod keyvault;
pub mod retry;
pub mod sqlite;
pub mod sqlserver;
pub mod upstream;

pub use datafactory::DataFactory;
pub use identity::Identity;
pub use upstream::{Service, UpstreamError};

use crate::config::Settings;
use std::sync::Arc;

/// `{endpoint}/subscriptions/{sub}/resourceGroups/{rg}/providers/{segments…}?api-version=…`, each segment
/// percent-encoded: the URL of every ARM resource we call.
pub(crate) fn arm_url(
    endpoint: &url::Url,
    subscription: &str,
    resource_group: &str,
    segments: &[&str],
    api_version: &str,
) -> Result<url::Url, UpstreamError> {
    let mut url = endpoint.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|_| UpstreamError::Protocol {
                service: Service::Arm,
                message: "PROCFWK_ARM_ENDPOINT cannot carry a path".into(),
            })?;
        path.pop_if_empty()
            .push("subscriptions")
            .push(subscription)
            .push("resourceGroups")
            .push(resource_group)
            .push("providers")
            .extend(segments);
    }
    url.query_pairs_mut()
        .append_pair("api-version", api_version);
    Ok(url)
}

/// Everything a function needs to reach Azure, built once per process and shared by every invocation.
#[derive(Clone)]
pub struct Azure {
    pub identity: Arc<Identity>,
    pub data_factory: Arc<DataFactory>,
    pub compute: Arc<compute::Compute>,
}

impl Azure {
    pub fn new(settings: &Settings) -> Result<Self, UpstreamError> {
        let http = http::shared_client(settings)?;
        let identity = Arc::new(Identity::new(http.clone(), settings));
        let data_factory = Arc::new(DataFactory::new(http.clone(), settings));
        let compute = Arc::new(compute::Compute::new(
            http,
            settings,
            data_factory.upstream_permits(),
        ));
        Ok(Self {
            identity,
            data_factory,
            compute,
        })
    }
}

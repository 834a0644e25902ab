//! The outside world: one HTTP client per process, the time budget of an invocation, ARM retries,
//! credentials with their token cache, Key Vault, and Data Factory.

pub mod budget;
pub mod compute;
pub mod datafactory;
pub mod http;
pub mod identity;
pub mod keyvault;
pub mod retry;
pub mod upstream;

pub use datafactory::DataFactory;
pub use identity::Identity;
pub use upstream::{Service, UpstreamError};

use crate::config::Settings;
use std::sync::Arc;

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
        let compute = Arc::new(compute::Compute::new(http, settings));
        Ok(Self {
            identity,
            data_factory,
            compute,
        })
    }
}

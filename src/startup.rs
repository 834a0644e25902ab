//! The wiring: the process-wide [`AppState`] the functions share (settings, the Azure clients, admission,
//! the metadata store opened on first use), and [`open_store`], which picks the store backend a
//! `PROCFWK_METADATA_DB` value names and hands it what it needs (pool options, the identity that gets its
//! Entra tokens). The one module that knows both the core and every adapter.

use crate::adapters::compute::ArmPower;
use crate::adapters::sqlite::SqliteBackend;
use crate::adapters::sqlserver::{EntraTokenSource, SqlServerBackend, SqlServerOptions};
use crate::adapters::{Azure, Identity, UpstreamError};
use crate::config::Settings;
use crate::policy::admission::Admission;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use azure_core::auth::TokenCredential;
use std::sync::Arc;

/// Shared, process-wide state: settings, the Azure clients (one HTTP client, one token cache) and the
/// metadata store (opened on first use, so compatibility-mode deployments need no database).
pub struct AppState {
    pub settings: Settings,
    pub azure: Azure,
    /// How many invocations work at once (the host edge waits here, before reading a body).
    pub admission: Admission,
    store: tokio::sync::OnceCell<Store>,
}

impl AppState {
    pub fn new(settings: Settings) -> Result<Arc<Self>, UpstreamError> {
        let azure = Azure::new(&settings)?;
        Ok(Arc::new(Self {
            admission: Admission::new(admission_slots(&settings)),
            settings,
            azure,
            store: tokio::sync::OnceCell::new(),
        }))
    }

    /// Use `store` instead of opening `PROCFWK_METADATA_DB` (tests, `procfwk run`).
    pub fn with_store(settings: Settings, store: Store) -> Result<Arc<Self>, UpstreamError> {
        let azure = Azure::new(&settings)?;
        Ok(Arc::new(Self {
            admission: Admission::new(admission_slots(&settings)),
            settings,
            azure,
            store: tokio::sync::OnceCell::new_with(Some(store)),
        }))
    }

    /// VM and runtime calls bound to `credential` (what VmPower decisions act through).
    pub fn arm_power(&self, credential: Arc<dyn TokenCredential>) -> Arc<ArmPower> {
        Arc::new(ArmPower {
            compute: self.azure.compute.clone(),
            data_factory: self.azure.data_factory.clone(),
            credential,
        })
    }

    /// The metadata store, opened from `PROCFWK_METADATA_DB` (with the process' identity) on first use.
    pub async fn store(&self) -> Result<&Store, StoreError> {
        self.store
            .get_or_try_init(|| async {
                let store = open_store(
                    self.settings.metadata_db.expose(),
                    Some(self.azure.identity.clone()),
                )
                .await?;
                tracing::info!(store = %store.describe(), "metadata store opened");
                Ok::<Store, StoreError>(store)
            })
            .await
    }
}

/// Invocations admitted at once: twice the upstream bound, so that while some wait for ARM others parse
/// their request or write their answer, and the upstream slots never sit idle.
fn admission_slots(settings: &Settings) -> usize {
    settings.upstream_concurrency.saturating_mul(2)
}

/// Open the store named by a `PROCFWK_METADATA_DB` value: `sqlite:<path>` or a SQL Server / Azure SQL
/// ADO connection string. An Entra login gets its tokens from `identity`; without one (`procfwk db …`,
/// `procfwk run`) an identity is made from the environment's settings when the login first needs it.
pub async fn open_store(
    setting: &str,
    identity: Option<Arc<Identity>>,
) -> Result<Store, StoreError> {
    let setting = setting.trim();
    if let Some(path) = setting.strip_prefix("sqlite:") {
        return Ok(Store::new(Arc::new(SqliteBackend::open(path)?)));
    }
    let tokens: Arc<dyn EntraTokenSource> = match identity {
        Some(identity) => identity,
        None => Arc::new(IdentityFromEnvironment),
    };
    let backend =
        SqlServerBackend::connect_with(setting, Some(tokens), SqlServerOptions::from_env()?)
            .await?;
    Ok(Store::new(Arc::new(backend)))
}

/// An identity of our own, made from `Settings::from_env` (with its own HTTP client) when a store opened
/// without the process' identity first needs an Entra credential.
struct IdentityFromEnvironment;

impl IdentityFromEnvironment {
    fn identity() -> Result<Identity, StoreError> {
        let settings = Settings::from_env().map_err(|e| StoreError::Config(e.to_string()))?;
        let http = crate::adapters::http::shared_client(&settings)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Identity::new(http, &settings))
    }
}

#[async_trait::async_trait]
impl EntraTokenSource for IdentityFromEnvironment {
    fn managed_identity(&self) -> Result<Arc<dyn TokenCredential>, StoreError> {
        EntraTokenSource::managed_identity(&Self::identity()?)
    }

    async fn service_principal(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<Arc<dyn TokenCredential>, StoreError> {
        EntraTokenSource::service_principal(&Self::identity()?, tenant, client_id, secret).await
    }
}

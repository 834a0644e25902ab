//! Logging in with Entra ID: the token source the wiring hands the backend ([`EntraTokenSource`], a port
//! the process' identity registry implements), which credential a connection string's login uses, and
//! how a failed token request is reported. Each new connection asks its credential for a token at that
//! moment (the credential caches and refreshes tokens), so no connection logs in with an expired one.

use crate::adapters::upstream::{FromAzure, Service, UpstreamError};
use crate::adapters::Identity;
use crate::domain::Guid;
use crate::secret::Secret;
use crate::store::connection_string::{AuthKind, ConnectionString};
use crate::store::StoreError;
use azure_core::auth::TokenCredential;
use std::sync::Arc;

/// The Entra scope of Azure SQL tokens.
pub const SQL_TOKEN_SCOPE: &str = "https://database.windows.net/.default";

/// Where the backend gets Entra credentials: the backend builds no HTTP client and reads no settings of
/// its own. Errors are ready to show (they never carry a secret).
#[async_trait::async_trait]
pub trait EntraTokenSource: Send + Sync {
    /// The Function App's system-assigned managed identity.
    fn managed_identity(&self) -> Result<Arc<dyn TokenCredential>, StoreError>;
    /// A service principal's client-secret credential; `tenant` is a GUID or a domain name.
    async fn service_principal(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<Arc<dyn TokenCredential>, StoreError>;
}

/// The process' identity registry: one credential (and token cache) per principal, the process' HTTP
/// client and authority.
#[async_trait::async_trait]
impl EntraTokenSource for Identity {
    fn managed_identity(&self) -> Result<Arc<dyn TokenCredential>, StoreError> {
        Identity::managed_identity(self).map_err(|e| {
            StoreError::Config(format!("Azure SQL login with the managed identity: {e}"))
        })
    }

    async fn service_principal(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<Arc<dyn TokenCredential>, StoreError> {
        // A GUID is keyed in its canonical form, as a request body's tenant is.
        let tenant = match Guid::parse(tenant) {
            Some(guid) => guid.to_string(),
            None => tenant.trim().to_string(),
        };
        Ok(Identity::service_principal(
            self, &tenant, client_id, secret,
        ))
    }
}

/// The credential a connection string's login needs (`None`: a SQL login) and the service that issues
/// its tokens. `default_tenant` stands in when the string names no `Tenant Id`.
pub(super) async fn login_credential(
    parsed: &ConnectionString,
    tokens: Option<&dyn EntraTokenSource>,
    default_tenant: Option<&str>,
) -> Result<Option<(Service, Arc<dyn TokenCredential>)>, StoreError> {
    match parsed.auth {
        AuthKind::SqlPassword => Ok(None),
        AuthKind::ManagedIdentity => Ok(Some((
            Service::ManagedIdentity,
            source(tokens)?.managed_identity()?,
        ))),
        AuthKind::ServicePrincipal => {
            let credential = service_principal(parsed, source(tokens)?, default_tenant).await?;
            Ok(Some((Service::EntraId, credential)))
        }
    }
}

fn source(tokens: Option<&dyn EntraTokenSource>) -> Result<&dyn EntraTokenSource, StoreError> {
    tokens.ok_or_else(|| {
        StoreError::Config(
            "an Entra ID login to Azure SQL needs an identity, and none was given to the metadata store"
                .into(),
        )
    })
}

async fn service_principal(
    parsed: &ConnectionString,
    tokens: &dyn EntraTokenSource,
    default_tenant: Option<&str>,
) -> Result<Arc<dyn TokenCredential>, StoreError> {
    let tenant = parsed
        .tenant
        .clone()
        .or_else(|| default_tenant.filter(|t| !t.trim().is_empty()).map(str::to_string))
        .ok_or_else(|| {
            StoreError::Config(
                "Authentication=Active Directory Service Principal needs a tenant: add Tenant Id=… to the \
                 connection string or set AZURE_TENANT_ID"
                    .into(),
            )
        })?;
    let (Some(client_id), Some(secret)) = (&parsed.user, &parsed.password) else {
        return Err(StoreError::Config(
            "Authentication=Active Directory Service Principal needs User ID and Password".into(),
        ));
    };
    tokens.service_principal(&tenant, client_id, secret).await
}

/// A token request failed: a definite "no" from Entra or the identity endpoint is a setting problem,
/// anything else (unreachable, 5xx, throttled) may pass.
pub(super) fn token_error(service: Service, e: &azure_core::Error) -> StoreError {
    let upstream = UpstreamError::from_azure(service, e);
    let message = format!("could not get an Entra ID token for Azure SQL: {upstream}");
    match &upstream {
        UpstreamError::Http { status, .. }
            if (400..500).contains(status) && *status != 408 && *status != 429 =>
        {
            StoreError::Config(message)
        }
        UpstreamError::Authentication { message: said, .. } if said.contains("AADSTS") => {
            StoreError::Config(message)
        }
        _ => StoreError::Connection(message),
    }
}

//! Who we are towards Azure. A caller's service principal (procfwk's way: in the request body, or as Key
//! Vault references), or the Function App's managed identity when the body carries none.
//!
//! One credential object per principal, kept for the life of the process, each with its token cache
//! (per scope, refreshed shortly before expiry, one refresh at a time). The registry is keyed by
//! (authority, tenant, client id, fingerprint of the secret): a second call with the same principal
//! fetches no new token, and a caller with a *different* secret for the same client id never gets a
//! token obtained with someone else's secret.

use super::keyvault::KeyVault;
use super::upstream::{Service, UpstreamError};
use crate::config::Settings;
use crate::domain::{transport, Credentials, SecretSource};
use crate::secret::Secret;
use azure_core::auth::TokenCredential;
use azure_identity::{
    AppServiceManagedIdentityCredential, ClientSecretCredential, TokenCredentialOptions,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// At most this many principals are kept; beyond it the registry starts afresh (tokens are re-fetched).
const MAX_PRINCIPALS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PrincipalKey {
    authority: String,
    tenant: String,
    client_id: String,
    secret_fingerprint: String,
}

pub struct Identity {
    http: Arc<dyn azure_core::HttpClient>,
    authority: url::Url,
    principals: Mutex<HashMap<PrincipalKey, Arc<dyn TokenCredential>>>,
    managed: OnceLock<Result<Arc<dyn TokenCredential>, String>>,
    keyvault: KeyVault,
}

impl Identity {
    pub fn new(http: Arc<dyn azure_core::HttpClient>, settings: &Settings) -> Self {
        Self {
            keyvault: KeyVault::new(http.clone(), settings),
            http,
            authority: settings.authority_host.clone(),
            principals: Mutex::new(HashMap::new()),
            managed: OnceLock::new(),
        }
    }

    /// The credential to use for `credentials`, resolving Key Vault references on the way.
    pub async fn credential(
        &self,
        credentials: &Credentials,
    ) -> Result<Arc<dyn TokenCredential>, UpstreamError> {
        match credentials {
            Credentials::ManagedIdentity => self.managed_identity(),
            Credentials::ServicePrincipal {
                tenant,
                client_id,
                client_secret,
            } => {
                let client_id = self.resolve(client_id).await?;
                let client_secret = self.resolve(client_secret).await?;
                Ok(self.service_principal(&tenant.to_string(), client_id.expose(), &client_secret))
            }
        }
    }

    /// The Function App's system-assigned managed identity (App Service `IDENTITY_ENDPOINT` /
    /// `IDENTITY_HEADER`).
    pub fn managed_identity(&self) -> Result<Arc<dyn TokenCredential>, UpstreamError> {
        let made = self.managed.get_or_init(|| {
            let endpoint = std::env::var("IDENTITY_ENDPOINT").unwrap_or_default();
            if endpoint.trim().is_empty() {
                return Err(
                    "no service principal was given and this Function App has no managed identity \
                            (IDENTITY_ENDPOINT is not set)"
                        .to_string(),
                );
            }
            // The identity header is a credential: it goes only to the local token service.
            let refused = match url::Url::parse(endpoint.trim()) {
                Ok(url) => transport::refusal(&url, transport::PlainHttp::LoopbackOrLinkLocal),
                Err(e) => Some(format!("is not a URL ({e})")),
            };
            if let Some(problem) = refused {
                return Err(format!(
                    "the managed identity is not usable: IDENTITY_ENDPOINT {problem}"
                ));
            }
            let options = TokenCredentialOptions::from(self.http.clone());
            AppServiceManagedIdentityCredential::create(options)
                .map(|c| Arc::new(c) as Arc<dyn TokenCredential>)
                .map_err(|e| format!("the managed identity is not usable: {}", e.kind()))
        });
        made.clone()
            .map_err(|message| UpstreamError::Authentication {
                service: Service::ManagedIdentity,
                message,
            })
    }

    /// How many principals have a credential (and token cache) in this process.
    pub fn cached_principals(&self) -> usize {
        self.principals
            .lock()
            .map(|m| m.len())
            .unwrap_or_else(|e| e.into_inner().len())
    }

    /// The registry's credential for a service principal (`tenant`: a GUID in canonical form, or a name).
    pub(crate) fn service_principal(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Arc<dyn TokenCredential> {
        let key = PrincipalKey {
            authority: self.authority.to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_ascii_lowercase(),
            secret_fingerprint: secret.fingerprint(),
        };
        let mut map = self.principals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(&key) {
            return existing.clone();
        }
        if map.len() >= MAX_PRINCIPALS {
            map.clear();
        }
        let credential: Arc<dyn TokenCredential> = Arc::new(ClientSecretCredential::new(
            self.http.clone(),
            self.authority.clone(),
            tenant.to_string(),
            client_id.to_string(),
            secret.expose().to_string(),
        ));
        map.insert(key, credential.clone());
        credential
    }

    async fn resolve(&self, source: &SecretSource) -> Result<Secret, UpstreamError> {
        match source {
            SecretSource::Value(v) => Ok(v.clone()),
            SecretSource::KeyVault(url) => {
                let reader = self.managed_identity()?;
                self.keyvault.secret(url, reader.as_ref()).await
            }
        }
    }
}

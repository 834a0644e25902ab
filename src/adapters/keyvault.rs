//! Key Vault secret reads (procfwk 1.8.2+ lets `applicationId`/`authenticationKey` be secret URLs), with
//! the Function App's managed identity, and a short cache so a hot Infant loop does not read the vault
//! on every poll.

use super::upstream::{FromAzure, Service, UpstreamError};
use crate::config::Settings;
use crate::domain::KeyVaultSecretRef;
use crate::secret::Secret;
use azure_core::auth::TokenCredential;
use azure_core::{HttpClient, Method, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_VERSION: &str = "7.4";

pub struct KeyVault {
    http: Arc<dyn HttpClient>,
    endpoint_override: Option<url::Url>,
    cache_for: Duration,
    cache: Mutex<HashMap<String, (Secret, Instant)>>,
}

impl KeyVault {
    pub fn new(http: Arc<dyn HttpClient>, settings: &Settings) -> Self {
        Self {
            http,
            endpoint_override: settings.keyvault_endpoint.clone(),
            cache_for: settings.keyvault_cache,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Where to send the read for `secret`: its own vault host, or `PROCFWK_KEYVAULT_ENDPOINT` when that
    /// is set (tests, the simulator). The reference's host was checked when it was parsed.
    pub fn request_url(&self, secret: &KeyVaultSecretRef) -> Result<url::Url, UpstreamError> {
        let mut url = match &self.endpoint_override {
            Some(base) => base.clone(),
            None => url::Url::parse(&format!("https://{}/", secret.host())).map_err(|e| {
                UpstreamError::Protocol {
                    service: Service::KeyVault,
                    message: format!("bad vault host: {e}"),
                }
            })?,
        };
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| UpstreamError::Protocol {
                    service: Service::KeyVault,
                    message: "the Key Vault endpoint cannot carry a path".into(),
                })?;
            path.clear().push("secrets").push(secret.name());
            if let Some(v) = secret.version() {
                path.push(v);
            }
        }
        url.set_fragment(None);
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    pub async fn secret(
        &self,
        secret_ref: &KeyVaultSecretRef,
        reader: &dyn TokenCredential,
    ) -> Result<Secret, UpstreamError> {
        let key = secret_ref.to_string();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let url = self.request_url(secret_ref)?;
        let token = reader
            .get_token(&[secret_ref.cloud().vault_scope()])
            .await
            .map_err(|e| UpstreamError::from_azure(Service::ManagedIdentity, &e))?;
        let mut request = Request::new(url, Method::Get);
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        let response = self
            .http
            .execute_request(&request)
            .await
            .map_err(|e| UpstreamError::from_azure(Service::KeyVault, &e))?;
        let (status, _headers, body) = response.deconstruct();
        let body = body
            .collect()
            .await
            .map_err(|e| UpstreamError::from_azure(Service::KeyVault, &e))?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            return Err(UpstreamError::Http {
                service: Service::KeyVault,
                status: u16::from(status),
                code: json["error"]["code"]
                    .as_str()
                    .unwrap_or("Unknown")
                    .to_string(),
                message: json["error"]["message"].as_str().unwrap_or("").to_string(),
            });
        }
        let value = json["value"]
            .as_str()
            .ok_or_else(|| UpstreamError::Protocol {
                service: Service::KeyVault,
                message: "the secret bundle has no value".into(),
            })?;
        let secret = Secret::new(value);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (secret.clone(), Instant::now()));
        }
        Ok(secret)
    }

    fn cached(&self, key: &str) -> Option<Secret> {
        let c = self.cache.lock().ok()?;
        c.get(key)
            .filter(|(_, at)| at.elapsed() < self.cache_for)
            .map(|(s, _)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(override_url: Option<&str>) -> KeyVault {
        let s = Settings {
            keyvault_endpoint: override_url.and_then(|u| url::Url::parse(u).ok()),
            ..Settings::default()
        };
        KeyVault::new(Arc::new(reqwest::Client::new()), &s)
    }

    fn reference(text: &str) -> KeyVaultSecretRef {
        match KeyVaultSecretRef::parse(text) {
            Ok(Some(r)) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn request_urls() {
        let got = kv(None)
            .request_url(&reference(
                "https://myvault.vault.azure.net/secrets/appsecret",
            ))
            .map(|x| x.to_string());
        assert_eq!(
            got.ok().as_deref(),
            Some("https://myvault.vault.azure.net/secrets/appsecret?api-version=7.4")
        );
        let r = reference(
            "https://myvault.vault.azure.net/secrets/appsecret/0123456789abcdef0123456789abcdef",
        );
        let got = kv(Some("http://127.0.0.1:9999"))
            .request_url(&r)
            .map(|x| x.to_string());
        assert_eq!(
            got.ok().as_deref(),
            Some("http://127.0.0.1:9999/secrets/appsecret/0123456789abcdef0123456789abcdef?api-version=7.4")
        );
    }
}

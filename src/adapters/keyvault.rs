//! Key Vault secret reads (procfwk 1.8.2+ lets `applicationId`/`authenticationKey` be secret URLs), with
//! the Function App's managed identity, and a short cache so a hot Infant loop does not read the vault
//! on every poll.

use super::upstream::{Service, UpstreamError};
use crate::config::Settings;
use crate::secret::Secret;
use azure_core::auth::TokenCredential;
use azure_core::{HttpClient, Method, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCOPE: &str = "https://vault.azure.net/.default";
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

    /// Where to send the read for a secret URL `https://<vault>.vault.azure.net/secrets/<name>[/<version>]`.
    pub fn request_url(&self, secret_url: &url::Url) -> Result<url::Url, UpstreamError> {
        let segments: Vec<&str> = secret_url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let (name, version) = match segments.as_slice() {
            ["secrets", name] => (*name, None),
            ["secrets", name, version] => (*name, Some(*version)),
            _ => {
                return Err(UpstreamError::Protocol {
                    service: Service::KeyVault,
                    message: "a Key Vault reference must look like https://<vault>.vault.azure.net/secrets/<name>"
                        .into(),
                })
            }
        };
        let mut url = match &self.endpoint_override {
            Some(base) => base.clone(),
            None => {
                let mut u = secret_url.clone();
                u.set_query(None);
                u.set_fragment(None);
                u
            }
        };
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| UpstreamError::Protocol {
                    service: Service::KeyVault,
                    message: "the Key Vault endpoint cannot carry a path".into(),
                })?;
            path.clear().push("secrets").push(name);
            if let Some(v) = version {
                path.push(v);
            }
        }
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    pub async fn secret(
        &self,
        secret_url: &url::Url,
        reader: &dyn TokenCredential,
    ) -> Result<Secret, UpstreamError> {
        let key = secret_url.as_str().to_string();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let url = self.request_url(secret_url)?;
        let token = reader
            .get_token(&[SCOPE])
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

    #[test]
    fn request_urls() {
        let u = url::Url::parse("https://myvault.vault.azure.net/secrets/appsecret").ok();
        let got = u
            .as_ref()
            .map(|u| kv(None).request_url(u).map(|x| x.to_string()));
        assert_eq!(
            got.and_then(Result::ok).as_deref(),
            Some("https://myvault.vault.azure.net/secrets/appsecret?api-version=7.4")
        );
        let u = url::Url::parse("https://myvault.vault.azure.net/secrets/appsecret/abc123").ok();
        let got = u.as_ref().map(|u| {
            kv(Some("http://127.0.0.1:9999"))
                .request_url(u)
                .map(|x| x.to_string())
        });
        assert_eq!(
            got.and_then(Result::ok).as_deref(),
            Some("http://127.0.0.1:9999/secrets/appsecret/abc123?api-version=7.4")
        );
    }
}

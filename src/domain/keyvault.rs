//! Key Vault secret references: which text counts as one, and which may be read at all.
//!
//! procfwk (1.8.2+) lets `applicationId` / `authenticationKey` (and `PrincipalSecretUrl` in the metadata)
//! be a Key Vault secret identifier, `https://{vault}{suffix}/secrets/{name}[/{version}]`. Reading one
//! means sending the Function App's managed-identity token to that host, so the host is never taken on
//! trust: it must be a Key Vault of a known Azure cloud (public, China, US Government), over https on the
//! default port, with no user info. Anything else that looks like a URL is refused before any connection
//! is made — an attacker who may call one function must not be able to make the app fetch an arbitrary
//! URL (the instance metadata service, private addresses, a look-alike vault) or hand it a token.
//!
//! Managed HSM hosts are refused with their own message: Managed HSM holds keys only, not secrets.

use std::fmt;

/// The Azure clouds whose Key Vault hosts we accept, and the token audience for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AzureCloud {
    Public,
    China,
    UsGovernment,
}

/// DNS suffixes of Key Vault vaults per cloud (Microsoft's Key Vault object-identifier docs).
const VAULT_SUFFIXES: [(&str, AzureCloud); 3] = [
    (".vault.azure.net", AzureCloud::Public),
    (".vault.azure.cn", AzureCloud::China),
    (".vault.usgovcloudapi.net", AzureCloud::UsGovernment),
];

/// Managed HSM suffixes: recognised only to say why they cannot hold a secret.
const HSM_SUFFIXES: [&str; 3] = [
    ".managedhsm.azure.net",
    ".managedhsm.azure.cn",
    ".managedhsm.usgovcloudapi.net",
];

impl AzureCloud {
    /// The scope of a token for this cloud's Key Vault data plane.
    pub fn vault_scope(&self) -> &'static str {
        match self {
            Self::Public => "https://vault.azure.net/.default",
            Self::China => "https://vault.azure.cn/.default",
            Self::UsGovernment => "https://vault.usgovcloudapi.net/.default",
        }
    }
}

/// A reference to a secret in a Key Vault of a known Azure cloud. Only [`KeyVaultSecretRef::parse`]
/// makes one, so holding one means the host has been checked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyVaultSecretRef {
    /// Lower-case host, e.g. `myvault.vault.azure.net`.
    host: String,
    cloud: AzureCloud,
    name: String,
    version: Option<String>,
}

impl KeyVaultSecretRef {
    /// `Ok(None)` when `text` does not look like a URL at all (a plain value); `Ok(Some)` for an
    /// acceptable secret reference; `Err(problem)` for anything URL-like that is not one.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if !looks_like_url(text) {
            return Ok(None);
        }
        let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
        if url.scheme() != "https" {
            return Err(format!(
                "Key Vault references must use https, not {}",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("Key Vault references must not carry user information".into());
        }
        if url.port().is_some() {
            return Err("Key Vault references must not name a port".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(_) => {
                return Err("Key Vault references must name a vault host, not an IP address".into())
            }
            None => return Err("Key Vault references must name a vault host".into()),
        };
        if HSM_SUFFIXES.iter().any(|s| host.ends_with(s)) {
            return Err("is a Managed HSM URL; Managed HSM holds keys, not secrets".into());
        }
        let (vault, cloud) = VAULT_SUFFIXES
            .iter()
            .find_map(|(suffix, cloud)| host.strip_suffix(suffix).map(|v| (v, *cloud)))
            .ok_or_else(|| {
                "is not a Key Vault URL: the host must be <vault>.vault.azure.net (or .vault.azure.cn, \
                 .vault.usgovcloudapi.net)"
                    .to_string()
            })?;
        if !valid_vault_name(vault) {
            return Err(format!(
                "{vault:?} is not a Key Vault name (3-24 letters, digits and single hyphens)"
            ));
        }
        let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
        let segments = match segments.as_slice() {
            [rest @ .., ""] => rest,
            all => all,
        };
        let (name, version) = match segments {
            [kind, name] if kind.eq_ignore_ascii_case("secrets") => (*name, None),
            [kind, name, version] if kind.eq_ignore_ascii_case("secrets") => {
                (*name, Some(*version))
            }
            _ => {
                return Err(
                    "must look like https://<vault>.vault.azure.net/secrets/<name>[/<version>]"
                        .into(),
                )
            }
        };
        if !valid_secret_name(name) {
            return Err(format!(
                "{name:?} is not a secret name (1-127 letters, digits and hyphens)"
            ));
        }
        if let Some(v) = version {
            if v.len() != 32 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{v:?} is not a secret version (32 hex digits)"));
            }
        }
        Ok(Some(Self {
            host: host.clone(),
            cloud,
            name: name.to_string(),
            version: version.map(|v| v.to_ascii_lowercase()),
        }))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn cloud(&self) -> AzureCloud {
        self.cloud
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

impl fmt::Display for KeyVaultSecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}/secrets/{}", self.host, self.name)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyVaultSecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyVaultSecretRef({self})")
    }
}

/// Text that a URL parser, or a person, would take for a URL: it has `://`, or an http(s) scheme
/// (`https:\\host` is parsed as `https://host` by WHATWG rules). A client secret never does: Entra ID
/// secrets are made of letters, digits and `~._-`.
fn looks_like_url(text: &str) -> bool {
    if text.contains("://") {
        return true;
    }
    let lower = text.get(..6).map(|p| p.to_ascii_lowercase());
    lower.is_some_and(|p| p.starts_with("http:") || p.starts_with("https:"))
}

fn valid_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && !name.ends_with('-')
        && !name.contains("--")
}

fn valid_secret_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> KeyVaultSecretRef {
        match KeyVaultSecretRef::parse(text) {
            Ok(Some(r)) => r,
            other => panic!("{text:?} should be a secret reference: {other:?}"),
        }
    }

    fn refused(text: &str) -> String {
        match KeyVaultSecretRef::parse(text) {
            Err(problem) => problem,
            other => panic!("{text:?} should be refused: {other:?}"),
        }
    }

    #[test]
    fn vaults_of_the_three_clouds_are_accepted_with_their_audience() {
        let public = ok("https://MyVault.vault.azure.net/secrets/app-secret");
        assert_eq!(public.host(), "myvault.vault.azure.net");
        assert_eq!(
            public.cloud().vault_scope(),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            public.to_string(),
            "https://myvault.vault.azure.net/secrets/app-secret"
        );
        let china = ok("https://kv-01.vault.azure.cn/secrets/s/0123456789abcdef0123456789ABCDEF");
        assert_eq!(china.cloud(), AzureCloud::China);
        assert_eq!(china.version(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(
            china.cloud().vault_scope(),
            "https://vault.azure.cn/.default"
        );
        let gov = ok("https://gov.vault.usgovcloudapi.net/secrets/s/");
        assert_eq!(
            gov.cloud().vault_scope(),
            "https://vault.usgovcloudapi.net/.default"
        );
    }

    #[test]
    fn plain_values_are_not_urls() {
        for text in [
            "s3cr3t~value._-",
            "abc:def",
            "",
            "vault.azure.net/secrets/x",
            "//x/secrets/y",
        ] {
            assert_eq!(KeyVaultSecretRef::parse(text), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn look_alikes_are_refused() {
        for text in [
            // The instance metadata service, private ranges, IPv6, loopback.
            "http://169.254.169.254/secrets/x",
            "https://169.254.169.254/secrets/x",
            "https://10.0.0.1/secrets/x",
            "https://192.168.1.1/secrets/x",
            "https://[fd00::1]/secrets/x",
            "https://[::ffff:169.254.169.254]/secrets/x",
            "https://127.0.0.1/secrets/x",
            "https://localhost/secrets/x",
            // Plain http to a real vault host.
            "http://myvault.vault.azure.net/secrets/x",
            // User-info tricks: the host is the part after '@'.
            "https://myvault.vault.azure.net@evil.example/secrets/x",
            "https://evil.example\\@myvault.vault.azure.net/secrets/x",
            "https://user:pw@myvault.vault.azure.net/secrets/x",
            // Suffix tricks.
            "https://myvault.vault.azure.net.evil.example/secrets/x",
            "https://evil-vault.azure.net/secrets/x",
            "https://myvault.vault.azure.net./secrets/x",
            "https://a.b.vault.azure.net/secrets/x",
            "https://evil.example/secrets/x#.vault.azure.net",
            "https://evil.example/secrets/x?h=.vault.azure.net",
            "https://myvault.vault.azure.net:8443/secrets/x",
            "https:\\\\evil.example\\secrets\\x",
            "HTTPS://evil.example/secrets/x",
            "ftp://myvault.vault.azure.net/secrets/x",
            // Retired or unknown clouds.
            "https://kv.vault.microsoftazure.de/secrets/x",
            // Wrong shapes.
            "https://myvault.vault.azure.net/keys/x",
            "https://myvault.vault.azure.net/secrets/",
            "https://myvault.vault.azure.net/secrets/x/not-a-version",
            "https://myvault.vault.azure.net/secrets/a%2Fb",
            "https://ab.vault.azure.net/secrets/x",
            "https://my--vault.vault.azure.net/secrets/x",
        ] {
            let _ = refused(text);
        }
    }

    #[test]
    fn managed_hsm_says_why() {
        assert!(refused("https://hsm.managedhsm.azure.net/secrets/x").contains("keys, not secrets"));
    }
}

//! Access tokens the simulator has issued. Tokens are opaque random strings; the store remembers who
//! each one belongs to (client id, object id), which resource it is for and when it expires, so Data
//! Factory and Key Vault routes can check a bearer token exactly like the real services would: missing,
//! unknown, expired, or issued for another resource.

use super::clock::SimClock;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Tokens kept before expired ones are swept out.
const SWEEP_THRESHOLD: usize = 50_000;

/// The service a token's resource (audience) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    Arm,
    KeyVault,
    Sql,
    /// Anything else (e.g. the simulator's own URL): accepted by every route, so clients pointed at the
    /// simulator with a custom scope still work.
    Other,
}

impl Audience {
    /// Classifies a v2 scope (`https://management.azure.com/.default`) or a v1 / managed-identity
    /// resource (`https://management.azure.com/`).
    pub fn of(resource: &str) -> Self {
        let lower = resource.trim().to_ascii_lowercase();
        let base = lower.strip_suffix("/.default").unwrap_or(&lower);
        let base = base.trim_end_matches('/');
        match base {
            "https://management.azure.com" | "https://management.core.windows.net" => Self::Arm,
            "https://vault.azure.net" => Self::KeyVault,
            "https://database.windows.net" => Self::Sql,
            _ => Self::Other,
        }
    }

    /// Whether a service expecting `self` accepts a token for `token`.
    pub fn accepts(self, token: Audience) -> bool {
        token == self || token == Audience::Other
    }
}

/// What the simulator knows about one issued token.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub client_id: Arc<str>,
    pub object_id: Arc<str>,
    /// The scope or resource as requested.
    pub resource: String,
    pub audience: Audience,
    pub expires_at: Instant,
    /// Expiry as Unix seconds (what `expires_on` reports).
    pub expires_on_unix: i64,
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone)]
pub(crate) enum TokenCheck {
    Missing,
    Malformed,
    Unknown,
    Expired(Arc<IssuedToken>),
    Valid(Arc<IssuedToken>),
}

impl TokenCheck {
    /// The caller's client id, when the token is one the simulator issued (even if expired).
    pub fn client_id(&self) -> Option<Arc<str>> {
        match self {
            Self::Expired(t) | Self::Valid(t) => Some(Arc::clone(&t.client_id)),
            _ => None,
        }
    }
}

/// Issued tokens by value.
#[derive(Default)]
pub(crate) struct TokenStore {
    tokens: RwLock<HashMap<String, Arc<IssuedToken>>>,
}

impl std::fmt::Debug for TokenStore {
    /// Token values are credentials: only their number is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.tokens.read().unwrap_or_else(|e| e.into_inner()).len();
        f.debug_struct("TokenStore")
            .field("tokens", &count)
            .finish()
    }
}

impl TokenStore {
    /// Issues a new token for `client_id` and `resource`, valid for `lifetime` from `now`.
    pub fn issue(
        &self,
        client_id: &str,
        object_id: &str,
        resource: &str,
        lifetime: Duration,
        now: Instant,
        clock: &SimClock,
    ) -> (String, Arc<IssuedToken>) {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let value = format!("simtok.{random}");
        let expires_at = now.checked_add(lifetime).unwrap_or(now);
        let issued = Arc::new(IssuedToken {
            client_id: Arc::from(client_id),
            object_id: Arc::from(object_id),
            resource: resource.to_string(),
            audience: Audience::of(resource),
            expires_at,
            expires_on_unix: clock.wall_after(now, lifetime).timestamp(),
        });
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= SWEEP_THRESHOLD {
            tokens.retain(|_, t| t.expires_at > now);
        }
        tokens.insert(value.clone(), Arc::clone(&issued));
        (value, issued)
    }

    /// Checks the `Authorization` header of a request at `now`.
    pub fn check(&self, authorization: Option<&str>, now: Instant) -> TokenCheck {
        use super::request::{bearer, Bearer};
        match bearer(authorization) {
            Bearer::Missing => TokenCheck::Missing,
            Bearer::Malformed => TokenCheck::Malformed,
            Bearer::Token(value) => {
                let found = self
                    .tokens
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(value)
                    .cloned();
                match found {
                    None => TokenCheck::Unknown,
                    Some(t) if now >= t.expires_at => TokenCheck::Expired(t),
                    Some(t) => TokenCheck::Valid(t),
                }
            }
        }
    }
}

/// A stable, GUID-shaped object id derived from a client id (used when the config gives none).
pub(crate) fn derived_object_id(client_id: &str) -> String {
    let digest = Sha256::digest(client_id.to_ascii_lowercase().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_classified_from_scopes_and_resources() {
        assert_eq!(
            Audience::of("https://management.azure.com/.default"),
            Audience::Arm
        );
        assert_eq!(Audience::of("https://management.azure.com/"), Audience::Arm);
        assert_eq!(
            Audience::of("https://management.core.windows.net"),
            Audience::Arm
        );
        assert_eq!(
            Audience::of("https://vault.azure.net/.default"),
            Audience::KeyVault
        );
        assert_eq!(Audience::of("https://database.windows.net/"), Audience::Sql);
        assert_eq!(
            Audience::of("http://127.0.0.1:7072/.default"),
            Audience::Other
        );
        assert!(Audience::Arm.accepts(Audience::Other));
        assert!(!Audience::Arm.accepts(Audience::KeyVault));
    }

    #[test]
    fn tokens_are_checked_for_presence_and_expiry() {
        let store = TokenStore::default();
        let clock = SimClock::new();
        let now = Instant::now();
        let (token, issued) = store.issue(
            "app",
            "oid",
            "https://management.azure.com/.default",
            Duration::from_secs(60),
            now,
            &clock,
        );
        assert!(token.starts_with("simtok.") && token.len() > 40);
        assert_eq!(issued.audience, Audience::Arm);
        let header = format!("Bearer {token}");
        assert!(matches!(
            store.check(Some(&header), now),
            TokenCheck::Valid(_)
        ));
        let later = now + Duration::from_secs(60);
        let expired = store.check(Some(&header), later);
        assert!(matches!(expired, TokenCheck::Expired(_)));
        assert_eq!(expired.client_id().as_deref(), Some("app"));
        assert!(matches!(
            store.check(Some("Bearer nope"), now),
            TokenCheck::Unknown
        ));
        assert!(matches!(store.check(None, now), TokenCheck::Missing));
        assert!(matches!(
            store.check(Some("Basic x"), now),
            TokenCheck::Malformed
        ));
    }

    #[test]
    fn derived_object_ids_are_stable_guids() {
        let a = derived_object_id("App");
        assert_eq!(a, derived_object_id("app"));
        assert_eq!(a.len(), 36);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}

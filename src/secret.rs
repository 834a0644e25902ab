//! Secrets (client secrets, tokens, function keys, connection strings) wrapped so that `Debug` and
//! `Display` can never print them; the value is reachable only through [`Secret::expose`].

use sha2::{Digest, Sha256};
use std::fmt;

/// A string that must never reach a log line or an error body.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call only where the value is sent to its legitimate destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A short, non-reversible fingerprint, used to key caches without keeping the secret in the key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("Passw0rd123!");
        assert!(!format!("{s:?}").contains("Passw0rd"));
        assert!(!format!("{s}").contains("Passw0rd"));
        assert_eq!(s.expose(), "Passw0rd123!");
    }

    #[test]
    fn fingerprint_is_stable_and_not_the_secret() {
        let a = Secret::new("one");
        assert_eq!(a.fingerprint(), Secret::new("one").fingerprint());
        assert_ne!(a.fingerprint(), Secret::new("two").fingerprint());
        assert!(!a.fingerprint().contains("one"));
    }
}

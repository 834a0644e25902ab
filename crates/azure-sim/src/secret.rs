//! The simulator's own redacting wrapper for the client secrets its principals are configured with:
//! `Debug` and `Display` never print the value; [`Secret::expose`] is the one way to read it.

use std::fmt;

/// A configured secret that must never reach a log line or a config dump.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself, for comparing it with what a client sent.
    pub fn expose(&self) -> &str {
        &self.0
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
}

//! Identifiers and Azure resource names that can only hold valid values.

use std::fmt;

/// A GUID, kept in its canonical lower-case hyphenated form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(uuid::Uuid);

impl Guid {
    /// Parse a GUID in any of the usual textual forms (hyphenated, braced, simple).
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text.trim()).ok().map(Self)
    }

    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for Guid {
    /// A GUID the store already holds as a `UNIQUEIDENTIFIER` (no text round trip).
    fn from(value: uuid::Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// A resource group or orchestrator (factory, workspace) name: non-empty, at most 90 characters, no path or query characters.
/// (ARM's own rules are stricter per resource type; we reject only what could never be valid or
/// could change the meaning of the URL we build.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceName(String);

impl ResourceName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("must not be empty".into());
        }
        if t.chars().count() > 90 {
            return Err("must be at most 90 characters".into());
        }
        if let Some(c) = t
            .chars()
            .find(|c| matches!(c, '/' | '\\' | '?' | '#' | '%' | '&') || c.is_control())
        {
            return Err(format!("must not contain {c:?}"));
        }
        Ok(Self(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Data Factory / Synapse pipeline name, following ADF's naming rules: 1–260 characters, starting with
/// a letter, digit or underscore, and none of `. + ? / < > * % & : \`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineName(String);

impl PipelineName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > 260 {
            return Err("must be at most 260 characters".into());
        }
        let first = text.chars().next().unwrap_or(' ');
        if !(first.is_alphanumeric() || first == '_') {
            return Err("must start with a letter, a digit or an underscore".into());
        }
        if let Some(c) = text.chars().find(|c| {
            matches!(
                c,
                '.' | '+' | '?' | '/' | '<' | '>' | '*' | '%' | '&' | ':' | '\\'
            ) || c.is_control()
        }) {
            return Err(format!("must not contain {c:?}"));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Names are compared case-insensitively, as ADF does.
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other) || self.0.to_lowercase() == other.to_lowercase()
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_forms() {
        let g = Guid::parse("{C5C2E1E7-1234-1234-1234-012345678910}").map(|g| g.to_string());
        assert_eq!(g.as_deref(), Some("c5c2e1e7-1234-1234-1234-012345678910"));
        assert!(Guid::parse("1234-1234-1234-1234-1234").is_none());
        assert!(Guid::parse("").is_none());
    }

    #[test]
    fn pipeline_names() {
        assert!(PipelineName::parse("Wait 1").is_ok());
        assert!(PipelineName::parse("Intentional Error").is_ok());
        assert!(PipelineName::parse("_x").is_ok());
        assert!(PipelineName::parse("a/b").is_err());
        assert!(PipelineName::parse(" lead").is_err());
        assert!(PipelineName::parse("").is_err());
        assert!(PipelineName::parse(&"x".repeat(261)).is_err());
        assert!(PipelineName::parse("Wait 1")
            .map(|p| p.matches("wait 1"))
            .unwrap_or(false));
    }

    #[test]
    fn resource_names() {
        assert!(ResourceName::parse("ADF.procfwk").is_ok());
        assert!(ResourceName::parse("rg/../x").is_err());
        assert!(ResourceName::parse("  ").is_err());
    }
}

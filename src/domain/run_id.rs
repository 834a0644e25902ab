//! A pipeline run id: the one name for the id of a run of a pipeline (a worker's, or a Parent's) in
//! the orchestrator. ADF and Synapse give GUIDs, and so do Fabric job instances, so a run id is a GUID
//! in its canonical lower-case hyphenated form; it is parsed once, at the edge (a request body, an ADF
//! answer, a store row), and goes as text on the wire (`RunId`, `runId`) and as a GUID in the store.
//! Activity run ids are a different concept and stay apart (`activity_run_id`).

use std::fmt;
use std::str::FromStr;

/// The id of a pipeline run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(uuid::Uuid);

/// Text that is not a pipeline run id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a pipeline run id (a GUID)")]
pub struct RunIdError {
    pub text: String,
}

impl RunId {
    /// Parse a run id in any of the usual GUID forms (hyphenated, braced, simple; any case).
    pub fn parse(text: &str) -> Result<Self, RunIdError> {
        uuid::Uuid::parse_str(text.trim())
            .map(Self)
            .map_err(|_| RunIdError {
                text: text.to_string(),
            })
    }

    /// A run id as the store keeps it (a `UNIQUEIDENTIFIER` column such as `PipelineRunId`).
    pub fn from_store(value: uuid::Uuid) -> Self {
        Self(value)
    }

    /// The run id as the store keeps it (a statement's `UNIQUEIDENTIFIER` parameter).
    pub fn to_store(self) -> uuid::Uuid {
        self.0
    }
}

impl From<super::Guid> for RunId {
    fn from(guid: super::Guid) -> Self {
        Self(guid.as_uuid())
    }
}

impl FromStr for RunId {
    type Err = RunIdError;
    fn from_str(text: &str) -> Result<Self, RunIdError> {
        Self::parse(text)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guid_forms_to_the_canonical_text() {
        let id = RunId::parse(" {C5C2E1E7-1234-1234-1234-012345678910} ").map(|r| r.to_string());
        assert_eq!(id.as_deref(), Ok("c5c2e1e7-1234-1234-1234-012345678910"));
        let err = RunId::parse("parent-a").map(|r| r.to_string());
        assert_eq!(
            err,
            Err(RunIdError {
                text: "parent-a".into()
            })
        );
        assert!(RunId::parse("").is_err());
    }

    #[test]
    fn serde_is_the_plain_string() {
        let id = RunId::parse("C5C2E1E7-1234-1234-1234-012345678910").expect("guid");
        let json = serde_json::to_value(id).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!("c5c2e1e7-1234-1234-1234-012345678910")
        );
        let back: RunId = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, id);
        assert!(serde_json::from_value::<RunId>(serde_json::json!("nope")).is_err());
        assert_eq!(RunId::from_store(id.to_store()), id);
    }
}

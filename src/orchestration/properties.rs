//! procfwk's properties (`[procfwk].[Properties]`, current versions), typed.

use super::LifecycleError;
use crate::store::{statements, Tx};
use std::collections::HashMap;
use std::time::Duration;

/// What happens downstream when a worker fails (procfwk 1.8+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureHandling {
    /// Nothing is blocked; the execution fails at the end.
    None,
    /// Every worker in later stages is blocked; the next stage stops the execution.
    Simple,
    /// Only the failed worker's dependants (`PipelineDependencies`) are blocked, transitively.
    DependencyChain,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Properties {
    pub override_restart: bool,
    pub status_check_every: Duration,
    pub unknown_blocks: bool,
    pub cancelled_blocks: bool,
    pub failure_handling: FailureHandling,
    pub use_batches: bool,
    /// Ours: a running execution with no activity for this long is taken to have died (its Parent was
    /// cancelled or crashed), so a new Parent may take over. Property `ExecutionStaleAfterMinutes`,
    /// default 240 (the Infant's 4-hour `Until` timeout).
    pub stale_after: Duration,
}

impl Default for Properties {
    fn default() -> Self {
        Self {
            override_restart: false,
            status_check_every: Duration::from_secs(30),
            unknown_blocks: true,
            cancelled_blocks: true,
            failure_handling: FailureHandling::Simple,
            use_batches: false,
            stale_after: Duration::from_secs(240 * 60),
        }
    }
}

fn flag(map: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, LifecycleError> {
    match map.get(name).map(|v| v.trim()) {
        None => Ok(default),
        Some("1") | Some("true") | Some("True") => Ok(true),
        Some("0") | Some("false") | Some("False") => Ok(false),
        Some(other) => Err(LifecycleError::InvalidProperty {
            name: name.into(),
            value: other.into(),
            problem: "expected 1 or 0".into(),
        }),
    }
}

fn number(map: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, LifecycleError> {
    match map.get(name).map(|v| v.trim()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| LifecycleError::InvalidProperty {
            name: name.into(),
            value: v.into(),
            problem: "expected a whole number".into(),
        }),
    }
}

impl Properties {
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, LifecycleError> {
        let d = Self::default();
        let failure_handling = match map.get("FailureHandling").map(|v| v.trim()) {
            None | Some("Simple") => FailureHandling::Simple,
            Some("None") => FailureHandling::None,
            Some("DependencyChain") => FailureHandling::DependencyChain,
            Some(other) => {
                return Err(LifecycleError::InvalidProperty {
                    name: "FailureHandling".into(),
                    value: other.into(),
                    problem: "accepted values: None, Simple, DependencyChain".into(),
                })
            }
        };
        Ok(Self {
            override_restart: flag(map, "OverideRestart", d.override_restart)?,
            status_check_every: Duration::from_secs(number(
                map,
                "PipelineStatusCheckDuration",
                30,
            )?),
            unknown_blocks: flag(map, "UnknownWorkerResultBlocks", d.unknown_blocks)?,
            cancelled_blocks: flag(map, "CancelledWorkerResultBlocks", d.cancelled_blocks)?,
            failure_handling,
            use_batches: flag(map, "UseExecutionBatches", d.use_batches)?,
            stale_after: Duration::from_secs(60 * number(map, "ExecutionStaleAfterMinutes", 240)?),
        })
    }

    pub async fn read(tx: &mut dyn Tx) -> Result<Self, LifecycleError> {
        let rows = tx.query(&statements::CURRENT_PROPERTIES, &[]).await?;
        let mut map = HashMap::new();
        for row in rows {
            map.insert(
                row.text("PropertyName")?,
                row.opt_text("PropertyValue")?.unwrap_or_default(),
            );
        }
        Self::from_map(&map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Result<Properties, LifecycleError> {
        Properties::from_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn typed_values() {
        let p = props(&[
            ("OverideRestart", "1"),
            ("FailureHandling", "DependencyChain"),
            ("PipelineStatusCheckDuration", "5"),
        ]);
        let p = p.unwrap_or_default();
        assert!(p.override_restart);
        assert_eq!(p.failure_handling, FailureHandling::DependencyChain);
        assert_eq!(p.status_check_every, Duration::from_secs(5));
        assert!(props(&[("FailureHandling", "Sometimes")]).is_err());
        assert!(props(&[("OverideRestart", "yes")]).is_err());
        assert_eq!(props(&[]).ok(), Some(Properties::default()));
    }
}

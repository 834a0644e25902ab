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

/// Where the secrets of `dbo.ServicePrincipals` are kept (procfwk 1.8.2+, property `SPNHandlingMethod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpnHandling {
    /// `PrincipalSecret`, `ENCRYPTBYPASSPHRASE`'d with procfwk's passphrase (procfwk's default). A row
    /// with no `PrincipalSecret` but Key Vault URLs is read from Key Vault.
    StoreInDatabase,
    /// `PrincipalIdUrl` / `PrincipalSecretUrl`: Key Vault secret URLs.
    StoreInKeyVault,
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
    /// `SPNHandlingMethod` (default `StoreInDatabase`, as procfwk's).
    pub spn_handling: SpnHandling,
    /// Ours: a worker without a credential (no `PipelineAuthLink` for it or its orchestrator) runs as
    /// the Function App's managed identity. Property `UseManagedIdentityForUnlinkedWorkers`, default 0:
    /// such a worker is refused.
    pub unlinked_workers_use_managed_identity: bool,
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
            spn_handling: SpnHandling::StoreInDatabase,
            unlinked_workers_use_managed_identity: false,
        }
    }
}

/// The property that lets workers without a credential run as the Function App's managed identity.
pub const UNLINKED_WORKERS_PROPERTY: &str = "UseManagedIdentityForUnlinkedWorkers";

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
        let spn_handling = match map.get("SPNHandlingMethod").map(|v| v.trim()) {
            None | Some("StoreInDatabase") => SpnHandling::StoreInDatabase,
            Some("StoreInKeyVault") => SpnHandling::StoreInKeyVault,
            Some(other) => {
                return Err(LifecycleError::InvalidProperty {
                    name: "SPNHandlingMethod".into(),
                    value: other.into(),
                    problem: "accepted values: StoreInDatabase, StoreInKeyVault".into(),
                })
            }
        };
        Ok(Self {
            spn_handling,
            unlinked_workers_use_managed_identity: flag(
                map,
                UNLINKED_WORKERS_PROPERTY,
                d.unlinked_workers_use_managed_identity,
            )?,
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
        assert!(props(&[("SPNHandlingMethod", "InTheCloud")]).is_err());
        let kv = props(&[
            ("SPNHandlingMethod", "StoreInKeyVault"),
            ("UseManagedIdentityForUnlinkedWorkers", "1"),
        ])
        .unwrap_or_default();
        assert_eq!(kv.spn_handling, SpnHandling::StoreInKeyVault);
        assert!(kv.unlinked_workers_use_managed_identity);
        assert!(!Properties::default().unlinked_workers_use_managed_identity);
        assert_eq!(props(&[]).ok(), Some(Properties::default()));
    }
}

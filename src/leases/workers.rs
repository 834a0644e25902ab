//! Workers that need a self-hosted runtime (`procfwk.WorkerRuntimes`): which VM pool a worker of the
//! metadata needs, and the lease holder that stands for one worker of one execution. Metadata-mode
//! `ExecutePipelineV2` takes the lease and creates the run only once the pool is ready;
//! `CheckPipelineStatus` renews it while the run goes on and releases it when the run is over.

use super::{PoolSpec, RuntimeRef, Sizing, MAX_NODES};
use crate::config::VmSettings;
use crate::domain::{Guid, ResourceName, WorkerKey};
use crate::orchestration::KeyParams;
use crate::store::statements as sql;
use crate::store::{StoreError, Transition, Tx};

/// The pool a worker needs, with the lease length to take on it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRuntime {
    pub spec: PoolSpec,
    pub lease_secs: u32,
}

/// The lease holder of one worker of one execution.
pub fn holder(key: &WorkerKey) -> String {
    format!(
        "worker:{}:{}:{}",
        key.execution_id, key.stage_id, key.pipeline_id
    )
}

/// Read the runtime a worker needs (`None`: it needs none).
pub struct ReadWorkerRuntime {
    pub pipeline_id: i32,
    pub defaults: VmSettings,
}

fn bad(column: &str, problem: impl Into<String>) -> StoreError {
    StoreError::Data {
        column: column.into(),
        problem: problem.into(),
    }
}

fn name(column: &str, text: &str) -> Result<ResourceName, StoreError> {
    ResourceName::parse(text.trim()).map_err(|p| bad(column, p))
}

#[async_trait::async_trait]
impl Transition for ReadWorkerRuntime {
    type Output = Option<WorkerRuntime>;
    type Error = StoreError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Option<WorkerRuntime>, StoreError> {
        let rows = tx
            .query(&sql::WORKER_RUNTIME, &[self.pipeline_id.into()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let subscription = Guid::parse(&row.text("SubscriptionId")?)
            .ok_or_else(|| bad("SubscriptionId", "is not a GUID"))?;
        let resource_group = name("ResourceGroupName", &row.text("ResourceGroupName")?)?;
        let vms = row
            .text("VmNames")?
            .split(',')
            .filter(|v| !v.trim().is_empty())
            .map(|v| name("VmNames", v))
            .collect::<Result<Vec<_>, _>>()?;
        if vms.is_empty() || vms.len() > MAX_NODES {
            return Err(bad("VmNames", format!("must name 1 to {MAX_NODES} VMs")));
        }
        let runtime = RuntimeRef::from_row(row, subscription, &resource_group)?;
        let setting = |column: &str, default: u32| -> Result<u32, StoreError> {
            Ok(row
                .opt_i64(column)?
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(default))
        };
        Ok(Some(WorkerRuntime {
            spec: PoolSpec {
                subscription,
                resource_group,
                vms,
                runtime,
                sizing: Sizing {
                    jobs_per_node: setting("JobsPerNode", self.defaults.jobs_per_node)?.max(1),
                    min_nodes: setting("MinNodes", self.defaults.min_nodes)?
                        .clamp(1, MAX_NODES as u32),
                    grace_secs: setting("GraceSeconds", self.defaults.grace_secs)?,
                },
            },
            lease_secs: setting("LeaseSeconds", self.defaults.lease_secs)?.max(1),
        }))
    }
}

/// The status of a worker whose runtime VM could not be started or made ready.
pub const RUNTIME_FAILED_STATUS: &str = "StartRuntimeVmError";

/// Record a worker whose VM could not be started (VmPower worker mode) as failed before it ran: its
/// status, start and end time, its log row and the failure-handling rule, in one transaction. A worker
/// that already started, or is blocked or over, is left as it is; returns whether it was recorded.
pub struct WorkerRuntimeFailed {
    pub key: WorkerKey,
    pub now: chrono::NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for WorkerRuntimeFailed {
    type Output = bool;
    type Error = crate::orchestration::LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, Self::Error> {
        let [execution, stage, pipeline] = self.key.params();
        let updated = tx
            .execute(
                &sql::FAIL_WAITING_WORKER,
                &[
                    execution,
                    stage,
                    pipeline,
                    RUNTIME_FAILED_STATUS.into(),
                    self.now.into(),
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        tx.execute(&sql::LOG_WORKER, &self.key.params()).await?;
        let props = crate::orchestration::Properties::read(tx).await?;
        crate::orchestration::blocking::after_failure(tx, &props, &self.key).await?;
        Ok(true)
    }
}

/// Renew one holder's lease without a power decision (a worker's run is going on: the VM is known to be
/// up, and the sweeper reconciles anyway). Returns whether the lease was there to renew.
pub struct RenewLease {
    pub pool_key: String,
    pub holder: String,
    pub lease_secs: u32,
    pub now: chrono::NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for RenewLease {
    type Output = bool;
    type Error = StoreError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, StoreError> {
        let expires = self.now + chrono::Duration::seconds(i64::from(self.lease_secs));
        let renewed = tx
            .execute(
                &sql::VM_LEASE_RENEW,
                &[
                    self.pool_key.as_str().into(),
                    self.holder.as_str().into(),
                    self.now.into(),
                    expires.into(),
                ],
            )
            .await?;
        Ok(renewed > 0)
    }
}

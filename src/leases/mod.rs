//! VM leases: self-hosted integration runtime VMs that are allocated only while some pipeline holds a
//! lease on them.
//!
//! A **pool** is one VM, or the up-to-four node VMs of one runtime. Each caller (a pipeline run, a
//! worker) holds a **lease** on the pool that expires unless renewed, so a holder that crashed never
//! keeps the VM on for ever. Every decision about a pool — take, renew or release a lease, expire old
//! ones, start needed nodes, deallocate surplus ones after the idle grace — runs in **one transaction
//! that holds the pool's row lock** in the metadata store, including the ARM calls it makes; so a
//! `start` can never slip in between another caller's "no lease left" check and its deallocation. State
//! lives only in the store: any number of Function App instances may decide about the same pool.
//!
//! - [`plan`]: the pure rules (nodes needed, grace, what to start and deallocate).
//! - [`decide`]: the transaction that applies them against the store and the [`PowerControl`] port.
//! - [`report`]: VM-hours against the lease lower bound, from the power log.

pub mod decide;
pub mod gate;
pub mod intents;
pub mod plan;
pub mod report;
pub mod workers;

#[cfg(test)]
mod model_tests;

pub use decide::{Change, Decision, NodeReport, PoolReport, DEFAULT_LOCK_WAIT};
pub use plan::Sizing;

use crate::domain::UpstreamError;
use crate::domain::{Guid, PowerState, ResourceName};

/// One VM, by its ARM coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmRef {
    pub subscription: Guid,
    pub resource_group: ResourceName,
    pub name: ResourceName,
}

/// The self-hosted integration runtime whose nodes run on a pool's VMs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeRef {
    pub subscription: Guid,
    pub resource_group: ResourceName,
    /// The orchestrator the runtime belongs to (an ADF factory: the `FactoryName` column).
    pub orchestrator: ResourceName,
    pub name: ResourceName,
}

impl RuntimeRef {
    /// The runtime named by a row's `FactoryName`, `FactoryResourceGroupName` (default: the VMs'
    /// resource group) and `IntegrationRuntimeName` columns; `None` when either name is NULL.
    pub fn from_row(
        row: &crate::store::Row,
        subscription: Guid,
        vm_resource_group: &ResourceName,
    ) -> Result<Option<Self>, crate::store::StoreError> {
        let name = |column: &str, text: &str| {
            ResourceName::parse(text.trim()).map_err(|problem| crate::store::StoreError::Data {
                column: column.into(),
                problem,
            })
        };
        let (Some(orchestrator), Some(runtime)) = (
            row.opt_text("FactoryName")?,
            row.opt_text("IntegrationRuntimeName")?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Self {
            subscription,
            resource_group: match row.opt_text("FactoryResourceGroupName")? {
                Some(rg) => name("FactoryResourceGroupName", &rg)?,
                None => vm_resource_group.clone(),
            },
            orchestrator: name("FactoryName", &orchestrator)?,
            name: name("IntegrationRuntimeName", &runtime)?,
        }))
    }
}

/// A pool as a caller describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSpec {
    pub subscription: Guid,
    pub resource_group: ResourceName,
    /// Node VMs in the order they are used (1 to 4).
    pub vms: Vec<ResourceName>,
    pub runtime: Option<RuntimeRef>,
    pub sizing: Sizing,
}

/// Longest pool key stored (NVARCHAR: 2 bytes a character; with a 200-character holder the lease key
/// is at most 900 bytes).
pub const MAX_POOL_KEY_CHARS: usize = 250;

/// Most node VMs of one self-hosted integration runtime.
pub const MAX_NODES: usize = 4;

impl PoolSpec {
    /// The pool's key in the store: subscription, resource group and VM names, lower-cased. A key
    /// longer than [`MAX_POOL_KEY_CHARS`] names its VMs by a hash instead, so that with a holder of up
    /// to 200 characters the `VmLeases` key stays within SQL Server's 900 bytes.
    pub fn key(&self) -> String {
        let vms: Vec<&str> = self.vms.iter().map(ResourceName::as_str).collect();
        let key = self.scoped(&vms.join(","));
        if key.chars().count() <= MAX_POOL_KEY_CHARS {
            return key;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(vms.join(",").to_ascii_lowercase().as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.scoped(&format!("sha256-{hex}"))
    }

    /// `{subscription}/{resource group}/{name}`, lower-cased.
    fn scoped(&self, name: &str) -> String {
        format!(
            "{}/{}/{}",
            self.subscription,
            self.resource_group.as_str(),
            name
        )
        .to_ascii_lowercase()
    }

    pub fn vm(&self, index: usize) -> Option<VmRef> {
        self.vms.get(index).map(|name| VmRef {
            subscription: self.subscription,
            resource_group: self.resource_group.clone(),
            name: name.clone(),
        })
    }

    /// A VM's key (a VM belongs to one pool at most).
    pub fn vm_key(&self, index: usize) -> Option<String> {
        self.vms.get(index).map(|name| self.scoped(name.as_str()))
    }
}

/// How ARM answered a power operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerRequest {
    /// 200 or 202: accepted (or already done). `operation_url` is the `Azure-AsyncOperation` (or
    /// `Location`) to follow it.
    Accepted {
        operation_url: Option<String>,
        retry_after_secs: Option<u64>,
    },
    /// 409: another operation is in flight (e.g. a deallocation); try again later.
    Conflict { code: String, message: String },
}

/// Where a long-running power operation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationOutcome {
    InProgress,
    Succeeded,
    /// `Failed` or `Canceled` (e.g. `OperationPreempted`), with what ARM said.
    Failed(String),
}

/// One node of a runtime, as `getStatus` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeNode {
    pub node_name: String,
    pub machine_name: String,
    /// `Online`, `Offline`, `Limited`, `Initializing`, ...
    pub status: String,
}

impl RuntimeNode {
    /// Whether this node runs on `vm` (its machine or node name is the VM's name).
    pub fn runs_on(&self, vm: &str) -> bool {
        self.machine_name.eq_ignore_ascii_case(vm) || self.node_name.eq_ignore_ascii_case(vm)
    }
}

/// A runtime's `getStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeStatus {
    /// `Online`, `Offline`, `Limited`, `NeedRegistration`, ...
    pub state: String,
    pub nodes: Vec<RuntimeNode>,
}

/// The port through which decisions reach VMs and runtimes: ARM in production
/// (`adapters::compute::ArmPower`), the simulator's VM engine in model tests.
#[async_trait::async_trait]
pub trait PowerControl: Send + Sync {
    /// The VM's power state from its instance view.
    async fn power_state(&self, vm: &VmRef) -> Result<PowerState, UpstreamError>;
    async fn start(&self, vm: &VmRef) -> Result<PowerRequest, UpstreamError>;
    async fn deallocate(&self, vm: &VmRef) -> Result<PowerRequest, UpstreamError>;
    /// Follow an operation from [`PowerRequest::Accepted::operation_url`].
    async fn operation(&self, url: &str) -> Result<OperationOutcome, UpstreamError>;
    async fn runtime_status(&self, runtime: &RuntimeRef) -> Result<RuntimeStatus, UpstreamError>;
}

/// What can go wrong deciding about a pool.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request contradicts the pool as the store knows it.
    #[error("{0}")]
    Conflict(String),
    /// No pool with that key (sweeper and report only).
    #[error("no VM pool {0}")]
    UnknownPool(String),
}

impl crate::store::TransientCheck for LeaseError {
    fn transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient() || e.is_unique_violation(),
            _ => false,
        }
    }
    fn minimum_wait(&self) -> std::time::Duration {
        match self {
            Self::Store(e) => crate::store::TransientCheck::minimum_wait(e),
            _ => std::time::Duration::ZERO,
        }
    }

    fn missing_object(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_missing_object())
    }
}

//! `VmPower`: start the VM (or the node VMs) of a self-hosted integration runtime while some pipeline
//! holds a lease on it, and deallocate it once none does and the idle grace has passed.
//!
//! - `start`: take or renew the holder's lease; start needed nodes that are off. Answers at once — a VM
//!   takes minutes to boot, ADF gives a call 230 s — so the caller polls `status` until `Ready`.
//! - `status`: renew the holder's lease (if it holds one) and reconcile: a pool with live leases whose
//!   VM is deallocated (or was deallocating, ARM's 409) is started again.
//! - `stop`: release the lease; deallocate when no live lease remains and the grace has passed.
//!
//! The decision itself lives in [`crate::leases`]; this module parses the request and shapes the answer.
//!
//! **Worker mode**: a body that names a worker of an execution (`{"action", "executionId", "stageId",
//! "pipelineId"}`, as `04-Infant-VmPower` sends) takes the VM pool from the worker's
//! `procfwk.WorkerRuntimes` row, holds the lease as that worker (the holder metadata-mode
//! `ExecutePipelineV2` and `CheckPipelineStatus` use, so they renew and release the same lease) with the
//! Function App's managed identity, and, when the VM cannot be started or made ready (ARM refuses: 404, 403,
//! …), records the worker as failed (`StartRuntimeVmError`, with the failure-handling rule applied to its
//! dependants) before answering with the error.

use super::{AppState, FunctionError, Reply};
use crate::domain::request::{parse_credentials, Fields};
use crate::domain::{Guid, RequestError, ResourceName};
use crate::leases::workers::{holder as worker_holder, ReadWorkerRuntime};
use crate::leases::{
    Change, Decision, LeaseError, PoolReport, PoolSpec, RuntimeRef, Sizing, MAX_NODES,
};
use crate::orchestration::LifecycleError;
use serde_json::{json, Value};

/// What the caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Status,
    Stop,
}

impl Action {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "start" => Some(Self::Start),
            "status" => Some(Self::Status),
            "stop" => Some(Self::Stop),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Status => "status",
            Self::Stop => "stop",
        }
    }
}

/// A parsed VmPower request.
#[derive(Debug)]
pub struct VmPowerRequest {
    pub action: Action,
    pub spec: PoolSpec,
    pub holder: Option<String>,
    pub lease_secs: u32,
    pub credentials: crate::domain::Credentials,
}

/// Longest holder accepted (the column is 200 characters).
const MAX_HOLDER: usize = 200;

fn bounded(
    fields: &Fields<'_>,
    key: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, RequestError> {
    match fields.integer(key)? {
        None => Ok(default),
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                RequestError::new(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                )
            }),
    }
}

fn resource(fields: &Fields<'_>, key: &str) -> Result<Option<ResourceName>, RequestError> {
    fields
        .text(key)?
        .map(|t| ResourceName::parse(&t).map_err(|p| RequestError::new(key, p)))
        .transpose()
}

fn parse_action(fields: &Fields<'_>) -> Result<Action, RequestError> {
    let text = fields.required_text("action")?;
    Action::parse(&text)
        .ok_or_else(|| RequestError::new("action", "must be one of start, status, stop"))
}

/// `resourceGroupName`, or its older spelling `resourceGroup`.
fn parse_resource_group(fields: &Fields<'_>) -> Result<ResourceName, RequestError> {
    match resource(fields, "resourceGroupName")? {
        Some(rg) => Ok(rg),
        None => resource(fields, "resourceGroup")?
            .ok_or_else(|| RequestError::new("resourceGroupName", "is required")),
    }
}

/// The pool's VMs: `vmNames` (an array) or a single `vmName`; one at least, at most [`MAX_NODES`], each
/// named once (names compare case-insensitively, as Azure's do).
fn parse_vm_names(fields: &Fields<'_>) -> Result<Vec<ResourceName>, RequestError> {
    let not_names = || RequestError::new("vmNames", "must be an array of VM names");
    let mut vms = Vec::new();
    match fields.get("vmNames") {
        Some(Value::Array(items)) => {
            for item in items {
                let text = item.as_str().ok_or_else(not_names)?;
                vms.push(ResourceName::parse(text).map_err(|p| RequestError::new("vmNames", p))?);
            }
        }
        Some(_) => return Err(not_names()),
        None => vms.extend(resource(fields, "vmName")?),
    }
    if vms.is_empty() {
        return Err(RequestError::new("vmName", "is required"));
    }
    if vms.len() > MAX_NODES {
        return Err(RequestError::new(
            "vmNames",
            format!("a self-hosted integration runtime has at most {MAX_NODES} nodes"),
        ));
    }
    for (i, a) in vms.iter().enumerate() {
        if vms[..i]
            .iter()
            .any(|b| b.as_str().eq_ignore_ascii_case(a.as_str()))
        {
            return Err(RequestError::new("vmNames", format!("names {a} twice")));
        }
    }
    Ok(vms)
}

/// The lease holder (trimmed, at most [`MAX_HOLDER`] characters); only `status` may go without one.
fn parse_holder(fields: &Fields<'_>, action: Action) -> Result<Option<String>, RequestError> {
    let holder = fields.text("holder")?.map(|h| h.trim().to_string());
    if let Some(h) = &holder {
        if h.chars().count() > MAX_HOLDER {
            return Err(RequestError::new(
                "holder",
                format!("is longer than {MAX_HOLDER} characters"),
            ));
        }
    }
    if holder.is_none() && action != Action::Status {
        return Err(RequestError::new(
            "holder",
            "is required for start and stop (use the calling pipeline's run id)",
        ));
    }
    Ok(holder)
}

/// The self-hosted integration runtime whose nodes the VMs are: `factoryName` and
/// `integrationRuntimeName` together or neither; the factory's resource group defaults to the VMs'.
fn parse_runtime(
    fields: &Fields<'_>,
    subscription: Guid,
    resource_group: &ResourceName,
) -> Result<Option<RuntimeRef>, RequestError> {
    let factory = resource(fields, "factoryName")?;
    let name = resource(fields, "integrationRuntimeName")?;
    match (factory, name) {
        (Some(factory), Some(name)) => Ok(Some(RuntimeRef {
            subscription,
            resource_group: resource(fields, "factoryResourceGroupName")?
                .unwrap_or_else(|| resource_group.clone()),
            orchestrator: factory,
            name,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(RequestError::new(
            "integrationRuntimeName",
            "is required when factoryName is given",
        )),
        (None, Some(_)) => Err(RequestError::new(
            "factoryName",
            "is required when integrationRuntimeName is given",
        )),
    }
}

/// How many nodes the pool runs and how long it stays up idle, each defaulting to the settings.
fn parse_sizing(
    fields: &Fields<'_>,
    defaults: &crate::config::VmSettings,
) -> Result<Sizing, RequestError> {
    Ok(Sizing {
        jobs_per_node: bounded(
            fields,
            "jobsPerNode",
            defaults.jobs_per_node.max(1),
            1..=1000,
        )?,
        min_nodes: bounded(
            fields,
            "minNodes",
            defaults.min_nodes.clamp(1, MAX_NODES as u32),
            1..=MAX_NODES as u32,
        )?,
        grace_secs: bounded(fields, "graceSeconds", defaults.grace_secs, 0..=7 * 86_400)?,
    })
}

impl VmPowerRequest {
    pub fn parse(body: &Value, defaults: &crate::config::VmSettings) -> Result<Self, RequestError> {
        let fields = Fields::new(body)?;
        let action = parse_action(&fields)?;
        let subscription = fields.guid("subscriptionId", "Subscription Id")?;
        let resource_group = parse_resource_group(&fields)?;
        let vms = parse_vm_names(&fields)?;
        let holder = parse_holder(&fields, action)?;
        let runtime = parse_runtime(&fields, subscription, &resource_group)?;
        let sizing = parse_sizing(&fields, defaults)?;
        let lease_secs = bounded(&fields, "leaseSeconds", defaults.lease_secs, 1..=7 * 86_400)?;
        Ok(Self {
            action,
            spec: PoolSpec {
                subscription,
                resource_group,
                vms,
                runtime,
                sizing,
            },
            holder,
            lease_secs,
            credentials: parse_credentials(&fields)?,
        })
    }

    fn change(&self) -> Change {
        match (self.action, self.holder.clone()) {
            (Action::Start, Some(holder)) => Change::Take {
                holder,
                lease_secs: self.lease_secs,
            },
            (Action::Stop, Some(holder)) => Change::Release { holder },
            (Action::Status, Some(holder)) => Change::Renew {
                holder,
                lease_secs: self.lease_secs,
            },
            _ => Change::Observe,
        }
    }
}

impl From<LeaseError> for FunctionError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Store(s) => FunctionError::Lifecycle(s.into()),
            LeaseError::Upstream(u) => FunctionError::Upstream(u),
            LeaseError::Conflict(message) => FunctionError::Conflict {
                message,
                details: Value::Null,
            },
            LeaseError::UnknownPool(key) => FunctionError::Conflict {
                message: format!("no VM pool {key}"),
                details: Value::Null,
            },
        }
    }
}

/// The current time as the store keeps it (UTC, no offset).
pub fn utc_now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// The response body (field names are read verbatim by ADF expressions).
pub fn response(action: &str, holder: Option<&str>, report: &PoolReport, poll_secs: u32) -> Value {
    let stamp = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let names: Vec<&str> = report.nodes.iter().map(|n| n.vm_name.as_str()).collect();
    json!({
        "VmName": names.join(","),
        "Action": action,
        "PowerState": report.power_state.as_str(),
        "Ready": report.ready,
        "ActiveLeases": report.active_leases,
        "Holder": holder,
        "LeaseExpiresAt": report.lease_expires.map(stamp),
        "Started": report.started,
        "Deallocated": report.deallocated,
        "DeallocateAfter": report.deallocate_after.map(stamp),
        "Deferred": report.deferred,
        "RuntimeState": report.runtime_state,
        "NodesNeeded": report.nodes_needed,
        // ARM's Retry-After for an operation just started, if longer than our own poll interval.
        "RetryAfterSeconds": if report.ready {
            0
        } else {
            u64::from(poll_secs).max(report.retry_after_secs.unwrap_or(0))
        },
        "Nodes": report.nodes.iter().map(|n| json!({
            "VmName": n.vm_name,
            "PowerState": n.power_state.as_str(),
            "Needed": n.needed,
            "Ready": n.ready,
            "RuntimeNodeStatus": n.runtime_node_status,
        })).collect::<Vec<_>>(),
    })
}

/// VmPower for a worker of an execution (see the module documentation).
async fn handle_for_worker(state: &AppState, fields: &Fields<'_>) -> Result<Reply, FunctionError> {
    let action_text = fields.required_text("action")?;
    let action = Action::parse(&action_text)
        .ok_or_else(|| RequestError::new("action", "must be one of start, status, stop"))?;
    let key = super::metadata_worker::worker_key(fields)?
        .ok_or_else(|| RequestError::new("executionId", "is required"))?;
    let store = state.store().await?;
    let runtime = store
        .run(&ReadWorkerRuntime {
            pipeline_id: key.pipeline_id,
            defaults: state.settings.vm.clone(),
        })
        .await
        .map_err(LifecycleError::from)?
        .ok_or_else(|| {
            RequestError::new(
                "pipelineId",
                "names a worker without a procfwk.WorkerRuntimes row (it needs no VM)",
            )
        })?;
    let holder = worker_holder(&key);
    let change = match action {
        Action::Start => Change::Take {
            holder: holder.clone(),
            lease_secs: runtime.lease_secs,
        },
        Action::Status => Change::Renew {
            holder: holder.clone(),
            lease_secs: runtime.lease_secs,
        },
        Action::Stop => Change::Release {
            holder: holder.clone(),
        },
    };
    let report = match super::metadata_worker::runtime_decision(state, store, &runtime, change)
        .await
    {
        Ok(report) => report,
        Err(e) => {
            if action == Action::Stop {
                tracing::warn!(%key, pool = %runtime.spec.key(), error = %e, "VmPower stop failed for the worker; its lease expires by itself and the idle sweep deallocates the VM");
            } else if matches!(e, FunctionError::Upstream(_)) {
                super::metadata_worker::record_runtime_failure(store, key, &e).await;
            }
            return Err(e);
        }
    };
    tracing::info!(
        %key,
        pool = %report.pool_key,
        action = action.as_str(),
        power_state = report.power_state.as_str(),
        ready = report.ready,
        active_leases = report.active_leases,
        "VmPower decision for a worker"
    );
    Ok(Reply::ok(response(
        action.as_str(),
        Some(&holder),
        &report,
        state.settings.vm.poll_secs,
    )))
}

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    {
        let fields = Fields::new(body)?;
        if fields.has("executionId") {
            return handle_for_worker(state, &fields).await;
        }
    }
    let request = VmPowerRequest::parse(body, &state.settings.vm)?;
    let credential = state
        .azure
        .identity
        .credential(&request.credentials)
        .await?;
    let store = state.store().await?;
    let power = state.arm_power(credential);
    let decision = Decision::new(request.spec.clone(), request.change(), utc_now(), power)
        .with_lock_wait(state.settings.vm.lock_wait);
    let report = decision.run(store).await?;
    tracing::info!(
        pool = %report.pool_key,
        action = request.action.as_str(),
        power_state = report.power_state.as_str(),
        ready = report.ready,
        active_leases = report.active_leases,
        started = report.started,
        deallocated = report.deallocated,
        "VmPower decision"
    );
    Ok(Reply::ok(response(
        request.action.as_str(),
        request.holder.as_deref(),
        &report,
        state.settings.vm.poll_secs,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmSettings;

    fn parse(body: Value) -> Result<VmPowerRequest, RequestError> {
        VmPowerRequest::parse(&body, &VmSettings::default())
    }

    fn base() -> Value {
        json!({"action": "start", "subscriptionId": "12345678-1234-1234-1234-012345678910",
               "resourceGroupName": "ADF.procfwk", "vmName": "shir-vm-1", "holder": "run-1"})
    }

    #[test]
    fn parses_a_single_vm_with_defaults() {
        let r = parse(base()).map_err(|e| e.to_string());
        let r = r.as_ref().ok();
        assert_eq!(r.map(|r| r.action), Some(Action::Start));
        assert_eq!(r.map(|r| r.lease_secs), Some(1800));
        assert_eq!(r.map(|r| r.spec.sizing.grace_secs), Some(600));
        assert_eq!(
            r.map(|r| r.spec.key()),
            Some("12345678-1234-1234-1234-012345678910/adf.procfwk/shir-vm-1".to_string())
        );
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (json!({"action": "reboot"}), "action"),
            (json!({"subscriptionId": "nope"}), "subscriptionId"),
            (json!({"resourceGroupName": null}), "resourceGroupName"),
            (json!({"vmName": null}), "vmName"),
            (
                json!({"vmName": null, "vmNames": ["a", "b", "c", "d", "e"]}),
                "vmNames",
            ),
            (json!({"vmName": null, "vmNames": ["a", "A"]}), "vmNames"),
            (json!({"holder": null}), "holder"),
            (json!({"holder": "x".repeat(201)}), "holder"),
            (json!({"leaseSeconds": 0}), "leaseSeconds"),
            (json!({"graceSeconds": -1}), "graceSeconds"),
            (json!({"minNodes": 5}), "minNodes"),
            (
                json!({"factoryName": "WorkersFactory"}),
                "integrationRuntimeName",
            ),
            (
                json!({"tenantId": "12345678-1234-1234-1234-012345678910"}),
                "applicationId",
            ),
        ];
        for (patch, field) in cases {
            let mut body = base();
            for (k, v) in patch.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            let err = parse(body).err().map(|e| e.field);
            assert_eq!(err.as_deref(), Some(field), "{patch}");
        }
    }

    #[test]
    fn says_what_is_wrong_with_the_field() {
        let cases = [
            (
                json!({"action": "reboot"}),
                "action: must be one of start, status, stop",
            ),
            (json!({"vmName": null}), "vmName: is required"),
            (
                json!({"vmName": null, "vmNames": "a"}),
                "vmNames: must be an array of VM names",
            ),
            (
                json!({"vmName": null, "vmNames": ["a", 1]}),
                "vmNames: must be an array of VM names",
            ),
            (
                json!({"vmName": null, "vmNames": []}),
                "vmName: is required",
            ),
            (
                json!({"vmName": null, "vmNames": ["a", "b", "c", "d", "e"]}),
                "vmNames: a self-hosted integration runtime has at most 4 nodes",
            ),
            (
                json!({"vmName": null, "vmNames": ["a", "b", "A"]}),
                "vmNames: names A twice",
            ),
            (
                json!({"holder": "x".repeat(201)}),
                "holder: is longer than 200 characters",
            ),
            (
                json!({"holder": null}),
                "holder: is required for start and stop (use the calling pipeline's run id)",
            ),
            (
                json!({"integrationRuntimeName": "IR"}),
                "factoryName: is required when integrationRuntimeName is given",
            ),
            (
                json!({"factoryName": "F"}),
                "integrationRuntimeName: is required when factoryName is given",
            ),
            (
                json!({"jobsPerNode": 0}),
                "jobsPerNode: must be between 1 and 1000",
            ),
            (json!({"minNodes": 0}), "minNodes: must be between 1 and 4"),
            (
                json!({"graceSeconds": 604_801}),
                "graceSeconds: must be between 0 and 604800",
            ),
            (
                json!({"leaseSeconds": 0}),
                "leaseSeconds: must be between 1 and 604800",
            ),
        ];
        for (patch, message) in cases {
            let mut body = base();
            for (k, v) in patch.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            let err = parse(body).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(message), "{patch}");
        }
    }

    #[test]
    fn takes_the_older_resource_group_key_and_defaults_the_factorys_to_it() {
        let mut body = base();
        body["resourceGroupName"] = Value::Null;
        body["resourceGroup"] = json!("RG-Old");
        body["vmName"] = Value::Null;
        body["vmNames"] = json!(["vm-a", "vm-b"]);
        body["factoryName"] = json!("WorkersFactory");
        body["integrationRuntimeName"] = json!("SelfHosted");
        let r = parse(body).map_err(|e| e.to_string());
        let r = r.as_ref().ok();
        assert_eq!(r.map(|r| r.spec.resource_group.as_str()), Some("RG-Old"));
        assert_eq!(r.map(|r| r.spec.vms.len()), Some(2));
        let runtime = r.and_then(|r| r.spec.runtime.as_ref());
        assert_eq!(runtime.map(|rt| rt.resource_group.as_str()), Some("RG-Old"));
        assert_eq!(runtime.map(|rt| rt.name.as_str()), Some("SelfHosted"));
        let mut body = base();
        body["factoryName"] = json!("WorkersFactory");
        body["integrationRuntimeName"] = json!("SelfHosted");
        body["factoryResourceGroupName"] = json!("RG-Factory");
        let r = parse(body).map_err(|e| e.to_string());
        let runtime = r.as_ref().ok().and_then(|r| r.spec.runtime.as_ref());
        assert_eq!(
            runtime.map(|rt| rt.resource_group.as_str()),
            Some("RG-Factory")
        );
    }

    #[test]
    fn status_needs_no_holder_and_stop_releases() {
        let mut body = base();
        body["action"] = json!("STATUS");
        body["holder"] = Value::Null;
        let r = parse(body).map_err(|e| e.to_string());
        assert_eq!(r.map(|r| r.change()), Ok(Change::Observe));
        let mut body = base();
        body["action"] = json!("stop");
        let r = parse(body).map_err(|e| e.to_string());
        assert_eq!(
            r.map(|r| r.change()),
            Ok(Change::Release {
                holder: "run-1".into()
            })
        );
    }
}

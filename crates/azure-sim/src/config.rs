//! What the simulator pretends exists: worker pipelines, service principals, factories, Key Vault
//! secrets, the managed identity, virtual machines and the self-hosted integration runtimes whose nodes
//! they host, the time scale and the fault settings. [`SimConfig::sample`] is
//! procfwk's sample set of workers; a JSON file (snake_case keys, every key optional) replaces any part
//! of it. Everything is checked once, in [`SimConfig::validate`], so request handlers can trust it.

use super::compute::PowerState;
use super::SimError;
use crate::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

/// The sample tenant (and subscription) id of procfwk's metadata.
pub const SAMPLE_TENANT_ID: &str = "12345678-1234-1234-1234-012345678910";

/// Everything the simulator serves. Every field has a default (see [`SimConfig::sample`]).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Multiplies every simulated duration (queueing, activities, cancelling): `0.01` makes a 10 s
    /// worker take 100 ms. Fault latency and token lifetimes are real time and are not scaled.
    pub time_scale: f64,
    /// Seed of the random numbers that decide faults, so a run of faults can be reproduced.
    pub seed: u64,
    /// The tenant Key Vault challenges and the OpenID metadata point at.
    pub tenant_id: String,
    /// The worker pipelines every known factory holds.
    pub pipelines: Vec<PipelineDef>,
    /// Service principals allowed to get a token. Empty: any client id and secret is accepted.
    pub principals: Vec<Principal>,
    /// Client ids whose tokens are refused by Data Factory with 403 `AuthorizationFailed`.
    pub forbidden_clients: Vec<String>,
    /// The factories that exist. `None`: any subscription / resource group / factory exists.
    pub factories: Option<Vec<FactoryRef>>,
    /// Key Vault secrets by name (names are case-insensitive, as in Key Vault).
    pub secrets: BTreeMap<String, String>,
    /// The value the managed-identity endpoint expects in `X-IDENTITY-HEADER` (`IDENTITY_HEADER`).
    pub identity_header: String,
    /// The client id of the Function App's managed identity.
    pub managed_identity_client_id: String,
    /// Lifetime of issued tokens, in real seconds.
    pub token_lifetime_secs: u64,
    /// How long a cancelled run stays `Canceling` before it becomes `Cancelled` (scaled seconds).
    pub canceling_secs: f64,
    /// Faults injected into the Data Factory routes.
    pub faults: Faults,
    /// Virtual machines served under `Microsoft.Compute/virtualMachines` (names unique, ignoring case).
    pub vms: Vec<VmDef>,
    /// Self-hosted integration runtimes answered by `integrationRuntimes/{name}/getStatus`.
    pub runtimes: Vec<RuntimeDef>,
    /// How long after its VM reached `running` a runtime node turns `Online` (scaled seconds); until
    /// then it is `Initializing`.
    pub node_online_secs: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::sample()
    }
}

impl fmt::Debug for SimConfig {
    /// Secret values stay out of debug output: only secret names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("time_scale", &self.time_scale)
            .field("seed", &self.seed)
            .field("tenant_id", &self.tenant_id)
            .field("pipelines", &self.pipelines)
            .field("principals", &self.principals)
            .field("forbidden_clients", &self.forbidden_clients)
            .field("factories", &self.factories)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("identity_header", &"<redacted>")
            .field(
                "managed_identity_client_id",
                &self.managed_identity_client_id,
            )
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("canceling_secs", &self.canceling_secs)
            .field("faults", &self.faults)
            .field("vms", &self.vms)
            .field("runtimes", &self.runtimes)
            .field("node_online_secs", &self.node_online_secs)
            .finish()
    }
}

/// Faults injected into the Data Factory routes (never into token, managed identity, Key Vault or
/// admin routes). Ratios are probabilities in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 429 `TooManyRequests` with `Retry-After`.
    pub throttle_ratio: f64,
    /// The `Retry-After` value (seconds) of throttled answers.
    pub retry_after_secs: u64,
    /// Share of requests answered 500 or 503.
    pub server_error_ratio: f64,
    /// Delay added before answering, in real milliseconds.
    pub latency_ms: u64,
    /// Share of requests that get the delay (default 1: all of them, when `latency_ms > 0`).
    pub latency_ratio: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle_ratio: 0.0,
            retry_after_secs: 0,
            server_error_ratio: 0.0,
            latency_ms: 0,
            latency_ratio: 1.0,
        }
    }
}

impl Faults {
    /// Refuses ratios outside `0..=1` (or not numbers).
    pub fn validate(&self) -> Result<(), SimError> {
        for (name, ratio) in [
            ("throttle_ratio", self.throttle_ratio),
            ("server_error_ratio", self.server_error_ratio),
            ("latency_ratio", self.latency_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(invalid(format!("faults.{name} = {ratio} is not in 0..=1")));
            }
        }
        Ok(())
    }
}

/// A service principal that may get client-credentials tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub client_id: String,
    #[serde(with = "secret_as_string")]
    pub client_secret: Secret,
    /// The tenant the app is registered in. `None`: any tenant in the token URL is accepted.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The service principal's object id, quoted in 403 messages (default: derived from the client id).
    #[serde(default)]
    pub object_id: Option<String>,
}

impl Principal {
    /// A principal valid in any tenant.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: Secret::new(client_secret),
            tenant_id: None,
            object_id: None,
        }
    }
}

/// A Data Factory that exists (compared case-insensitively, as ARM does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactoryRef {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
}

/// A worker pipeline and how its runs behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineDef {
    pub name: String,
    pub parameters: BTreeMap<String, ParamDef>,
    /// How long a new run stays `Queued` (scaled seconds).
    pub queued_secs: f64,
    /// The parameter whose value is the run's working time in seconds (e.g. `WaitTime`).
    pub wait_parameter: Option<String>,
    /// The working time when there is no `wait_parameter` (scaled seconds).
    pub default_duration_secs: f64,
    /// When set, the run fails only when this parameter has this value; when absent, activities
    /// marked `fails` always fail.
    pub fail_when: Option<FailRule>,
    pub activities: Vec<ActivityDef>,
}

impl Default for PipelineDef {
    fn default() -> Self {
        Self {
            name: String::new(),
            parameters: BTreeMap::new(),
            queued_secs: 1.0,
            wait_parameter: None,
            default_duration_secs: 1.0,
            fail_when: None,
            activities: Vec::new(),
        }
    }
}

/// A pipeline parameter: its ADF type and optional default value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub default: Option<Value>,
}

impl ParamDef {
    pub fn new(kind: ParamType, default: Option<Value>) -> Self {
        Self { kind, default }
    }
}

/// ADF pipeline parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamType {
    #[serde(alias = "string")]
    String,
    #[serde(alias = "int")]
    Int,
    #[serde(alias = "float")]
    Float,
    #[serde(alias = "bool")]
    Bool,
    #[serde(alias = "array")]
    Array,
    #[serde(alias = "object")]
    Object,
    #[serde(alias = "securestring", alias = "secureString")]
    SecureString,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Int => "Int",
            Self::Float => "Float",
            Self::Bool => "Bool",
            Self::Array => "Array",
            Self::Object => "Object",
            Self::SecureString => "SecureString",
        }
    }
}

/// "The run fails when parameter `parameter` equals `equals`" (compared as the run shows the value,
/// ignoring ASCII case: `True` counts as `true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRule {
    pub parameter: String,
    pub equals: String,
}

/// One activity of a worker pipeline. Top-level activities run one after the other; an activity with a
/// `parent` runs inside that (earlier, top-level) container and makes it fail when it fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityDef {
    pub name: String,
    #[serde(rename = "type")]
    pub activity_type: String,
    /// Working time in scaled seconds; `None` means the run's working time (the `wait_parameter`).
    pub duration_secs: Option<f64>,
    /// The container activity (e.g. an `IfCondition`) this activity runs inside.
    pub parent: Option<String>,
    /// Runs only in runs that fail (e.g. the branch taken when `RaiseErrors` is `true`).
    pub only_when_failing: bool,
    /// Fails in runs that fail (see [`PipelineDef::fail_when`]).
    pub fails: bool,
    pub error_code: String,
    pub failure_type: String,
    pub message: String,
    /// Extra `typeProperties` shown by `GET .../pipelines/{name}` (merged over the generated ones:
    /// `waitTimeInSeconds` of a Wait, `expression` of an IfCondition, inner activities of containers).
    pub type_properties: Option<Value>,
}

impl Default for ActivityDef {
    fn default() -> Self {
        Self {
            name: String::new(),
            activity_type: "Wait".into(),
            duration_secs: None,
            parent: None,
            only_when_failing: false,
            fails: false,
            error_code: String::new(),
            failure_type: String::new(),
            message: String::new(),
            type_properties: None,
        }
    }
}

impl ActivityDef {
    fn wait(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// The resource group of procfwk's sample factories (and of the sample VMs).
const SAMPLE_RESOURCE_GROUP: &str = "ADF.procfwk";

/// A virtual machine. Power operations take `start_secs` (plus up to `start_spread_secs`, drawn from a
/// generator seeded by the config seed and the VM name), `deallocate_secs` and `power_off_secs`, all
/// scaled by the time scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmDef {
    /// Default: the sample subscription.
    pub subscription_id: String,
    /// Default: `ADF.procfwk`.
    pub resource_group: String,
    pub name: String,
    /// Default: `westeurope` (it appears in the async-operation URLs).
    pub location: String,
    /// `deallocated` (default), `stopped` or `running` (a running VM's nodes start `Online`).
    pub initial_state: PowerState,
    /// Duration of `start` (scaled seconds, default 90).
    pub start_secs: f64,
    /// Extra random start time in `0..start_spread_secs` (scaled seconds, default 0).
    pub start_spread_secs: f64,
    /// Duration of `deallocate` (scaled seconds, default 60).
    pub deallocate_secs: f64,
    /// Duration of `powerOff` (scaled seconds, default 30).
    pub power_off_secs: f64,
    /// Shown as `hardwareProfile.vmSize`.
    pub vm_size: String,
    /// Power operations (`start`, `deallocate`, `powerOff`) refused with 403 `AuthorizationFailed`, as
    /// when the caller's role does not cover this VM (tests of the failure paths; default none).
    pub refused_actions: Vec<String>,
}

impl Default for VmDef {
    fn default() -> Self {
        Self {
            subscription_id: SAMPLE_TENANT_ID.into(),
            resource_group: SAMPLE_RESOURCE_GROUP.into(),
            name: String::new(),
            location: "westeurope".into(),
            initial_state: PowerState::Deallocated,
            start_secs: 90.0,
            start_spread_secs: 0.0,
            deallocate_secs: 60.0,
            power_off_secs: 30.0,
            vm_size: "Standard_D4s_v3".into(),
            refused_actions: Vec::new(),
        }
    }
}

impl VmDef {
    /// A VM with the default timings in the sample subscription and resource group.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// A self-hosted integration runtime of one factory, with up to four nodes, each hosted on a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDef {
    pub factory: FactoryRef,
    pub name: String,
    /// `concurrentJobsLimit` (and `maxConcurrentJobs`) of every node (default 4).
    #[serde(default = "default_jobs_per_node")]
    pub concurrent_jobs_per_node: u32,
    /// No nodes: the runtime is `NeedRegistration`.
    #[serde(default)]
    pub nodes: Vec<NodeDef>,
}

fn default_jobs_per_node() -> u32 {
    4
}

/// A runtime node and the VM it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// Default: the VM name.
    #[serde(default)]
    pub node_name: String,
    pub vm: VmRef,
}

/// Names a configured VM. VM names are unique, so `subscription_id` and `resource_group` may be left
/// out; when given they must match the VM's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRef {
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub resource_group: Option<String>,
    pub name: String,
}

impl VmRef {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            subscription_id: None,
            resource_group: None,
            name: name.into(),
        }
    }

    /// Whether `vm` is the VM this names (ignoring case, as ARM does).
    pub fn matches(&self, vm: &VmDef) -> bool {
        let same = |given: &Option<String>, actual: &str| {
            given
                .as_deref()
                .is_none_or(|g| g.eq_ignore_ascii_case(actual))
        };
        self.name.eq_ignore_ascii_case(&vm.name)
            && same(&self.subscription_id, &vm.subscription_id)
            && same(&self.resource_group, &vm.resource_group)
    }
}

impl RuntimeDef {
    /// A runtime in `factory` (of the sample subscription and resource group) with one node per VM,
    /// named after the VM.
    pub fn on_vms(factory: &str, name: &str, vms: &[&str]) -> Self {
        Self {
            factory: FactoryRef {
                subscription_id: SAMPLE_TENANT_ID.into(),
                resource_group: SAMPLE_RESOURCE_GROUP.into(),
                name: factory.into(),
            },
            name: name.into(),
            concurrent_jobs_per_node: default_jobs_per_node(),
            nodes: vms
                .iter()
                .map(|vm| NodeDef {
                    node_name: (*vm).to_string(),
                    vm: VmRef::named(*vm),
                })
                .collect(),
        }
    }
}

/// Most nodes a self-hosted integration runtime can have.
pub const MAX_RUNTIME_NODES: usize = 4;

fn int_param(default: i64) -> ParamDef {
    ParamDef::new(ParamType::Int, Some(Value::from(default)))
}

fn wait_worker(name: &str, activity: &str, default_wait: i64, queued_secs: f64) -> PipelineDef {
    PipelineDef {
        name: name.into(),
        parameters: BTreeMap::from([("WaitTime".to_string(), int_param(default_wait))]),
        queued_secs,
        wait_parameter: Some("WaitTime".into()),
        default_duration_secs: default_wait as f64,
        fail_when: None,
        activities: vec![ActivityDef::wait(activity)],
    }
}

fn intentional_error() -> PipelineDef {
    PipelineDef {
        name: "Intentional Error".into(),
        parameters: BTreeMap::from([
            (
                "RaiseErrors".to_string(),
                ParamDef::new(ParamType::String, Some(Value::from("false"))),
            ),
            ("WaitTime".to_string(), int_param(5)),
        ]),
        queued_secs: 1.0,
        wait_parameter: Some("WaitTime".into()),
        default_duration_secs: 5.0,
        fail_when: Some(FailRule {
            parameter: "RaiseErrors".into(),
            equals: "true".into(),
        }),
        activities: vec![
            ActivityDef::wait("Wait1"),
            ActivityDef {
                name: "Raise Errors or Not".into(),
                activity_type: "IfCondition".into(),
                duration_secs: Some(1.0),
                fails: true,
                error_code: "ActionFailed".into(),
                failure_type: "UserError".into(),
                message: "Activity failed because an inner activity failed".into(),
                ..ActivityDef::default()
            },
            ActivityDef {
                name: "Call Fail Procedure".into(),
                activity_type: "SqlServerStoredProcedure".into(),
                duration_secs: Some(1.0),
                parent: Some("Raise Errors or Not".into()),
                only_when_failing: true,
                fails: true,
                error_code: "2402".into(),
                failure_type: "UserError".into(),
                message: "Execution fail against sql server. Sql error number: 50000. Error Message: The Stored Procedure intentionally failed.".into(),
                type_properties: Some(serde_json::json!({
                    "storedProcedureName": "[dbo].[FailProcedure]",
                    "storedProcedureParameters": {
                        "RaiseError": {
                            "value": {"value": "@pipeline().parameters.RaiseErrors", "type": "Expression"},
                            "type": "String"
                        }
                    }
                })),
            },
        ],
    }
}

impl SimConfig {
    /// procfwk's sample workers (`Wait 1` … `Wait 10`, `Intentional Error`) plus `Wait Long` and
    /// `Queued Forever` for tests; any client is accepted, any factory exists, no faults. VMs
    /// `shir-vm-1` … `shir-vm-4` (deallocated), the runtime `SelfHostedRuntime` with one node on
    /// `shir-vm-1` and the four-node `SelfHostedCluster`, both in `FrameworkFactory`.
    pub fn sample() -> Self {
        let mut pipelines: Vec<PipelineDef> = (1..=10)
            .map(|n| wait_worker(&format!("Wait {n}"), &format!("Wait{n}"), 5, 1.0))
            .collect();
        pipelines.push(intentional_error());
        pipelines.push(wait_worker("Wait Long", "Wait1", 600, 1.0));
        pipelines.push(wait_worker("Queued Forever", "Wait1", 5, 1e9));
        Self {
            time_scale: 1.0,
            seed: 1,
            tenant_id: SAMPLE_TENANT_ID.into(),
            pipelines,
            principals: Vec::new(),
            forbidden_clients: Vec::new(),
            factories: None,
            secrets: BTreeMap::new(),
            identity_header: "procfwk-sim-identity-header".into(),
            managed_identity_client_id: "7d3b4c8e-1f2a-4b5c-9d6e-0a1b2c3d4e5f".into(),
            token_lifetime_secs: 3599,
            canceling_secs: 0.5,
            faults: Faults::default(),
            vms: (1..=4)
                .map(|n| VmDef::new(format!("shir-vm-{n}")))
                .collect(),
            runtimes: vec![
                RuntimeDef::on_vms("FrameworkFactory", "SelfHostedRuntime", &["shir-vm-1"]),
                RuntimeDef::on_vms(
                    "FrameworkFactory",
                    "SelfHostedCluster",
                    &["shir-vm-1", "shir-vm-2", "shir-vm-3", "shir-vm-4"],
                ),
            ],
            node_online_secs: 45.0,
        }
    }

    /// Reads a JSON config file; keys left out keep their [`SimConfig::sample`] values.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| SimError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything request handlers rely on: positive time scale, valid ratios, unique names,
    /// parameter defaults of the declared type, activity parents that exist, failures with an error code.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(invalid(format!(
                "time_scale = {} must be > 0",
                self.time_scale
            )));
        }
        if !(self.canceling_secs.is_finite() && self.canceling_secs >= 0.0) {
            return Err(invalid(format!(
                "canceling_secs = {} must be >= 0",
                self.canceling_secs
            )));
        }
        if self.token_lifetime_secs == 0 {
            return Err(invalid("token_lifetime_secs must be > 0".into()));
        }
        if self.identity_header.is_empty() {
            return Err(invalid("identity_header must not be empty".into()));
        }
        self.faults.validate()?;
        let mut names = HashSet::new();
        for pipeline in &self.pipelines {
            if !names.insert(pipeline.name.to_lowercase()) {
                return Err(invalid(format!(
                    "pipeline '{}' is defined twice",
                    pipeline.name
                )));
            }
            pipeline.validate()?;
        }
        let mut clients = HashSet::new();
        for principal in &self.principals {
            if principal.client_id.is_empty() || !clients.insert(principal.client_id.to_lowercase())
            {
                return Err(invalid(format!(
                    "principal client_id '{}' is empty or defined twice",
                    principal.client_id
                )));
            }
        }
        self.validate_vms_and_runtimes()?;
        let mut secret_names = HashSet::new();
        for name in self.secrets.keys() {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid || !secret_names.insert(name.to_lowercase()) {
                return Err(invalid(format!(
                    "secret name '{name}' is invalid (letters, digits, '-') or defined twice"
                )));
            }
        }
        Ok(())
    }
    fn validate_vms_and_runtimes(&self) -> Result<(), SimError> {
        if !(self.node_online_secs.is_finite() && self.node_online_secs >= 0.0) {
            return Err(invalid(format!(
                "node_online_secs = {} must be >= 0",
                self.node_online_secs
            )));
        }
        let mut vm_names = HashSet::new();
        for vm in &self.vms {
            let name = &vm.name;
            if name.trim().is_empty() || !vm_names.insert(name.to_lowercase()) {
                return Err(invalid(format!(
                    "VM name '{name}' is empty or defined twice (VM names must be unique)"
                )));
            }
            if vm.subscription_id.is_empty()
                || vm.resource_group.is_empty()
                || vm.location.is_empty()
            {
                return Err(invalid(format!(
                    "VM '{name}': subscription_id, resource_group and location must not be empty"
                )));
            }
            if vm.initial_state.is_transitional() {
                return Err(invalid(format!(
                    "VM '{name}': initial_state must be running, stopped or deallocated, not {}",
                    vm.initial_state.as_str()
                )));
            }
            for (label, secs) in [
                ("start_secs", vm.start_secs),
                ("start_spread_secs", vm.start_spread_secs),
                ("deallocate_secs", vm.deallocate_secs),
                ("power_off_secs", vm.power_off_secs),
            ] {
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(invalid(format!(
                        "VM '{name}': {label} = {secs} must be >= 0"
                    )));
                }
            }
        }
        let mut runtime_names = HashSet::new();
        for runtime in &self.runtimes {
            let name = &runtime.name;
            let f = &runtime.factory;
            let key = format!(
                "{}/{}/{}/{name}",
                f.subscription_id, f.resource_group, f.name
            )
            .to_lowercase();
            if name.trim().is_empty() || !runtime_names.insert(key) {
                return Err(invalid(format!(
                    "integration runtime '{name}' of factory '{}' is unnamed or defined twice",
                    f.name
                )));
            }
            if runtime.nodes.len() > MAX_RUNTIME_NODES {
                return Err(invalid(format!(
                    "integration runtime '{name}' has {} nodes; at most {MAX_RUNTIME_NODES} are allowed",
                    runtime.nodes.len()
                )));
            }
            if runtime.concurrent_jobs_per_node == 0 {
                return Err(invalid(format!(
                    "integration runtime '{name}': concurrent_jobs_per_node must be > 0"
                )));
            }
            let mut node_names = HashSet::new();
            for node in &runtime.nodes {
                if !self.vms.iter().any(|vm| node.vm.matches(vm)) {
                    return Err(invalid(format!(
                        "integration runtime '{name}': a node is on VM '{}', which is not a configured VM",
                        node.vm.name
                    )));
                }
                let node_name = if node.node_name.is_empty() {
                    &node.vm.name
                } else {
                    &node.node_name
                };
                if !node_names.insert(node_name.to_lowercase()) {
                    return Err(invalid(format!(
                        "integration runtime '{name}': node '{node_name}' is defined twice"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl PipelineDef {
    fn validate(&self) -> Result<(), SimError> {
        let name = &self.name;
        if name.trim().is_empty() {
            return Err(invalid("a pipeline has an empty name".into()));
        }
        for (label, secs) in [
            ("queued_secs", self.queued_secs),
            ("default_duration_secs", self.default_duration_secs),
        ] {
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(invalid(format!(
                    "pipeline '{name}': {label} = {secs} must be >= 0"
                )));
            }
        }
        let mut param_names = HashSet::new();
        for (param, def) in &self.parameters {
            if !param_names.insert(param.to_lowercase()) {
                return Err(invalid(format!(
                    "pipeline '{name}': parameter '{param}' is defined twice"
                )));
            }
            if let Some(default) = &def.default {
                super::parameters::coerce(def.kind, default).map_err(|problem| {
                    invalid(format!(
                        "pipeline '{name}': default of parameter '{param}' is not a {}: {problem}",
                        def.kind.as_str()
                    ))
                })?;
            }
        }
        if let Some(wait) = &self.wait_parameter {
            let def = self.parameter(wait).ok_or_else(|| {
                invalid(format!(
                    "pipeline '{name}': wait_parameter '{wait}' is not a parameter"
                ))
            })?;
            if !matches!(def.1.kind, ParamType::Int | ParamType::Float) {
                return Err(invalid(format!(
                    "pipeline '{name}': wait_parameter '{wait}' must be Int or Float"
                )));
            }
        }
        if let Some(rule) = &self.fail_when {
            if self.parameter(&rule.parameter).is_none() {
                return Err(invalid(format!(
                    "pipeline '{name}': fail_when parameter '{}' is not a parameter",
                    rule.parameter
                )));
            }
        }
        let mut activity_names: Vec<&str> = Vec::new();
        for activity in &self.activities {
            let an = activity.name.as_str();
            if an.is_empty() || activity_names.iter().any(|n| n.eq_ignore_ascii_case(an)) {
                return Err(invalid(format!(
                    "pipeline '{name}': activity '{an}' is unnamed or defined twice"
                )));
            }
            if let Some(secs) = activity.duration_secs {
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(invalid(format!(
                        "pipeline '{name}': activity '{an}' duration must be >= 0"
                    )));
                }
            }
            if let Some(parent) = &activity.parent {
                let parent_def = self
                    .activities
                    .iter()
                    .take_while(|a| a.name != an)
                    .find(|a| &a.name == parent);
                match parent_def {
                    Some(p) if p.parent.is_none() => {}
                    _ => {
                        return Err(invalid(format!(
                            "pipeline '{name}': activity '{an}' has parent '{parent}', which must be an earlier top-level activity"
                        )))
                    }
                }
            }
            if activity
                .type_properties
                .as_ref()
                .is_some_and(|p| !p.is_object())
            {
                return Err(invalid(format!(
                    "pipeline '{name}': activity '{an}' type_properties must be an object"
                )));
            }
            if activity.fails && (activity.error_code.is_empty() || activity.message.is_empty()) {
                return Err(invalid(format!(
                    "pipeline '{name}': failing activity '{an}' needs an error_code and a message"
                )));
            }
            activity_names.push(an);
        }
        if self.fail_when.is_some() && !self.activities.iter().any(|a| a.fails) {
            return Err(invalid(format!(
                "pipeline '{name}': fail_when is set but no activity is marked fails"
            )));
        }
        Ok(())
    }

    /// Finds a parameter by name, case-insensitively (as ADF does).
    pub fn parameter(&self, name: &str) -> Option<(&String, &ParamDef)> {
        self.parameters
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

fn invalid(message: String) -> SimError {
    SimError::InvalidConfig(message)
}

/// (De)serialises a [`Secret`] as a plain JSON string (config files hold the value).
mod secret_as_string {
    use crate::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_valid_and_has_the_procfwk_workers() {
        let config = SimConfig::sample();
        config.validate().expect("sample is valid");
        let names: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 13);
        assert!(names.contains(&"Wait 1") && names.contains(&"Wait 10"));
        assert!(names.contains(&"Intentional Error"));
        assert!(names.contains(&"Wait Long") && names.contains(&"Queued Forever"));
    }

    #[test]
    fn example_file_parses_and_partial_files_keep_defaults() {
        let example: SimConfig =
            serde_json::from_str(include_str!("example-config.json")).expect("example parses");
        example.validate().expect("example is valid");
        assert_eq!(example.principals.len(), 2);
        assert!(example.factories.is_some());
        assert_eq!(example.vms.len(), 2);
        assert_eq!(example.vms[1].start_secs, 90.0);
        assert_eq!(example.vms[1].initial_state, PowerState::Running);
        assert_eq!(example.runtimes[0].nodes.len(), 2);

        let partial: SimConfig = serde_json::from_str(r#"{"time_scale": 0.01}"#).expect("parses");
        assert_eq!(partial.time_scale, 0.01);
        assert_eq!(partial.pipelines.len(), 13);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        assert!(serde_json::from_str::<SimConfig>(r#"{"time_scal": 1}"#).is_err());
        let mut config = SimConfig::sample();
        config.time_scale = 0.0;
        assert!(config.validate().is_err());
        let mut config = SimConfig::sample();
        config.faults.throttle_ratio = 1.5;
        assert!(config.validate().is_err());
        let mut config = SimConfig::sample();
        config.pipelines[0].parameters.insert(
            "WaitTime".into(),
            ParamDef::new(ParamType::Int, Some(Value::from("five"))),
        );
        assert!(config.validate().is_err());
        let mut config = SimConfig::sample();
        config.pipelines.push(config.pipelines[0].clone());
        assert!(config.validate().is_err());
    }

    #[test]
    fn sample_has_vms_and_runtimes() {
        let config = SimConfig::sample();
        let names: Vec<&str> = config.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["shir-vm-1", "shir-vm-2", "shir-vm-3", "shir-vm-4"]);
        assert!(config
            .vms
            .iter()
            .all(|v| v.initial_state == PowerState::Deallocated && v.start_secs == 90.0));
        let runtimes: Vec<(&str, &str, usize)> = config
            .runtimes
            .iter()
            .map(|r| (r.factory.name.as_str(), r.name.as_str(), r.nodes.len()))
            .collect();
        assert_eq!(
            runtimes,
            [
                ("FrameworkFactory", "SelfHostedRuntime", 1),
                ("FrameworkFactory", "SelfHostedCluster", 4)
            ]
        );
        assert_eq!(config.node_online_secs, 45.0);
    }

    #[test]
    fn bad_vms_and_runtimes_are_refused() {
        let refused = |change: &dyn Fn(&mut SimConfig)| {
            let mut config = SimConfig::sample();
            change(&mut config);
            config.validate().is_err()
        };
        assert!(refused(&|c| c.vms.push(VmDef::new("SHIR-VM-1"))));
        assert!(refused(&|c| c.vms[0].start_secs = -1.0));
        assert!(refused(&|c| c.vms[0].initial_state = PowerState::Starting));
        assert!(refused(&|c| c.node_online_secs = f64::NAN));
        assert!(refused(&|c| c.vms.clear()));
        assert!(refused(&|c| c.runtimes[1].nodes.push(NodeDef {
            node_name: "fifth".into(),
            vm: VmRef::named("shir-vm-1"),
        })));
        assert!(refused(
            &|c| c.runtimes[0].nodes[0].vm.resource_group = Some("other".into())
        ));
        assert!(refused(&|c| c.runtimes[0].concurrent_jobs_per_node = 0));
        assert!(refused(&|c| c.runtimes.push(c.runtimes[0].clone())));
        assert!(!refused(&|c| {
            c.vms.clear();
            c.runtimes.clear();
        }));
        let parsed: SimConfig = serde_json::from_str(
            r#"{"vms": [{"name": "a"}], "runtimes": [{"factory": {"subscription_id": "s", "resource_group": "r", "name": "f"}, "name": "ir", "nodes": [{"vm": {"name": "A"}}]}]}"#,
        )
        .expect("parses");
        parsed.validate().expect("valid");
        assert_eq!(parsed.vms[0].deallocate_secs, 60.0);
        assert_eq!(parsed.runtimes[0].concurrent_jobs_per_node, 4);
        assert!(serde_json::from_str::<SimConfig>(
            r#"{"vms": [{"name": "a", "initial_state": "on"}]}"#
        )
        .is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = SimConfig::sample();
        config.principals.push(Principal::new("app", "TopSecret!1"));
        config
            .secrets
            .insert("db-password".into(), "Hunter2!".into());
        let text = format!("{config:?}");
        assert!(!text.contains("TopSecret!1"));
        assert!(!text.contains("Hunter2!"));
        assert!(text.contains("db-password"));
    }
}

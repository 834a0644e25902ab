//! Self-hosted integration runtimes: which factory each belongs to, its nodes and the VMs hosting
//! them, and the `getStatus` answer computed from those VMs at one moment.
//!
//! A node is `Online` once its VM has been `running` for `node_online_secs`, `Initializing` before
//! that, and `Offline` whenever its VM is not running. The runtime is `Online` when every node is,
//! `Limited` when some are, `Offline` when none is, and `NeedRegistration` without nodes. The first
//! online node (in configuration order) is the active dispatcher.

use super::clock::{format_timestamp, SimClock};
use super::compute::{NodeHost, NodeStatus, VmId, VmStore};
use super::config::SimConfig;
use super::state::factory_key;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::time::Instant;
use uuid::Uuid;

/// The self-hosted integration runtime version the simulator reports.
const RUNTIME_VERSION: &str = "5.44.8984.1";

/// One node of a runtime.
#[derive(Debug)]
struct Node {
    name: String,
    vm: VmId,
    machine_name: String,
}

/// One configured runtime.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub name: String,
    factory: String,
    jobs_per_node: u32,
    nodes: Vec<Node>,
    task_queue_id: String,
}

/// The runtime states the aggregation produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuntimeState {
    Online,
    Limited,
    Offline,
    NeedRegistration,
}

impl RuntimeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::Limited => "Limited",
            Self::Offline => "Offline",
            Self::NeedRegistration => "NeedRegistration",
        }
    }

    /// The runtime state of nodes with these statuses.
    pub fn of(nodes: &[NodeStatus]) -> Self {
        let online = nodes.iter().filter(|s| **s == NodeStatus::Online).count();
        match (nodes.len(), online) {
            (0, _) => Self::NeedRegistration,
            (_, 0) => Self::Offline,
            (n, k) if k == n => Self::Online,
            _ => Self::Limited,
        }
    }
}

/// Every runtime, by `factory key/runtime name` (lower-cased).
#[derive(Debug, Default)]
pub(crate) struct RuntimeStore {
    runtimes: HashMap<String, Runtime>,
}

fn runtime_key(factory_key: &str, name: &str) -> String {
    format!("{factory_key}/{}", name.to_lowercase())
}

impl RuntimeStore {
    /// The runtimes of a validated `config`; nodes on unknown VMs (which validation refuses) are left
    /// out.
    pub fn new(config: &SimConfig, vms: &VmStore) -> Self {
        let mut runtimes = HashMap::new();
        for def in &config.runtimes {
            let f = &def.factory;
            let key = factory_key(&f.subscription_id, &f.resource_group, &f.name);
            let nodes = def
                .nodes
                .iter()
                .filter_map(|node| {
                    let vm_def = config.vms.iter().find(|vm| node.vm.matches(vm))?;
                    let vm = vms.by_name(&vm_def.name)?;
                    let name = if node.node_name.is_empty() {
                        vm_def.name.clone()
                    } else {
                        node.node_name.clone()
                    };
                    Some(Node {
                        name,
                        vm,
                        machine_name: vm_def.name.to_uppercase(),
                    })
                })
                .collect();
            let runtime = Runtime {
                name: def.name.clone(),
                factory: f.name.clone(),
                jobs_per_node: def.concurrent_jobs_per_node,
                nodes,
                task_queue_id: Uuid::new_v4().to_string(),
            };
            runtimes.insert(runtime_key(&key, &def.name), runtime);
        }
        Self { runtimes }
    }

    /// The runtime `name` of the factory with this [`factory_key`].
    pub fn get(&self, factory_key: &str, name: &str) -> Option<&Runtime> {
        self.runtimes.get(&runtime_key(factory_key, name))
    }
}

impl Runtime {
    fn hosts(&self, vms: &VmStore, now: Instant) -> Vec<NodeHost> {
        let ids: Vec<VmId> = self.nodes.iter().map(|n| n.vm).collect();
        vms.node_hosts(&ids, now)
    }

    /// The `IntegrationRuntimeStatusResponse` of `getStatus` at `now`.
    pub fn status(&self, vms: &VmStore, clock: &SimClock, now: Instant) -> Value {
        let hosts = self.hosts(vms, now);
        let statuses: Vec<NodeStatus> = hosts.iter().map(|h| h.status).collect();
        let state = RuntimeState::of(&statuses);
        let dispatcher = statuses.iter().position(|s| *s == NodeStatus::Online);
        let created = format_timestamp(clock.started());
        let at = |i: Option<Instant>| i.map(|i| format_timestamp(clock.wall(i)));
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .zip(&hosts)
            .enumerate()
            .map(|(i, (node, host))| {
                let mut value = json!({
                    "nodeName": node.name,
                    "machineName": node.machine_name,
                    "hostServiceUri": format!("https://{}:8050/HostServiceRemote.svc/", node.machine_name),
                    "status": host.status.as_str(),
                    "capabilities": {
                        "serviceBusConnected": bool_text(host.status == NodeStatus::Online),
                        "httpsPortEnabled": "True",
                        "credentialInSync": "True",
                        "connectedToResourceManager": bool_text(host.status == NodeStatus::Online),
                        "nodeEnabled": "True",
                    },
                    "versionStatus": "UpToDate",
                    "version": RUNTIME_VERSION,
                    "registerTime": created,
                    "isActiveDispatcher": dispatcher == Some(i),
                    "concurrentJobsLimit": self.jobs_per_node,
                    "maxConcurrentJobs": self.jobs_per_node,
                });
                for (key, time) in [
                    ("lastConnectTime", at(host.last_connect)),
                    ("lastStartTime", at(host.last_start)),
                    ("lastStopTime", at(host.last_stop)),
                ] {
                    if let (Some(time), Some(object)) = (time, value.as_object_mut()) {
                        object.insert(key.into(), Value::from(time));
                    }
                }
                value
            })
            .collect();
        json!({
            "name": self.name,
            "properties": {
                "type": "SelfHosted",
                "dataFactoryName": self.factory,
                "state": state.as_str(),
                "typeProperties": {
                    "createTime": created,
                    "taskQueueId": self.task_queue_id,
                    "internalChannelEncryption": "NotSet",
                    "version": RUNTIME_VERSION,
                    "nodes": nodes,
                    "updateDelayOffset": "PT3H",
                    "localTimeZoneOffset": "PT0S",
                    "capabilities": {
                        "serviceBusConnected": bool_text(state != RuntimeState::Offline && state != RuntimeState::NeedRegistration),
                        "httpsPortEnabled": "True",
                        "credentialInSync": "True",
                        "connectedToResourceManager": "True",
                        "nodeEnabled": "True",
                    },
                    "serviceUrls": ["wu.frontend.clouddatahub.net", "*.servicebus.windows.net"],
                    "autoUpdate": "On",
                    "versionStatus": "UpToDate",
                    "links": [],
                    "pushedVersion": RUNTIME_VERSION,
                    "latestVersion": RUNTIME_VERSION,
                },
            },
        })
    }
}

/// ADF writes capability flags as the strings `True` / `False`.
fn bool_text(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::{PowerState, VmAction};
    use crate::config::RuntimeDef;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn runtime_state_aggregates_node_states() {
        use NodeStatus::{Initializing, Offline, Online};
        assert_eq!(RuntimeState::of(&[]), RuntimeState::NeedRegistration);
        assert_eq!(RuntimeState::of(&[Offline]), RuntimeState::Offline);
        assert_eq!(
            RuntimeState::of(&[Initializing, Offline]),
            RuntimeState::Offline
        );
        assert_eq!(
            RuntimeState::of(&[Online, Initializing]),
            RuntimeState::Limited
        );
        assert_eq!(RuntimeState::of(&[Online, Offline]), RuntimeState::Limited);
        assert_eq!(RuntimeState::of(&[Online; 4]), RuntimeState::Online);
    }

    #[test]
    fn cluster_status_follows_its_vms() {
        let mut config = SimConfig::sample();
        config.time_scale = 0.001;
        config.runtimes.push(RuntimeDef::on_vms("F", "Empty", &[]));
        let t0 = Instant::now();
        let vms = VmStore::new(&config, t0);
        let runtimes = RuntimeStore::new(&config, &vms);
        let framework = factory_key(crate::SAMPLE_TENANT_ID, "ADF.procfwk", "FrameworkFactory");
        let cluster = runtimes
            .get(&framework, "selfhostedcluster")
            .expect("sample cluster");
        assert!(runtimes.get(&framework, "Nope").is_none());
        let clock = SimClock::new();
        let state = |at| cluster.status(&vms, &clock, at)["properties"]["state"].clone();
        assert_eq!(state(t0), "Offline");

        let vm1 = vms.by_name("shir-vm-1").expect("vm");
        let vm2 = vms.by_name("shir-vm-2").expect("vm");
        assert!(vms.request(vm1, VmAction::Start, t0).is_some());
        assert!(vms.request(vm2, VmAction::Start, t0).is_some());
        // Running at 90 ms, nodes online at 135 ms.
        assert_eq!(state(t0 + ms(100)), "Offline");
        let status = cluster.status(&vms, &clock, t0 + ms(140));
        assert_eq!(status["properties"]["state"], "Limited");
        let nodes = status["properties"]["typeProperties"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let node_states: Vec<&str> = nodes
            .iter()
            .map(|n| n["status"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(node_states, ["Online", "Online", "Offline", "Offline"]);
        assert_eq!(nodes[0]["isActiveDispatcher"], true);
        assert_eq!(nodes[1]["isActiveDispatcher"], false);
        assert_eq!(nodes[0]["concurrentJobsLimit"], 4);
        assert!(nodes[0]["lastConnectTime"].is_string());
        assert!(nodes[2].get("lastConnectTime").is_none());

        for n in 3..=4 {
            let vm = vms.by_name(&format!("shir-vm-{n}")).expect("vm");
            vms.force(vm, PowerState::Running, true, t0 + ms(150))
                .expect("forced");
        }
        assert_eq!(state(t0 + ms(150)), "Online");
        // Deallocating one node's VM: that node is Offline at once, the runtime Limited.
        assert!(vms
            .request(vm1, VmAction::Deallocate, t0 + ms(160))
            .is_some());
        let status = cluster.status(&vms, &clock, t0 + ms(161));
        assert_eq!(status["properties"]["state"], "Limited");
        let nodes = &status["properties"]["typeProperties"]["nodes"];
        assert_eq!(nodes[0]["status"], "Offline");
        assert_eq!(nodes[0]["isActiveDispatcher"], false);
        assert_eq!(nodes[1]["isActiveDispatcher"], true);

        let single = runtimes
            .get(&framework, "SelfHostedRuntime")
            .expect("sample runtime");
        let status = single.status(&vms, &clock, t0 + ms(161));
        assert_eq!(status["properties"]["state"], "Offline");
        assert_eq!(
            status["properties"]["typeProperties"]["nodes"][0]["status"],
            "Offline"
        );
        let empty = runtimes
            .get(
                &factory_key(crate::SAMPLE_TENANT_ID, "ADF.procfwk", "F"),
                "Empty",
            )
            .expect("empty runtime");
        assert_eq!(
            empty.status(&vms, &clock, t0)["properties"]["state"],
            "NeedRegistration"
        );
    }

    #[test]
    fn status_parses_as_the_sdk_model() {
        use azure_mgmt_datafactory::package_2018_06::models::{
            self_hosted_integration_runtime_node::Status, IntegrationRuntimeState,
            IntegrationRuntimeStatusResponse, IntegrationRuntimeStatusUnion,
        };
        let config = SimConfig::sample();
        let t0 = Instant::now();
        let vms = VmStore::new(&config, t0);
        let runtimes = RuntimeStore::new(&config, &vms);
        let vm1 = vms.by_name("shir-vm-1").expect("vm");
        vms.force(vm1, PowerState::Running, true, t0)
            .expect("forced");
        let key = factory_key(crate::SAMPLE_TENANT_ID, "ADF.procfwk", "FrameworkFactory");
        let runtime = runtimes.get(&key, "SelfHostedRuntime").expect("runtime");
        let value = runtime.status(&vms, &SimClock::new(), t0);
        let parsed: IntegrationRuntimeStatusResponse =
            serde_json::from_value(value).expect("the SDK parses getStatus");
        assert_eq!(parsed.name.as_deref(), Some("SelfHostedRuntime"));
        let IntegrationRuntimeStatusUnion::SelfHosted(status) = parsed.properties else {
            panic!("not a self-hosted runtime status");
        };
        assert_eq!(
            status.integration_runtime_status.state,
            Some(IntegrationRuntimeState::Online)
        );
        let node = &status.type_properties.nodes[0];
        assert_eq!(node.status, Some(Status::Online));
        assert_eq!(node.node_name.as_deref(), Some("shir-vm-1"));
        assert!(node.last_connect_time.is_some() && node.last_start_time.is_some());
        assert!(status.type_properties.create_time.is_some());
    }
}

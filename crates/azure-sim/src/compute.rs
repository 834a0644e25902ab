//! The virtual-machine engine behind the `Microsoft.Compute/virtualMachines` routes. A VM's power state
//! is settled lazily, like a pipeline run's: an accepted operation records when it will end, and
//! whoever looks at the VM next (a request, the runtime status, a test) settles it, recording the state
//! change with the time it actually happened. Nothing runs in the background.
//!
//! Lifecycle (durations per VM, scaled): `deallocated | stopped` →(start) `starting` → `running`;
//! `running | stopped` →(deallocate) `deallocating` → `deallocated`; `running` →(powerOff) `stopping`
//! → `stopped`. Asking for the state a VM is already in is a no-op; asking again for the operation in
//! flight joins it; anything else while an operation is in flight is a conflict (ARM's 409
//! `OperationNotAllowed`), as is `powerOff` of a deallocated VM.
//!
//! Everything observed is kept in a history ([`VmEvent`]) readable by tests, and the time each VM
//! spent allocated (billed: every state but `deallocated`) is accumulated for cost reports.

use super::clock::scaled;
use super::config::{SimConfig, VmDef};
pub use crate::power::PowerState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Most history events kept (the oldest are dropped first).
pub const VM_HISTORY_CAPACITY: usize = 1_000_000;

/// A power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmAction {
    Start,
    Deallocate,
    PowerOff,
}

impl VmAction {
    /// As in the URL (`.../start`) and in ARM messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Deallocate => "deallocate",
            Self::PowerOff => "powerOff",
        }
    }

    /// The state the VM is in while the operation runs.
    fn during(self) -> PowerState {
        match self {
            Self::Start => PowerState::Starting,
            Self::Deallocate => PowerState::Deallocating,
            Self::PowerOff => PowerState::Stopping,
        }
    }

    /// The state the operation ends in.
    fn target(self) -> PowerState {
        match self {
            Self::Start => PowerState::Running,
            Self::Deallocate => PowerState::Deallocated,
            Self::PowerOff => PowerState::Stopped,
        }
    }

    /// The history event of an accepted request.
    fn event(self) -> &'static str {
        match self {
            Self::Start => "start_requested",
            Self::Deallocate => "deallocate_requested",
            Self::PowerOff => "power_off_requested",
        }
    }

    fn in_flight(state: PowerState) -> Option<Self> {
        match state {
            PowerState::Starting => Some(Self::Start),
            PowerState::Deallocating => Some(Self::Deallocate),
            PowerState::Stopping => Some(Self::PowerOff),
            _ => None,
        }
    }
}

/// One entry of the VM history: an accepted power request or a state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmEvent {
    /// Scaled seconds since the simulator started (real seconds divided by the time scale), i.e. the
    /// simulated time at which it happened.
    pub at_secs: f64,
    pub vm: String,
    /// `start_requested`, `deallocate_requested`, `power_off_requested` (accepted requests, including
    /// no-ops on a VM already in the requested state, which carry no `operation_id`) or `state`.
    pub event: String,
    /// The new power state of a `state` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The async operation of a request (joined requests repeat the id of the operation in flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
}

/// A VM as the admin endpoint lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub power_state: String,
    /// The operation in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Scaled seconds spent allocated so far (see [`PowerState::is_allocated`]).
    pub allocated_secs: f64,
    /// Whether runtime nodes hosted on this VM are `Online`.
    pub nodes_online: bool,
}

/// Index of a configured VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmId(usize);

/// What never changes about a VM.
#[derive(Debug)]
pub struct VmInfo {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub vm_size: String,
    /// The VM's stable `vmId` GUID.
    pub vm_id: String,
    /// Power operations refused with 403 (`VmDef::refused_actions`).
    pub refused_actions: Vec<String>,
}

impl VmInfo {
    /// `/subscriptions/…/virtualMachines/{name}` with ARM's canonical casing.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

/// The operation in flight on a VM.
#[derive(Debug, Clone)]
struct Pending {
    action: VmAction,
    operation_id: String,
    ends: Instant,
}

/// What changes about a VM.
#[derive(Debug)]
struct VmDynamic {
    state: PowerState,
    /// When `state` was entered.
    since: Instant,
    pending: Option<Pending>,
    /// When runtime nodes on the VM are (or were to be) `Online`; `None` unless running.
    online_at: Option<Instant>,
    /// When the VM last reached `running`.
    last_running: Option<Instant>,
    /// When the VM last left `running`.
    last_stop: Option<Instant>,
    /// When hosted nodes were last seen `Online` before the VM stopped.
    last_online_end: Option<Instant>,
    /// When the last operation ended (the provisioning state's time).
    last_operation_end: Instant,
    /// Allocated time before `since`.
    allocated: Duration,
    start: Duration,
    start_spread: Duration,
    deallocate: Duration,
    power_off: Duration,
    rng: StdRng,
}

/// A recorded async operation.
#[derive(Debug, Clone)]
struct OperationRecord {
    vm: VmId,
    started: Instant,
    ends: Instant,
    canceled_at: Option<Instant>,
}

/// How an async operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationStatus {
    InProgress,
    Succeeded,
    /// Preempted (a forced state change).
    Canceled,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Canceled => "Canceled",
        }
    }
}

/// An async operation as `GET .../operations/{id}` shows it.
#[derive(Debug, Clone)]
pub struct OperationView {
    pub vm: VmId,
    pub status: OperationStatus,
    pub started: Instant,
    pub ended: Option<Instant>,
}

/// A VM at one moment.
#[derive(Debug, Clone)]
pub struct VmObservation {
    pub state: PowerState,
    pub operation: Option<(VmAction, String)>,
    /// When the last operation ended (or the simulator started).
    pub last_operation_end: Instant,
}

/// Status of a runtime node as its host VM makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Online,
    Initializing,
    Offline,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::Initializing => "Initializing",
            Self::Offline => "Offline",
        }
    }
}

/// A runtime node's view of its host VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHost {
    pub status: NodeStatus,
    pub last_start: Option<Instant>,
    pub last_stop: Option<Instant>,
    /// `now` while online, else when the node was last online.
    pub last_connect: Option<Instant>,
}

/// An accepted power request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The VM already is in the requested state (200, nothing to poll).
    AlreadyDone,
    /// 202: poll this operation (`joined`: the same operation was already in flight).
    InFlight { operation_id: String, joined: bool },
}

/// A refused power request (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub state: PowerState,
    pub in_flight: Option<VmAction>,
}

#[derive(Debug)]
struct Inner {
    vms: Vec<VmDynamic>,
    operations: HashMap<String, OperationRecord>,
    history: VecDeque<VmEvent>,
}

/// Every configured VM. Static facts are lock-free; power state, operations and history sit behind one
/// short-lived lock.
#[derive(Debug)]
pub struct VmStore {
    infos: Vec<VmInfo>,
    by_key: HashMap<String, VmId>,
    by_name: HashMap<String, VmId>,
    inner: Mutex<Inner>,
    anchor: Instant,
    time_scale: f64,
    node_online: Duration,
}

fn vm_key(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("{subscription}/{resource_group}/{name}").to_lowercase()
}

/// FNV-1a, to derive stable per-VM seeds and ids.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl VmStore {
    /// The VMs of a validated `config`, in their initial states as of `now`.
    pub fn new(config: &SimConfig, now: Instant) -> Self {
        let scale = config.time_scale;
        let mut infos = Vec::with_capacity(config.vms.len());
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        let mut vms = Vec::with_capacity(config.vms.len());
        let mut history = VecDeque::new();
        for (i, def) in config.vms.iter().enumerate() {
            let key = vm_key(&def.subscription_id, &def.resource_group, &def.name);
            let seed = fnv(&def.name.to_lowercase());
            infos.push(VmInfo {
                name: def.name.clone(),
                subscription_id: def.subscription_id.clone(),
                resource_group: def.resource_group.clone(),
                location: def.location.clone(),
                vm_size: def.vm_size.clone(),
                vm_id: Uuid::from_u64_pair(seed, fnv(&key)).to_string(),
                refused_actions: def.refused_actions.clone(),
            });
            by_key.insert(key, VmId(i));
            by_name.insert(def.name.to_lowercase(), VmId(i));
            vms.push(VmDynamic::new(def, config.seed ^ seed, scale, now));
            history.push_back(VmEvent {
                at_secs: 0.0,
                vm: def.name.clone(),
                event: "state".into(),
                state: Some(def.initial_state.as_str().into()),
                operation_id: None,
            });
        }
        Self {
            infos,
            by_key,
            by_name,
            inner: Mutex::new(Inner {
                vms,
                operations: HashMap::new(),
                history,
            }),
            anchor: now,
            time_scale: scale,
            node_online: scaled(config.node_online_secs, scale),
        }
    }

    /// The VM at this ARM address (ignoring case).
    pub fn lookup(&self, subscription: &str, resource_group: &str, name: &str) -> Option<VmId> {
        self.by_key
            .get(&vm_key(subscription, resource_group, name))
            .copied()
    }

    /// The VM with this name (ignoring case; names are unique).
    pub fn by_name(&self, name: &str) -> Option<VmId> {
        self.by_name.get(&name.to_lowercase()).copied()
    }

    pub fn info(&self, id: VmId) -> Option<&VmInfo> {
        self.infos.get(id.0)
    }

    /// `Retry-After` of accepted operations and of polls in progress: 10 scaled seconds, rounded to
    /// whole real seconds (0 at small time scales).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = scaled(10.0, self.time_scale).as_secs_f64().round();
        // Bounded by scaled()'s cap, far below u64::MAX.
        secs as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scaled seconds since the simulator started.
    fn sim_secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.anchor).as_secs_f64() / self.time_scale
    }

    /// The VM's state at `now`.
    pub fn observe(&self, id: VmId, now: Instant) -> Option<VmObservation> {
        let mut inner = self.lock();
        self.settle(&mut inner, id, now)?;
        let vm = inner.vms.get(id.0)?;
        Some(VmObservation {
            state: vm.state,
            operation: vm
                .pending
                .as_ref()
                .map(|p| (p.action, p.operation_id.clone())),
            last_operation_end: vm.last_operation_end,
        })
    }

    /// Asks for a power operation at `now`.
    pub fn request(
        &self,
        id: VmId,
        action: VmAction,
        now: Instant,
    ) -> Option<Result<Accepted, Conflict>> {
        let mut inner = self.lock();
        self.settle(&mut inner, id, now)?;
        let name = self.infos.get(id.0)?.name.clone();
        let at_secs = self.sim_secs(now);
        let Inner {
            vms,
            operations,
            history,
        } = &mut *inner;
        let vm = vms.get_mut(id.0)?;
        let state = vm.state;
        let request_event = |operation_id: Option<String>| VmEvent {
            at_secs,
            vm: name.clone(),
            event: action.event().into(),
            state: None,
            operation_id,
        };
        if state == action.target() {
            push(history, request_event(None));
            return Some(Ok(Accepted::AlreadyDone));
        }
        if state == action.during() {
            if let Some(pending) = vm.pending.as_ref().filter(|p| p.action == action) {
                let operation_id = pending.operation_id.clone();
                push(history, request_event(Some(operation_id.clone())));
                return Some(Ok(Accepted::InFlight {
                    operation_id,
                    joined: true,
                }));
            }
        }
        let allowed = match action {
            VmAction::Start => matches!(state, PowerState::Stopped | PowerState::Deallocated),
            VmAction::Deallocate => matches!(state, PowerState::Running | PowerState::Stopped),
            VmAction::PowerOff => state == PowerState::Running,
        };
        if !allowed {
            return Some(Err(Conflict {
                state,
                in_flight: VmAction::in_flight(state),
            }));
        }
        let duration = match action {
            VmAction::Start => {
                let spread = vm.start_spread.mul_f64(vm.rng.gen::<f64>());
                vm.start.saturating_add(spread)
            }
            VmAction::Deallocate => vm.deallocate,
            VmAction::PowerOff => vm.power_off,
        };
        let ends = now.checked_add(duration).unwrap_or(now);
        let operation_id = Uuid::new_v4().to_string();
        operations.insert(
            operation_id.clone(),
            OperationRecord {
                vm: id,
                started: now,
                ends,
                canceled_at: None,
            },
        );
        vm.pending = Some(Pending {
            action,
            operation_id: operation_id.clone(),
            ends,
        });
        push(history, request_event(Some(operation_id.clone())));
        let event = vm.enter(action.during(), now, at_secs, &name);
        push(history, event);
        Some(Ok(Accepted::InFlight {
            operation_id,
            joined: false,
        }))
    }

    /// An async operation at `now`.
    pub fn operation(&self, operation_id: &str, now: Instant) -> Option<OperationView> {
        let record = {
            let mut inner = self.lock();
            let record = inner.operations.get(operation_id.trim())?.clone();
            self.settle(&mut inner, record.vm, now);
            record
        };
        let (status, ended) = match record.canceled_at {
            Some(at) => (OperationStatus::Canceled, Some(at)),
            None if now >= record.ends => (OperationStatus::Succeeded, Some(record.ends)),
            None => (OperationStatus::InProgress, None),
        };
        Some(OperationView {
            vm: record.vm,
            status,
            started: record.started,
            ended,
        })
    }

    /// Forces a VM into a settled state at `now`, preempting (cancelling) any operation in flight.
    /// `nodes_online`: when forced to `running`, hosted nodes are `Online` at once instead of after
    /// the node start-up delay. Transitional states are refused.
    pub fn force(
        &self,
        id: VmId,
        state: PowerState,
        nodes_online: bool,
        now: Instant,
    ) -> Result<(), String> {
        if state.is_transitional() {
            return Err(format!(
                "cannot force the transitional state '{}': use running, stopped or deallocated",
                state.as_str()
            ));
        }
        let mut inner = self.lock();
        self.settle(&mut inner, id, now)
            .ok_or_else(|| "unknown VM".to_string())?;
        let name = self
            .infos
            .get(id.0)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let at_secs = self.sim_secs(now);
        let Inner {
            vms,
            operations,
            history,
        } = &mut *inner;
        let vm = vms.get_mut(id.0).ok_or_else(|| "unknown VM".to_string())?;
        if let Some(pending) = vm.pending.take() {
            if let Some(op) = operations.get_mut(&pending.operation_id) {
                op.canceled_at = Some(now);
            }
            vm.last_operation_end = now;
        }
        if vm.state != state {
            let event = vm.enter(state, now, at_secs, &name);
            push(history, event);
        }
        if state == PowerState::Running {
            vm.online_at = if nodes_online {
                Some(now)
            } else {
                vm.last_running.unwrap_or(now).checked_add(self.node_online)
            };
        }
        Ok(())
    }

    /// The whole history, oldest first, every VM settled at `now`.
    pub fn history(&self, now: Instant) -> Vec<VmEvent> {
        let mut inner = self.lock();
        for i in 0..self.infos.len() {
            self.settle(&mut inner, VmId(i), now);
        }
        let mut events: Vec<VmEvent> = inner.history.iter().cloned().collect();
        // Lazily settled changes are recorded late; order by when they happened (stable, so a request
        // stays before the state change it caused).
        events.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        events
    }

    /// Scaled seconds the VM has been allocated, as of `now`.
    pub fn allocated_secs(&self, id: VmId, now: Instant) -> Option<f64> {
        let mut inner = self.lock();
        self.settle(&mut inner, id, now)?;
        let vm = inner.vms.get(id.0)?;
        Some(vm.allocated_until(now).as_secs_f64() / self.time_scale)
    }

    /// Every VM, settled at `now`.
    pub fn summaries(&self, now: Instant) -> Vec<VmSummary> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(self.infos.len());
        for (i, info) in self.infos.iter().enumerate() {
            self.settle(&mut inner, VmId(i), now);
            if let Some(vm) = inner.vms.get(i) {
                out.push(VmSummary {
                    name: info.name.clone(),
                    subscription_id: info.subscription_id.clone(),
                    resource_group: info.resource_group.clone(),
                    location: info.location.clone(),
                    power_state: vm.state.as_str().into(),
                    operation_id: vm.pending.as_ref().map(|p| p.operation_id.clone()),
                    allocated_secs: vm.allocated_until(now).as_secs_f64() / self.time_scale,
                    nodes_online: vm.node_host(now).status == NodeStatus::Online,
                });
            }
        }
        out
    }

    /// What runtime nodes on these VMs see at `now` (one lock for all of them).
    pub fn node_hosts(&self, ids: &[VmId], now: Instant) -> Vec<NodeHost> {
        let mut inner = self.lock();
        ids.iter()
            .map(|id| {
                self.settle(&mut inner, *id, now);
                inner
                    .vms
                    .get(id.0)
                    .map_or(NodeHost::offline(), |vm| vm.node_host(now))
            })
            .collect()
    }

    /// Applies the end of an operation that finished by `now`. `None` for an unknown VM.
    fn settle(&self, inner: &mut Inner, id: VmId, now: Instant) -> Option<()> {
        let name = &self.infos.get(id.0)?.name;
        let vm = inner.vms.get_mut(id.0)?;
        let Some(pending) = vm.pending.clone().filter(|p| p.ends <= now) else {
            return Some(());
        };
        vm.pending = None;
        vm.last_operation_end = pending.ends;
        let target = pending.action.target();
        let event = vm.enter(target, pending.ends, self.sim_secs(pending.ends), name);
        if target == PowerState::Running {
            vm.online_at = pending.ends.checked_add(self.node_online);
        }
        push(&mut inner.history, event);
        Some(())
    }
}

fn push(history: &mut VecDeque<VmEvent>, event: VmEvent) {
    if history.len() >= VM_HISTORY_CAPACITY {
        history.pop_front();
    }
    history.push_back(event);
}

impl NodeHost {
    fn offline() -> Self {
        Self {
            status: NodeStatus::Offline,
            last_start: None,
            last_stop: None,
            last_connect: None,
        }
    }
}

impl VmDynamic {
    fn new(def: &VmDef, seed: u64, scale: f64, now: Instant) -> Self {
        let running = def.initial_state == PowerState::Running;
        Self {
            state: def.initial_state,
            since: now,
            pending: None,
            // A VM configured running has been up for a while: its nodes are online.
            online_at: running.then_some(now),
            last_running: running.then_some(now),
            last_stop: None,
            last_online_end: None,
            last_operation_end: now,
            allocated: Duration::ZERO,
            start: scaled(def.start_secs, scale),
            start_spread: scaled(def.start_spread_secs, scale),
            deallocate: scaled(def.deallocate_secs, scale),
            power_off: scaled(def.power_off_secs, scale),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Moves to `state` at `at` (simulated `at_secs`) and returns the history event.
    fn enter(&mut self, state: PowerState, at: Instant, at_secs: f64, name: &str) -> VmEvent {
        if self.state.is_allocated() {
            self.allocated = self
                .allocated
                .saturating_add(at.saturating_duration_since(self.since));
        }
        if self.state == PowerState::Running && state != PowerState::Running {
            self.last_stop = Some(at);
            if self.online_at.is_some_and(|o| o <= at) {
                self.last_online_end = Some(at);
            }
            self.online_at = None;
        }
        if state == PowerState::Running {
            self.last_running = Some(at);
        }
        self.state = state;
        self.since = at;
        VmEvent {
            at_secs,
            vm: name.to_string(),
            event: "state".into(),
            state: Some(state.as_str().into()),
            operation_id: None,
        }
    }

    fn allocated_until(&self, now: Instant) -> Duration {
        if self.state.is_allocated() {
            self.allocated
                .saturating_add(now.saturating_duration_since(self.since))
        } else {
            self.allocated
        }
    }

    fn node_host(&self, now: Instant) -> NodeHost {
        let status = match (self.state, self.online_at) {
            (PowerState::Running, Some(online_at)) if online_at <= now => NodeStatus::Online,
            (PowerState::Running, _) => NodeStatus::Initializing,
            _ => NodeStatus::Offline,
        };
        NodeHost {
            status,
            last_start: self.last_running,
            last_stop: self.last_stop,
            last_connect: if status == NodeStatus::Online {
                Some(now)
            } else {
                self.last_online_end
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeDef;

    /// time scale 0.001: start 90 ms, deallocate 60 ms, powerOff 30 ms, nodes online 45 ms after.
    fn store() -> (VmStore, Instant) {
        let mut config = SimConfig::sample();
        config.time_scale = 0.001;
        config.runtimes = vec![RuntimeDef::on_vms("F", "R", &["shir-vm-1"])];
        let t0 = Instant::now();
        (VmStore::new(&config, t0), t0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn in_flight(result: Option<Result<Accepted, Conflict>>) -> String {
        match result {
            Some(Ok(Accepted::InFlight { operation_id, .. })) => operation_id,
            other => panic!("expected an operation in flight, got {other:?}"),
        }
    }

    fn state_at(store: &VmStore, id: VmId, at: Instant) -> PowerState {
        store.observe(id, at).map(|o| o.state).expect("known VM")
    }

    #[test]
    fn power_states_parse_and_display() {
        assert_eq!(PowerState::parse("Running"), Some(PowerState::Running));
        assert_eq!(
            PowerState::parse("PowerState/deallocated"),
            Some(PowerState::Deallocated)
        );
        assert_eq!(PowerState::parse("on"), None);
        assert_eq!(PowerState::Running.display_status(), "VM running");
        assert!(PowerState::Stopped.is_allocated() && !PowerState::Deallocated.is_allocated());
    }

    #[test]
    fn start_takes_start_secs_then_deallocate_takes_deallocate_secs() {
        let (store, t0) = store();
        let vm = store.lookup(crate::SAMPLE_TENANT_ID, "adf.PROCFWK", "SHIR-VM-1");
        let vm = vm.expect("case-insensitive lookup");
        assert_eq!(state_at(&store, vm, t0), PowerState::Deallocated);
        let op = in_flight(store.request(vm, VmAction::Start, t0 + ms(10)));
        assert_eq!(state_at(&store, vm, t0 + ms(99)), PowerState::Starting);
        let view = store.operation(&op, t0 + ms(99)).expect("operation");
        assert_eq!(view.status, OperationStatus::InProgress);
        assert_eq!(state_at(&store, vm, t0 + ms(100)), PowerState::Running);
        let view = store.operation(&op, t0 + ms(150)).expect("operation");
        assert_eq!(view.status, OperationStatus::Succeeded);
        assert_eq!(view.ended, Some(t0 + ms(100)));

        let op = in_flight(store.request(vm, VmAction::Deallocate, t0 + ms(200)));
        assert_eq!(state_at(&store, vm, t0 + ms(259)), PowerState::Deallocating);
        // Nobody looks until much later: the change is recorded when it happened.
        let history = store.history(t0 + ms(1000));
        let states: Vec<(f64, &str)> = history
            .iter()
            .filter(|e| e.vm == "shir-vm-1" && e.event == "state")
            .map(|e| (e.at_secs, e.state.as_deref().unwrap_or("")))
            .collect();
        let expected = [
            (0.0, "deallocated"),
            (10.0, "starting"),
            (100.0, "running"),
            (200.0, "deallocating"),
            (260.0, "deallocated"),
        ];
        assert_eq!(states.len(), expected.len(), "{states:?}");
        for ((at, state), (want_at, want_state)) in states.iter().zip(expected) {
            assert!((at - want_at).abs() < 1e-6, "{states:?}");
            assert_eq!(*state, want_state);
        }
        let requests: Vec<&VmEvent> = history
            .iter()
            .filter(|e| e.event.ends_with("_requested"))
            .collect();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].operation_id.as_deref(), Some(op.as_str()));
        // starting (90) + running (100) + deallocating (60) seconds were billed.
        let billed = store.allocated_secs(vm, t0 + ms(5000)).expect("known VM");
        assert!((billed - 250.0).abs() < 1e-6, "{billed}");
    }

    #[test]
    fn conflicting_operations_are_refused_and_repeats_join_or_do_nothing() {
        let (store, t0) = store();
        let vm = store.by_name("shir-vm-2").expect("sample VM");
        let op = in_flight(store.request(vm, VmAction::Start, t0));
        // Start again while starting: the same operation.
        assert_eq!(
            store.request(vm, VmAction::Start, t0 + ms(5)),
            Some(Ok(Accepted::InFlight {
                operation_id: op.clone(),
                joined: true
            }))
        );
        // Deallocate while starting: 409.
        assert_eq!(
            store.request(vm, VmAction::Deallocate, t0 + ms(10)),
            Some(Err(Conflict {
                state: PowerState::Starting,
                in_flight: Some(VmAction::Start)
            }))
        );
        // Start on running: nothing to do.
        assert_eq!(
            store.request(vm, VmAction::Start, t0 + ms(95)),
            Some(Ok(Accepted::AlreadyDone))
        );
        in_flight(store.request(vm, VmAction::Deallocate, t0 + ms(100)));
        // Start while deallocating: 409; powerOff too.
        for action in [VmAction::Start, VmAction::PowerOff] {
            assert_eq!(
                store.request(vm, action, t0 + ms(120)),
                Some(Err(Conflict {
                    state: PowerState::Deallocating,
                    in_flight: Some(VmAction::Deallocate)
                }))
            );
        }
        // Once deallocated: deallocate is a no-op, powerOff a conflict, start works.
        assert_eq!(
            store.request(vm, VmAction::Deallocate, t0 + ms(160)),
            Some(Ok(Accepted::AlreadyDone))
        );
        assert!(matches!(
            store.request(vm, VmAction::PowerOff, t0 + ms(160)),
            Some(Err(Conflict {
                state: PowerState::Deallocated,
                in_flight: None
            }))
        ));
        in_flight(store.request(vm, VmAction::Start, t0 + ms(161)));
    }

    #[test]
    fn power_off_stops_but_keeps_the_vm_allocated() {
        let (store, t0) = store();
        let vm = store.by_name("shir-vm-3").expect("sample VM");
        store
            .force(vm, PowerState::Running, true, t0)
            .expect("forced");
        in_flight(store.request(vm, VmAction::PowerOff, t0 + ms(10)));
        assert_eq!(state_at(&store, vm, t0 + ms(39)), PowerState::Stopping);
        assert_eq!(state_at(&store, vm, t0 + ms(40)), PowerState::Stopped);
        // Stopped is still billed; deallocate from stopped is allowed.
        in_flight(store.request(vm, VmAction::Deallocate, t0 + ms(50)));
        assert_eq!(state_at(&store, vm, t0 + ms(110)), PowerState::Deallocated);
        let billed = store.allocated_secs(vm, t0 + ms(500)).expect("known VM");
        assert!((billed - 110.0).abs() < 1e-6, "{billed}");
    }

    #[test]
    fn nodes_come_online_after_the_delay_and_go_offline_at_once() {
        let (store, t0) = store();
        let vm = store.by_name("shir-vm-1").expect("sample VM");
        let status = |at| store.node_hosts(&[vm], at)[0].status;
        assert_eq!(status(t0), NodeStatus::Offline);
        in_flight(store.request(vm, VmAction::Start, t0));
        assert_eq!(status(t0 + ms(50)), NodeStatus::Offline);
        assert_eq!(status(t0 + ms(90)), NodeStatus::Initializing);
        assert_eq!(status(t0 + ms(134)), NodeStatus::Initializing);
        let online = store.node_hosts(&[vm], t0 + ms(135))[0];
        assert_eq!(online.status, NodeStatus::Online);
        assert_eq!(online.last_start, Some(t0 + ms(90)));
        assert_eq!(online.last_connect, Some(t0 + ms(135)));
        in_flight(store.request(vm, VmAction::Deallocate, t0 + ms(200)));
        let offline = store.node_hosts(&[vm], t0 + ms(201))[0];
        assert_eq!(offline.status, NodeStatus::Offline);
        assert_eq!(offline.last_stop, Some(t0 + ms(200)));
        assert_eq!(offline.last_connect, Some(t0 + ms(200)));
    }

    #[test]
    fn forcing_a_state_preempts_the_operation_in_flight() {
        let (store, t0) = store();
        let vm = store.by_name("shir-vm-4").expect("sample VM");
        let op = in_flight(store.request(vm, VmAction::Start, t0));
        store
            .force(vm, PowerState::Deallocated, false, t0 + ms(20))
            .expect("forced");
        let view = store.operation(&op, t0 + ms(200)).expect("operation");
        assert_eq!(view.status, OperationStatus::Canceled);
        assert_eq!(state_at(&store, vm, t0 + ms(200)), PowerState::Deallocated);
        assert!(store
            .force(vm, PowerState::Starting, false, t0 + ms(200))
            .is_err());
        store
            .force(vm, PowerState::Running, false, t0 + ms(300))
            .expect("forced");
        assert_eq!(
            store.node_hosts(&[vm], t0 + ms(344))[0].status,
            NodeStatus::Initializing
        );
        assert_eq!(
            store.node_hosts(&[vm], t0 + ms(345))[0].status,
            NodeStatus::Online
        );
        let summary = store
            .summaries(t0 + ms(400))
            .into_iter()
            .find(|s| s.name == "shir-vm-4")
            .expect("summary");
        assert_eq!(summary.power_state, "running");
        assert!(summary.nodes_online);
    }

    #[test]
    fn start_spread_is_seeded_and_bounded() {
        let mut config = SimConfig::sample();
        config.time_scale = 0.001;
        config.vms[0].start_spread_secs = 60.0;
        let t0 = Instant::now();
        let durations = |store: &VmStore| {
            let vm = store.by_name("shir-vm-1").expect("sample VM");
            let mut out = Vec::new();
            let mut t = t0;
            for _ in 0..5 {
                let op = in_flight(store.request(vm, VmAction::Start, t));
                let view = store.operation(&op, t + ms(10_000)).expect("op");
                let ended = view.ended.expect("ended");
                out.push(ended - t);
                store
                    .force(vm, PowerState::Deallocated, false, ended)
                    .expect("forced");
                t = ended + ms(1);
            }
            out
        };
        let first = durations(&VmStore::new(&config, t0));
        assert!(first.iter().all(|d| *d >= ms(90) && *d < ms(150)));
        assert!(first.iter().any(|d| *d != first[0]));
        assert_eq!(durations(&VmStore::new(&config, t0)), first);
    }
}

//! The simulator's shared state: the configuration turned into lookup tables, issued tokens, pipeline
//! runs, virtual machines and integration runtimes, fault settings, the request log and counters. One `Arc<SimState>` is shared by every request;
//! each part has its own short-lived lock (or none), and no lock is ever held across an `.await`.

use super::clock::SimClock;
use super::compute::{PowerState, VmEvent, VmStore, VmSummary};
use super::config::{Faults, PipelineDef, Principal, SimConfig};
use super::faults::FaultInjector;
use super::log::{RequestLog, RequestRecord};
use super::runs::RunStore;
use super::runtimes::RuntimeStore;
use super::tokens::{derived_object_id, TokenStore};
use super::SimError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// The token-request counter key of managed-identity requests.
pub const MANAGED_IDENTITY_KEY: &str = "managed-identity";

/// A Key Vault secret with its (stable) version id.
pub(crate) struct StoredSecret {
    pub name: String,
    pub value: String,
    pub version: String,
    pub created_unix: i64,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("version", &self.version)
            .finish()
    }
}

/// Everything requests share. Tests reach it through [`RunningSim::state`](super::RunningSim::state).
#[derive(Debug)]
pub struct SimState {
    pub(crate) config: SimConfig,
    pipelines: HashMap<String, Arc<PipelineDef>>,
    principals: HashMap<String, Principal>,
    forbidden_clients: HashSet<String>,
    factories: Option<HashSet<String>>,
    secrets: HashMap<String, StoredSecret>,
    pub(crate) tokens: TokenStore,
    token_requests: Mutex<HashMap<String, u64>>,
    pub(crate) runs: RunStore,
    pub(crate) faults: FaultInjector,
    pub(crate) log: RequestLog,
    pub(crate) clock: SimClock,
    pub(crate) vms: VmStore,
    pub(crate) runtimes: RuntimeStore,
    arm_reads: AtomicU64,
    arm_writes: AtomicU64,
}

/// The lookup key of a factory: `subscription/resourcegroup/factory`, lower-cased (ARM ignores case).
pub(crate) fn factory_key(subscription: &str, resource_group: &str, factory: &str) -> String {
    format!("{subscription}/{resource_group}/{factory}").to_lowercase()
}

impl SimState {
    /// Validates `config` and builds the lookup tables.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let clock = SimClock::new();
        let created_unix = clock.wall(Instant::now()).timestamp();
        let pipelines = config
            .pipelines
            .iter()
            .map(|p| (p.name.to_lowercase(), Arc::new(p.clone())))
            .collect();
        let principals = config
            .principals
            .iter()
            .map(|p| (p.client_id.to_lowercase(), p.clone()))
            .collect();
        let forbidden_clients = config
            .forbidden_clients
            .iter()
            .map(|c| c.to_lowercase())
            .collect();
        let factories = config.factories.as_ref().map(|list| {
            list.iter()
                .map(|f| factory_key(&f.subscription_id, &f.resource_group, &f.name))
                .collect()
        });
        let secrets = config
            .secrets
            .iter()
            .map(|(name, value)| {
                let version = secret_version(name, value);
                let stored = StoredSecret {
                    name: name.clone(),
                    value: value.clone(),
                    version,
                    created_unix,
                };
                (name.to_lowercase(), stored)
            })
            .collect();
        let vms = VmStore::new(&config, Instant::now());
        let runtimes = RuntimeStore::new(&config, &vms);
        Ok(Self {
            faults: FaultInjector::new(config.faults, config.seed),
            vms,
            runtimes,
            pipelines,
            principals,
            forbidden_clients,
            factories,
            secrets,
            tokens: TokenStore::default(),
            token_requests: Mutex::new(HashMap::new()),
            runs: RunStore::default(),
            log: RequestLog::default(),
            clock,
            arm_reads: AtomicU64::new(0),
            arm_writes: AtomicU64::new(0),
            config,
        })
    }

    /// The configuration the simulator started with (current faults: [`SimState::faults`]).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Every logged request, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.snapshot()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.log.clear();
    }

    /// Token requests per client id (`"managed-identity"` for the managed-identity endpoint).
    pub fn token_requests(&self) -> BTreeMap<String, u64> {
        self.token_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Replaces the fault settings. Ratios outside `0..=1` are clamped (not-a-number becomes 0).
    pub fn set_faults(&self, faults: Faults) {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.faults.set(Faults {
            throttle_ratio: clamp(faults.throttle_ratio),
            server_error_ratio: clamp(faults.server_error_ratio),
            latency_ratio: clamp(faults.latency_ratio),
            ..faults
        });
    }

    /// The fault settings in force.
    pub fn faults(&self) -> Faults {
        self.faults.current()
    }

    /// The PipelineRun JSON `GET .../pipelineruns/{runId}` would answer now.
    pub fn run(&self, run_id: &str) -> Option<serde_json::Value> {
        let run = self.runs.get(run_id)?;
        serde_json::to_value(run.view(&self.clock, Instant::now())).ok()
    }

    /// How many pipeline runs were created.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Every VM power request accepted and every power-state change, oldest first (each VM settled
    /// now). Times are scaled seconds since the simulator started.
    pub fn vm_history(&self) -> Vec<VmEvent> {
        self.vms.history(Instant::now())
    }

    /// The power state (`running`, `deallocated`, …) of the VM with this name, now.
    pub fn vm_state(&self, vm: &str) -> Option<String> {
        let id = self.vms.by_name(vm)?;
        self.vms
            .observe(id, Instant::now())
            .map(|o| o.state.as_str().to_string())
    }

    /// Scaled seconds the VM has spent allocated (billed: every state but `deallocated`) so far.
    pub fn allocated_seconds(&self, vm: &str) -> Option<f64> {
        let id = self.vms.by_name(vm)?;
        self.vms.allocated_secs(id, Instant::now())
    }

    /// Forces a VM into `running`, `stopped` or `deallocated` now, cancelling any operation in flight
    /// (`nodes_online`: nodes on a VM forced `running` are `Online` at once). Errors name the problem.
    pub fn set_vm_state(
        &self,
        vm: &str,
        state: PowerState,
        nodes_online: bool,
    ) -> Result<(), String> {
        let id = self
            .vms
            .by_name(vm)
            .ok_or_else(|| format!("VM '{vm}' is not configured"))?;
        self.vms.force(id, state, nodes_online, Instant::now())
    }

    /// Every VM's current state and billed time.
    pub fn vm_summaries(&self) -> Vec<VmSummary> {
        self.vms.summaries(Instant::now())
    }

    /// The `getStatus` answer of a self-hosted integration runtime, now (`None`: no such runtime).
    pub fn integration_runtime_status(
        &self,
        subscription: &str,
        resource_group: &str,
        factory: &str,
        runtime: &str,
    ) -> Option<serde_json::Value> {
        let key = factory_key(subscription, resource_group, factory);
        let runtime = self.runtimes.get(&key, runtime)?;
        Some(runtime.status(&self.vms, &self.clock, Instant::now()))
    }

    pub(crate) fn count_token_request(&self, key: &str) {
        let mut counts = self
            .token_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                counts.insert(key.to_string(), 1);
            }
        }
    }

    pub(crate) fn pipeline(&self, name: &str) -> Option<&Arc<PipelineDef>> {
        self.pipelines.get(&name.to_lowercase())
    }

    pub(crate) fn principal(&self, client_id: &str) -> Option<&Principal> {
        self.principals.get(&client_id.to_lowercase())
    }

    pub(crate) fn accepts_any_client(&self) -> bool {
        self.principals.is_empty()
    }

    pub(crate) fn object_id_of(&self, client_id: &str) -> String {
        self.principal(client_id)
            .and_then(|p| p.object_id.clone())
            .unwrap_or_else(|| derived_object_id(client_id))
    }

    pub(crate) fn is_forbidden(&self, client_id: &str) -> bool {
        self.forbidden_clients.contains(&client_id.to_lowercase())
    }

    pub(crate) fn factory_exists(&self, key: &str) -> bool {
        self.factories
            .as_ref()
            .is_none_or(|known| known.contains(key))
    }

    pub(crate) fn secret(&self, name: &str) -> Option<&StoredSecret> {
        self.secrets.get(&name.to_lowercase())
    }

    /// `x-ms-ratelimit-remaining-subscription-reads` / `-writes`: a budget that counts down with use
    /// and refills (12 000 reads, 1 200 writes, like the classic ARM hourly limits).
    pub(crate) fn remaining_budget(&self, write: bool) -> u64 {
        let (counter, limit) = if write {
            (&self.arm_writes, 1_200)
        } else {
            (&self.arm_reads, 12_000)
        };
        let used = counter.fetch_add(1, Ordering::Relaxed);
        limit - 1 - (used % limit)
    }
}

/// A stable 32-hex-digit version id, as Key Vault's look.
fn secret_version(name: &str, value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{value}", name.to_lowercase()).as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FactoryRef;

    #[test]
    fn lookups_ignore_case() {
        let mut config = SimConfig::sample();
        config.principals.push(Principal::new("App-1", "s"));
        config.forbidden_clients.push("BAD".into());
        config.factories = Some(vec![FactoryRef {
            subscription_id: "Sub".into(),
            resource_group: "ADF.procfwk".into(),
            name: "WorkersFactory".into(),
        }]);
        config.secrets.insert("Db-Password".into(), "x".into());
        let state = SimState::new(config).expect("valid");
        assert!(state.pipeline("wait 1").is_some());
        assert!(state.principal("app-1").is_some());
        assert!(state.is_forbidden("bad"));
        assert!(state.factory_exists(&factory_key("sub", "adf.procfwk", "workersfactory")));
        assert!(!state.factory_exists(&factory_key("sub", "adf.procfwk", "other")));
        let secret = state.secret("db-password").expect("secret");
        assert_eq!(secret.version.len(), 32);
        assert!(!state.accepts_any_client());
        let (token, _) = state.tokens.issue(
            "a",
            "o",
            "r",
            std::time::Duration::from_secs(9),
            Instant::now(),
            &state.clock,
        );
        let debug = format!("{state:?}");
        assert!(
            !debug.contains(&token) && !debug.contains("\"x\""),
            "{debug}"
        );
    }

    #[test]
    fn token_requests_are_counted_and_faults_clamped() {
        let state = SimState::new(SimConfig::sample()).expect("valid");
        state.count_token_request("a");
        state.count_token_request("a");
        state.count_token_request(MANAGED_IDENTITY_KEY);
        assert_eq!(state.token_requests()["a"], 2);
        assert_eq!(state.token_requests()[MANAGED_IDENTITY_KEY], 1);
        state.set_faults(Faults {
            throttle_ratio: 3.0,
            server_error_ratio: f64::NAN,
            ..Faults::default()
        });
        assert_eq!(state.faults().throttle_ratio, 1.0);
        assert_eq!(state.faults().server_error_ratio, 0.0);
    }

    #[test]
    fn rate_limit_budget_counts_down() {
        let state = SimState::new(SimConfig::sample()).expect("valid");
        assert_eq!(state.remaining_budget(false), 11_999);
        assert_eq!(state.remaining_budget(false), 11_998);
        assert_eq!(state.remaining_budget(true), 1_199);
    }
}

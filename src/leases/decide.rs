//! One decision about a pool, as one metadata-store transaction that holds the pool's row lock from the
//! first statement to the commit — ARM calls included. In order: lock (creating the pool on first use),
//! apply the caller's lease change, expire old leases, read each node's power state, plan
//! ([`super::plan`]), start or deallocate, check the runtime's nodes, write node marks and the power
//! log. A failure anywhere rolls the whole decision back; running it again is harmless (start and
//! deallocate of a VM already on its way join the operation in flight).

use super::intents::{self, IntentKind};
use super::plan::{self, NodeAction, NodeState, Sizing};
use super::{
    LeaseError, OperationOutcome, PoolSpec, PowerControl, PowerRequest, RuntimeRef, RuntimeStatus,
};
use crate::domain::{Guid, PowerState, ResourceName};
use crate::store::statements as sql;
use crate::store::{Row, SqlValue, Store, Transition, Tx};
use chrono::{Duration, NaiveDateTime};
use std::sync::Arc;

/// Holders are compared as Azure SQL's default collation compares them: case-insensitively (the
/// primary key of `VmLeases` would otherwise refuse a second lease that differs only in case).
pub(super) fn same_holder(stored: &str, given: &str) -> bool {
    stored == given || stored.to_lowercase() == given.to_lowercase()
}

/// What the caller does to its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Take the lease, or renew it if held.
    Take { holder: String, lease_secs: u32 },
    /// Renew the lease if it is held and not expired; never creates one.
    Renew { holder: String, lease_secs: u32 },
    /// Give the lease back.
    Release { holder: String },
    /// Only reconcile (the idle sweeper).
    Observe,
}

impl Change {
    fn holder(&self) -> Option<&str> {
        match self {
            Self::Take { holder, .. } | Self::Renew { holder, .. } | Self::Release { holder } => {
                Some(holder)
            }
            Self::Observe => None,
        }
    }
}

/// One node after the decision.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReport {
    pub vm_name: String,
    pub power_state: PowerState,
    pub needed: bool,
    /// The runtime node on this VM, when a runtime was named and it reports one.
    pub runtime_node_status: Option<String>,
    pub ready: bool,
}

/// The pool after the decision.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolReport {
    pub pool_key: String,
    pub power_state: PowerState,
    /// Some needed node is running (not about to be deallocated) and, when a runtime was named, its
    /// runtime node is `Online`.
    pub ready: bool,
    pub active_leases: usize,
    pub nodes_needed: usize,
    /// The caller's lease expiry, if it holds one after the decision.
    pub lease_expires: Option<NaiveDateTime>,
    /// This decision asked ARM to start at least one node.
    pub started: bool,
    /// This decision asked ARM to deallocate at least one node.
    pub deallocated: bool,
    /// When the next idle node will be deallocated if nothing changes.
    pub deallocate_after: Option<NaiveDateTime>,
    pub runtime_state: Option<String>,
    /// A start or deallocation ARM refused for now (409), to be retried by the next decision.
    pub deferred: bool,
    pub nodes: Vec<NodeReport>,
    /// Lease events this decision wrote (for tests and logs).
    pub expired_leases: usize,
    /// The longest `Retry-After` ARM gave for an operation this decision started.
    pub retry_after_secs: Option<u64>,
}

/// A decision, ready to run against a store.
pub struct Decision {
    pub spec: Option<PoolSpec>,
    pub pool_key: String,
    pub change: Change,
    pub now: NaiveDateTime,
    pub power: Arc<dyn PowerControl>,
    /// How long to wait for the pool's lock (another decision may hold it through its ARM calls).
    /// Past it the caller hears "busy, ask again" instead of queueing with a pooled connection held:
    /// 50 Infants on one pool must not take every connection of the instance. `None` waits for ever.
    pub lock_wait: Option<std::time::Duration>,
}

/// The longest a `Take` waits for its pool's turn in this process (well inside ADF's 230 s).
const TAKE_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The default [`Decision::lock_wait`] (`PROCFWK_VM_LOCK_WAIT_SECS`'s default, kept with the settings).
pub use crate::config::DEFAULT_LOCK_WAIT;

/// How long a requested deallocation that the instance view does not show yet is believed (longer than
/// any deallocation takes; a stale mark past it gives way to what ARM shows).
const PENDING_TRUST_MINUTES: i64 = 15;

impl Decision {
    /// A decision for a pool a caller describes.
    pub fn new(
        spec: PoolSpec,
        change: Change,
        now: NaiveDateTime,
        power: Arc<dyn PowerControl>,
    ) -> Self {
        Self {
            pool_key: spec.key(),
            spec: Some(spec),
            change,
            now,
            power,
            lock_wait: Some(DEFAULT_LOCK_WAIT),
        }
    }

    /// The same decision with another bound on the wait for the pool's lock.
    pub fn with_lock_wait(mut self, lock_wait: Option<std::time::Duration>) -> Self {
        self.lock_wait = lock_wait;
        self
    }

    /// A reconciliation of a pool known to the store (the sweeper).
    pub fn observe(pool_key: String, now: NaiveDateTime, power: Arc<dyn PowerControl>) -> Self {
        Self {
            pool_key,
            spec: None,
            change: Change::Observe,
            now,
            power,
            lock_wait: Some(DEFAULT_LOCK_WAIT),
        }
    }

    /// Run the decision. If another decision holds the pool past [`Decision::lock_wait`], the answer
    /// is the pool as last recorded (a snapshot read, which waits for no lock), `busy` and not ready:
    /// the caller asks again after `RetryAfterSeconds`.
    pub async fn run(&self, store: &Store) -> Result<PoolReport, LeaseError> {
        // In this process, wait for the pool's turn without holding a connection.
        let mut turn = match self.lock_wait {
            Some(limit) => match super::gate::turn(&self.pool_key, self.turn_wait(limit)).await {
                Ok(turn) => Some(turn),
                Err(super::gate::Busy { last: Some(last) }) => {
                    let report = busy_from(last);
                    return self.record_while_busy(store, report).await;
                }
                Err(super::gate::Busy { last: None }) => return self.busy(store).await,
            },
            None => None,
        };
        let outcome = match store.run(self).await {
            Err(LeaseError::Store(e)) if e.is_lock_timeout() => self.busy(store).await,
            other => other,
        };
        if let (Some(turn), Ok(report)) = (turn.as_mut(), &outcome) {
            turn.remember(report);
        }
        outcome
    }

    /// How long to wait for the pool's turn in this process. Waiting here holds no connection, so a
    /// `Take` (a worker about to need the VM) waits its turn rather than being told "busy" and having
    /// to reserve its lease separately; the other changes wait only the lock wait.
    fn turn_wait(&self, lock_wait: std::time::Duration) -> std::time::Duration {
        match self.change {
            Change::Take { .. } => TAKE_TURN_WAIT.max(lock_wait),
            _ => lock_wait,
        }
    }

    async fn busy(&self, store: &Store) -> Result<PoolReport, LeaseError> {
        tracing::info!(pool = %self.pool_key, "pool busy with another decision; answering not ready");
        let report = store
            .run(&BusyReport {
                pool_key: self.pool_key.clone(),
                now: self.now,
            })
            .await?;
        self.record_while_busy(store, report).await
    }

    /// A `Take` or `Release` that found the pool busy is recorded as the holder's intent (without the
    /// pool's lock, see [`super::intents`]): a `Take` becomes a lease at the next decision under the lock
    /// (the caller's `status` calls find it then), a `Release` deletes the holder's lease at once. An
    /// intent that cannot be recorded now (its row is locked past the lock wait) fails the call as
    /// retryable (503), so the caller asks again rather than poll for a lease nobody will take or leave
    /// its lease to expire.
    async fn record_while_busy(
        &self,
        store: &Store,
        mut report: PoolReport,
    ) -> Result<PoolReport, LeaseError> {
        let kind = match &self.change {
            Change::Take { lease_secs, .. } => IntentKind::Take {
                lease_secs: *lease_secs,
            },
            Change::Release { .. } => IntentKind::Release,
            Change::Renew { .. } | Change::Observe => return Ok(report),
        };
        let Some(holder) = self.change.holder() else {
            return Ok(report);
        };
        let record = RecordIntent {
            pool_key: self.pool_key.clone(),
            holder: holder.to_string(),
            kind,
            now: self.now,
            lock_wait: self.lock_wait,
        };
        if store.run(&record).await? {
            report.active_leases = report.active_leases.saturating_sub(1);
        }
        Ok(report)
    }
}

/// Record a holder's intent on a busy pool, without the pool's lock (see [`super::intents`]). For a
/// release, also delete the holder's lease; returns whether a lease was deleted. Nothing is recorded
/// when the pool does not exist yet (its first decision is still running).
struct RecordIntent {
    pool_key: String,
    holder: String,
    kind: IntentKind,
    now: NaiveDateTime,
    lock_wait: Option<std::time::Duration>,
}

#[async_trait::async_trait]
impl Transition for RecordIntent {
    type Output = bool;
    type Error = LeaseError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LeaseError> {
        if let Some(limit) = self.lock_wait {
            tx.set_lock_timeout(limit).await?;
        }
        let key = self.pool_key.as_str();
        let holder = self.holder.as_str();
        if tx.query(&sql::VM_POOL_GET, &[key.into()]).await?.is_empty() {
            return Ok(false);
        }
        if !intents::record(tx, key, holder, self.kind, self.now).await? {
            return Ok(false);
        }
        if self.kind != IntentKind::Release {
            return Ok(false);
        }
        let deleted = tx
            .execute(&sql::VM_LEASE_DELETE, &[key.into(), holder.into()])
            .await?;
        if deleted == 0 {
            return Ok(false);
        }
        let live = tx
            .query(&sql::VM_LEASES_OF_POOL, &[key.into()])
            .await?
            .iter()
            .map(|r| required_datetime(r, "ExpiresDateTime"))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|e| *e > self.now)
            .count();
        let entry = LogEntry::lease(self.now, "LeaseReleased", holder, live)
            .detail(Some("while another decision held the pool".into()));
        log_entry(tx, key, entry).await?;
        Ok(true)
    }
}

/// The answer while another decision holds the pool: its nodes' last recorded power states and its
/// live leases, read without locking.
struct BusyReport {
    pool_key: String,
    now: NaiveDateTime,
}

/// A busy answer from the pool's last report in this process: as it was, not ready, ask again.
fn busy_from(mut last: PoolReport) -> PoolReport {
    last.ready = false;
    last.deferred = true;
    last.started = false;
    last.deallocated = false;
    last.lease_expires = None;
    last.expired_leases = 0;
    last.retry_after_secs = Some(BUSY_RETRY_SECS);
    for node in &mut last.nodes {
        node.ready = false;
    }
    last
}

/// Seconds a busy caller is asked to wait: about one decision's ARM calls.
const BUSY_RETRY_SECS: u64 = 5;

#[async_trait::async_trait]
impl Transition for BusyReport {
    type Output = PoolReport;
    type Error = LeaseError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<PoolReport, LeaseError> {
        let key = self.pool_key.as_str();
        let nodes = tx.query(&sql::VM_NODES_OF_POOL, &[key.into()]).await?;
        let leases = tx.query(&sql::VM_LEASES_OF_POOL, &[key.into()]).await?;
        let mut live = 0;
        for lease in &leases {
            if required_datetime(lease, "ExpiresDateTime")? > self.now {
                live += 1;
            }
        }
        let mut reports = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let state = n
                .opt_text("LastPowerState")?
                .as_deref()
                .and_then(PowerState::parse)
                .unwrap_or(PowerState::Deallocated);
            reports.push(NodeReport {
                vm_name: n.text("VmName")?,
                power_state: state,
                needed: false,
                runtime_node_status: None,
                ready: false,
            });
        }
        Ok(PoolReport {
            pool_key: self.pool_key.clone(),
            power_state: reports
                .first()
                .map(|n| n.power_state)
                .unwrap_or(PowerState::Deallocated),
            ready: false,
            active_leases: live,
            nodes_needed: 0,
            lease_expires: None,
            started: false,
            deallocated: false,
            deallocate_after: None,
            runtime_state: None,
            deferred: true,
            nodes: reports,
            expired_leases: 0,
            retry_after_secs: Some(BUSY_RETRY_SECS),
        })
    }
}

/// Every pool the store knows (the sweeper walks them).
pub async fn pool_keys(store: &Store) -> Result<Vec<String>, LeaseError> {
    struct Keys;
    #[async_trait::async_trait]
    impl Transition for Keys {
        type Output = Vec<String>;
        type Error = LeaseError;
        async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<String>, LeaseError> {
            let rows = tx.query(&sql::VM_POOL_KEYS, &[]).await?;
            Ok(rows
                .iter()
                .map(|r| r.text("PoolKey"))
                .collect::<Result<_, _>>()?)
        }
    }
    store.run(&Keys).await
}

/// A power operation this pool asked ARM for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PowerAction {
    Start,
    Deallocate,
}

impl PowerAction {
    /// As stored in `VmPoolNodes.PendingAction`.
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "Start",
            Self::Deallocate => "Deallocate",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Start, Self::Deallocate]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The state the VM is in while the operation runs, and once it has landed.
    fn during(self) -> PowerState {
        match self {
            Self::Start => PowerState::Starting,
            Self::Deallocate => PowerState::Deallocating,
        }
    }

    fn target(self) -> PowerState {
        match self {
            Self::Start => PowerState::Running,
            Self::Deallocate => PowerState::Deallocated,
        }
    }
}

/// An operation asked for and not yet seen landed.
#[derive(Clone, Debug, PartialEq)]
struct Pending {
    action: PowerAction,
    since: Option<NaiveDateTime>,
    /// `Azure-AsyncOperation` / `Location` to follow it.
    url: Option<String>,
}

struct NodeRow {
    index: i64,
    vm_name: String,
    pending: Option<Pending>,
    idle_since: Option<NaiveDateTime>,
    last_state: Option<PowerState>,
}

impl NodeRow {
    fn read(row: &Row) -> Result<Self, LeaseError> {
        Ok(Self {
            index: row.i64("NodeIndex")?,
            vm_name: row.text("VmName")?,
            pending: match row
                .opt_text("PendingAction")?
                .as_deref()
                .and_then(PowerAction::parse)
            {
                Some(action) => Some(Pending {
                    action,
                    since: row.opt_datetime("PendingSinceDateTime")?,
                    url: row.opt_text("PendingOperationUrl")?,
                }),
                None => None,
            },
            idle_since: row.opt_datetime("IdleSinceDateTime")?,
            last_state: row
                .opt_text("LastPowerState")?
                .as_deref()
                .and_then(PowerState::parse),
        })
    }
}

struct LeaseRow {
    holder: String,
    expires: NaiveDateTime,
}

fn required_datetime(row: &Row, column: &str) -> Result<NaiveDateTime, LeaseError> {
    row.opt_datetime(column)?.ok_or_else(|| {
        LeaseError::Store(crate::store::StoreError::Data {
            column: column.into(),
            problem: "is NULL".into(),
        })
    })
}

fn name(text: &str, column: &str) -> Result<ResourceName, LeaseError> {
    ResourceName::parse(text).map_err(|problem| {
        LeaseError::Store(crate::store::StoreError::Data {
            column: column.into(),
            problem,
        })
    })
}

/// The pool as stored: its spec (for the sweeper) and its last lease end.
struct StoredPool {
    spec: PoolSpec,
    last_lease_end: Option<NaiveDateTime>,
}

async fn read_pool(
    tx: &mut dyn Tx,
    key: &str,
    nodes: &[NodeRow],
) -> Result<Option<StoredPool>, LeaseError> {
    let rows = tx.query(&sql::VM_POOL_GET, &[key.into()]).await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let subscription = Guid::parse(&row.text("SubscriptionId")?).ok_or_else(|| {
        LeaseError::Store(crate::store::StoreError::Data {
            column: "SubscriptionId".into(),
            problem: "is not a GUID".into(),
        })
    })?;
    let resource_group = name(&row.text("ResourceGroupName")?, "ResourceGroupName")?;
    let runtime = RuntimeRef::from_row(row, subscription, &resource_group)?;
    let to_u32 = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    let sizing = Sizing {
        jobs_per_node: to_u32(row.i64("JobsPerNode")?),
        min_nodes: to_u32(row.i64("MinNodes")?),
        grace_secs: to_u32(row.i64("GraceSeconds")?),
    };
    let vms = nodes
        .iter()
        .map(|n| name(&n.vm_name, "VmName"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(StoredPool {
        spec: PoolSpec {
            subscription,
            resource_group,
            vms,
            runtime,
            sizing,
        },
        last_lease_end: row.opt_datetime("LastLeaseEndDateTime")?,
    }))
}

async fn read_nodes(tx: &mut dyn Tx, key: &str) -> Result<Vec<NodeRow>, LeaseError> {
    tx.query(&sql::VM_NODES_OF_POOL, &[key.into()])
        .await?
        .iter()
        .map(NodeRow::read)
        .collect()
}

/// Whom the VMs of a pool not yet in the store already belong to.
enum VmOwners {
    /// No pool: the pool is new.
    None,
    /// This very pool: a concurrent first decision about it committed it after our lock statement
    /// found nothing (each statement reads the latest commit), so lock it now.
    ThisPool,
}

/// The pool's runtime and sizing columns, in the order `VM_POOL_INSERT` and `VM_POOL_CONFIGURE` take
/// them: factory, factory resource group, runtime name, jobs per node, minimum nodes, grace seconds.
fn configuration(spec: &PoolSpec) -> [SqlValue; 6] {
    let runtime = spec.runtime.as_ref();
    [
        runtime.map(|r| r.orchestrator.as_str().to_string()).into(),
        runtime
            .map(|r| r.resource_group.as_str().to_string())
            .into(),
        runtime.map(|r| r.name.as_str().to_string()).into(),
        i64::from(spec.sizing.jobs_per_node).into(),
        i64::from(spec.sizing.min_nodes).into(),
        i64::from(spec.sizing.grace_secs).into(),
    ]
}

impl Decision {
    /// Lock the pool, creating it (and checking no VM belongs to another pool) on first use; configure
    /// it from the caller's spec. Returns the stored pool and its nodes.
    async fn lock(&self, tx: &mut dyn Tx) -> Result<(StoredPool, Vec<NodeRow>), LeaseError> {
        let key = self.pool_key.as_str();
        if !self.lock_pool_row(tx).await? {
            let Some(spec) = &self.spec else {
                return Err(LeaseError::UnknownPool(key.into()));
            };
            match self.vm_owners(tx, spec).await? {
                VmOwners::None => self.insert_pool(tx, spec).await?,
                VmOwners::ThisPool => {
                    if !self.lock_pool_row(tx).await? {
                        return Err(LeaseError::UnknownPool(key.into()));
                    }
                    self.configure_pool(tx, spec).await?;
                }
            }
        } else if let Some(spec) = &self.spec {
            self.configure_pool(tx, spec).await?;
        }
        let nodes = read_nodes(tx, key).await?;
        let stored = read_pool(tx, key, &nodes)
            .await?
            .ok_or_else(|| LeaseError::UnknownPool(key.into()))?;
        Ok((stored, nodes))
    }

    /// Take the pool row's lock; false when the pool is not in the store.
    async fn lock_pool_row(&self, tx: &mut dyn Tx) -> Result<bool, LeaseError> {
        let locked = tx
            .execute(
                &sql::VM_POOL_LOCK,
                &[self.pool_key.as_str().into(), self.now.into()],
            )
            .await?;
        Ok(locked != 0)
    }

    /// Which pool the spec's VMs already belong to, for a pool not yet in the store: a VM of another
    /// pool is a conflict.
    async fn vm_owners(&self, tx: &mut dyn Tx, spec: &PoolSpec) -> Result<VmOwners, LeaseError> {
        for (index, vm) in spec.vms.iter().enumerate() {
            let vm_key = spec.vm_key(index).unwrap_or_default();
            let owner = tx.query(&sql::VM_NODE_POOL, &[vm_key.into()]).await?;
            let Some(other) = owner.first() else { continue };
            let other = other.text("PoolKey")?;
            if other.eq_ignore_ascii_case(&self.pool_key) {
                return Ok(VmOwners::ThisPool);
            }
            return Err(LeaseError::Conflict(format!(
                "VM {vm} already belongs to the VM pool {other}; name the same VMs in the same order on every call",
            )));
        }
        Ok(VmOwners::None)
    }

    /// Create the pool and its nodes from the spec.
    async fn insert_pool(&self, tx: &mut dyn Tx, spec: &PoolSpec) -> Result<(), LeaseError> {
        let key = self.pool_key.as_str();
        let mut params: Vec<SqlValue> = vec![
            key.into(),
            spec.subscription.as_uuid().into(),
            spec.resource_group.as_str().into(),
        ];
        params.extend(configuration(spec));
        params.push(self.now.into());
        tx.execute(&sql::VM_POOL_INSERT, &params).await?;
        for (index, vm) in spec.vms.iter().enumerate() {
            tx.execute(
                &sql::VM_NODE_INSERT,
                &[
                    key.into(),
                    (index as i64).into(),
                    spec.vm_key(index).unwrap_or_default().into(),
                    vm.as_str().into(),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Set the stored pool's runtime and sizing to the spec's.
    async fn configure_pool(&self, tx: &mut dyn Tx, spec: &PoolSpec) -> Result<(), LeaseError> {
        let mut params: Vec<SqlValue> = vec![self.pool_key.as_str().into()];
        params.extend(configuration(spec));
        tx.execute(&sql::VM_POOL_CONFIGURE, &params).await?;
        Ok(())
    }

    /// Write one power-log row.
    async fn log(&self, tx: &mut dyn Tx, entry: LogEntry<'_>) -> Result<(), LeaseError> {
        log_entry(tx, &self.pool_key, entry).await
    }
}

/// Write one power-log row of a pool.
async fn log_entry(tx: &mut dyn Tx, pool_key: &str, entry: LogEntry<'_>) -> Result<(), LeaseError> {
    tx.execute(
        &sql::VM_POWER_LOG_INSERT,
        &[
            pool_key.into(),
            entry.vm.map(str::to_string).into(),
            entry.at.into(),
            entry.event.into(),
            entry.holder.map(str::to_string).into(),
            entry.state.map(|s| s.as_str().to_string()).into(),
            (entry.active as i64).into(),
            entry.detail.into(),
        ],
    )
    .await?;
    Ok(())
}

/// One row of `VmPowerLog` (the pool's key is the decision's).
struct LogEntry<'a> {
    at: NaiveDateTime,
    event: &'a str,
    /// Live leases after the event.
    active: usize,
    vm: Option<&'a str>,
    holder: Option<&'a str>,
    state: Option<PowerState>,
    detail: Option<String>,
}

impl<'a> LogEntry<'a> {
    /// A lease event of `holder`.
    fn lease(at: NaiveDateTime, event: &'a str, holder: &'a str, active: usize) -> Self {
        Self {
            at,
            event,
            active,
            vm: None,
            holder: Some(holder),
            state: None,
            detail: None,
        }
    }

    /// An event of one node's VM, seen in `state`.
    fn node(
        at: NaiveDateTime,
        event: &'a str,
        vm: &'a str,
        state: PowerState,
        active: usize,
    ) -> Self {
        Self {
            at,
            event,
            active,
            vm: Some(vm),
            holder: None,
            state: Some(state),
            detail: None,
        }
    }

    fn holder(mut self, holder: Option<&'a str>) -> Self {
        self.holder = holder;
        self
    }

    fn detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail;
        self
    }
}

/// The latest end of a lease this decision saw end (released or expired).
#[derive(Default)]
struct LeaseEnd(Option<NaiveDateTime>);

impl LeaseEnd {
    fn mark(&mut self, at: NaiveDateTime) {
        self.0 = Some(self.0.map_or(at, |e| e.max(at)));
    }
}

impl Decision {
    /// Insert or renew (`statement`: `VM_LEASE_INSERT` or `VM_LEASE_RENEW`) a holder's lease, ending at
    /// `expires`.
    async fn write_lease(
        &self,
        tx: &mut dyn Tx,
        statement: &sql::Statement,
        holder: &str,
        expires: NaiveDateTime,
    ) -> Result<(), LeaseError> {
        let params = [
            self.pool_key.as_str().into(),
            holder.into(),
            self.now.into(),
            expires.into(),
        ];
        tx.execute(statement, &params).await?;
        Ok(())
    }

    async fn delete_lease(&self, tx: &mut dyn Tx, holder: &str) -> Result<(), LeaseError> {
        tx.execute(
            &sql::VM_LEASE_DELETE,
            &[self.pool_key.as_str().into(), holder.into()],
        )
        .await?;
        Ok(())
    }

    /// What holders asked while the pool was busy ([`super::intents`]): a `Take` still unexpired
    /// becomes the lease it asked for, a `Release` ends the holder's lease and counts the pool idle from
    /// then. Releases older than the memory are forgotten.
    async fn apply_intents(
        &self,
        tx: &mut dyn Tx,
        intents: &[intents::Intent],
        leases: &mut Vec<LeaseRow>,
        ended: &mut LeaseEnd,
    ) -> Result<(), LeaseError> {
        let key = self.pool_key.as_str();
        let now = self.now;
        for intent in intents {
            let holder = intent.holder.as_str();
            let held = leases.iter().position(|l| same_holder(&l.holder, holder));
            match intent.kind {
                IntentKind::Take { .. } => {
                    if !intents::consume_take(tx, key, intent).await? {
                        continue; // replaced meanwhile by a later intent: the next decision sees it
                    }
                    let Some(end) = intent.lease_end().filter(|end| *end > now) else {
                        continue;
                    };
                    match held {
                        Some(i) if leases[i].expires >= end => {}
                        Some(i) => {
                            self.write_lease(tx, &sql::VM_LEASE_RENEW, holder, end)
                                .await?;
                            leases[i].expires = end;
                        }
                        None => {
                            self.write_lease(tx, &sql::VM_LEASE_INSERT, holder, end)
                                .await?;
                            leases.push(LeaseRow {
                                holder: holder.to_string(),
                                expires: end,
                            });
                            let live = leases.iter().filter(|l| l.expires > now).count();
                            let detail = format!(
                                "asked for at {} while another decision held the pool",
                                intent.at
                            );
                            let entry = LogEntry::lease(now, "LeaseTaken", holder, live)
                                .detail(Some(detail));
                            self.log(tx, entry).await?;
                        }
                    }
                }
                IntentKind::Release => {
                    if let Some(i) = held {
                        // Taken before the release (a later take forgets the release).
                        let lease = leases.remove(i);
                        self.delete_lease(tx, holder).await?;
                        let end = lease.expires.min(intent.at);
                        ended.mark(end);
                        let live = leases.iter().filter(|l| l.expires > now).count();
                        self.log(tx, LogEntry::lease(end, "LeaseReleased", holder, live))
                            .await?;
                    } else {
                        ended.mark(intent.at);
                    }
                }
            }
        }
        // Only when there is something to forget: no extra statement on every decision.
        let forget_before = now - Duration::minutes(intents::RELEASE_MEMORY_MINUTES);
        if intents
            .iter()
            .any(|i| i.kind == IntentKind::Release && i.at < forget_before)
        {
            intents::purge(tx, key, now).await?;
        }
        Ok(())
    }

    /// The caller's change to its lease. Returns true when the caller's `Take` was refused: it was sent
    /// before the same holder's stop, which this store already recorded.
    async fn apply_change(
        &self,
        tx: &mut dyn Tx,
        intents: &[intents::Intent],
        leases: &mut Vec<LeaseRow>,
        ended: &mut LeaseEnd,
    ) -> Result<bool, LeaseError> {
        let key = self.pool_key.as_str();
        let now = self.now;
        match &self.change {
            Change::Take { holder, lease_secs } | Change::Renew { holder, lease_secs } => {
                let take = matches!(self.change, Change::Take { .. });
                if take {
                    if let Some(release) = intents::released_since(intents, holder, now) {
                        let detail = format!(
                            "start sent at {now}, before the holder's stop at {}",
                            release.at
                        );
                        let live = leases.iter().filter(|l| l.expires > now).count();
                        let entry =
                            LogEntry::lease(now, "LeaseRefused", holder, live).detail(Some(detail));
                        self.log(tx, entry).await?;
                        return Ok(true);
                    }
                    // This start is later than anything the holder asked before.
                    intents::clear_before(tx, key, holder, now).await?;
                }
                let expires = now + Duration::seconds(i64::from(*lease_secs));
                match leases.iter_mut().find(|l| same_holder(&l.holder, holder)) {
                    Some(lease) if lease.expires > now || take => {
                        self.write_lease(tx, &sql::VM_LEASE_RENEW, holder, expires)
                            .await?;
                        lease.expires = expires;
                        let live = leases.iter().filter(|l| l.expires > now).count();
                        self.log(tx, LogEntry::lease(now, "LeaseRenewed", holder, live))
                            .await?;
                    }
                    Some(_) => {}
                    None if take => {
                        self.write_lease(tx, &sql::VM_LEASE_INSERT, holder, expires)
                            .await?;
                        leases.push(LeaseRow {
                            holder: holder.clone(),
                            expires,
                        });
                        let live = leases.iter().filter(|l| l.expires > now).count();
                        self.log(tx, LogEntry::lease(now, "LeaseTaken", holder, live))
                            .await?;
                    }
                    None => {}
                }
            }
            Change::Release { holder } => {
                if let Some(pos) = leases.iter().position(|l| same_holder(&l.holder, holder)) {
                    let lease = leases.remove(pos);
                    self.delete_lease(tx, holder).await?;
                    let live = leases.iter().filter(|l| l.expires > now).count();
                    // A lease released after it expired ended at its expiry.
                    let end = lease.expires.min(now);
                    ended.mark(end);
                    self.log(tx, LogEntry::lease(end, "LeaseReleased", holder, live))
                        .await?;
                }
                // Remembered, so that a start of this holder sent before now takes no lease later.
                intents::record(tx, key, holder, IntentKind::Release, now).await?;
            }
            Change::Observe => {}
        }
        Ok(false)
    }
}

/// The leases after this decision's lease phase.
struct SettledLeases {
    live: usize,
    /// Since when the pool has had no live lease (the grace counts from here).
    pool_idle_since: Option<NaiveDateTime>,
    /// The caller's lease expiry, if it holds one.
    lease_expires: Option<NaiveDateTime>,
    expired: usize,
    /// The caller's `Take` was refused (sent before its holder's stop).
    refused: bool,
}

/// One node through the decision: as stored, as observed, its plan and the state after acting.
struct NodeWork {
    row: NodeRow,
    vm: super::VmRef,
    observed: PowerState,
    /// The operation still in flight after observing (and after acting).
    pending: Option<Pending>,
    plan: plan::NodePlan,
    /// The state to report: the observed one, or what an operation just requested leads to.
    effective: PowerState,
}

/// What the act phase did.
#[derive(Default)]
struct Acted {
    started: bool,
    deallocated: bool,
    deferred: bool,
    retry_after: Option<u64>,
}

impl Decision {
    /// The pool must be made of the VMs the caller names, in order.
    fn check_same_vms(&self, nodes: &[NodeRow]) -> Result<(), LeaseError> {
        let Some(spec) = &self.spec else {
            return Ok(());
        };
        let same = spec.vms.len() == nodes.len()
            && spec
                .vms
                .iter()
                .zip(nodes)
                .all(|(a, b)| a.as_str().eq_ignore_ascii_case(&b.vm_name));
        if same {
            Ok(())
        } else {
            Err(LeaseError::Conflict(format!(
                "the VM pool {} was created with other VMs",
                self.pool_key
            )))
        }
    }

    /// Lease phase: what holders asked while the pool was busy, the caller's change, then expiry, and
    /// the pool's idle mark.
    async fn settle_leases(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredPool,
    ) -> Result<SettledLeases, LeaseError> {
        let key = self.pool_key.as_str();
        let now = self.now;
        let intents = intents::of_pool(tx, key).await?;
        let mut leases: Vec<LeaseRow> = tx
            .query(&sql::VM_LEASES_OF_POOL, &[key.into()])
            .await?
            .iter()
            .map(|r| {
                Ok(LeaseRow {
                    holder: r.text("Holder")?,
                    expires: required_datetime(r, "ExpiresDateTime")?,
                })
            })
            .collect::<Result<_, LeaseError>>()?;
        let live_before = leases.iter().filter(|l| l.expires > now).count();
        let mut ended = LeaseEnd::default();
        self.apply_intents(tx, &intents, &mut leases, &mut ended)
            .await?;
        let refused = self
            .apply_change(tx, &intents, &mut leases, &mut ended)
            .await?;
        let (leases, expired) = self.expire(tx, leases, &mut ended).await?;
        let live = leases.len();
        let mut pool_idle_since = stored.last_lease_end;
        if let (0, Some(end)) = (live, ended.0) {
            if live_before > 0 || pool_idle_since.is_none_or(|p| p < end) {
                tx.execute(&sql::VM_POOL_LEASE_END, &[key.into(), end.into()])
                    .await?;
                pool_idle_since = Some(end);
            }
        }
        let lease_expires = self
            .change
            .holder()
            .and_then(|h| leases.iter().find(|l| same_holder(&l.holder, h)))
            .map(|l| l.expires);
        Ok(SettledLeases {
            live,
            pool_idle_since,
            lease_expires,
            expired,
            refused,
        })
    }

    /// Delete the expired leases; returns the live ones and how many expired.
    async fn expire(
        &self,
        tx: &mut dyn Tx,
        leases: Vec<LeaseRow>,
        ended: &mut LeaseEnd,
    ) -> Result<(Vec<LeaseRow>, usize), LeaseError> {
        let key = self.pool_key.as_str();
        let now = self.now;
        let mut expired = 0;
        let mut kept = Vec::with_capacity(leases.len());
        for mut lease in leases {
            if lease.expires > now {
                kept.push(lease);
                continue;
            }
            // Re-checked by the DELETE itself: a renewal (which does not take the pool lock) may have
            // committed after the leases were read; then the lease lives on.
            let holder = lease.holder.as_str();
            let deleted = tx
                .execute(
                    &sql::VM_LEASE_EXPIRE,
                    &[key.into(), holder.into(), now.into()],
                )
                .await?;
            if deleted == 0 {
                let current = tx
                    .query(&sql::VM_LEASE_GET, &[key.into(), holder.into()])
                    .await?;
                if let Some(row) = current.first() {
                    lease.expires = required_datetime(row, "ExpiresDateTime")?;
                    kept.push(lease);
                }
                continue;
            }
            expired += 1;
            ended.mark(lease.expires);
            let entry = LogEntry::lease(lease.expires, "LeaseExpired", holder, 0)
                .detail(Some(format!("noticed at {now}")));
            self.log(tx, entry).await?;
        }
        Ok((kept, expired))
    }

    /// The answer for a pool with no lease whose nodes were all seen deallocated with nothing in
    /// flight, when the caller only observes or releases: no ARM call is needed (the sweeper passes by
    /// such pools every few minutes). `None` when the pool is not quiet.
    fn quiet_report(&self, nodes: &[NodeRow], leases: &SettledLeases) -> Option<PoolReport> {
        let quiet = leases.live == 0
            && nodes
                .iter()
                .all(|n| n.last_state == Some(PowerState::Deallocated) && n.pending.is_none());
        if !quiet || !matches!(self.change, Change::Observe | Change::Release { .. }) {
            return None;
        }
        Some(PoolReport {
            pool_key: self.pool_key.clone(),
            power_state: PowerState::Deallocated,
            ready: false,
            active_leases: 0,
            nodes_needed: 0,
            lease_expires: leases.lease_expires,
            started: false,
            deallocated: false,
            deallocate_after: None,
            runtime_state: None,
            deferred: false,
            retry_after_secs: None,
            nodes: nodes
                .iter()
                .map(|n| NodeReport {
                    vm_name: n.vm_name.clone(),
                    power_state: PowerState::Deallocated,
                    needed: false,
                    runtime_node_status: None,
                    ready: false,
                })
                .collect(),
            expired_leases: leases.expired,
        })
    }

    /// Observe phase: each node's power state from ARM, and the operations we started that have landed
    /// or failed since. Then plan every node.
    async fn observe_and_plan(
        &self,
        tx: &mut dyn Tx,
        spec: &PoolSpec,
        nodes: Vec<NodeRow>,
        leases: &SettledLeases,
    ) -> Result<Vec<NodeWork>, LeaseError> {
        let now = self.now;
        let live = leases.live;
        let mut observed = Vec::with_capacity(nodes.len());
        for row in nodes {
            let vm = spec.vm(row.index as usize).ok_or_else(|| {
                LeaseError::Conflict(format!(
                    "node {} of pool {} has no VM",
                    row.index, self.pool_key
                ))
            })?;
            let state = self.power.power_state(&vm).await?;
            if row.last_state != Some(state) {
                let was = row.last_state.map(|s| format!("was {}", s.as_str()));
                let entry = LogEntry::node(now, "Observed", &row.vm_name, state, live).detail(was);
                self.log(tx, entry).await?;
            }
            let pending = self.follow(tx, &row, state, live).await?;
            observed.push((row, vm, state, pending));
        }
        let states: Vec<NodeState> = observed
            .iter()
            .map(|(row, _, state, pending)| NodeState {
                state: plan::effective_state(
                    *state,
                    pending
                        .as_ref()
                        .filter(|p| p.action == PowerAction::Deallocate)
                        .and_then(|p| p.since),
                    now,
                    Duration::minutes(PENDING_TRUST_MINUTES),
                ),
                idle_since: row.idle_since,
            })
            .collect();
        let plans = plan::plan_nodes(&states, live, spec.sizing, leases.pool_idle_since, now);
        Ok(observed
            .into_iter()
            .zip(states)
            .zip(plans)
            .map(|(((row, vm, observed, pending), state), plan)| NodeWork {
                row,
                vm,
                observed,
                pending,
                plan,
                effective: state.state,
            })
            .collect())
    }

    /// The node's operation in flight after observing it in `state`: gone once it landed or failed.
    async fn follow(
        &self,
        tx: &mut dyn Tx,
        row: &NodeRow,
        state: PowerState,
        live: usize,
    ) -> Result<Option<Pending>, LeaseError> {
        let Some(p) = &row.pending else {
            return Ok(None);
        };
        if state == p.action.target() {
            return Ok(None);
        }
        if let Some(url) = &p.url {
            if let OperationOutcome::Failed(said) = self.power.operation(url).await? {
                let detail = format!("{}: {said}", p.action.as_str());
                let entry = LogEntry::node(self.now, "OperationFailed", &row.vm_name, state, live)
                    .detail(Some(detail));
                self.log(tx, entry).await?;
                return Ok(None);
            }
        }
        Ok(Some(p.clone()))
    }

    /// Act phase: start or deallocate the nodes the plan says, logging each request.
    async fn act(
        &self,
        tx: &mut dyn Tx,
        work: &mut [NodeWork],
        live: usize,
    ) -> Result<Acted, LeaseError> {
        let mut acted = Acted::default();
        for node in work.iter_mut() {
            let action = match node.plan.action {
                NodeAction::Nothing => continue,
                NodeAction::Start => PowerAction::Start,
                NodeAction::Deallocate => PowerAction::Deallocate,
            };
            let answer = match action {
                PowerAction::Start => self.power.start(&node.vm).await?,
                PowerAction::Deallocate => self.power.deallocate(&node.vm).await?,
            };
            let (event, detail) = match answer {
                PowerRequest::Accepted {
                    operation_url,
                    retry_after_secs,
                } => {
                    acted.retry_after = acted.retry_after.max(retry_after_secs);
                    match action {
                        PowerAction::Start => acted.started = true,
                        PowerAction::Deallocate => acted.deallocated = true,
                    }
                    node.effective = action.during();
                    node.pending = Some(Pending {
                        action,
                        since: Some(self.now),
                        url: operation_url,
                    });
                    ("Requested", None)
                }
                PowerRequest::Conflict { code, message } => {
                    acted.deferred = true;
                    ("Deferred", Some(format!("{code}: {message}")))
                }
            };
            let event = format!("{}{event}", action.as_str());
            let entry = LogEntry::node(self.now, &event, &node.row.vm_name, node.observed, live)
                .holder(self.change.holder())
                .detail(detail);
            self.log(tx, entry).await?;
        }
        Ok(acted)
    }

    /// The runtime's status, asked only when a runtime was named and some needed node is running.
    async fn runtime(
        &self,
        spec: &PoolSpec,
        work: &[NodeWork],
    ) -> Result<Option<RuntimeStatus>, LeaseError> {
        let wants_runtime = work
            .iter()
            .any(|n| n.plan.needed && n.effective == PowerState::Running);
        match (&spec.runtime, wants_runtime) {
            (Some(runtime), true) => Ok(Some(self.power.runtime_status(runtime).await?)),
            _ => Ok(None),
        }
    }

    /// Persist phase: each node's marks (operation in flight, idle mark, last state), and its report.
    /// Ready: a needed node running, with its runtime node `Online` when a runtime was named.
    async fn persist(
        &self,
        tx: &mut dyn Tx,
        spec: &PoolSpec,
        work: &[NodeWork],
        runtime: Option<&RuntimeStatus>,
    ) -> Result<Vec<NodeReport>, LeaseError> {
        let key = self.pool_key.as_str();
        let mut reports = Vec::with_capacity(work.len());
        for node in work {
            let runtime_node = runtime.and_then(|r| {
                r.nodes
                    .iter()
                    .find(|n| n.runs_on(&node.row.vm_name))
                    .map(|n| n.status.clone())
            });
            let ready = node.plan.needed
                && node.effective == PowerState::Running
                && match &spec.runtime {
                    None => true,
                    Some(_) => runtime_node
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("Online")),
                };
            reports.push(NodeReport {
                vm_name: node.row.vm_name.clone(),
                power_state: node.effective,
                needed: node.plan.needed,
                runtime_node_status: runtime_node,
                ready,
            });
            let pending = node.pending.as_ref();
            tx.execute(
                &sql::VM_NODE_UPDATE,
                &[
                    key.into(),
                    node.row.index.into(),
                    pending.map(|p| p.action.as_str().to_string()).into(),
                    SqlValue::from(pending.and_then(|p| p.since)),
                    pending.and_then(|p| p.url.clone()).into(),
                    SqlValue::from(node.plan.idle_since),
                    node.observed.as_str().into(),
                    self.now.into(),
                ],
            )
            .await?;
        }
        Ok(reports)
    }
}

#[async_trait::async_trait]
impl Transition for Decision {
    type Output = PoolReport;
    type Error = LeaseError;

    /// Lock, leases, observe and plan, act, persist.
    async fn apply(&self, tx: &mut dyn Tx) -> Result<PoolReport, LeaseError> {
        if let Some(limit) = self.lock_wait {
            tx.set_lock_timeout(limit).await?;
        }
        let (stored, nodes) = self.lock(tx).await?;
        self.check_same_vms(&nodes)?;
        let leases = self.settle_leases(tx, &stored).await?;
        if let Some(report) = self.quiet_report(&nodes, &leases) {
            return Ok(report);
        }
        let spec = &stored.spec;
        let mut work = self.observe_and_plan(tx, spec, nodes, &leases).await?;
        let acted = self.act(tx, &mut work, leases.live).await?;
        let runtime = self.runtime(spec, &work).await?;
        let reports = self.persist(tx, spec, &work, runtime.as_ref()).await?;
        let effective: Vec<PowerState> = work.iter().map(|n| n.effective).collect();
        Ok(PoolReport {
            pool_key: self.pool_key.clone(),
            power_state: plan::pool_state(&effective),
            // A start refused (sent before its holder's stop) holds nothing to be ready for.
            ready: !leases.refused && reports.iter().any(|r| r.ready),
            active_leases: leases.live,
            nodes_needed: work.iter().filter(|n| n.plan.needed).count(),
            lease_expires: leases.lease_expires,
            started: acted.started,
            deallocated: acted.deallocated,
            deallocate_after: work.iter().filter_map(|n| n.plan.deallocate_after).min(),
            runtime_state: runtime.map(|r| r.state),
            deferred: acted.deferred,
            nodes: reports,
            expired_leases: leases.expired,
            retry_after_secs: acted.retry_after,
        })
    }
}

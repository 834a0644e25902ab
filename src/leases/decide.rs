//! One decision about a pool, as one metadata-store transaction that holds the pool's row lock from the
//! first statement to the commit — ARM calls included. In order: lock (creating the pool on first use),
//! apply the caller's lease change, expire old leases, read each node's power state, plan
//! ([`super::plan`]), start or deallocate, check the runtime's nodes, write node marks and the power
//! log. A failure anywhere rolls the whole decision back; running it again is harmless (start and
//! deallocate of a VM already on its way join the operation in flight).

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
fn same_holder(stored: &str, given: &str) -> bool {
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
                    return Ok(self.reserve(store, report).await);
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
        Ok(self.reserve(store, report).await)
    }

    /// A `Take` that found the pool busy still records its lease (without the pool's lock), so the
    /// caller's later `status` calls — which renew but never create — find it and the VM is started for
    /// it. Safe without the lock: only a decision under the lock reports `Ready` or deallocates, and a
    /// caller starts its work only once told `Ready`; a deallocation that misses this lease is followed
    /// by the next decision starting the VM again. Best effort: if it cannot be written now, the answer
    /// stays "busy, ask again".
    async fn reserve(&self, store: &Store, mut report: PoolReport) -> PoolReport {
        let Change::Take { holder, lease_secs } = &self.change else {
            return report;
        };
        let reserve = ReserveLease {
            pool_key: self.pool_key.clone(),
            holder: holder.clone(),
            expires: self.now + Duration::seconds(i64::from(*lease_secs)),
            now: self.now,
            lock_wait: self.lock_wait,
        };
        match store.run(&reserve).await {
            Ok(true) => {
                report.lease_expires = Some(reserve.expires);
                report.active_leases += 1;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::info!(pool = %self.pool_key, error = %e, "lease not reserved on a busy pool; the caller asks again")
            }
        }
        report
    }
}

/// Write a holder's lease row (renew, else insert) without the pool's lock. False when the pool does
/// not exist yet (its first decision is still running).
struct ReserveLease {
    pool_key: String,
    holder: String,
    expires: NaiveDateTime,
    now: NaiveDateTime,
    lock_wait: Option<std::time::Duration>,
}

#[async_trait::async_trait]
impl Transition for ReserveLease {
    type Output = bool;
    type Error = LeaseError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LeaseError> {
        if let Some(limit) = self.lock_wait {
            tx.set_lock_timeout(limit).await?;
        }
        let key = self.pool_key.as_str();
        let pool = tx.query(&sql::VM_POOL_GET, &[key.into()]).await?;
        if pool.is_empty() {
            return Ok(false);
        }
        let params = [
            key.into(),
            self.holder.as_str().into(),
            self.now.into(),
            self.expires.into(),
        ];
        if tx.execute(&sql::VM_LEASE_RENEW, &params).await? == 0 {
            tx.execute(&sql::VM_LEASE_INSERT, &params).await?;
        }
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

impl Decision {
    /// Lock the pool, creating it (and checking no VM belongs to another pool) on first use; configure
    /// it from the caller's spec. Returns the stored pool and its nodes.
    async fn lock(&self, tx: &mut dyn Tx) -> Result<(StoredPool, Vec<NodeRow>), LeaseError> {
        let key = self.pool_key.as_str();
        let locked = tx
            .execute(&sql::VM_POOL_LOCK, &[key.into(), self.now.into()])
            .await?;
        if locked == 0 {
            let Some(spec) = &self.spec else {
                return Err(LeaseError::UnknownPool(key.into()));
            };
            for index in 0..spec.vms.len() {
                let vm_key = spec.vm_key(index).unwrap_or_default();
                let owner = tx.query(&sql::VM_NODE_POOL, &[vm_key.into()]).await?;
                if let Some(other) = owner.first() {
                    return Err(LeaseError::Conflict(format!(
                        "VM {} already belongs to the VM pool {}; name the same VMs in the same order on every call",
                        spec.vms[index],
                        other.text("PoolKey")?
                    )));
                }
            }
            let runtime = spec.runtime.as_ref();
            tx.execute(
                &sql::VM_POOL_INSERT,
                &[
                    key.into(),
                    spec.subscription.as_uuid().into(),
                    spec.resource_group.as_str().into(),
                    runtime.map(|r| r.factory.as_str().to_string()).into(),
                    runtime
                        .map(|r| r.resource_group.as_str().to_string())
                        .into(),
                    runtime.map(|r| r.name.as_str().to_string()).into(),
                    i64::from(spec.sizing.jobs_per_node).into(),
                    i64::from(spec.sizing.min_nodes).into(),
                    i64::from(spec.sizing.grace_secs).into(),
                    self.now.into(),
                ],
            )
            .await?;
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
        } else if let Some(spec) = &self.spec {
            let runtime = spec.runtime.as_ref();
            tx.execute(
                &sql::VM_POOL_CONFIGURE,
                &[
                    key.into(),
                    runtime.map(|r| r.factory.as_str().to_string()).into(),
                    runtime
                        .map(|r| r.resource_group.as_str().to_string())
                        .into(),
                    runtime.map(|r| r.name.as_str().to_string()).into(),
                    i64::from(spec.sizing.jobs_per_node).into(),
                    i64::from(spec.sizing.min_nodes).into(),
                    i64::from(spec.sizing.grace_secs).into(),
                ],
            )
            .await?;
        }
        let nodes = read_nodes(tx, key).await?;
        let stored = read_pool(tx, key, &nodes)
            .await?
            .ok_or_else(|| LeaseError::UnknownPool(key.into()))?;
        Ok((stored, nodes))
    }

    /// Write one power-log row.
    async fn log(&self, tx: &mut dyn Tx, entry: LogEntry<'_>) -> Result<(), LeaseError> {
        tx.execute(
            &sql::VM_POWER_LOG_INSERT,
            &[
                self.pool_key.as_str().into(),
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

#[async_trait::async_trait]
impl Transition for Decision {
    type Output = PoolReport;
    type Error = LeaseError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<PoolReport, LeaseError> {
        let now = self.now;
        let key = self.pool_key.as_str();
        if let Some(limit) = self.lock_wait {
            tx.set_lock_timeout(limit).await?;
        }
        let (stored, nodes) = self.lock(tx).await?;
        if let Some(spec) = &self.spec {
            let same = spec.vms.len() == nodes.len()
                && spec
                    .vms
                    .iter()
                    .zip(&nodes)
                    .all(|(a, b)| a.as_str().eq_ignore_ascii_case(&b.vm_name));
            if !same {
                return Err(LeaseError::Conflict(format!(
                    "the VM pool {key} was created with other VMs"
                )));
            }
        }
        let spec = stored.spec;

        // Leases: the caller's change, then expiry.
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
        let mut ended: Option<NaiveDateTime> = None;
        let mut mark_end = |at: NaiveDateTime| {
            ended = Some(ended.map_or(at, |e: NaiveDateTime| e.max(at)));
        };
        match &self.change {
            Change::Take { holder, lease_secs } | Change::Renew { holder, lease_secs } => {
                let expires = now + Duration::seconds(i64::from(*lease_secs));
                let held = leases.iter_mut().find(|l| same_holder(&l.holder, holder));
                let take = matches!(self.change, Change::Take { .. });
                match held {
                    Some(lease) if lease.expires > now || take => {
                        tx.execute(
                            &sql::VM_LEASE_RENEW,
                            &[
                                key.into(),
                                holder.as_str().into(),
                                now.into(),
                                expires.into(),
                            ],
                        )
                        .await?;
                        lease.expires = expires;
                        let live = leases.iter().filter(|l| l.expires > now).count();
                        self.log(tx, LogEntry::lease(now, "LeaseRenewed", holder, live))
                            .await?;
                    }
                    Some(_) => {}
                    None if take => {
                        tx.execute(
                            &sql::VM_LEASE_INSERT,
                            &[
                                key.into(),
                                holder.as_str().into(),
                                now.into(),
                                expires.into(),
                            ],
                        )
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
                    tx.execute(&sql::VM_LEASE_DELETE, &[key.into(), holder.as_str().into()])
                        .await?;
                    let live = leases.iter().filter(|l| l.expires > now).count();
                    // A lease released after it expired ended at its expiry.
                    let end = lease.expires.min(now);
                    mark_end(end);
                    self.log(tx, LogEntry::lease(end, "LeaseReleased", holder, live))
                        .await?;
                }
            }
            Change::Observe => {}
        }
        let mut expired_leases = 0;
        let mut kept = Vec::with_capacity(leases.len());
        for mut lease in leases {
            if lease.expires <= now {
                // Re-checked by the DELETE itself: a renewal (which does not take the pool lock) may
                // have committed after the leases were read; then the lease lives on.
                let deleted = tx
                    .execute(
                        &sql::VM_LEASE_EXPIRE,
                        &[key.into(), lease.holder.as_str().into(), now.into()],
                    )
                    .await?;
                if deleted == 0 {
                    let current = tx
                        .query(
                            &sql::VM_LEASE_GET,
                            &[key.into(), lease.holder.as_str().into()],
                        )
                        .await?;
                    if let Some(row) = current.first() {
                        lease.expires = required_datetime(row, "ExpiresDateTime")?;
                        kept.push(lease);
                    }
                    continue;
                }
                expired_leases += 1;
                mark_end(lease.expires);
                self.log(
                    tx,
                    LogEntry::lease(lease.expires, "LeaseExpired", &lease.holder, 0)
                        .detail(Some(format!("noticed at {now}"))),
                )
                .await?;
            } else {
                kept.push(lease);
            }
        }
        let leases = kept;
        let live = leases.len();
        let mut pool_idle_since = stored.last_lease_end;
        if live == 0 {
            if let Some(end) = ended {
                if live_before > 0 || pool_idle_since.is_none_or(|p| p < end) {
                    tx.execute(&sql::VM_POOL_LEASE_END, &[key.into(), end.into()])
                        .await?;
                    pool_idle_since = Some(end);
                }
            }
        }
        let lease_expires = self
            .change
            .holder()
            .and_then(|h| leases.iter().find(|l| same_holder(&l.holder, h)))
            .map(|l| l.expires);

        // A pool with no lease whose nodes were all seen deallocated, with nothing in flight, needs no
        // ARM call (the sweeper passes by such pools every few minutes).
        let quiet = live == 0
            && nodes
                .iter()
                .all(|n| n.last_state == Some(PowerState::Deallocated) && n.pending.is_none());
        if quiet && matches!(self.change, Change::Observe | Change::Release { .. }) {
            return Ok(PoolReport {
                pool_key: key.into(),
                power_state: PowerState::Deallocated,
                ready: false,
                active_leases: 0,
                nodes_needed: 0,
                lease_expires,
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
                expired_leases,
            });
        }

        // Observe every node; follow operations we started that have not landed yet.
        let mut observed = Vec::with_capacity(nodes.len());
        let mut pendings: Vec<Option<Pending>> = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let vm = spec.vm(node.index as usize).ok_or_else(|| {
                LeaseError::Conflict(format!("node {} of pool {key} has no VM", node.index))
            })?;
            let state = self.power.power_state(&vm).await?;
            if node.last_state != Some(state) {
                let was = node.last_state.map(|s| format!("was {}", s.as_str()));
                self.log(
                    tx,
                    LogEntry::node(now, "Observed", &node.vm_name, state, live).detail(was),
                )
                .await?;
            }
            let mut pending = node.pending.clone();
            if let Some(p) = &node.pending {
                if state == p.action.target() {
                    pending = None;
                } else if let Some(url) = &p.url {
                    if let OperationOutcome::Failed(said) = self.power.operation(url).await? {
                        let detail = format!("{}: {said}", p.action.as_str());
                        self.log(
                            tx,
                            LogEntry::node(now, "OperationFailed", &node.vm_name, state, live)
                                .detail(Some(detail)),
                        )
                        .await?;
                        pending = None;
                    }
                }
            }
            observed.push(state);
            pendings.push(pending);
        }
        let states: Vec<NodeState> = nodes
            .iter()
            .zip(&observed)
            .zip(&pendings)
            .map(|((node, state), pending)| NodeState {
                state: plan::effective_state(
                    *state,
                    pending
                        .as_ref()
                        .filter(|p| p.action == PowerAction::Deallocate)
                        .and_then(|p| p.since),
                    now,
                    Duration::minutes(PENDING_TRUST_MINUTES),
                ),
                idle_since: node.idle_since,
            })
            .collect();
        let plans = plan::plan_nodes(&states, live, spec.sizing, pool_idle_since, now);

        // Act.
        let mut started = false;
        let mut deallocated = false;
        let mut deferred = false;
        let mut retry_after: Option<u64> = None;
        let mut effective: Vec<PowerState> = states.iter().map(|s| s.state).collect();
        for (i, node_plan) in plans.iter().enumerate() {
            let Some(vm) = spec.vm(i) else { continue };
            let action = match node_plan.action {
                NodeAction::Nothing => continue,
                NodeAction::Start => PowerAction::Start,
                NodeAction::Deallocate => PowerAction::Deallocate,
            };
            let answer = match action {
                PowerAction::Start => self.power.start(&vm).await?,
                PowerAction::Deallocate => self.power.deallocate(&vm).await?,
            };
            let (event, detail) = match answer {
                PowerRequest::Accepted {
                    operation_url,
                    retry_after_secs,
                } => {
                    retry_after = retry_after.max(retry_after_secs);
                    match action {
                        PowerAction::Start => started = true,
                        PowerAction::Deallocate => deallocated = true,
                    }
                    effective[i] = action.during();
                    pendings[i] = Some(Pending {
                        action,
                        since: Some(now),
                        url: operation_url,
                    });
                    ("Requested", None)
                }
                PowerRequest::Conflict { code, message } => {
                    deferred = true;
                    ("Deferred", Some(format!("{code}: {message}")))
                }
            };
            let event = format!("{}{event}", action.as_str());
            self.log(
                tx,
                LogEntry::node(now, &event, &nodes[i].vm_name, observed[i], live)
                    .holder(self.change.holder())
                    .detail(detail),
            )
            .await?;
        }

        // Ready: a needed node running, with its runtime node Online when a runtime was named.
        let wants_runtime = plans
            .iter()
            .zip(&effective)
            .any(|(p, s)| p.needed && *s == PowerState::Running);
        let runtime: Option<RuntimeStatus> = match (&spec.runtime, wants_runtime) {
            (Some(runtime), true) => Some(self.power.runtime_status(runtime).await?),
            _ => None,
        };
        let mut reports = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let runtime_node = runtime.as_ref().and_then(|r| {
                r.nodes
                    .iter()
                    .find(|n| n.runs_on(&node.vm_name))
                    .map(|n| n.status.clone())
            });
            let running = effective[i] == PowerState::Running;
            let ready = plans[i].needed
                && running
                && match &spec.runtime {
                    None => true,
                    Some(_) => runtime_node
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("Online")),
                };
            reports.push(NodeReport {
                vm_name: node.vm_name.clone(),
                power_state: effective[i],
                needed: plans[i].needed,
                runtime_node_status: runtime_node,
                ready,
            });
            let pending = pendings[i].as_ref();
            tx.execute(
                &sql::VM_NODE_UPDATE,
                &[
                    key.into(),
                    node.index.into(),
                    pending.map(|p| p.action.as_str().to_string()).into(),
                    SqlValue::from(pending.and_then(|p| p.since)),
                    pending.and_then(|p| p.url.clone()).into(),
                    SqlValue::from(plans[i].idle_since),
                    observed[i].as_str().into(),
                    now.into(),
                ],
            )
            .await?;
        }
        let nodes_needed = plans.iter().filter(|p| p.needed).count();
        Ok(PoolReport {
            pool_key: key.into(),
            power_state: plan::pool_state(&effective),
            ready: reports.iter().any(|r| r.ready),
            active_leases: live,
            nodes_needed,
            lease_expires,
            started,
            deallocated,
            deallocate_after: plans.iter().filter_map(|p| p.deallocate_after).min(),
            runtime_state: runtime.map(|r| r.state),
            deferred,
            nodes: reports,
            expired_leases,
            retry_after_secs: retry_after,
        })
    }
}

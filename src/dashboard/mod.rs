//! The execution dashboard: what procfwk's Power BI report showed over the framework's views, as one
//! server-rendered HTML page with inline SVG — the current execution (stages, workers by status, elapsed
//! time, last status check), a timeline of the last executions (one bar per worker, by stage, coloured by
//! outcome, linking to the worker's run in ADF Studio), failures with their ErrorLog rows, stage
//! durations over time (AverageStageDuration), and per VM pool its leases, power events and VM-hours
//! against the lease lower bound (`procfwk db vm-report`'s numbers).
//!
//! [`read`] takes a [`Snapshot`] from the store in one read-only transaction, with every query bounded by
//! what the page shows (see [`statements`](crate::store::statements)'s dashboard section);
//! [`html::render`] turns it into the page. The Dashboard function serves it; `procfwk db report --html`
//! and `procfwk run --report` write it to a file. Nothing on the page comes from a secret: the queries
//! read no credential, parameter value or connection string.

pub mod html;

use crate::domain::PowerState;
use crate::leases::report::{self, PoolCost};
use crate::store::statements as sql;
use crate::store::{Row, SqlValue, Store, StoreError, Transition, Tx};
use chrono::NaiveDateTime;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// How much history the page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Executions on the timeline (newest first).
    pub executions: usize,
    /// Executions in the stage-duration chart.
    pub history: usize,
}

impl Options {
    pub const MAX_EXECUTIONS: usize = 50;
    pub const MAX_HISTORY: usize = 400;
    /// ErrorLog rows and power events read at most.
    pub const MAX_ERRORS: i64 = 500;
    pub const MAX_POWER_EVENTS: i64 = 400;
}

impl Default for Options {
    fn default() -> Self {
        Self {
            executions: 7,
            history: 90,
        }
    }
}

/// Where a worker's orchestrator lives: enough for a link to its run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Orchestrator {
    pub name: String,
    pub kind: String,
    pub resource_group: String,
}

/// One worker of an execution, current or logged.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRow {
    pub execution_id: Uuid,
    pub stage_id: i64,
    pub pipeline_id: i64,
    pub pipeline_name: String,
    /// The framework status; `None` when not started yet.
    pub status: Option<String>,
    pub blocked: bool,
    pub run_id: Option<Uuid>,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
    pub last_check: Option<NaiveDateTime>,
    pub orchestrator: Orchestrator,
}

/// One execution of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionSummary {
    pub execution_id: Uuid,
    pub first_log_id: i64,
    pub last_log_id: i64,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
    pub workers: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// One stage of one execution: from its first worker's start to its last worker's end.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpan {
    pub execution_id: Uuid,
    pub stage_id: i64,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
}

impl StageSpan {
    pub fn minutes(&self) -> Option<f64> {
        match (self.start, self.end) {
            (Some(s), Some(e)) if e >= s => Some((e - s).num_milliseconds() as f64 / 60_000.0),
            _ => None,
        }
    }
}

/// One ErrorLog row.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRow {
    pub log_id: i64,
    pub execution_id: Uuid,
    pub run_id: Uuid,
    pub activity_run_id: Uuid,
    pub activity_name: String,
    pub activity_type: String,
    pub error_code: String,
    pub error_type: String,
    pub message: Option<String>,
}

/// One power log event.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerEvent {
    pub at: NaiveDateTime,
    pub vm_name: Option<String>,
    pub event: String,
    pub holder: Option<String>,
    pub power_state: Option<String>,
    pub active_leases: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolNode {
    pub vm_name: String,
    pub power_state: Option<String>,
    pub pending: Option<String>,
    pub idle_since: Option<NaiveDateTime>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolLease {
    pub holder: String,
    pub acquired: Option<NaiveDateTime>,
    pub expires: Option<NaiveDateTime>,
}

/// One VM pool: its nodes, live leases, recent events and cost.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolView {
    pub key: String,
    pub runtime: Option<String>,
    pub nodes: Vec<PoolNode>,
    pub leases: Vec<PoolLease>,
    /// Newest first, at most [`Options::MAX_POWER_EVENTS`] over all pools.
    pub events: Vec<PowerEvent>,
    pub cost: Option<PoolCost>,
}

/// Everything the page shows, read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub now: NaiveDateTime,
    pub stages: BTreeMap<i64, String>,
    /// Subscription of each orchestrator (for run links).
    pub subscriptions: HashMap<Orchestrator, Uuid>,
    /// Rows of CurrentExecution, by execution, stage, worker.
    pub current: Vec<WorkerRow>,
    /// The newest executions of the log, newest first (at most `history`).
    pub executions: Vec<ExecutionSummary>,
    /// Worker rows of the newest `executions` executions, in log order.
    pub timeline: Vec<WorkerRow>,
    /// Stage spans of the executions in `executions`.
    pub stage_spans: Vec<StageSpan>,
    /// The newest ErrorLog rows (at most [`Options::MAX_ERRORS`]), in log order.
    pub errors: Vec<ErrorRow>,
    pub pools: Vec<PoolView>,
    pub options: Options,
}

impl Snapshot {
    /// The ADF Studio (or Synapse Studio) page of a worker's run, when it has one.
    pub fn run_link(&self, worker: &WorkerRow) -> Option<String> {
        let run = worker.run_id?;
        let subscription = self.subscriptions.get(&worker.orchestrator)?;
        run_link(&worker.orchestrator, *subscription, run)
    }
}

/// The ADF Studio or Synapse Studio page of a run ([`crate::domain::run_link`]); none for an
/// orchestrator type we do not know or names the store should never have held.
pub fn run_link(orchestrator: &Orchestrator, subscription: Uuid, run: Uuid) -> Option<String> {
    use crate::domain::{Guid, OrchestratorType, ResourceName, RunId};
    Some(crate::domain::run_link::link(
        OrchestratorType::parse(&orchestrator.kind)?,
        &Guid::from(subscription),
        &ResourceName::parse(&orchestrator.resource_group).ok()?,
        &ResourceName::parse(&orchestrator.name).ok()?,
        &RunId::from_store(run),
    ))
}

/// Read everything the page shows, in one transaction.
pub async fn read(
    store: &Store,
    options: Options,
    now: NaiveDateTime,
) -> Result<Snapshot, StoreError> {
    let mut snapshot = store.run(&ReadSnapshot { options, now }).await?;
    // The cost numbers are `db vm-report`'s: from the whole power log.
    if !snapshot.pools.is_empty() {
        let log = report::read_log(store).await?;
        let costs = report::costs(&log, now);
        for pool in &mut snapshot.pools {
            pool.cost = costs.iter().find(|c| c.pool_key == pool.key).cloned();
        }
    }
    Ok(snapshot)
}

struct ReadSnapshot {
    options: Options,
    now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for ReadSnapshot {
    type Output = Snapshot;
    type Error = StoreError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Snapshot, StoreError> {
        let options = self.options;
        let stages = read_stages(tx).await?;
        let subscriptions = read_subscriptions(tx).await?;
        let current = tx
            .query(&sql::DASH_CURRENT_ROWS, &[])
            .await?
            .iter()
            .map(|r| worker_row(r, true))
            .collect::<Result<Vec<_>, _>>()?;
        let history = read_history(tx, options).await?;
        let timeline = read_timeline(tx, &history.executions, options.executions).await?;
        let stage_spans = read_stage_spans(tx, &history).await?;
        let errors = read_errors(tx).await?;
        let pools = read_pools(tx).await?;
        Ok(Snapshot {
            now: self.now,
            stages,
            subscriptions,
            current,
            executions: history.executions,
            timeline,
            stage_spans,
            errors,
            pools,
            options,
        })
    }
}

async fn read_stages(tx: &mut dyn Tx) -> Result<BTreeMap<i64, String>, StoreError> {
    tx.query(&sql::STAGE_IDS, &[])
        .await?
        .iter()
        .map(|r| Ok((r.i64("StageId")?, r.text("StageName")?)))
        .collect()
}

async fn read_subscriptions(tx: &mut dyn Tx) -> Result<HashMap<Orchestrator, Uuid>, StoreError> {
    let mut subscriptions = HashMap::new();
    for r in tx.query(&sql::DASH_ORCHESTRATORS, &[]).await? {
        subscriptions.insert(
            Orchestrator {
                name: r.text("OrchestratorName")?,
                kind: r.text("OrchestratorType")?.trim().to_string(),
                resource_group: r.text("ResourceGroupName")?,
            },
            r.guid("SubscriptionId")?,
        );
    }
    Ok(subscriptions)
}

/// The newest executions of the log and the LogId range they were read from.
struct History {
    /// Newest first, at most `max(history, executions)`.
    executions: Vec<ExecutionSummary>,
    /// The executions are those with rows after this LogId (0: the whole log).
    after_log_id: i64,
}

/// The newest executions: widen a LogId range until it holds one more execution than shown (so the ones
/// shown are whole), or the whole log.
async fn read_history(tx: &mut dyn Tx, options: Options) -> Result<History, StoreError> {
    let wanted = options.history.max(options.executions).max(1);
    let last = last_id(tx, &sql::DASH_LOG_LAST_ID).await?;
    let mut span: i64 = 256 * (wanted as i64 + 1);
    let (mut executions, lower) = loop {
        let lower = last.saturating_sub(span).max(0);
        let rows = tx
            .query(&sql::DASH_EXECUTIONS_AFTER, &[SqlValue::Int(lower)])
            .await?;
        if rows.len() > wanted || lower == 0 {
            let executions = rows
                .iter()
                .map(execution_summary)
                .collect::<Result<Vec<_>, _>>()?;
            break (executions, lower);
        }
        // Rows per execution so far tell how far back to look; at least four times as far.
        let per_execution = if rows.is_empty() {
            span
        } else {
            span / rows.len() as i64 + 1
        };
        span = span
            .saturating_mul(4)
            .max(per_execution.saturating_mul(wanted as i64 + 1));
    };
    executions.sort_by_key(|e| std::cmp::Reverse(e.last_log_id));
    let whole_log = lower == 0;
    if !whole_log {
        // The oldest execution in the range may have rows before it.
        executions.truncate(wanted);
    }
    executions.truncate(options.history.max(options.executions));
    Ok(History {
        executions,
        after_log_id: lower,
    })
}

/// The worker rows of the `shown` newest executions, in log order.
async fn read_timeline(
    tx: &mut dyn Tx,
    executions: &[ExecutionSummary],
    shown: usize,
) -> Result<Vec<WorkerRow>, StoreError> {
    let shown = &executions[..shown.min(executions.len())];
    let Some(from) = shown.iter().map(|e| e.first_log_id).min() else {
        return Ok(Vec::new());
    };
    let ids: Vec<Uuid> = shown.iter().map(|e| e.execution_id).collect();
    tx.query(&sql::DASH_LOG_ROWS_FROM, &[SqlValue::Int(from)])
        .await?
        .iter()
        .map(|r| worker_row(r, false))
        .filter(|w| w.as_ref().map_or(true, |w| ids.contains(&w.execution_id)))
        .collect()
}

/// The stage spans of the executions in the history.
async fn read_stage_spans(
    tx: &mut dyn Tx,
    history: &History,
) -> Result<Vec<StageSpan>, StoreError> {
    let in_history: std::collections::HashSet<Uuid> =
        history.executions.iter().map(|e| e.execution_id).collect();
    tx.query(
        &sql::DASH_STAGE_SPANS_AFTER,
        &[SqlValue::Int(history.after_log_id)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(StageSpan {
            execution_id: r.guid("LocalExecutionId")?,
            stage_id: r.i64("StageId")?,
            start: r.opt_datetime("StartDateTime")?,
            end: r.opt_datetime("EndDateTime")?,
        })
    })
    .filter(|s: &Result<StageSpan, StoreError>| {
        s.as_ref()
            .map_or(true, |s| in_history.contains(&s.execution_id))
    })
    .collect()
}

/// The newest ErrorLog rows (at most [`Options::MAX_ERRORS`]), in log order.
async fn read_errors(tx: &mut dyn Tx) -> Result<Vec<ErrorRow>, StoreError> {
    let last_error = last_id(tx, &sql::DASH_ERROR_LAST_ID).await?;
    let after = last_error.saturating_sub(Options::MAX_ERRORS).max(0);
    tx.query(&sql::DASH_ERRORS_AFTER, &[SqlValue::Int(after)])
        .await?
        .iter()
        .map(|r| {
            Ok(ErrorRow {
                log_id: r.i64("LogId")?,
                execution_id: r.guid("LocalExecutionId")?,
                run_id: r.guid("PipelineRunId")?,
                activity_run_id: r.guid("ActivityRunId")?,
                activity_name: r.text("ActivityName")?,
                activity_type: r.text("ActivityType")?,
                error_code: r.text("ErrorCode")?,
                error_type: r.text("ErrorType")?,
                message: r.opt_text("ErrorMessage")?,
            })
        })
        .collect()
}

async fn last_id(tx: &mut dyn Tx, statement: &crate::store::Statement) -> Result<i64, StoreError> {
    Ok(tx
        .query(statement, &[])
        .await?
        .first()
        .map(|r| r.opt_i64("LastLogId"))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

fn worker_row(r: &Row, current: bool) -> Result<WorkerRow, StoreError> {
    Ok(WorkerRow {
        execution_id: r.guid("LocalExecutionId")?,
        stage_id: r.i64("StageId")?,
        pipeline_id: r.i64("PipelineId")?,
        pipeline_name: r.text("PipelineName")?,
        status: r.opt_text("PipelineStatus")?,
        blocked: if current { r.bool("IsBlocked")? } else { false },
        run_id: r.opt_guid("PipelineRunId")?,
        start: r.opt_datetime("StartDateTime")?,
        end: r.opt_datetime("EndDateTime")?,
        last_check: if current {
            r.opt_datetime("LastStatusCheckDateTime")?
        } else {
            None
        },
        orchestrator: Orchestrator {
            name: r.text("OrchestratorName")?,
            kind: r.text("OrchestratorType")?.trim().to_string(),
            resource_group: r.text("ResourceGroupName")?,
        },
    })
}

fn execution_summary(r: &Row) -> Result<ExecutionSummary, StoreError> {
    Ok(ExecutionSummary {
        execution_id: r.guid("LocalExecutionId")?,
        first_log_id: r.i64("FirstLogId")?,
        last_log_id: r.i64("LastLogId")?,
        start: r.opt_datetime("StartDateTime")?,
        end: r.opt_datetime("EndDateTime")?,
        workers: r.i64("Workers")?,
        succeeded: r.opt_i64("Succeeded")?.unwrap_or(0),
        failed: r.opt_i64("Failed")?.unwrap_or(0),
    })
}

async fn read_pools(tx: &mut dyn Tx) -> Result<Vec<PoolView>, StoreError> {
    let keys = tx
        .query(&sql::VM_POOL_KEYS, &[])
        .await?
        .iter()
        .map(|r| r.text("PoolKey"))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut events = read_power_events(tx).await?;
    let mut pools = Vec::with_capacity(keys.len());
    for key in keys {
        let pool_events = events.remove(&key).unwrap_or_default();
        pools.push(read_pool(tx, key, pool_events).await?);
    }
    Ok(pools)
}

/// The newest power log events (at most [`Options::MAX_POWER_EVENTS`] over all pools), newest first, by
/// pool key.
async fn read_power_events(
    tx: &mut dyn Tx,
) -> Result<HashMap<String, Vec<PowerEvent>>, StoreError> {
    let last_event = last_id(tx, &sql::DASH_POWER_LOG_LAST_ID).await?;
    let after = last_event.saturating_sub(Options::MAX_POWER_EVENTS).max(0);
    let mut events: HashMap<String, Vec<PowerEvent>> = HashMap::new();
    for r in tx
        .query(&sql::DASH_POWER_LOG_AFTER, &[SqlValue::Int(after)])
        .await?
        .iter()
        .rev()
    {
        events
            .entry(r.text("PoolKey")?)
            .or_default()
            .push(PowerEvent {
                at: r.opt_datetime("EventDateTime")?.unwrap_or_default(),
                vm_name: r.opt_text("VmName")?,
                event: r.text("Event")?,
                holder: r.opt_text("Holder")?,
                power_state: r
                    .opt_text("PowerState")?
                    .map(|s| PowerState::parse(&s).map_or(s, |p| p.as_str().to_string())),
                active_leases: r.opt_i64("ActiveLeases")?.unwrap_or(0),
            });
    }
    Ok(events)
}

/// One pool's runtime, nodes and live leases, with its events; its cost is filled in by [`read`].
async fn read_pool(
    tx: &mut dyn Tx,
    key: String,
    events: Vec<PowerEvent>,
) -> Result<PoolView, StoreError> {
    let params = [SqlValue::Text(key.clone())];
    let runtime = match tx.query(&sql::VM_POOL_GET, &params).await?.first() {
        Some(r) => match (
            r.opt_text("FactoryName")?,
            r.opt_text("IntegrationRuntimeName")?,
        ) {
            (Some(f), Some(ir)) => Some(format!("{f} / {ir}")),
            _ => None,
        },
        None => None,
    };
    let nodes = tx
        .query(&sql::VM_NODES_OF_POOL, &params)
        .await?
        .iter()
        .map(|r| {
            Ok(PoolNode {
                vm_name: r.text("VmName")?,
                power_state: r.opt_text("LastPowerState")?,
                pending: r.opt_text("PendingAction")?,
                idle_since: r.opt_datetime("IdleSinceDateTime")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let leases = tx
        .query(&sql::VM_LEASES_OF_POOL, &params)
        .await?
        .iter()
        .map(|r| {
            Ok(PoolLease {
                holder: r.text("Holder")?,
                acquired: r.opt_datetime("AcquiredDateTime")?,
                expires: r.opt_datetime("ExpiresDateTime")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(PoolView {
        key,
        runtime,
        nodes,
        leases,
        events,
        cost: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_links_go_to_adf_studio_or_synapse_studio() {
        let run = Uuid::nil();
        let sub = Uuid::from_u128(1);
        let adf = Orchestrator {
            name: "Workers Factory".into(),
            kind: "ADF".into(),
            resource_group: "rg+1".into(),
        };
        assert_eq!(
            run_link(&adf, sub, run).as_deref(),
            Some("https://adf.azure.com/monitoring/pipelineruns/00000000-0000-0000-0000-000000000000?factory=%2Fsubscriptions%2F00000000-0000-0000-0000-000000000001%2FresourceGroups%2Frg%2B1%2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2FWorkers+Factory")
        );
        let synapse = Orchestrator {
            kind: "SYN".into(),
            ..adf.clone()
        };
        assert!(run_link(&synapse, sub, run).is_some_and(|l| l.starts_with(
            "https://web.azuresynapse.net/en-us/monitoring/pipelineruns/00000000-0000-0000-0000-000000000000?workspace=%2Fsubscriptions"
        )));
        let other = Orchestrator {
            kind: "XYZ".into(),
            ..adf
        };
        assert_eq!(run_link(&other, sub, run), None);
    }
}

//! Starting and finishing an execution: procfwk's `ExecutionWrapper`, `BatchWrapper`, `CreateNewExecution`,
//! `ResetExecution`, `GetStages` and `UpdateExecutionLog`, plus who runs which scope right now
//! (`ExecutionControl`), so two Parents never run the same scope at once.

use super::{LifecycleError, Properties};
use crate::domain::{ScopeStatus, WorkerStatus};
use crate::store::{statements, Row, SqlValue, StoreError, Transition, Tx};
use chrono::NaiveDateTime;
use uuid::Uuid;

/// How an execution was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StartMode {
    /// A new execution id with every enabled worker.
    New,
    /// The previous execution, restarted from the point of failure: successful workers keep their result.
    Restart,
}

/// A stage still to run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StageToRun {
    #[serde(rename = "StageId")]
    pub stage_id: i32,
    #[serde(rename = "StageName")]
    pub stage_name: String,
    #[serde(rename = "Workers")]
    pub workers: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    pub execution_id: Uuid,
    pub mode: StartMode,
    pub batch: Option<String>,
    pub stages: Vec<StageToRun>,
    pub properties: Properties,
}

/// Start (or restart) the execution of a scope: every enabled stage, or the stages of one batch.
pub struct StartExecution {
    pub batch: Option<String>,
    pub calling_orchestrator: String,
    pub parent_run_id: Option<String>,
    /// What ADF said, just before, of the Parent run holding the scope (if another one held it).
    pub previous_parent: Option<PreviousParent>,
    pub now: NaiveDateTime,
}

/// What ADF says of a Parent run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentState {
    /// Succeeded, failed or cancelled: its execution can be taken over now.
    Over,
    /// Queued or in progress (or cancelling): its scope stays its own.
    Alive,
    /// ADF could not be asked (or the run's orchestrator is not known): the stale timeout decides.
    Unknown,
}

/// The Parent run that held a scope, as read before the start, and what ADF said of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousParent {
    pub execution_id: Uuid,
    pub parent_run_id: String,
    pub state: ParentState,
}

/// Who holds a scope (`ExecutionControl`), read before a start to ask ADF about its Parent run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeHolder {
    pub execution_id: Uuid,
    pub status: ScopeStatus,
    pub parent_run_id: Option<String>,
    pub calling_orchestrator: Option<String>,
}

/// Read who holds the scope `StartExecution` with `batch` would start.
pub struct ReadScopeHolder {
    pub batch: Option<String>,
}

#[async_trait::async_trait]
impl Transition for ReadScopeHolder {
    type Output = Option<ScopeHolder>;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Option<ScopeHolder>, LifecycleError> {
        let key = control_key(self.batch.as_deref());
        let row = tx
            .query(&statements::CONTROL_GET, &[key.as_str().into()])
            .await?
            .into_iter()
            .next();
        row.map(|c| {
            Ok(ScopeHolder {
                execution_id: c.guid("ExecutionId")?,
                status: ScopeStatus::parse(&c.text("ControlStatus")?),
                parent_run_id: c.opt_text("ParentRunId")?,
                calling_orchestrator: c.opt_text("CallingOrchestratorName")?,
            })
        })
        .transpose()
    }
}

/// The orchestrator a name stands for (`procfwk.Orchestrators`): subscription, resource group and
/// type. `None` unless exactly one orchestrator (or one framework orchestrator) has the name.
pub struct ReadOrchestrator {
    pub name: String,
}

/// An orchestrator's coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrchestratorRef {
    pub name: String,
    pub orchestrator_type: String,
    pub resource_group: String,
    pub subscription_id: Uuid,
}

#[async_trait::async_trait]
impl Transition for ReadOrchestrator {
    type Output = Option<OrchestratorRef>;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Option<OrchestratorRef>, LifecycleError> {
        let rows = tx
            .query(
                &statements::ORCHESTRATOR_BY_NAME,
                &[self.name.as_str().into()],
            )
            .await?;
        let framework: Vec<&Row> = rows
            .iter()
            .filter(|r| r.bool("IsFrameworkOrchestrator").unwrap_or(false))
            .collect();
        let row: &Row = match (rows.as_slice(), framework.as_slice()) {
            ([only], _) => only,
            (_, [only]) => only,
            _ => return Ok(None),
        };
        Ok(Some(OrchestratorRef {
            name: row.text("OrchestratorName")?,
            orchestrator_type: row.text("OrchestratorType")?.trim().to_string(),
            resource_group: row.text("ResourceGroupName")?,
            subscription_id: row.guid("SubscriptionId")?,
        }))
    }
}

/// The `ExecutionControl` key of a scope: all stages, or one batch.
pub fn control_key(batch: Option<&str>) -> String {
    match batch {
        Some(b) => format!("batch:{}", b.to_uppercase()),
        None => "all".into(),
    }
}

pub(crate) const ALREADY_RUNNING: &str =
    "There is already an execution run in progress. Stop this via the Orchestrator before restarting.";

impl StartExecution {
    fn control_key(&self) -> String {
        control_key(self.batch.as_deref())
    }

    /// What ADF said of the Parent run recorded in the scope's control row, if that is the run asked
    /// about (the row is locked: a Parent that took the scope over since is not the one asked about).
    fn asked_state(&self, control: &Row) -> Result<ParentState, StoreError> {
        let recorded = control.opt_text("ParentRunId")?;
        let execution = control.guid("ExecutionId")?;
        Ok(match (&self.previous_parent, recorded) {
            (Some(asked), Some(recorded))
                if asked.execution_id == execution
                    && asked
                        .parent_run_id
                        .trim()
                        .eq_ignore_ascii_case(recorded.trim()) =>
            {
                asked.state
            }
            _ => ParentState::Unknown,
        })
    }

    async fn create(
        &self,
        tx: &mut dyn Tx,
        id: Uuid,
        batch_id: Option<Uuid>,
    ) -> Result<(), LifecycleError> {
        let created = match batch_id {
            None => {
                tx.execute(
                    &statements::CREATE_EXECUTION_ALL,
                    &[id.into(), self.calling_orchestrator.as_str().into()],
                )
                .await?
            }
            Some(b) => {
                tx.execute(
                    &statements::CREATE_EXECUTION_BATCH,
                    &[
                        id.into(),
                        self.calling_orchestrator.as_str().into(),
                        b.into(),
                    ],
                )
                .await?
            }
        };
        if created == 0 {
            return Err(LifecycleError::NoWork);
        }
        Ok(())
    }

    /// Archive an execution's rows to the log and remove them (`UpdateExecutionLog @PerformErrorCheck = 0`).
    async fn archive(tx: &mut dyn Tx, id: Uuid) -> Result<(), LifecycleError> {
        tx.execute(&statements::ARCHIVE_EXECUTION, &[id.into()])
            .await?;
        tx.execute(&statements::DELETE_EXECUTION, &[id.into()])
            .await?;
        Ok(())
    }

    async fn reset(tx: &mut dyn Tx, id: Uuid) -> Result<(), LifecycleError> {
        tx.execute(&statements::RESET_LOG_UNFINISHED, &[id.into()])
            .await?;
        tx.execute(&statements::RESET_ROWS, &[id.into()]).await?;
        Ok(())
    }

    /// Non-batch scope: new, restart or override, from what CurrentExecution holds.
    async fn start_all(
        &self,
        tx: &mut dyn Tx,
        props: &Properties,
    ) -> Result<(Uuid, StartMode), LifecycleError> {
        let present = tx.query(&statements::EXECUTIONS_PRESENT, &[]).await?;
        let running: i64 = present.iter().map(|r| r.i64("Running").unwrap_or(0)).sum();
        if running > 0 {
            return Err(LifecycleError::AlreadyRunning(format!(
                "{ALREADY_RUNNING} ({running} worker(s) of the previous execution are still running in the orchestrator or not settled yet.)"
            )));
        }
        let unfinished: Vec<&Row> = present
            .iter()
            .filter(|r| r.i64("Succeeded").unwrap_or(0) < r.i64("Workers").unwrap_or(0))
            .collect();
        if let (Some(previous), false) = (unfinished.first(), props.override_restart) {
            let id = previous.guid("LocalExecutionId")?;
            // Anything else in the table is a leftover of an older scope; archive it.
            for other in present
                .iter()
                .filter(|r| r.guid("LocalExecutionId").ok() != Some(id))
            {
                Self::archive(tx, other.guid("LocalExecutionId")?).await?;
            }
            Self::reset(tx, id).await?;
            return Ok((id, StartMode::Restart));
        }
        for row in &present {
            Self::archive(tx, row.guid("LocalExecutionId")?).await?;
        }
        let id = Uuid::new_v4();
        self.create(tx, id, None).await?;
        Ok((id, StartMode::New))
    }

    /// Batch scope (`BatchWrapper`): a stopped batch restarts with its execution id unless
    /// `OverideRestart` is 1, which abandons it and starts afresh.
    async fn start_batch(
        &self,
        tx: &mut dyn Tx,
        props: &Properties,
        name: &str,
    ) -> Result<(Uuid, StartMode), LifecycleError> {
        let batch = tx
            .query(&statements::BATCH_BY_NAME, &[name.into()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| LifecycleError::BatchNotFound(name.into()))?;
        if !batch.bool("Enabled")? {
            return Err(LifecycleError::BatchDisabled(name.into()));
        }
        let batch_id = batch.guid("BatchId")?;
        let batch_name = batch.text("BatchName")?;
        let previous = tx
            .query(&statements::BATCH_EXECUTIONS, &[batch_id.into()])
            .await?
            .into_iter()
            .next();
        if let Some(prev) = previous {
            let prev_id = prev.guid("ExecutionId")?;
            let rows = tx
                .query(&statements::EXECUTION_STATUS_COUNTS, &[prev_id.into()])
                .await?;
            // Every worker succeeded but no one finished the execution (its Parent stopped before
            // FinishExecution): nothing is left to restart, so it ends as a success and a new one
            // starts, as in the scope of all stages.
            let all_succeeded = !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| worker_status(r).is_ok_and(|s| s == WorkerStatus::Success));
            if !props.override_restart && !all_succeeded {
                if rows.is_empty() {
                    self.create(tx, prev_id, Some(batch_id)).await?;
                } else {
                    Self::reset(tx, prev_id).await?;
                }
                tx.execute(
                    &statements::BATCH_EXECUTION_STATUS,
                    &[prev_id.into(), ScopeStatus::Running.as_str().into()],
                )
                .await?;
                return Ok((prev_id, StartMode::Restart));
            }
            Self::archive(tx, prev_id).await?;
            let ended = if all_succeeded {
                ScopeStatus::Success
            } else {
                ScopeStatus::Abandoned
            };
            tx.execute(
                &statements::BATCH_EXECUTION_END,
                &[prev_id.into(), ended.as_str().into(), self.now.into()],
            )
            .await?;
        }
        let id = Uuid::new_v4();
        tx.execute(
            &statements::BATCH_EXECUTION_INSERT,
            &[
                batch_id.into(),
                id.into(),
                batch_name.into(),
                self.now.into(),
            ],
        )
        .await?;
        self.create(tx, id, Some(batch_id)).await?;
        Ok((id, StartMode::New))
    }
}

#[async_trait::async_trait]
impl Transition for StartExecution {
    type Output = Started;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Started, LifecycleError> {
        let props = Properties::read(tx).await?;
        self.check_batch_mode(&props)?;
        let key = self.control_key();
        // Lock the scope first: every read below then sees what a concurrent Parent committed.
        tx.execute(&statements::CONTROL_LOCK, &[key.as_str().into()])
            .await?;
        let control = tx
            .query(&statements::CONTROL_GET, &[key.as_str().into()])
            .await?
            .into_iter()
            .next();
        let previous_status = match &control {
            Some(c) => match self.judge_holder(c, &key, &props)? {
                Holder::Own(execution_id) => {
                    // Our own earlier attempt (an ADF activity retry, or a replay after a COMMIT
                    // whose acknowledgement was lost): answer with the execution it started.
                    return self.resume_own(tx, execution_id, props).await;
                }
                Holder::Replaceable(status) => Some(status),
            },
            None => None,
        };
        let (execution_id, mode) = match &self.batch {
            None => self.start_all(tx, &props).await?,
            Some(b) => self.start_batch(tx, &props, b).await?,
        };
        self.write_control(tx, &key, execution_id, previous_status)
            .await?;
        let stages = stages_to_run(tx, execution_id).await?;
        Ok(Started {
            execution_id,
            mode,
            batch: self.batch.clone(),
            stages,
            properties: props,
        })
    }
}

/// What the scope's control row says of starting it now.
enum Holder {
    /// Held by this very Parent run's earlier attempt: its execution.
    Own(Uuid),
    /// Free, or held by a Parent run that is over or stopped reporting: the row's status, which
    /// taking it over compares and sets.
    Replaceable(ScopeStatus),
}

impl StartExecution {
    /// A scope of all stages needs `UseExecutionBatches` 0, a batch needs 1.
    fn check_batch_mode(&self, props: &Properties) -> Result<(), LifecycleError> {
        match (&self.batch, props.use_batches) {
            (None, true) => Err(LifecycleError::BatchMode(
                "UseExecutionBatches is 1: name the batch to run".into(),
            )),
            (Some(b), false) => Err(LifecycleError::BatchMode(format!(
                "UseExecutionBatches is 0: batch {b:?} cannot be run on its own"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the (locked) control row lets this start go ahead: a scope Running under another
    /// Parent run is refused while ADF says that run is alive (or, when ADF could not be asked, until
    /// the stale timeout).
    fn judge_holder(
        &self,
        c: &Row,
        key: &str,
        props: &Properties,
    ) -> Result<Holder, LifecycleError> {
        let status = ScopeStatus::parse(&c.text("ControlStatus")?);
        if status == ScopeStatus::Running && self.is_own(c)? {
            return Ok(Holder::Own(c.guid("ExecutionId")?));
        }
        if status == ScopeStatus::Running {
            let refused = || {
                LifecycleError::AlreadyRunning(match &self.batch {
                    Some(b) => format!("There is already an batch execution run in progress for batch {b}. Stop this via the Orchestrator before restarting."),
                    None => ALREADY_RUNNING.into(),
                })
            };
            // Whether the holding Parent is alive is asked of ADF; the timeout is only the
            // fallback when ADF could not be asked.
            match self.asked_state(c)? {
                ParentState::Alive => return Err(refused()),
                ParentState::Over => {
                    tracing::warn!(scope = %key, "taking over an execution whose Parent run is over")
                }
                ParentState::Unknown => {
                    let last = c.opt_datetime("LastActivityDateTime")?.unwrap_or(self.now);
                    let idle = (self.now - last).to_std().unwrap_or_default();
                    if idle < props.stale_after {
                        return Err(refused());
                    }
                    tracing::warn!(scope = %key, idle_minutes = idle.as_secs() / 60, "taking over an execution whose Parent stopped reporting");
                }
            }
        }
        Ok(Holder::Replaceable(status))
    }

    /// Record the scope as this Parent's: take the existing control row over (a compare-and-set on
    /// the status read) or insert the first one.
    async fn write_control(
        &self,
        tx: &mut dyn Tx,
        key: &str,
        execution_id: Uuid,
        previous_status: Option<ScopeStatus>,
    ) -> Result<(), LifecycleError> {
        let parent = SqlValue::from(self.parent_run_id.clone());
        let caller = SqlValue::from(self.calling_orchestrator.as_str());
        match previous_status {
            Some(status) => {
                let took = tx
                    .execute(
                        &statements::CONTROL_TAKE,
                        &[
                            key.into(),
                            execution_id.into(),
                            self.now.into(),
                            parent,
                            caller,
                            status.as_str().into(),
                        ],
                    )
                    .await?;
                if took == 0 {
                    return Err(LifecycleError::AlreadyRunning(ALREADY_RUNNING.into()));
                }
            }
            None => {
                let inserted = tx
                    .execute(
                        &statements::CONTROL_INSERT,
                        &[
                            key.into(),
                            execution_id.into(),
                            self.now.into(),
                            parent,
                            caller,
                        ],
                    )
                    .await;
                match inserted {
                    Ok(_) => {}
                    // Someone inserted the same scope between our read and our write: another
                    // Parent, or our own earlier attempt still running when ADF repeated the call.
                    // Only a fresh look at the committed row (a new transaction, which locks it)
                    // tells the two apart.
                    Err(StoreError::Database {
                        number: 2627 | 2601,
                        ..
                    }) => return Err(LifecycleError::ScopeStartedMeanwhile),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

impl StartExecution {
    /// Whether the scope's control row was written by this very Parent run (same `parentRunId`).
    fn is_own(&self, control: &Row) -> Result<bool, StoreError> {
        let recorded = control.opt_text("ParentRunId")?;
        Ok(match (&self.parent_run_id, recorded) {
            (Some(ours), Some(theirs)) => {
                !ours.trim().is_empty() && ours.eq_ignore_ascii_case(theirs.trim())
            }
            _ => false,
        })
    }

    /// The answer our earlier attempt gave: the execution it started and the stages still to run. A
    /// restart keeps its successful workers, so their presence tells the two modes apart.
    async fn resume_own(
        &self,
        tx: &mut dyn Tx,
        execution_id: Uuid,
        props: Properties,
    ) -> Result<Started, LifecycleError> {
        let counts = tx
            .query(&statements::EXECUTION_STATUS_COUNTS, &[execution_id.into()])
            .await?;
        let any_success = counts
            .iter()
            .any(|r| worker_status(r).is_ok_and(|s| s == WorkerStatus::Success));
        tracing::info!(%execution_id, "StartExecution repeated by the same Parent run; answering with its execution");
        Ok(Started {
            execution_id,
            mode: if any_success {
                StartMode::Restart
            } else {
                StartMode::New
            },
            batch: self.batch.clone(),
            stages: stages_to_run(tx, execution_id).await?,
            properties: props,
        })
    }
}

async fn stages_to_run(
    tx: &mut dyn Tx,
    execution_id: Uuid,
) -> Result<Vec<StageToRun>, LifecycleError> {
    let stages = tx
        .query(&statements::STAGES_TO_RUN, &[execution_id.into()])
        .await?
        .iter()
        .map(|r| {
            Ok(StageToRun {
                stage_id: r.i32("StageId")?,
                stage_name: r.text("StageName")?,
                workers: r.i64("Workers")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if stages.is_empty() {
        return Err(LifecycleError::NoWork);
    }
    Ok(stages)
}

/// How an execution ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub execution_id: Uuid,
    pub succeeded: bool,
    /// Workers by status (`NotStarted` for never-started ones).
    pub counts: Vec<(WorkerStatus, i64)>,
}

/// `UpdateExecutionLog @PerformErrorCheck = 1`: archive a fully successful execution; otherwise leave
/// CurrentExecution as it is for a restart and record that the scope stopped.
pub struct FinishExecution {
    pub execution_id: Uuid,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for FinishExecution {
    type Output = Finished;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Finished, LifecycleError> {
        let id = self.execution_id;
        let counts: Vec<(WorkerStatus, i64)> = tx
            .query(&statements::EXECUTION_STATUS_COUNTS, &[id.into()])
            .await?
            .iter()
            .map(|r| Ok((worker_status(r)?, r.i64("RecordCount")?)))
            .collect::<Result<_, StoreError>>()?;
        if counts.is_empty() {
            // Already archived (a retried call), or never existed.
            let control = tx
                .query(&statements::CONTROL_BY_EXECUTION, &[id.into()])
                .await?;
            return match control
                .first()
                .map(|c| c.text("ControlStatus"))
                .transpose()?
                .as_deref()
                .map(ScopeStatus::parse)
            {
                Some(ScopeStatus::Success) => Ok(Finished {
                    execution_id: id,
                    succeeded: true,
                    counts,
                }),
                _ => Err(LifecycleError::ExecutionNotFound(id)),
            };
        }
        let succeeded = counts
            .iter()
            .all(|(status, _)| *status == WorkerStatus::Success);
        if succeeded {
            StartExecution::archive(tx, id).await?;
            tx.execute(
                &statements::CONTROL_SET_STATUS,
                &[
                    id.into(),
                    ScopeStatus::Success.as_str().into(),
                    self.now.into(),
                ],
            )
            .await?;
            tx.execute(
                &statements::BATCH_EXECUTION_END,
                &[
                    id.into(),
                    ScopeStatus::Success.as_str().into(),
                    self.now.into(),
                ],
            )
            .await?;
        } else {
            tx.execute(
                &statements::CONTROL_SET_STATUS,
                &[
                    id.into(),
                    ScopeStatus::Stopped.as_str().into(),
                    self.now.into(),
                ],
            )
            .await?;
            tx.execute(
                &statements::BATCH_EXECUTION_STATUS,
                &[id.into(), ScopeStatus::Stopped.as_str().into()],
            )
            .await?;
        }
        Ok(Finished {
            execution_id: id,
            succeeded,
            counts,
        })
    }
}

/// The `PipelineStatus` of a status-count row (`CurrentExecutionSummary`: `Not Started` for `NULL`).
fn worker_status(row: &Row) -> Result<WorkerStatus, StoreError> {
    Ok(WorkerStatus::parse(&row.text("PipelineStatus")?))
}

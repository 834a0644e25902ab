//! One worker's lifecycle: read what is needed to call it, claim it (so a retried Execute never starts
//! a second run), record its run id and status checks, and settle its result — status, logs, errors and
//! blocking — in one transaction.

use super::{blocking, LifecycleError, Properties};
use crate::domain::response::ActivityError;
pub use crate::domain::WorkerKey;
use crate::domain::{RunId, WorkerStatus};
use crate::secret::Secret;
use crate::store::{passphrase, statements, SqlValue, Transition, Tx};
use chrono::NaiveDateTime;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A [`WorkerKey`] as the statements' first three parameters (`ExecutionId`, `StageId`, `PipelineId`).
pub(crate) trait KeyParams {
    fn params(&self) -> [SqlValue; 3];
    /// The key's parameters followed by `more`.
    fn with(&self, more: impl IntoIterator<Item = SqlValue>) -> Vec<SqlValue>;
}

impl KeyParams for WorkerKey {
    fn params(&self) -> [SqlValue; 3] {
        [
            self.execution_id.into(),
            self.stage_id.into(),
            self.pipeline_id.into(),
        ]
    }

    fn with(&self, more: impl IntoIterator<Item = SqlValue>) -> Vec<SqlValue> {
        self.params().into_iter().chain(more).collect()
    }
}

/// A credential as the metadata stores it (`dbo.ServicePrincipals` through `procfwk.ServicePrincipals`):
/// the client id (or a Key Vault URL for it), and the secret either stored in the database
/// (`PrincipalSecret`, `ENCRYPTBYPASSPHRASE`'d; decrypted by the credential read) or as a Key Vault URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredential {
    pub credential_id: i32,
    /// Linked to the worker itself (`PipelineAuthLink.PipelineId`), not to its whole orchestrator.
    pub pipeline_specific: bool,
    pub client_id: Option<Uuid>,
    pub client_id_url: Option<String>,
    pub secret_url: Option<String>,
    /// The row has a `PrincipalSecret`.
    pub has_stored_secret: bool,
    /// `PrincipalSecret` decrypted with procfwk's passphrase (`None`: no secret, or the passphrase did
    /// not fit — the orchestrator or pipeline was renamed since the secret was stored).
    pub stored_secret: Option<Secret>,
}

/// Everything needed to call a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerPlan {
    pub pipeline_name: String,
    pub orchestrator_name: String,
    pub orchestrator_type: String,
    pub resource_group: String,
    pub subscription_id: Uuid,
    pub tenant_id: Uuid,
    pub credential: Option<StoredCredential>,
    /// Non-NULL parameters, as strings (procfwk #13: NULL values are omitted).
    pub parameters: Map<String, Value>,
    /// `None`: `NULL`, never started.
    pub status: Option<WorkerStatus>,
    pub run_id: Option<RunId>,
    pub started: Option<NaiveDateTime>,
    pub properties: Properties,
}

impl WorkerPlan {
    /// `PipelineParamsUsed`, as procfwk writes it.
    pub fn params_used(&self) -> String {
        serde_json::json!({ "pipelineParameters": self.parameters }).to_string()
    }
}

/// Read a worker's plan (`GetWorkerDetailsWrapper`, `GetPipelineParameters`, `GetWorkerAuthDetails`).
pub struct ReadWorker {
    pub key: WorkerKey,
}

#[async_trait::async_trait]
impl Transition for ReadWorker {
    type Output = WorkerPlan;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<WorkerPlan, LifecycleError> {
        let key = self.key;
        let row = tx
            .query(&statements::WORKER_DETAILS, &key.params())
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| LifecycleError::WorkerNotFound(key.to_string(), key.execution_id))?;
        let orchestrator_id = row.i32("OrchestratorId")?;
        let credential = tx
            .query(
                &statements::WORKER_CREDENTIAL,
                &[orchestrator_id.into(), key.pipeline_id.into()],
            )
            .await?
            .into_iter()
            .next()
            .map(|c| {
                Ok::<_, LifecycleError>(StoredCredential {
                    credential_id: c.i32("CredentialId")?,
                    pipeline_specific: c.opt_i64("PipelineId")?.is_some(),
                    client_id: c.opt_guid("PrincipalId")?,
                    client_id_url: c.opt_text("PrincipalIdUrl")?,
                    secret_url: c.opt_text("PrincipalSecretUrl")?,
                    has_stored_secret: c.i64("HasPrincipalSecret")? != 0,
                    // Binary columns arrive as hex; the clear text is an NVARCHAR (UTF-16LE).
                    stored_secret: c
                        .opt_text("PrincipalSecretValue")?
                        .as_deref()
                        .and_then(passphrase::from_hex)
                        .as_deref()
                        .and_then(passphrase::from_utf16le)
                        .map(Secret::new),
                })
            })
            .transpose()?;
        let mut parameters = Map::new();
        for p in tx
            .query(&statements::WORKER_PARAMETERS, &[key.pipeline_id.into()])
            .await?
        {
            if let Some(value) = p.opt_text("ParameterValue")? {
                parameters.insert(p.text("ParameterName")?, Value::String(value));
            }
        }
        Ok(WorkerPlan {
            pipeline_name: row.text("PipelineName")?,
            orchestrator_name: row.text("OrchestratorName")?,
            orchestrator_type: row.text("OrchestratorType")?.trim().to_string(),
            resource_group: row.text("ResourceGroupName")?,
            subscription_id: row.guid("SubscriptionId")?,
            tenant_id: row.guid("TenantId")?,
            credential,
            parameters,
            status: row
                .opt_text("PipelineStatus")?
                .as_deref()
                .map(WorkerStatus::parse),
            run_id: row.opt_guid("PipelineRunId")?.map(RunId::from_store),
            started: row.opt_datetime("StartDateTime")?,
            properties: Properties::read(tx).await?,
        })
    }
}

/// The outcome of claiming a worker for starting.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// Ours: create the run.
    Claimed,
    /// A run exists already (a retried Execute): answer with it.
    AlreadyStarted { run_id: RunId },
    /// Another call claimed it and is creating the run right now (or died doing so).
    InFlight {
        since: Option<NaiveDateTime>,
        /// The other call's claim token (`None` for a claim made before tokens existed).
        token: Option<Uuid>,
        /// What that call sent (`PipelineParamsUsed`), to recognise its run in ADF.
        params_used: Option<String>,
    },
    /// Finished, blocked or failed: not to be started.
    NotStartable { status: WorkerStatus },
}

/// `SetLogPipelineRunning` as a compare-and-set: only a waiting worker becomes Running, claimed with
/// `token`. The caller makes the token once per start, so a replay of this transition (a COMMIT whose
/// acknowledgement was lost, retried by [`crate::store::Store::run`]) finds its own claim and goes on.
pub struct ClaimWorker {
    pub key: WorkerKey,
    pub params_used: String,
    pub token: Uuid,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for ClaimWorker {
    type Output = Claim;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Claim, LifecycleError> {
        let key = self.key;
        let claimed = tx
            .execute(
                &statements::CLAIM_WORKER,
                &key.with([
                    self.now.into(),
                    self.params_used.as_str().into(),
                    self.token.into(),
                ]),
            )
            .await?;
        if claimed > 0 {
            tx.execute(&statements::PARAMETERS_LAST_USED, &[key.pipeline_id.into()])
                .await?;
            tx.execute(
                &statements::CONTROL_TOUCH,
                &[key.execution_id.into(), self.now.into()],
            )
            .await?;
            return Ok(Claim::Claimed);
        }
        let row = tx
            .query(&statements::WORKER_ROW, &key.params())
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| LifecycleError::WorkerNotFound(key.to_string(), key.execution_id))?;
        let status = WorkerStatus::from_column(row.opt_text("PipelineStatus")?.as_deref());
        let token = row.opt_guid("ClaimToken")?;
        Ok(match (&status, row.opt_guid("PipelineRunId")?) {
            (WorkerStatus::Running, Some(run_id)) => Claim::AlreadyStarted {
                run_id: RunId::from_store(run_id),
            },
            (WorkerStatus::Running, None) if token == Some(self.token) => Claim::Claimed,
            (WorkerStatus::Running, None) => Claim::InFlight {
                since: match row.opt_datetime("ClaimedDateTime")? {
                    Some(at) => Some(at),
                    None => row.opt_datetime("StartDateTime")?,
                },
                token,
                params_used: row.opt_text("PipelineParamsUsed")?,
            },
            _ => Claim::NotStartable { status },
        })
    }
}

/// Take over the claim of a start that died before recording its run: succeeds only if the claim is
/// still `seen` (so of two callers taking over at once, exactly one gets it) — or is already ours (a
/// replay of this transition).
pub struct TakeOverClaim {
    pub key: WorkerKey,
    pub seen: Option<Uuid>,
    pub token: Uuid,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for TakeOverClaim {
    type Output = bool;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LifecycleError> {
        let took = tx
            .execute(
                &statements::CLAIM_TAKEOVER,
                &self.key.with([
                    self.token.into(),
                    self.now.into(),
                    self.seen.unwrap_or(Uuid::nil()).into(),
                ]),
            )
            .await?;
        if took > 0 {
            return Ok(true);
        }
        let row = tx
            .query(&statements::WORKER_ROW, &self.key.params())
            .await?;
        Ok(match row.first() {
            Some(r) => {
                r.opt_guid("ClaimToken")? == Some(self.token)
                    && r.opt_guid("PipelineRunId")?.is_none()
            }
            None => false,
        })
    }
}

/// `SetLogPipelineRunId`: record the run a claim produced, only while `token` still holds the claim.
/// Returns false if the claim was taken over or another run id is recorded.
pub struct RecordRunId {
    pub key: WorkerKey,
    pub run_id: RunId,
    pub token: Uuid,
    /// The run's portal page ([`crate::domain::run_link`]), kept beside the run id (`RunLink`).
    pub link: String,
}

#[async_trait::async_trait]
impl Transition for RecordRunId {
    type Output = bool;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LifecycleError> {
        if tx
            .execute(
                &statements::RECORD_RUN_ID,
                &self.key.with([
                    self.run_id.to_store().into(),
                    self.token.into(),
                    self.link.clone().into(),
                ]),
            )
            .await?
            > 0
        {
            return Ok(true);
        }
        // A replay of this very transition finds its own run id recorded.
        recorded_run_is(tx, self.key, self.run_id).await
    }
}

/// Whether the worker's recorded run id is `run_id` (a replay of a transition that recorded it, or a
/// concurrent caller that recorded the same run).
async fn recorded_run_is(
    tx: &mut dyn Tx,
    key: WorkerKey,
    run_id: RunId,
) -> Result<bool, LifecycleError> {
    let row = tx.query(&statements::WORKER_ROW, &key.params()).await?;
    Ok(row
        .first()
        .map(|r| r.opt_guid("PipelineRunId"))
        .transpose()?
        .flatten()
        == Some(run_id.to_store()))
}

/// `SetLogPipelineLastStatusCheck`.
pub struct RecordCheck {
    pub key: WorkerKey,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for RecordCheck {
    type Output = ();
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<(), LifecycleError> {
        tx.execute(&statements::RECORD_CHECK, &self.key.with([self.now.into()]))
            .await?;
        tx.execute(
            &statements::CONTROL_TOUCH,
            &[self.key.execution_id.into(), self.now.into()],
        )
        .await?;
        Ok(())
    }
}

/// `SetLogActivityFailed`: a framework activity around the worker failed (`ExecuteWorkerPipeline`,
/// `InvalidPipelineName`, `GetWorkerPipelineStatus`, ...). Status `<Activity>Error`, logged, and the
/// failure-handling rules applied.
pub struct WorkerActivityFailed {
    pub key: WorkerKey,
    pub activity: &'static str,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for WorkerActivityFailed {
    type Output = bool;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LifecycleError> {
        let status = WorkerStatus::activity_error(self.activity);
        let updated = tx
            .execute(
                &statements::SET_ACTIVITY_FAILED,
                &self.key.with([status.as_str().into(), self.now.into()]),
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        log_failure(tx, &self.key).await?;
        Ok(true)
    }
}

/// After a worker's status was set to a failure: log it and apply the failure-handling rules.
async fn log_failure(tx: &mut dyn Tx, key: &WorkerKey) -> Result<(), LifecycleError> {
    tx.execute(&statements::LOG_WORKER, &key.params()).await?;
    let props = Properties::read(tx).await?;
    blocking::after_failure(tx, &props, key).await?;
    Ok(())
}

/// How a worker run ended, as the framework records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerOutcome {
    Success,
    Failed,
    Cancelled,
    Unknown,
}

impl WorkerOutcome {
    /// The worker status this outcome records.
    pub fn status(&self) -> WorkerStatus {
        match self {
            Self::Success => WorkerStatus::Success,
            Self::Failed => WorkerStatus::Failed,
            Self::Cancelled => WorkerStatus::Cancelled,
            Self::Unknown => WorkerStatus::Unknown,
        }
    }

    /// From ADF's terminal run status (the Infant's `Set Pipeline Result` switch).
    pub fn from_run_status(status: &crate::domain::RunStatus) -> Self {
        use crate::domain::RunStatus;
        match status {
            RunStatus::Succeeded => Self::Success,
            RunStatus::Failed => Self::Failed,
            RunStatus::Cancelled => Self::Cancelled,
            _ => Self::Unknown,
        }
    }
}

/// What settling a result did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied {
        status: WorkerStatus,
        blocked: u64,
    },
    /// The worker was already settled for this run (a repeated call): nothing changed. `None`: no
    /// status (the worker's row is gone, or it never started).
    AlreadyApplied {
        status: Option<WorkerStatus>,
    },
}

/// `SetLogPipelineSuccess` / `Failed` / `Cancelled` / `Unknown` and `SetErrorLogDetails`, in one transaction.
pub struct ApplyResult {
    pub key: WorkerKey,
    pub run_id: RunId,
    pub outcome: WorkerOutcome,
    pub errors: Vec<ActivityError>,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for ApplyResult {
    type Output = Applied;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Applied, LifecycleError> {
        let key = self.key;
        let status = self.outcome.status();
        let updated = tx
            .execute(
                &statements::SET_RESULT,
                &key.with([
                    status.as_str().into(),
                    self.now.into(),
                    self.run_id.to_store().into(),
                ]),
            )
            .await?;
        if updated == 0 {
            let row = tx.query(&statements::WORKER_ROW, &key.params()).await?;
            let current = row
                .first()
                .map(|r| r.opt_text("PipelineStatus"))
                .transpose()?
                .flatten()
                .as_deref()
                .map(WorkerStatus::parse);
            return Ok(Applied::AlreadyApplied { status: current });
        }
        let props = Properties::read(tx).await?;
        let blocks = match self.outcome {
            WorkerOutcome::Success => false,
            WorkerOutcome::Failed => true,
            WorkerOutcome::Cancelled => props.cancelled_blocks,
            WorkerOutcome::Unknown => props.unknown_blocks,
        };
        let mut blocked = 0;
        if self.outcome != WorkerOutcome::Success {
            tx.execute(&statements::LOG_WORKER, &key.params()).await?;
            for e in &self.errors {
                let activity_run_id =
                    Uuid::parse_str(&e.activity_run_id).unwrap_or_else(|_| Uuid::new_v4());
                tx.execute(
                    &statements::INSERT_ERROR,
                    &[
                        key.execution_id.into(),
                        self.run_id.to_store().into(),
                        activity_run_id.into(),
                        clip(&e.activity_name, 100).into(),
                        clip(&e.activity_type, 100).into(),
                        clip(&e.error_code, 100).into(),
                        clip(&e.error_type, 100).into(),
                        e.error_message.as_str().into(),
                    ],
                )
                .await?;
            }
            if blocks {
                blocked = blocking::after_failure(tx, &props, &key).await?;
            }
        }
        tx.execute(
            &statements::CONTROL_TOUCH,
            &[key.execution_id.into(), self.now.into()],
        )
        .await?;
        Ok(Applied::Applied { status, blocked })
    }
}

/// ErrorLog's name columns are `VARCHAR(100)`.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A claim whose run id is not recorded: the call holding it is creating the run, or died before or
/// after ADF accepted it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnrecordedClaim {
    pub key: WorkerKey,
    /// When the claim was made (its holder's createRun came after this).
    pub since: Option<NaiveDateTime>,
    /// The claim's token (`None` for a claim made before tokens existed).
    pub token: Option<Uuid>,
    /// What the holder sent (`PipelineParamsUsed`).
    pub params_used: Option<String>,
}

/// Record the run a dead claim produced (found in ADF), only while the claim `seen` still holds and no
/// run id is recorded. True when the worker's run is now `run_id` (also for a replay).
pub struct AdoptRun {
    pub key: WorkerKey,
    pub seen: Option<Uuid>,
    pub run_id: RunId,
    /// The run's portal page, kept beside the run id (`RunLink`).
    pub link: String,
}

#[async_trait::async_trait]
impl Transition for AdoptRun {
    type Output = bool;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LifecycleError> {
        let adopted = tx
            .execute(
                &statements::ADOPT_RUN,
                &self.key.with([
                    self.run_id.to_store().into(),
                    self.seen.unwrap_or(Uuid::nil()).into(),
                    self.link.clone().into(),
                ]),
            )
            .await?;
        if adopted > 0 {
            return Ok(true);
        }
        recorded_run_is(tx, self.key, self.run_id).await
    }
}

/// Give up a dead claim whose holder created no run (ADF lists none): the worker ends with
/// `<activity>Error`, logged, failure handling applied — as if its Execute had failed — so a restart
/// runs it again. A compare-and-set on the claim `seen`: false if it changed meanwhile.
pub struct AbandonClaim {
    pub key: WorkerKey,
    pub seen: Option<Uuid>,
    pub activity: &'static str,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for AbandonClaim {
    type Output = bool;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LifecycleError> {
        let status = WorkerStatus::activity_error(self.activity);
        let updated = tx
            .execute(
                &statements::ABANDON_CLAIM,
                &self.key.with([
                    status.as_str().into(),
                    self.now.into(),
                    self.seen.unwrap_or(Uuid::nil()).into(),
                ]),
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        log_failure(tx, &self.key).await?;
        Ok(true)
    }
}

/// Whether any worker, current or logged, has recorded this run id.
pub struct RunIdKnown {
    pub run_id: RunId,
}

#[async_trait::async_trait]
impl Transition for RunIdKnown {
    type Output = bool;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<bool, LifecycleError> {
        let rows = tx
            .query(&statements::RUN_ID_KNOWN, &[self.run_id.to_store().into()])
            .await?;
        Ok(rows.first().map(|r| r.i64("N")).transpose()?.unwrap_or(0) > 0)
    }
}

/// What executions still in CurrentExecution have in flight (for the clean-up before a start:
/// procfwk's `CheckPreviousExeuction`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InFlight {
    /// Workers with a recorded run that has not been settled.
    pub recorded: Vec<(WorkerKey, RunId)>,
    /// Workers claimed whose run id was never recorded.
    pub unrecorded: Vec<UnrecordedClaim>,
}

/// Workers in flight in any execution still in CurrentExecution (`before: None`), or only in one
/// execution's stages before a stage (`before: Some((execution, stage))`, for `PrepareStage`).
pub struct InFlightWorkers {
    pub before: Option<(Uuid, i32)>,
}

#[async_trait::async_trait]
impl Transition for InFlightWorkers {
    type Output = InFlight;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<InFlight, LifecycleError> {
        let mut out = InFlight::default();
        for execution in tx.query(&statements::EXECUTIONS_PRESENT, &[]).await? {
            let id = execution.guid("LocalExecutionId")?;
            if self.before.is_some_and(|(only, _)| only != id) {
                continue;
            }
            let wanted =
                |key: &WorkerKey| self.before.is_none_or(|(_, stage)| key.stage_id < stage);
            let key = |row: &crate::store::Row| -> Result<WorkerKey, LifecycleError> {
                Ok(WorkerKey {
                    execution_id: id,
                    stage_id: row.i32("StageId")?,
                    pipeline_id: row.i32("PipelineId")?,
                })
            };
            for row in tx
                .query(&statements::IN_FLIGHT_WORKERS, &[id.into()])
                .await?
            {
                let worker = key(&row)?;
                if wanted(&worker) {
                    out.recorded
                        .push((worker, RunId::from_store(row.guid("PipelineRunId")?)));
                }
            }
            for row in tx
                .query(&statements::UNRECORDED_CLAIMS, &[id.into()])
                .await?
            {
                let worker = key(&row)?;
                if !wanted(&worker) {
                    continue;
                }
                out.unrecorded.push(UnrecordedClaim {
                    key: worker,
                    since: match row.opt_datetime("ClaimedDateTime")? {
                        Some(at) => Some(at),
                        None => row.opt_datetime("StartDateTime")?,
                    },
                    token: row.opt_guid("ClaimToken")?,
                    params_used: row.opt_text("PipelineParamsUsed")?,
                });
            }
        }
        Ok(out)
    }
}

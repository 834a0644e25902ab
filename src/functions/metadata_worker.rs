//! Metadata mode of `ExecutePipelineV2` and `CheckPipelineStatus`: the body names a worker of an
//! execution (`{"executionId", "stageId", "pipelineId"}`, plus `"runId"` for the check) and the handler
//! reads orchestrator, pipeline, parameters and credentials from the metadata store — no secret passes
//! through ADF — and records every transition itself, so the Infant needs no SQL activity.

use super::orphan_runs::{self, Found};
use super::{AppState, FunctionError, Reply};
use crate::domain::request::{Fields, RequestError};
use crate::domain::response::{self, Spelling};
use crate::domain::run_link;
use crate::domain::{
    Credentials, Dialect, Guid, OrchestratorType, PipelineName, PipelineRequest, ResourceName,
    RunId, RunStatus, SecretSource, WorkerStatus, WorkerTarget,
};
use crate::leases::workers::{holder, ReadWorkerRuntime, RenewLease, WorkerRuntime};
use crate::leases::{Change, Decision, PoolReport};
use crate::orchestration::{
    now, AbandonClaim, AdoptRun, Applied, ApplyResult, Claim, ClaimWorker, InFlightWorkers,
    LifecycleError, ReadWorker, RecordCheck, RecordRunId, SpnHandling, TakeOverClaim,
    UnrecordedClaim, WorkerActivityFailed, WorkerKey, WorkerOutcome, WorkerPlan,
    UNLINKED_WORKERS_PROPERTY,
};
use crate::store::{Store, Transition, Tx};
use serde_json::{json, Value};

/// The worker a metadata-mode body names, if it names one.
pub fn worker_key(fields: &Fields<'_>) -> Result<Option<WorkerKey>, FunctionError> {
    if !fields.has("executionId") {
        return Ok(None);
    }
    let execution_id = fields.guid("executionId", "Execution Id")?.as_uuid();
    let id = |name: &str| -> Result<i32, FunctionError> {
        let v = fields
            .integer(name)?
            .ok_or_else(|| RequestError::new(name, "is required"))?;
        i32::try_from(v).map_err(|_| RequestError::new(name, "is out of range").into())
    };
    Ok(Some(WorkerKey {
        execution_id,
        stage_id: id("stageId")?,
        pipeline_id: id("pipelineId")?,
    }))
}

fn metadata(problem: String) -> FunctionError {
    FunctionError::Lifecycle(LifecycleError::Metadata(problem))
}

/// How the worker authenticates, from its stored credential and the properties: a secret stored in
/// the database (decrypted by the credential read) or Key Vault references (`SPNHandlingMethod`); no
/// credential at all only when `UseManagedIdentityForUnlinkedWorkers = 1` says the managed identity may
/// be used. The problem otherwise, naming the credential and the property.
fn credentials_for(plan: &WorkerPlan) -> Result<Credentials, String> {
    let Some(credential) = &plan.credential else {
        return if plan.properties.unlinked_workers_use_managed_identity {
            Ok(Credentials::ManagedIdentity)
        } else {
            Err(format!(
                "the worker has no credential: no PipelineAuthLink row for pipeline {:?} or orchestrator {:?} \
                 (add a service principal, or set the property {UNLINKED_WORKERS_PROPERTY} = 1 to run such \
                 workers as the Function App's managed identity)",
                plan.pipeline_name, plan.orchestrator_name
            ))
        };
    };
    let id = credential.credential_id;
    let url = |column: &str, u: &str| match crate::domain::KeyVaultSecretRef::parse(u) {
        Ok(Some(reference)) => Ok(SecretSource::KeyVault(reference)),
        Ok(None) => Err(format!(
            "credential {id}: {column} {u:?} is not a Key Vault secret URL"
        )),
        Err(problem) => Err(format!("credential {id}: {column} {u:?} {problem}")),
    };
    let client_id = |required_url: bool| match (&credential.client_id_url, credential.client_id) {
        (Some(u), _) => url("PrincipalIdUrl", u),
        (None, Some(client)) if !required_url => Ok(SecretSource::Value(
            crate::secret::Secret::new(client.to_string()),
        )),
        (None, _) if required_url => Err(format!(
            "credential {id} has no PrincipalIdUrl (SPNHandlingMethod is StoreInKeyVault)"
        )),
        (None, _) => Err(format!("credential {id} has no PrincipalId")),
    };
    let (client_id, client_secret) = match plan.properties.spn_handling {
        SpnHandling::StoreInKeyVault => {
            let secret = credential.secret_url.as_deref().ok_or_else(|| {
                format!("credential {id} has no PrincipalSecretUrl (SPNHandlingMethod is StoreInKeyVault)")
            })?;
            (client_id(true)?, url("PrincipalSecretUrl", secret)?)
        }
        SpnHandling::StoreInDatabase => match (&credential.stored_secret, &credential.secret_url) {
            (Some(secret), _) => (client_id(false)?, SecretSource::Value(secret.clone())),
            (None, _) if credential.has_stored_secret => {
                return Err(format!(
                    "credential {id}: PrincipalSecret does not decrypt with procfwk's passphrase \
                     (orchestrator name and type{}, as when it was stored by AddServicePrincipal): was the \
                     orchestrator or pipeline renamed?",
                    if credential.pipeline_specific { ", pipeline name" } else { "" }
                ))
            }
            (None, Some(secret)) => (client_id(false)?, url("PrincipalSecretUrl", secret)?),
            (None, None) => {
                return Err(format!(
                    "credential {id} has neither a PrincipalSecret nor a PrincipalSecretUrl"
                ))
            }
        },
    };
    Ok(Credentials::ServicePrincipal {
        tenant: Guid::parse(&plan.tenant_id.to_string()).ok_or("bad tenant id")?,
        client_id,
        client_secret,
    })
}

/// The compatibility-mode request the stored metadata amounts to.
fn request_for(plan: &WorkerPlan) -> Result<PipelineRequest, FunctionError> {
    let credentials = credentials_for(plan).map_err(metadata)?;
    let name = |field: &str, v: &str| {
        ResourceName::parse(v).map_err(|p| metadata(format!("{field} {v:?} {p}")))
    };
    Ok(PipelineRequest {
        dialect: Dialect::V2,
        credentials,
        target: WorkerTarget {
            subscription: Guid::parse(&plan.subscription_id.to_string())
                .ok_or_else(|| metadata("bad subscription".into()))?,
            resource_group: name("ResourceGroupName", &plan.resource_group)?,
            orchestrator: name("OrchestratorName", &plan.orchestrator_name)?,
            orchestrator_type: OrchestratorType::parse(&plan.orchestrator_type).ok_or_else(
                || metadata(format!("OrchestratorType {:?}", plan.orchestrator_type)),
            )?,
        },
        pipeline: PipelineName::parse(&plan.pipeline_name)
            .map_err(|p| metadata(format!("PipelineName {p}")))?,
        parameters: plan.parameters.clone(),
    })
}

fn reply(
    plan: &WorkerPlan,
    request: &PipelineRequest,
    run_id: Option<&RunId>,
    status: &RunStatus,
    worker_status: Option<&WorkerStatus>,
) -> Reply {
    let mut body = response::run_status(request, run_id, status, Spelling::Procfwk);
    body.insert(
        "PipelineStatusCheckDuration".into(),
        json!(plan.properties.status_check_every.as_secs()),
    );
    if let Some(s) = worker_status {
        body.insert("WorkerStatus".into(), json!(s.as_str()));
    }
    Reply::ok(Value::Object(body))
}

/// A worker's plan and the runtime it needs (`procfwk.WorkerRuntimes`), read in one transaction: the
/// runtime costs one more statement per call, not one more transaction.
struct ReadWorkerAndRuntime {
    key: WorkerKey,
    defaults: crate::config::VmSettings,
}

#[async_trait::async_trait]
impl Transition for ReadWorkerAndRuntime {
    type Output = (WorkerPlan, Option<WorkerRuntime>);
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Self::Output, LifecycleError> {
        let plan = ReadWorker { key: self.key }.apply(tx).await?;
        let runtime = ReadWorkerRuntime {
            pipeline_id: self.key.pipeline_id,
            defaults: self.defaults.clone(),
        }
        .apply(tx)
        .await?;
        Ok((plan, runtime))
    }
}

async fn read_worker(
    state: &AppState,
    store: &Store,
    key: WorkerKey,
) -> Result<(WorkerPlan, Option<WorkerRuntime>), FunctionError> {
    Ok(store
        .run(&ReadWorkerAndRuntime {
            key,
            defaults: state.settings.vm.clone(),
        })
        .await?)
}

/// One power decision about the worker's runtime, with the Function App's managed identity (the
/// worker's own principal may have no rights on the VMs).
pub(super) async fn runtime_decision(
    state: &AppState,
    store: &Store,
    runtime: &WorkerRuntime,
    change: Change,
) -> Result<PoolReport, FunctionError> {
    let credential = state
        .azure
        .identity
        .credential(&Credentials::ManagedIdentity)
        .await?;
    let decision = Decision::new(
        runtime.spec.clone(),
        change,
        super::vm_power::utc_now(),
        state.arm_power(credential),
    )
    .with_lock_wait(state.settings.vm.lock_wait);
    Ok(decision.run(store).await?)
}

/// Give the worker's lease back once its run is over (or could not be created). Best effort: the
/// result is already recorded, and an unreleased lease expires by itself.
async fn release_runtime(state: &AppState, store: &Store, runtime: &WorkerRuntime, key: WorkerKey) {
    let change = Change::Release {
        holder: holder(&key),
    };
    match runtime_decision(state, store, runtime, change).await {
        Ok(report) => {
            tracing::info!(%key, pool = %report.pool_key, deallocated = report.deallocated, "worker released its runtime lease")
        }
        Err(e) => {
            tracing::warn!(%key, error = %e, "worker's runtime lease not released now; it will expire")
        }
    }
}

/// The answer while the worker waits for its runtime: no run yet (`RunId` empty), `Queued`, so the
/// Infant keeps polling; its next check takes the lease again and starts the run once ready.
fn waiting_reply(plan: &WorkerPlan, request: &PipelineRequest, report: &PoolReport) -> Reply {
    let mut reply = reply(
        plan,
        request,
        None,
        &RunStatus::Queued,
        Some(&WorkerStatus::Preparing),
    );
    if let Value::Object(body) = &mut reply.body {
        body.insert("RuntimeReady".into(), json!(report.ready));
        body.insert("VmPowerState".into(), json!(report.power_state.as_str()));
    }
    reply
}

/// Record a worker whose runtime VM could not be started as failed (`StartRuntimeVmError`, failure
/// handling applied). Best effort: the caller answers with `error` either way.
pub(super) async fn record_runtime_failure(store: &Store, key: WorkerKey, error: &FunctionError) {
    let failed = crate::leases::workers::WorkerRuntimeFailed { key, now: now() };
    match store.run(&failed).await {
        Ok(true) => {
            tracing::warn!(%key, %error, "the worker's VM could not be started; worker recorded as failed")
        }
        Ok(false) => {
            tracing::warn!(%key, %error, "the worker's VM failed; the worker had already started or ended")
        }
        Err(r) => {
            tracing::warn!(%key, %error, record_error = %r, "the worker's VM failed and the failure could not be recorded")
        }
    }
}

/// A claim whose run ADF cannot be asked about now (or lists ambiguously): retry later.
fn not_yet(key: WorkerKey, why: &str) -> FunctionError {
    FunctionError::Conflict {
        message: format!(
            "a previous start of this worker is not settled yet ({why}); try again later"
        ),
        details: json!({"executionId": key.execution_id.to_string(), "stageId": key.stage_id, "pipelineId": key.pipeline_id}),
    }
}

/// What became of a claim whose run id is not recorded.
enum Recovered {
    /// Its run, found in ADF, is recorded now (by us or a concurrent caller).
    Run(RunId),
    /// ADF lists no run of it.
    NoRun,
    /// Not decided now; the reason.
    NotYet(String),
}

/// Ask ADF for the run of a claim whose run id is not recorded, and record the run if there is one.
async fn recover(
    state: &AppState,
    store: &Store,
    request: &PipelineRequest,
    credential: std::sync::Arc<dyn azure_core::auth::TokenCredential>,
    claim: &UnrecordedClaim,
) -> Result<Recovered, FunctionError> {
    let key = claim.key;
    match orphan_runs::look_up(state, store, request, credential, claim).await? {
        Found::Run(run_id) => {
            let adopted = store
                .run(&AdoptRun {
                    key,
                    seen: claim.token,
                    run_id,
                    link: run_link::run_link(&request.target, &run_id),
                })
                .await?;
            if adopted {
                tracing::warn!(%key, %run_id, "a previous start of this worker died before recording its run; the run ADF accepted is recorded now");
                return Ok(Recovered::Run(run_id));
            }
            // The claim changed meanwhile (taken over, or settled): read what the worker has now.
            let plan = store.run(&ReadWorker { key }).await?;
            Ok(match plan.run_id {
                Some(recorded) => Recovered::Run(recorded),
                None => Recovered::NotYet("the claim changed while its run was looked up".into()),
            })
        }
        Found::Nothing => Ok(Recovered::NoRun),
        Found::Undecided(why) => Ok(Recovered::NotYet(why)),
    }
}

/// A worker whose metadata does not say how to call it (no usable credential, a bad name) fails the way
/// procfwk's Infant fails when its `Execute Worker Pipeline` activity does: claimed, then set to
/// `ExecuteWorkerPipelineError`, logged, and failure handling applied. Best effort: the caller answers
/// with `error` either way.
async fn record_unstartable(
    store: &Store,
    key: WorkerKey,
    plan: &WorkerPlan,
    error: &FunctionError,
) {
    let claim = ClaimWorker {
        key,
        params_used: plan.params_used(),
        token: uuid::Uuid::new_v4(),
        now: now(),
    };
    match store.run(&claim).await {
        Ok(Claim::Claimed) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(%key, %error, record_error = %e, "the worker cannot be started and the failure could not be recorded");
            return;
        }
    }
    let failed = WorkerActivityFailed {
        key,
        activity: "ExecuteWorkerPipeline",
        now: now(),
    };
    match store.run(&failed).await {
        Ok(_) => {
            tracing::warn!(%key, %error, "the worker cannot be started; recorded as ExecuteWorkerPipelineError")
        }
        Err(e) => {
            tracing::warn!(%key, %error, record_error = %e, "the worker cannot be started and the failure could not be recorded")
        }
    }
}

fn another_start(key: WorkerKey) -> FunctionError {
    FunctionError::Conflict {
        message: "another call is starting this worker right now".into(),
        details: json!({"executionId": key.execution_id.to_string(), "stageId": key.stage_id, "pipelineId": key.pipeline_id}),
    }
}

/// `ExecutePipelineV2` for a worker of an execution.
pub async fn execute(state: &AppState, key: WorkerKey) -> Result<Reply, FunctionError> {
    let store = state.store().await?;
    let (plan, runtime) = read_worker(state, store, key).await?;
    Ok(start(state, store, key, &plan, runtime.as_ref()).await?.0)
}

/// The answer to an Execute for a worker whose run exists already (recorded, or just adopted): that
/// run as ADF reports it now, never a second one.
async fn existing_run(
    state: &AppState,
    plan: &WorkerPlan,
    request: &PipelineRequest,
    credential: std::sync::Arc<dyn azure_core::auth::TokenCredential>,
    run_id: RunId,
) -> Result<(Reply, Option<RunId>), FunctionError> {
    let run = state
        .azure
        .data_factory
        .get_run(credential, &request.target, &run_id)
        .await?;
    let reply = reply(
        plan,
        request,
        Some(&run.run_id),
        &run.status,
        Some(&WorkerStatus::Running),
    );
    Ok((reply, Some(run_id)))
}

/// Start the worker's run (once its runtime, if it needs one, is ready). Also returns the worker's run
/// id when it has one now. The phases: the request, the runtime lease, the claim, then the run.
async fn start(
    state: &AppState,
    store: &Store,
    key: WorkerKey,
    plan: &WorkerPlan,
    runtime: Option<&WorkerRuntime>,
) -> Result<(Reply, Option<RunId>), FunctionError> {
    let request = match request_for(plan) {
        Ok(request) => request,
        Err(e) => {
            if plan.run_id.is_none() {
                record_unstartable(store, key, plan, &e).await;
            }
            return Err(e);
        }
    };
    let credential = state
        .azure
        .identity
        .credential(&request.credentials)
        .await?;
    if let (Some(runtime), None) = (runtime, plan.run_id) {
        if let Some(waiting) = hold_runtime(state, store, key, plan, &request, runtime).await? {
            return Ok((waiting, None));
        }
    }
    // One token for this start: a replay of the claim (a lost COMMIT acknowledgement) is recognised.
    let token = uuid::Uuid::new_v4();
    let worker = StartingWorker {
        state,
        store,
        key,
        plan,
        runtime,
        request: &request,
        credential,
    };
    if let Some(answer) = worker.claim(token).await? {
        return Ok(answer);
    }
    crate::fault::point(crate::fault::AFTER_CLAIM);
    worker.create_run(token).await
}

/// A worker on a self-hosted runtime: take its lease. The answer to give while the runtime is not
/// ready yet (the run is started only once it is), or `None` to go on.
async fn hold_runtime(
    state: &AppState,
    store: &Store,
    key: WorkerKey,
    plan: &WorkerPlan,
    request: &PipelineRequest,
    runtime: &WorkerRuntime,
) -> Result<Option<Reply>, FunctionError> {
    let take = Change::Take {
        holder: holder(&key),
        lease_secs: runtime.lease_secs,
    };
    let report = match runtime_decision(state, store, runtime, take).await {
        Ok(report) => report,
        Err(e) if matches!(&e, FunctionError::Upstream(u) if u.is_permanent_refusal()) => {
            // The VM does not exist or may not be started: the worker fails now (recorded, and
            // the failure-handling rule applied) instead of waiting in Preparing for ever.
            record_runtime_failure(store, key, &e).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if !report.ready {
        tracing::info!(%key, pool = %report.pool_key, power_state = report.power_state.as_str(), "worker waits for its runtime");
        return Ok(Some(waiting_reply(plan, request, &report)));
    }
    Ok(None)
}

/// A worker being started: what the claim and the run creation need.
struct StartingWorker<'a> {
    state: &'a AppState,
    store: &'a Store,
    key: WorkerKey,
    plan: &'a WorkerPlan,
    runtime: Option<&'a WorkerRuntime>,
    request: &'a PipelineRequest,
    credential: std::sync::Arc<dyn azure_core::auth::TokenCredential>,
}

impl StartingWorker<'_> {
    /// Claim the worker with `token`. `None`: ours, create the run; otherwise the answer to give (the
    /// run that exists already).
    async fn claim(
        &self,
        token: uuid::Uuid,
    ) -> Result<Option<(Reply, Option<RunId>)>, FunctionError> {
        let (state, store, key) = (self.state, self.store, self.key);
        let claim = store
            .run(&ClaimWorker {
                key,
                params_used: self.plan.params_used(),
                token,
                now: now(),
            })
            .await?;
        match claim {
            Claim::Claimed => Ok(None),
            Claim::AlreadyStarted { run_id } => {
                // A retried Execute: answer with the run that exists instead of starting a second one.
                Ok(Some(self.existing(run_id).await?))
            }
            Claim::InFlight {
                since,
                token: seen,
                params_used,
            } => {
                // Another call claimed the worker and recorded no run (yet): ADF may have accepted its
                // run already, so ADF is asked before anything else is decided.
                let claim = UnrecordedClaim {
                    key,
                    since,
                    token: seen,
                    params_used,
                };
                match recover(state, store, self.request, self.credential.clone(), &claim).await? {
                    Recovered::Run(run_id) => return Ok(Some(self.existing(run_id).await?)),
                    Recovered::NotYet(why) => return Err(not_yet(key, &why)),
                    Recovered::NoRun if orphan_runs::holder_may_be_alive(state, since, now()) => {
                        return Err(another_start(key));
                    }
                    Recovered::NoRun => {}
                }
                // The claim's holder died before creating a run. Taking over is a compare-and-set on
                // the claim seen: of two callers doing this at once, one gets it.
                let took = store
                    .run(&TakeOverClaim {
                        key,
                        seen,
                        token,
                        now: now(),
                    })
                    .await?;
                if !took {
                    return Err(another_start(key));
                }
                tracing::warn!(%key, "a previous start of this worker died before creating a run (ADF lists none); starting it again");
                Ok(None)
            }
            Claim::NotStartable { status } => {
                // The lease taken before the claim is not needed after all.
                if let Some(runtime) = self.runtime {
                    release_runtime(state, store, runtime, key).await;
                }
                Err(FunctionError::Conflict {
                    message: format!("the worker is {status} and cannot be started"),
                    details: json!({"WorkerStatus": status.as_str()}),
                })
            }
        }
    }

    async fn existing(&self, run_id: RunId) -> Result<(Reply, Option<RunId>), FunctionError> {
        existing_run(
            self.state,
            self.plan,
            self.request,
            self.credential.clone(),
            run_id,
        )
        .await
    }

    /// Create the claimed worker's run and record it under `token`; a run created after the claim
    /// was taken over is cancelled.
    async fn create_run(&self, token: uuid::Uuid) -> Result<(Reply, Option<RunId>), FunctionError> {
        let (state, store, key, request) = (self.state, self.store, self.key, self.request);
        let credential = &self.credential;
        let created = state
            .azure
            .data_factory
            .create_run(
                credential.clone(),
                &request.target,
                &request.pipeline,
                &request.parameters,
            )
            .await;
        let run_id = match created {
            Ok(id) => id,
            Err(e) => {
                let activity = if e.is_not_found() {
                    "InvalidPipelineName"
                } else {
                    "ExecuteWorkerPipeline"
                };
                store
                    .run(&WorkerActivityFailed {
                        key,
                        activity,
                        now: now(),
                    })
                    .await?;
                if let Some(runtime) = self.runtime {
                    release_runtime(state, store, runtime, key).await;
                }
                return Err(e.into());
            }
        };
        crate::fault::point(crate::fault::AFTER_CREATE_RUN);
        let recorded = store
            .run(&RecordRunId {
                key,
                run_id,
                token,
                link: run_link::run_link(&request.target, &run_id),
            })
            .await?;
        if !recorded {
            // Our claim was taken over while we created the run: the other start's run is the
            // worker's. Ours would run the worker twice, so it is cancelled.
            tracing::warn!(%key, %run_id, "claim lost while creating the run; cancelling the duplicate");
            if let Err(e) = state
                .azure
                .data_factory
                .cancel_run(credential.clone(), &request.target, &run_id)
                .await
            {
                tracing::error!(%key, %run_id, error = %e, "the duplicate run could not be cancelled");
            }
            return Err(another_start(key));
        }
        tracing::info!(%key, pipeline = %request.pipeline, %run_id, "worker run created");
        let status = super::wait_until_started(state, credential.clone(), request, &run_id).await;
        Ok((
            reply(
                self.plan,
                request,
                Some(&run_id),
                &status,
                Some(&WorkerStatus::Running),
            ),
            Some(run_id),
        ))
    }
}

/// `CheckPipelineStatus` for a worker of an execution: one status read; the check time is recorded and,
/// once the run is over, its result applied (status, logs, errors, blocking) in one transaction.
///
/// Without a `runId` (a worker that waited for its runtime has none in the Execute answer the Infant
/// keeps quoting) the worker's recorded run is checked, or, if it has none yet, the start is tried again.
pub async fn check(
    state: &AppState,
    key: WorkerKey,
    run_id: Option<RunId>,
) -> Result<Reply, FunctionError> {
    let store = state.store().await?;
    let (plan, runtime) = read_worker(state, store, key).await?;
    let run_id = match (run_id, plan.run_id) {
        (Some(given), Some(recorded)) if given != recorded => {
            return Err(RequestError::new(
                "runId",
                format!("is not the worker's current run ({recorded})"),
            )
            .into());
        }
        (Some(given), _) => given,
        (None, Some(recorded)) => recorded,
        (None, None) => {
            if runtime.is_none() {
                return Err(RequestError::new("runId", "is required").into());
            }
            // Still waiting for the runtime: try the start again. Once the run exists it is checked
            // right away, so a run that is already over has its result applied by this very call (the
            // Infant's loop ends on this answer).
            match start(state, store, key, &plan, runtime.as_ref()).await? {
                (_, Some(created)) => created,
                (waiting, None) => return Ok(waiting),
            }
        }
    };
    let (request, credential) = request_and_credential(state, &plan).await?;
    let (status, worker_status) = settle(state, store, &request, credential, key, run_id).await?;
    if let Some(runtime) = &runtime {
        if status.is_running() {
            // The run goes on: keep the lease alive (no power decision needed).
            let renew = RenewLease {
                pool_key: runtime.spec.key(),
                holder: holder(&key),
                lease_secs: runtime.lease_secs,
                now: super::vm_power::utc_now(),
            };
            match store.run(&renew).await {
                Ok(true) => {}
                Ok(false) => {
                    // The lease is gone (it expired and a decision removed it): take it again through
                    // a power decision, which also starts the VM again if it was deallocated meanwhile.
                    tracing::warn!(%key, "worker's runtime lease had expired; taking it again");
                    let take = Change::Take {
                        holder: holder(&key),
                        lease_secs: runtime.lease_secs,
                    };
                    if let Err(e) = runtime_decision(state, store, runtime, take).await {
                        tracing::warn!(%key, error = %e, "worker's runtime lease not taken again this check");
                    }
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "worker's runtime lease not renewed this check");
                }
            }
        } else {
            release_runtime(state, store, runtime, key).await;
        }
    }
    Ok(reply(
        &plan,
        &request,
        Some(&run_id),
        &status,
        worker_status.as_ref(),
    ))
}

/// Read the run; record the check; apply the result when it is over.
async fn settle(
    state: &AppState,
    store: &Store,
    request: &PipelineRequest,
    credential: std::sync::Arc<dyn azure_core::auth::TokenCredential>,
    key: WorkerKey,
    run_id: RunId,
) -> Result<(RunStatus, Option<WorkerStatus>), FunctionError> {
    let run = state
        .azure
        .data_factory
        .get_run(credential.clone(), &request.target, &run_id)
        .await?;
    if !request.pipeline.matches(&run.pipeline_name) {
        return Err(RequestError::new(
            "runId",
            format!("belongs to pipeline {:?}", run.pipeline_name),
        )
        .into());
    }
    store.run(&RecordCheck { key, now: now() }).await?;
    if run.status.is_running() {
        return Ok((run.status, Some(WorkerStatus::Running)));
    }
    let outcome = WorkerOutcome::from_run_status(&run.status);
    let errors = if outcome == WorkerOutcome::Failed {
        let t = time::OffsetDateTime::now_utc();
        state
            .azure
            .data_factory
            .activity_errors(
                credential,
                &request.target,
                &run.run_id,
                t - time::Duration::days(7),
                t + time::Duration::hours(1),
            )
            .await?
            .errors
    } else {
        Vec::new()
    };
    crate::fault::point(crate::fault::CHECK_APPLY);
    let applied = store
        .run(&ApplyResult {
            key,
            run_id,
            outcome,
            errors,
            now: now(),
        })
        .await?;
    let worker_status = match applied {
        Applied::Applied { status, .. } => Some(status),
        Applied::AlreadyApplied { status } => status,
    };
    Ok((run.status, worker_status))
}

/// Before a start: settle every run a previous execution left in flight (the Parent's "Clean Up Previous
/// Run"). Runs still going stay Running, and the start then refuses. A claim without a recorded run
/// is first looked up in ADF (its run adopted and settled); one ADF lists no run of is given up once its
/// holder is gone — past the claim's lifetime, or at once in `parent_over`, the execution whose Parent
/// run ADF reports over — so a restart can run the worker again.
pub async fn settle_in_flight(
    state: &AppState,
    store: &Store,
    parent_over: Option<uuid::Uuid>,
) -> Result<(), FunctionError> {
    settle_unfinished(state, store, InFlightWorkers { before: None }, parent_over).await
}

/// Before a stage is prepared: settle the workers of earlier stages still in flight (an Infant that
/// gave up on a call while its run went on, or whose start died unrecorded), so that only a worker
/// whose run is really still going is marked failed by `PrepareStage`.
pub async fn settle_earlier_stages(
    state: &AppState,
    store: &Store,
    execution_id: uuid::Uuid,
    stage_id: i32,
) -> Result<(), FunctionError> {
    let which = InFlightWorkers {
        before: Some((execution_id, stage_id)),
    };
    settle_unfinished(state, store, which, None).await
}

async fn settle_unfinished(
    state: &AppState,
    store: &Store,
    which: InFlightWorkers,
    parent_over: Option<uuid::Uuid>,
) -> Result<(), FunctionError> {
    let in_flight = store.run(&which).await?;
    let mut to_settle = in_flight.recorded;
    for claim in in_flight.unrecorded {
        let key = claim.key;
        let (request, credential) = match stored_request(state, store, key).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%key, error = %e, "previous claim could not be looked up");
                continue;
            }
        };
        match recover(state, store, &request, credential, &claim).await {
            Ok(Recovered::Run(run_id)) => to_settle.push((key, run_id)),
            Ok(Recovered::NoRun)
                if parent_over == Some(key.execution_id)
                    || !orphan_runs::holder_may_be_alive(state, claim.since, now()) =>
            {
                let abandoned = store
                    .run(&AbandonClaim {
                        key,
                        seen: claim.token,
                        activity: "ExecuteWorkerPipeline",
                        now: now(),
                    })
                    .await?;
                tracing::warn!(%key, abandoned, "a previous start of this worker died before creating a run; the worker is recorded as failed to start");
            }
            Ok(Recovered::NoRun) => {
                tracing::info!(%key, "a previous start of this worker may still be creating its run")
            }
            Ok(Recovered::NotYet(why)) => {
                tracing::warn!(%key, %why, "a previous start of this worker is not settled yet")
            }
            Err(e) => tracing::warn!(%key, error = %e, "previous claim could not be looked up"),
        }
    }
    for (key, run_id) in to_settle {
        let (request, credential) = stored_request(state, store, key).await?;
        match settle(state, store, &request, credential, key, run_id).await {
            Ok((status, _)) => tracing::info!(%key, %run_id, %status, "previous run checked"),
            Err(e) => {
                tracing::warn!(%key, %run_id, error = %e, "previous run could not be checked")
            }
        }
    }
    Ok(())
}

/// A worker's ADF request and the credential it is made with.
type AuthorisedRequest = (
    PipelineRequest,
    std::sync::Arc<dyn azure_core::auth::TokenCredential>,
);

/// [`request_and_credential`] for a worker read from the store.
async fn stored_request(
    state: &AppState,
    store: &Store,
    key: WorkerKey,
) -> Result<AuthorisedRequest, FunctionError> {
    let plan = store.run(&ReadWorker { key }).await?;
    request_and_credential(state, &plan).await
}

/// The ADF request for `plan`'s worker and the credential it is made with (from the shared token cache).
async fn request_and_credential(
    state: &AppState,
    plan: &WorkerPlan,
) -> Result<AuthorisedRequest, FunctionError> {
    let request = request_for(plan)?;
    let credential = state
        .azure
        .identity
        .credential(&request.credentials)
        .await?;
    Ok((request, credential))
}

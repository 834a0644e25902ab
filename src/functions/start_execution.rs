//! `StartExecution` (metadata mode, replaces the Parent's precursor / clean-up / `ExecutionWrapper` /
//! `GetStages` activities): settle the runs a previous execution left in flight, then start a new
//! execution or restart the previous one from its point of failure, and list the stages to run.
//!
//! Request: `{"batchName"?: "Daily", "callingOrchestratorName"?: "FrameworkFactory", "parentRunId"?: "…"}`.
//! Response: `{"ExecutionId", "Mode": "New"|"Restart", "BatchName", "Stages": [{"StageId", "StageName",
//! "Workers"}], "PipelineStatusCheckDuration"}`. 409 when the scope is already running.

use super::metadata_worker::settle_in_flight;
use super::{AppState, FunctionError, Reply};
use crate::domain::request::{Fields, RequestError};
use crate::domain::{
    Credentials, Guid, OrchestratorType, ResourceName, RunId, ScopeStatus, WorkerTarget,
};
use crate::orchestration::{
    now, ParentState, PreviousParent, ReadOrchestrator, ReadScopeHolder, StartExecution, StartMode,
};
use crate::store::Store;
use serde_json::{json, Value};

/// The request, checked against what the store's columns hold (`BatchName` 255, `CallingOrchestratorName`
/// 200, `ParentRunId` 100 characters): a longer value is a 400 here, not a truncation error from Azure SQL.
#[derive(Debug, PartialEq)]
struct StartRequest {
    batch: Option<String>,
    calling: String,
    parent_run_id: Option<String>,
}

fn at_most(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, RequestError> {
    match value {
        Some(v) if v.chars().count() > max => Err(RequestError::new(
            field,
            format!("must be at most {max} characters"),
        )),
        other => Ok(other),
    }
}

impl StartRequest {
    fn parse(body: &Value) -> Result<Self, RequestError> {
        let fields = Fields::new(body)?;
        let batch = fields
            .text("batchName")?
            .filter(|b| !b.eq_ignore_ascii_case("NotUsed"));
        Ok(Self {
            batch: at_most("batchName", batch, 255)?,
            calling: at_most(
                "callingOrchestratorName",
                fields.text("callingOrchestratorName")?,
                200,
            )?
            .unwrap_or_else(|| "procfwk".to_string()),
            parent_run_id: at_most("parentRunId", fields.text("parentRunId")?, 100)?,
        })
    }
}

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let StartRequest {
        batch,
        calling,
        parent_run_id,
    } = StartRequest::parse(body)?;
    let store = state.store().await?;
    let previous_parent =
        ask_previous_parent(state, store, &batch, parent_run_id.as_deref()).await?;
    let parent_over = previous_parent
        .as_ref()
        .filter(|p| p.state == ParentState::Over)
        .map(|p| p.execution_id);
    settle_in_flight(state, store, parent_over).await?;
    let started = store
        .run(&StartExecution {
            batch,
            calling_orchestrator: calling,
            parent_run_id,
            previous_parent,
            now: now(),
        })
        .await?;
    tracing::info!(execution_id = %started.execution_id, mode = ?started.mode, stages = started.stages.len(), "execution started");
    Ok(Reply::ok(json!({
        "ExecutionId": started.execution_id.to_string(),
        "Mode": match started.mode { StartMode::New => "New", StartMode::Restart => "Restart" },
        "BatchName": started.batch,
        "Stages": started.stages,
        "PipelineStatusCheckDuration": started.properties.status_check_every.as_secs(),
    })))
}

/// If another Parent run holds the scope, ask ADF whether that run is still going. The run is looked up
/// in the orchestrator its `callingOrchestratorName` names in `procfwk.Orchestrators`, with the Function
/// App's managed identity (which needs read access to the framework orchestrator's runs).
async fn ask_previous_parent(
    state: &AppState,
    store: &Store,
    batch: &Option<String>,
    ours: Option<&str>,
) -> Result<Option<PreviousParent>, FunctionError> {
    let holder = store
        .run(&ReadScopeHolder {
            batch: batch.clone(),
        })
        .await?;
    let Some(holder) = holder.filter(|h| h.status == ScopeStatus::Running) else {
        return Ok(None);
    };
    let Some(parent_run_id) = holder.parent_run_id.filter(|p| !p.trim().is_empty()) else {
        return Ok(None);
    };
    if ours.is_some_and(|o| o.trim().eq_ignore_ascii_case(parent_run_id.trim())) {
        return Ok(None);
    }
    let state_of_run = match holder.calling_orchestrator {
        Some(name) => parent_run_state(state, store, &name, &parent_run_id).await,
        None => ParentState::Unknown,
    };
    tracing::info!(%parent_run_id, execution_id = %holder.execution_id, state = ?state_of_run, "asked ADF about the Parent run holding the scope");
    Ok(Some(PreviousParent {
        execution_id: holder.execution_id,
        parent_run_id,
        state: state_of_run,
    }))
}

async fn parent_run_state(
    state: &AppState,
    store: &Store,
    orchestrator: &str,
    run_id: &str,
) -> ParentState {
    let found = match store
        .run(&ReadOrchestrator {
            name: orchestrator.to_string(),
        })
        .await
    {
        Ok(Some(found)) => found,
        Ok(None) => {
            tracing::warn!(%orchestrator, "the Parent's orchestrator is not (uniquely) in procfwk.Orchestrators; the stale timeout decides");
            return ParentState::Unknown;
        }
        Err(e) => {
            tracing::warn!(%orchestrator, error = %e, "the Parent's orchestrator could not be read");
            return ParentState::Unknown;
        }
    };
    let target = (|| {
        Some(WorkerTarget {
            subscription: Guid::parse(&found.subscription_id.to_string())?,
            resource_group: ResourceName::parse(&found.resource_group).ok()?,
            orchestrator: ResourceName::parse(&found.name).ok()?,
            orchestrator_type: OrchestratorType::parse(&found.orchestrator_type)?,
        })
    })();
    let Some(target) = target else {
        return ParentState::Unknown;
    };
    // What the Parent sent as its run id is kept as text; ADF is asked only about a real run id.
    let Ok(parsed) = RunId::parse(run_id) else {
        tracing::warn!(%run_id, "the Parent's run id is not a pipeline run id; the stale timeout decides");
        return ParentState::Unknown;
    };
    let credential = match state
        .azure
        .identity
        .credential(&Credentials::ManagedIdentity)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no managed identity to ask ADF about the Parent run");
            return ParentState::Unknown;
        }
    };
    match state
        .azure
        .data_factory
        .get_run(credential, &target, &parsed)
        .await
    {
        Ok(run) => {
            use crate::domain::RunStatus;
            match run.status {
                RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => {
                    ParentState::Over
                }
                RunStatus::Queued | RunStatus::InProgress | RunStatus::Canceling => {
                    ParentState::Alive
                }
                RunStatus::Other(_) => ParentState::Unknown,
            }
        }
        Err(e) => {
            tracing::warn!(%run_id, error = %e, "ADF could not be asked about the Parent run; the stale timeout decides");
            ParentState::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_longer_than_their_columns_are_refused_naming_the_field() {
        let ok =
            StartRequest::parse(&json!({"parentRunId": "r".repeat(100), "batchName": "NotUsed"}));
        assert_eq!(ok.map(|r| r.batch), Ok(None));
        for (field, max) in [
            ("parentRunId", 100),
            ("callingOrchestratorName", 200),
            ("batchName", 255),
        ] {
            let body = json!({ field: "é".repeat(max + 1) });
            assert_eq!(
                StartRequest::parse(&body).map_err(|e| e.field),
                Err(field.to_string())
            );
        }
    }
}

//! `StartExecution` (metadata mode, replaces the Parent's precursor / clean-up / `ExecutionWrapper` /
//! `GetStages` activities): settle the runs a previous execution left in flight, then start a new
//! execution or restart the previous one from its point of failure, and list the stages to run.
//!
//! Request: `{"batchName"?: "Daily", "callingOrchestratorName"?: "FrameworkFactory", "parentRunId"?: "…"}`.
//! Response: `{"ExecutionId", "Mode": "New"|"Restart", "BatchName", "Stages": [{"StageId", "StageName",
//! "Workers"}], "PipelineStatusCheckDuration"}`. 409 when the scope is already running.

use super::metadata_worker::settle_in_flight;
use super::{AppState, FunctionError, Reply};
use crate::domain::request::Fields;
use crate::orchestration::{now, StartExecution, StartMode};
use serde_json::{json, Value};

pub async fn run(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let fields = Fields::new(body)?;
    let batch = fields
        .text("batchName")?
        .filter(|b| !b.eq_ignore_ascii_case("NotUsed"));
    let calling = fields
        .text("callingOrchestratorName")?
        .unwrap_or_else(|| "procfwk".to_string());
    let parent_run_id = fields.text("parentRunId")?;
    let store = state.store().await?;
    settle_in_flight(state, store).await?;
    let started = store
        .run(&StartExecution {
            batch,
            calling_orchestrator: calling,
            parent_run_id,
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

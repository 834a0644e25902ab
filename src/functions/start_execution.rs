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
use crate::orchestration::{now, StartExecution, StartMode};
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

pub async fn run(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let StartRequest {
        batch,
        calling,
        parent_run_id,
    } = StartRequest::parse(body)?;
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

//! `PrepareStage` (metadata mode, replaces the Parent's `CheckForBlockedPipelines` and
//! `SetLogStagePreparing` and the Child's `GetPipelinesInStage`): settle what earlier stages left in
//! flight (their runs read from ADF, a start that died unrecorded looked up there), apply the
//! failure-handling rules to the stage and list the workers the Child runs in parallel.
//!
//! Request: `{"executionId", "stageId"}`. Response: `{"ExecutionId", "StageId", "WorkerCount", "Workers":
//! [{"executionId", "stageId", "pipelineId", "PipelineName"}]}` — each item is the body of the worker's
//! `ExecutePipelineV2`/`CheckPipelineStatus` calls. 409 `AllPipelinesBlocked` when Simple failure
//! handling stops the execution here.

use super::{AppState, FunctionError, Reply};
use crate::domain::request::{Fields, RequestError};
use crate::orchestration::{now, PrepareStage, Prepared};
use serde_json::{json, Value};

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let fields = Fields::new(body)?;
    let execution_id = fields.guid("executionId", "Execution Id")?.as_uuid();
    let stage_id = fields
        .integer("stageId")?
        .ok_or_else(|| RequestError::new("stageId", "is required"))?;
    let stage_id =
        i32::try_from(stage_id).map_err(|_| RequestError::new("stageId", "is out of range"))?;
    let store = state.store().await?;
    super::metadata_worker::settle_earlier_stages(state, store, execution_id, stage_id).await?;
    let prepared = store
        .run(&PrepareStage {
            execution_id,
            stage_id,
            now: now(),
        })
        .await?;
    crate::fault::point(crate::fault::PREPARE_STAGE);
    match prepared {
        Prepared::Workers(workers) => {
            let items: Vec<Value> = workers
                .iter()
                .map(|w| {
                    json!({
                        "executionId": execution_id.to_string(), "stageId": stage_id,
                        "pipelineId": w.pipeline_id, "PipelineName": w.pipeline_name,
                    })
                })
                .collect();
            Ok(Reply::ok(json!({
                "ExecutionId": execution_id.to_string(), "StageId": stage_id,
                "WorkerCount": items.len(), "Workers": items,
            })))
        }
        Prepared::AllBlocked { blocked } => Err(FunctionError::Conflict {
            message: "All pipelines are blocked. Stopping processing.".into(),
            details: json!({"ExecutionId": execution_id.to_string(), "StageId": stage_id, "Blocked": blocked}),
        }),
    }
}

//! `FinishExecution` (metadata mode, replaces `UpdateExecutionLog`): archive a fully successful execution
//! into ExecutionLog; otherwise keep CurrentExecution for a restart and answer 409, which fails the
//! Parent as procfwk's error did.
//!
//! Request: `{"executionId"}`. Response: `{"ExecutionId", "ExecutionStatus": "Success", "Workers": {status: n}}`.

use super::{AppState, FunctionError, Reply};
use crate::domain::request::Fields;
use crate::orchestration::{now, FinishExecution};
use serde_json::{json, Map, Value};

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let fields = Fields::new(body)?;
    let execution_id = fields.guid("executionId", "Execution Id")?.as_uuid();
    let store = state.store().await?;
    let finished = store
        .run(&FinishExecution {
            execution_id,
            now: now(),
        })
        .await?;
    crate::fault::point(crate::fault::FINISH_EXECUTION);
    let counts: Map<String, Value> = finished
        .counts
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), json!(v)))
        .collect();
    if finished.succeeded {
        Ok(Reply::ok(json!({
            "ExecutionId": execution_id.to_string(), "ExecutionStatus": "Success", "Workers": counts,
        })))
    } else {
        Err(FunctionError::Conflict {
            message: "Framework execution complete but not all Worker pipelines succeeded. See the [procfwk].[CurrentExecution] table for details".into(),
            details: json!({"ExecutionId": execution_id.to_string(), "ExecutionStatus": "Failed", "Workers": counts}),
        })
    }
}

//! `CancelPipeline`: cancel a worker run (recursively, child pipelines too) and wait — at most the
//! configured cap — for it to reach `Cancelled`. A run that is not `Queued`/`InProgress` cannot be
//! cancelled: 409 with its current status.

use super::{poll_run, read_checked_run, AppState, FunctionError, Reply};
use crate::domain::response::{self, Spelling};
use crate::domain::RunRequest;
use serde_json::{json, Value};

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let request = RunRequest::parse(body)?;
    let credential = state
        .azure
        .identity
        .credential(&request.pipeline.credentials)
        .await?;
    let run = read_checked_run(state, &request, credential.clone()).await?;
    if !run.status.is_cancellable() {
        return Err(FunctionError::Conflict {
            message: "Target pipeline is not in a state that can be cancelled.".into(),
            details: json!({"RunId": run.run_id, "ActualStatus": run.status.procfwk_name()}),
        });
    }
    let target = &request.pipeline.target;
    state
        .azure
        .data_factory
        .cancel_run(credential.clone(), target, &run.run_id)
        .await?;
    tracing::info!(run_id = %run.run_id, "cancellation requested");
    let (last, _) = poll_run(
        state,
        credential,
        &request.pipeline,
        &run.run_id,
        state.settings.cancel_wait_cap,
        |s| !s.is_running(),
    )
    .await?;
    Ok(Reply::ok(response::run_status(
        &request.pipeline,
        Some(&last.run_id),
        &last.status,
        Spelling::Procfwk,
    )))
}

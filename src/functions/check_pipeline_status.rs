//! `CheckPipelineStatus`: one status read of a worker run, never blocking. `Queued`, `InProgress` and
//! `Canceling` are `Running` in both dialects; ADF's `Canceling` is reported as `Cancelling`.

use super::{read_checked_run, AppState, FunctionError, Reply};
use crate::domain::response::{self, Spelling};
use crate::domain::RunRequest;
use serde_json::Value;

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let fields = crate::domain::request::Fields::new(body)?;
    if let Some(key) = super::metadata_worker::worker_key(&fields)? {
        // Optional in metadata mode: the store knows the worker's run.
        let run_id = match fields.text("runId")? {
            Some(_) => Some(fields.run_id("runId")?),
            None => None,
        };
        return super::metadata_worker::check(state, key, run_id).await;
    }
    let request = RunRequest::parse(body)?;
    let credential = state
        .azure
        .identity
        .credential(&request.pipeline.credentials)
        .await?;
    let run = read_checked_run(state, &request, credential).await?;
    Ok(Reply::ok(response::run_status(
        &request.pipeline,
        Some(&run.run_id),
        &run.status,
        Spelling::Procfwk,
    )))
}

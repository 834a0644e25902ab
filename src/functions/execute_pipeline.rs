//! `ExecutePipelineV2` (and its alias `ExecutePipeline`): start a worker pipeline run and answer once it
//! has left `Queued` — or, if it is still queued when the configured cap is reached, answer with its run
//! id and `Queued` (SimpleStatus `Running`) so the Infant's loop keeps polling. The run id is never lost:
//! once `createRun` has answered, a failing status read still returns the run id.

use super::{AppState, FunctionError, Reply};
use crate::domain::response::{self, Spelling};
use crate::domain::PipelineRequest;
use serde_json::Value;

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let fields = crate::domain::request::Fields::new(body)?;
    if let Some(key) = super::metadata_worker::worker_key(&fields)? {
        return super::metadata_worker::execute(state, key).await;
    }
    let request = PipelineRequest::from_fields(&fields)?;
    let credential = state
        .azure
        .identity
        .credential(&request.credentials)
        .await?;
    let run_id = state
        .azure
        .data_factory
        .create_run(
            credential.clone(),
            &request.target,
            &request.pipeline,
            &request.parameters,
        )
        .await?;
    tracing::info!(pipeline = %request.pipeline, orchestrator = %request.target.orchestrator, %run_id, "worker run created");
    let status = super::wait_until_started(state, credential, &request, &run_id).await;
    Ok(Reply::ok(response::run_status(
        &request,
        Some(&run_id),
        &status,
        Spelling::Adf,
    )))
}

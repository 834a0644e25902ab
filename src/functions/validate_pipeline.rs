//! `ValidatePipeline`: does the worker pipeline exist in its orchestrator? `PipelineExists` is the string
//! `"True"`/`"False"`; a missing pipeline is a 200 with `"False"`, while other ARM failures (403, 5xx)
//! are reported as errors rather than passed off as "does not exist".

use super::{AppState, FunctionError, Reply};
use crate::domain::response;
use crate::domain::PipelineRequest;
use serde_json::Value;

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let request = PipelineRequest::parse(body)?;
    let credential = state
        .azure
        .identity
        .credential(&request.credentials)
        .await?;
    let found = state
        .azure
        .data_factory
        .describe_pipeline(credential, &request.target, &request.pipeline)
        .await?;
    Ok(Reply::ok(response::validation(
        request.dialect,
        &request.pipeline,
        found.as_ref(),
    )))
}

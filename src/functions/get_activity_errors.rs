//! `GetActivityErrors`: the failed activities of a worker run, with the exact keys procfwk's
//! `SetErrorLogDetails` shreds with `OPENJSON` (`RunId`, `Errors[].ActivityRunId`, ...). Activities with an
//! empty error code are not errors (succeeded activities carry an empty error object).

use super::{read_checked_run, AppState, FunctionError, Reply};
use crate::domain::response;
use crate::domain::RunRequest;
use serde_json::Value;

pub async fn handle(state: &AppState, body: &Value) -> Result<Reply, FunctionError> {
    let request = RunRequest::parse(body)?;
    let credential = state
        .azure
        .identity
        .credential(&request.pipeline.credentials)
        .await?;
    let run = read_checked_run(state, &request, credential.clone()).await?;
    let now = time::OffsetDateTime::now_utc();
    let report = state
        .azure
        .data_factory
        .activity_errors(
            credential,
            &request.pipeline.target,
            &run.run_id,
            now - time::Duration::days(7),
            now + time::Duration::hours(1),
        )
        .await?;
    Ok(Reply::ok(response::activity_errors(
        &request.pipeline,
        &run.run_id,
        &run.status,
        report.total,
        &report.errors,
    )))
}

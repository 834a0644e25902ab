//! The Azure Functions this app serves, one module per function, each with its `handle` entry point.
//! Each parses its request into domain values, calls the adapters, and builds the body procfwk's
//! pipelines expect. The handler table ([`FUNCTIONS`], in `table.rs`) lists them, one line each; the host
//! edge ([`crate::host`]) finds a function there and hands every invocation to [`dispatch`] (a timer's
//! to [`dispatch_timer`]), whichever protocol it arrived by.

pub mod cancel_pipeline;
pub mod check_pipeline_status;
pub mod dashboard;
pub mod error;
pub mod execute_pipeline;
pub mod finish_execution;
pub mod get_activity_errors;
pub mod metadata_worker;
pub mod openapi;
pub mod orphan_runs;
pub mod prepare_stage;
pub mod start_execution;
mod table;
pub mod validate_pipeline;
pub mod vm_idle_sweep;
pub mod vm_power;

pub use crate::startup::AppState;
pub use error::FunctionError;
pub use table::{
    dispatch, dispatch_timer, BodyEntry, Function, Handling, HttpEntry, HttpTrigger, QueryEntry,
    TimerEntry, TimerTrigger, Trigger, FUNCTIONS,
};

use crate::adapters::datafactory::RunInfo;
use crate::domain::{RequestError, RunId, RunRequest, RunStatus};
use crate::policy::admission;
use crate::policy::budget;
use azure_core::auth::TokenCredential;
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One call of a function, independent of how the host delivered it.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    pub method: String,
    pub query: BTreeMap<String, String>,
    pub body: Bytes,
}

/// What the function answers: an HTTP status and a JSON object, or (the dashboard, the OpenAPI
/// document) a ready-made [`Page`] of another content type.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// When set, the answer is this text instead of `body`.
    pub page: Option<Page>,
}

/// A text answer with its own content type.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub content_type: &'static str,
    pub text: String,
}

impl Reply {
    pub fn ok(body: impl Into<Value>) -> Self {
        Self::new(200, body.into())
    }

    pub fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            page: None,
        }
    }

    /// A 200 answer of `content_type` with `text` as its body.
    pub fn page(content_type: &'static str, text: String) -> Self {
        Self {
            status: 200,
            body: Value::Null,
            page: Some(Page { content_type, text }),
        }
    }

    /// The body as sent: the page's text, or the JSON object serialized.
    pub fn body_text(&self) -> String {
        match &self.page {
            Some(page) => page.text.clone(),
            None => self.body.to_string(),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match &self.page {
            Some(page) => page.content_type,
            None => "application/json",
        }
    }
}

/// Read a run and check it belongs to the requested pipeline (procfwk's defensive name check).
pub(crate) async fn read_checked_run(
    state: &AppState,
    request: &RunRequest,
    credential: Arc<dyn TokenCredential>,
) -> Result<RunInfo, FunctionError> {
    let run = state
        .azure
        .data_factory
        .get_run(credential, &request.pipeline.target, &request.run_id)
        .await?;
    if !request.pipeline.pipeline.matches(&run.pipeline_name) {
        return Err(RequestError::new(
            "pipelineName",
            format!(
                "Pipeline name mismatch. Provided pipeline name does not match the provided Run Id. Expected name: {}",
                run.pipeline_name
            ),
        )
        .into());
    }
    Ok(run)
}

/// After `createRun`: wait (at most `PROCFWK_EXECUTE_QUEUED_CAP_SECS`) for the run to leave `Queued`. The
/// run exists, so its id must reach the caller whatever happens: a failing status read answers `Queued`
/// (the Infant then keeps polling) rather than an error that would make ADF start a second run.
pub(crate) async fn wait_until_started(
    state: &AppState,
    credential: Arc<dyn TokenCredential>,
    request: &crate::domain::PipelineRequest,
    run_id: &RunId,
) -> RunStatus {
    let cap = state.settings.execute_queued_cap;
    match poll_run(state, credential, request, run_id, cap, |s| {
        *s != RunStatus::Queued
    })
    .await
    {
        Ok((run, _)) => run.status,
        Err(e) => {
            tracing::warn!(%run_id, error = %e, "run created but its status could not be read; answering Queued");
            RunStatus::Queued
        }
    }
}

/// Poll a run until `done` says so or `cap` (bounded by the call's budget) runs out; the interval starts
/// at `poll_initial` and doubles up to `poll_max`. Returns the last status read and whether `done` held.
pub(crate) async fn poll_run(
    state: &AppState,
    credential: Arc<dyn TokenCredential>,
    request: &crate::domain::PipelineRequest,
    run_id: &RunId,
    cap: Duration,
    done: impl Fn(&RunStatus) -> bool,
) -> Result<(RunInfo, bool), FunctionError> {
    let settings = &state.settings;
    let mut stop_at = Instant::now() + cap;
    if let Some(deadline) = budget::deadline() {
        // Keep a margin to answer before the caller's own timeout.
        stop_at = stop_at.min(
            deadline
                .checked_sub(Duration::from_secs(2))
                .unwrap_or(deadline),
        );
    }
    let mut interval = settings.poll_initial.max(Duration::from_millis(1));
    loop {
        let run = state
            .azure
            .data_factory
            .get_run(credential.clone(), &request.target, run_id)
            .await?;
        if done(&run.status) {
            return Ok((run, true));
        }
        let now = Instant::now();
        if now + interval > stop_at {
            return Ok((run, false));
        }
        // Between polls the invocation holds no admission slot: a two-minute wait must not keep quick
        // calls out.
        admission::sleep(interval).await;
        interval = (interval * 2).min(settings.poll_max.max(settings.poll_initial));
    }
}

//! The Azure Functions this app serves, one module per function. Each parses its request into domain
//! values, calls the adapters, and builds the body procfwk's pipelines expect. The host edge
//! ([`crate::host`]) hands every invocation to [`dispatch`], whichever protocol it arrived by.

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
pub mod validate_pipeline;
pub mod vm_idle_sweep;
pub mod vm_power;

pub use crate::startup::AppState;
pub use error::FunctionError;

use crate::adapters::admission;
use crate::adapters::budget;
use crate::adapters::datafactory::RunInfo;
use crate::domain::{RequestError, RunRequest, RunStatus};
use azure_core::auth::TokenCredential;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The functions, by name. Names are matched case-insensitively, as the Functions host does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    ExecutePipeline,
    ExecutePipelineV2,
    CheckPipelineStatus,
    GetActivityErrors,
    ValidatePipeline,
    CancelPipeline,
    StartExecution,
    PrepareStage,
    FinishExecution,
    VmPower,
    /// The execution dashboard (HTML, read-only).
    Dashboard,
    /// The OpenAPI 3.1 document of every HTTP function (route `openapi.json`).
    OpenApi,
}

impl Function {
    pub const ALL: [Function; 12] = [
        Function::ExecutePipeline,
        Function::ExecutePipelineV2,
        Function::CheckPipelineStatus,
        Function::GetActivityErrors,
        Function::ValidatePipeline,
        Function::CancelPipeline,
        Function::StartExecution,
        Function::PrepareStage,
        Function::FinishExecution,
        Function::VmPower,
        Function::Dashboard,
        Function::OpenApi,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::ExecutePipeline => "ExecutePipeline",
            Self::ExecutePipelineV2 => "ExecutePipelineV2",
            Self::CheckPipelineStatus => "CheckPipelineStatus",
            Self::GetActivityErrors => "GetActivityErrors",
            Self::ValidatePipeline => "ValidatePipeline",
            Self::CancelPipeline => "CancelPipeline",
            Self::StartExecution => "StartExecution",
            Self::PrepareStage => "PrepareStage",
            Self::FinishExecution => "FinishExecution",
            Self::VmPower => "VmPower",
            Self::Dashboard => "Dashboard",
            Self::OpenApi => "OpenApi",
        }
    }

    /// The route under `/api/` when it is not the function's name (its `function.json` sets it).
    pub fn route(&self) -> Option<&'static str> {
        match self {
            Self::OpenApi => Some("openapi.json"),
            _ => None,
        }
    }

    /// By name (the invocation payload's `POST /<Name>`) or by route (`/api/<route>`).
    pub fn lookup(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| {
            f.name().eq_ignore_ascii_case(name)
                || f.route().is_some_and(|r| r.eq_ignore_ascii_case(name))
        })
    }

    /// HTTP methods the function accepts (also written to its `function.json`).
    pub fn methods(&self) -> &'static [&'static str] {
        match self {
            Self::ExecutePipeline
            | Self::ExecutePipelineV2
            | Self::CancelPipeline
            | Self::StartExecution
            | Self::PrepareStage
            | Self::FinishExecution => &["post"],
            Self::Dashboard | Self::OpenApi => &["get"],
            _ => &["get", "post"],
        }
    }
}

/// Timer-triggered functions: reached only through the invocation payload (`POST /<Name>` with
/// `Data.timer`), never over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerFunction {
    VmIdleSweep,
}

impl TimerFunction {
    pub const ALL: [TimerFunction; 1] = [TimerFunction::VmIdleSweep];

    pub fn name(&self) -> &'static str {
        match self {
            Self::VmIdleSweep => "VmIdleSweep",
        }
    }

    pub fn lookup(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Run one timer invocation; the answer is logged and returned to the host as `ReturnValue`.
    pub async fn run(&self, state: &AppState) -> Result<Value, FunctionError> {
        match self {
            Self::VmIdleSweep => {
                let deadline = Instant::now() + state.settings.request_budget;
                budget::within(deadline, vm_idle_sweep::run(state))
                    .await
                    .map(|r| r.to_json())
            }
        }
    }
}

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

/// Run one invocation of `function` under the configured time budget.
pub async fn dispatch(state: &AppState, function: Function, invocation: &Invocation) -> Reply {
    if !function
        .methods()
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&invocation.method))
    {
        return FunctionError::MethodNotAllowed {
            method: invocation.method.clone(),
            allowed: function.methods().join(", ").to_uppercase(),
        }
        .into_reply();
    }
    let deadline = Instant::now() + state.settings.request_budget;
    let outcome = budget::within(deadline, async {
        // The read-only pages take their options from the query string and no body.
        let body = match function {
            Function::Dashboard | Function::OpenApi => Value::Null,
            _ => request_json(invocation)?,
        };
        // Each function's future on the heap: an invocation then holds its own function's state, not
        // the largest of all of them (CheckPipelineStatus needs half of what the largest does).
        match function {
            Function::ExecutePipeline | Function::ExecutePipelineV2 => {
                Box::pin(execute_pipeline::run(state, &body)).await
            }
            Function::CheckPipelineStatus => {
                Box::pin(check_pipeline_status::run(state, &body)).await
            }
            Function::GetActivityErrors => Box::pin(get_activity_errors::run(state, &body)).await,
            Function::ValidatePipeline => Box::pin(validate_pipeline::run(state, &body)).await,
            Function::CancelPipeline => Box::pin(cancel_pipeline::run(state, &body)).await,
            Function::StartExecution => Box::pin(start_execution::run(state, &body)).await,
            Function::PrepareStage => Box::pin(prepare_stage::run(state, &body)).await,
            Function::FinishExecution => Box::pin(finish_execution::run(state, &body)).await,
            Function::VmPower => Box::pin(vm_power::run(state, &body)).await,
            Function::Dashboard => Box::pin(dashboard::run(state, invocation)).await,
            Function::OpenApi => Ok(openapi::reply()),
        }
    })
    .await;
    match outcome {
        Ok(reply) => reply,
        Err(e) => e.into_reply(),
    }
}

/// The request body as JSON; a GET without a body may carry the fields as query parameters instead.
fn request_json(invocation: &Invocation) -> Result<Value, FunctionError> {
    let text = invocation.body.as_ref();
    if text.iter().all(u8::is_ascii_whitespace) {
        let fields: Map<String, Value> = invocation
            .query
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("code"))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if fields.is_empty() {
            return Err(RequestError::new("body", "is required: a JSON object").into());
        }
        return Ok(Value::Object(fields));
    }
    serde_json::from_slice(text).map_err(|e| {
        FunctionError::from(RequestError::new(
            "body",
            format!(
                "is not valid JSON (line {}, column {}): {}",
                e.line(),
                e.column(),
                e
            ),
        ))
    })
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
        .get_run(
            credential,
            &request.pipeline.target,
            &request.run_id.to_string(),
        )
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
    run_id: &str,
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
    run_id: &str,
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

//! The Data Factory ARM surface (api-version `2018-06-01`) under
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataFactory/factories/{factory}`:
//! the factory itself, `pipelines/{name}` (GET), `pipelines/{name}/createRun`, `pipelineruns/{runId}`
//! (GET), `pipelineruns/{runId}/cancel`, `pipelineruns/{runId}/queryActivityruns` and
//! `queryPipelineRuns`, `integrationRuntimes/{name}/getStatus`; and, behind the same gates (with their
//! own api-versions, RBAC actions and existence check), the Compute VM routes of [`virtual_machines`].
//!
//! A request goes through the same gates as in ARM, in ARM's order: injected latency, `api-version`
//! (400), the bearer token (401), the route (404/405), role assignment (403), injected throttling and
//! server errors (429/5xx, before any side effect), the factory's existence (404), then the operation.
//! Fixed path words match case-insensitively and names are percent-decoded, as ARM does. Every answer
//! carries `x-ms-request-id`, `x-ms-correlation-request-id` and the remaining read/write budget.

mod integration_runtimes;
mod pipeline_runs;
mod pipelines;
mod virtual_machines;

use super::faults::FaultOutcome;
use super::reply::{ArmError, SimReply};
use super::request::{self, BodyError, Query};
use super::state::{factory_key, SimState};
use super::tokens::{Audience, TokenCheck};
use bytes::Bytes;
use chrono::Utc;
use std::sync::Arc;
use tokio::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::{Method, StatusCode};
use warp::path::Tail;
use warp::Filter;

/// The api-versions Data Factory accepts.
const API_VERSIONS: [&str; 2] = ["2018-06-01", "2017-09-01-preview"];

/// The routes of this module.
pub(crate) fn routes(state: Arc<SimState>) -> BoxedFilter<(SimReply,)> {
    segment_ignoring_case("subscriptions")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::any().map(move || Arc::clone(&state)))
        .and(request::raw_query())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("host"))
        .and(request::body())
        .then(
            |tail: Tail,
             method: Method,
             state: Arc<SimState>,
             query: String,
             authorization: Option<String>,
             host: Option<String>,
             body: Result<Bytes, BodyError>| async move {
                let query = Query::parse(&query);
                let headers = RequestHeaders {
                    authorization: authorization.as_deref(),
                    host: host.as_deref(),
                };
                handle(&state, tail.as_str(), &method, &query, headers, body).await
            },
        )
        .boxed()
}

/// Matches one path segment equal to `word`, ignoring ASCII case.
fn segment_ignoring_case(
    word: &'static str,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path::param::<String>()
        .and_then(move |segment: String| async move {
            if segment.eq_ignore_ascii_case(word) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// The factory a request addresses, names percent-decoded as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FactoryScope {
    pub subscription: String,
    pub resource_group: String,
    pub factory: String,
    /// [`factory_key`] of the above, computed once.
    key: String,
}

impl FactoryScope {
    /// `/subscriptions/…/factories/{factory}` with ARM's canonical casing.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DataFactory/factories/{}",
            self.subscription, self.resource_group, self.factory
        )
    }

    fn new(subscription: String, resource_group: String, factory: String) -> Self {
        let key = factory_key(&subscription, &resource_group, &factory);
        Self {
            subscription,
            resource_group,
            factory,
            key,
        }
    }

    fn key(&self) -> &str {
        &self.key
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    GetFactory,
    GetPipeline(String),
    CreateRun(String),
    GetRun(String),
    CancelRun(String),
    QueryActivityRuns(String),
    QueryPipelineRuns,
    GetIntegrationRuntimeStatus(String),
}

impl Operation {
    /// The RBAC action and the scope ARM checks it on.
    fn action_and_scope(&self, factory: &FactoryScope) -> (&'static str, String) {
        let base = factory.resource_id();
        match self {
            Self::GetFactory => ("Microsoft.DataFactory/factories/read", base),
            Self::GetPipeline(p) => (
                "Microsoft.DataFactory/factories/pipelines/read",
                format!("{base}/pipelines/{p}"),
            ),
            Self::CreateRun(p) => (
                "Microsoft.DataFactory/factories/pipelines/createRun/action",
                format!("{base}/pipelines/{p}"),
            ),
            Self::GetRun(r) => (
                "Microsoft.DataFactory/factories/pipelineruns/read",
                format!("{base}/pipelineruns/{r}"),
            ),
            Self::CancelRun(r) => (
                "Microsoft.DataFactory/factories/pipelineruns/cancel/action",
                format!("{base}/pipelineruns/{r}"),
            ),
            Self::QueryActivityRuns(r) => (
                "Microsoft.DataFactory/factories/pipelineruns/queryactivityruns/action",
                format!("{base}/pipelineruns/{r}"),
            ),
            Self::QueryPipelineRuns => (
                "Microsoft.DataFactory/factories/querypipelineruns/action",
                base,
            ),
            Self::GetIntegrationRuntimeStatus(name) => (
                "Microsoft.DataFactory/factories/integrationruntimes/getstatus/action",
                format!("{base}/integrationruntimes/{name}"),
            ),
        }
    }
}

fn route_not_found(path: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No HTTP resource was found that matches the request URI '{path}'."),
    )
}

/// ARM's answer to a method the route does not take.
fn method_not_allowed(method: &Method) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{method}'."),
    )
}

/// Parses the path after `/subscriptions/` into the factory and the operation.
pub(crate) fn parse_route(
    tail: &str,
    method: &Method,
) -> Result<(FactoryScope, Operation), ArmError> {
    let segments: Vec<String> = tail
        .trim_end_matches('/')
        .split('/')
        .map(|s| request::percent_decode(s).into_owned())
        .collect();
    let full_path = || format!("/subscriptions/{}", segments.join("/"));
    let word = |i: usize, expected: &str| {
        segments
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(expected))
    };
    let named = |i: usize| segments.get(i).filter(|s| !s.is_empty()).cloned();
    let prefix_ok = word(1, "resourceGroups")
        && word(3, "providers")
        && word(4, "Microsoft.DataFactory")
        && word(5, "factories");
    let (Some(subscription), Some(resource_group), Some(factory), true) =
        (named(0), named(2), named(6), prefix_ok)
    else {
        return Err(route_not_found(&full_path()));
    };
    let scope = FactoryScope::new(subscription, resource_group, factory);
    let rest: Vec<&str> = segments
        .get(7..)
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    let is = |s: &str, expected: &str| s.eq_ignore_ascii_case(expected);
    let (operation, allowed) = match rest.as_slice() {
        [] => (Operation::GetFactory, Method::GET),
        [p, name] if is(p, "pipelines") && !name.is_empty() => {
            (Operation::GetPipeline(name.to_string()), Method::GET)
        }
        [p, name, action] if is(p, "pipelines") && is(action, "createRun") && !name.is_empty() => {
            (Operation::CreateRun(name.to_string()), Method::POST)
        }
        [r, id] if is(r, "pipelineruns") && !id.is_empty() => {
            (Operation::GetRun(id.to_string()), Method::GET)
        }
        [r, id, action] if is(r, "pipelineruns") && is(action, "cancel") => {
            (Operation::CancelRun(id.to_string()), Method::POST)
        }
        [r, id, action] if is(r, "pipelineruns") && is(action, "queryActivityruns") => {
            (Operation::QueryActivityRuns(id.to_string()), Method::POST)
        }
        [q] if is(q, "queryPipelineRuns") => (Operation::QueryPipelineRuns, Method::POST),
        [ir, name, action]
            if is(ir, "integrationRuntimes") && is(action, "getStatus") && !name.is_empty() =>
        {
            (
                Operation::GetIntegrationRuntimeStatus(name.to_string()),
                Method::POST,
            )
        }
        _ => return Err(route_not_found(&full_path())),
    };
    if *method != allowed {
        return Err(method_not_allowed(method));
    }
    Ok((scope, operation))
}

/// The request headers the gates read.
#[derive(Debug, Clone, Copy)]
struct RequestHeaders<'a> {
    authorization: Option<&'a str>,
    /// `Host`, to build the absolute URLs of long-running operations.
    host: Option<&'a str>,
}

/// One ARM request, start to finish.
async fn handle(
    state: &SimState,
    tail: &str,
    method: &Method,
    query: &Query,
    headers: RequestHeaders<'_>,
    body: Result<Bytes, BodyError>,
) -> SimReply {
    let fault = state.faults.plan();
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    let now = Instant::now();
    let token = state.tokens.check(headers.authorization, now);
    let caller = token.client_id();
    let is_write = *method != Method::GET;
    // From the thread-local generator: a getrandom system call per request would show under load.
    let request_id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string();
    let request = ArmRequest {
        tail,
        method,
        query,
        token: &token,
        fault: fault.outcome,
        now,
        request_id: &request_id,
        host: headers.host,
    };
    let reply = serve(state, &request, body).unwrap_or_else(ArmError::into_reply);
    let mut reply = reply
        .header("x-ms-request-id", &request_id)
        .header("x-ms-correlation-request-id", &request_id)
        .client(caller);
    let budget = state.remaining_budget(is_write).to_string();
    reply = if is_write {
        reply.header("x-ms-ratelimit-remaining-subscription-writes", &budget)
    } else {
        reply.header("x-ms-ratelimit-remaining-subscription-reads", &budget)
    };
    if let FaultOutcome::Throttle { retry_after_secs } = fault.outcome {
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            reply = reply.header("retry-after", &retry_after_secs.to_string());
        }
    }
    reply
}

/// One Data Factory request as the gates see it.
struct ArmRequest<'a> {
    /// The path after `/subscriptions/`.
    tail: &'a str,
    method: &'a Method,
    query: &'a Query,
    token: &'a TokenCheck,
    fault: FaultOutcome,
    now: Instant,
    request_id: &'a str,
    host: Option<&'a str>,
}

/// The gates, then the operation.
fn serve(
    state: &SimState,
    request: &ArmRequest<'_>,
    body: Result<Bytes, BodyError>,
) -> Result<SimReply, ArmError> {
    if virtual_machines::is_compute_path(request.tail) {
        return virtual_machines::serve(state, request);
    }
    let ArmRequest {
        tail,
        method,
        query,
        token,
        fault,
        now,
        request_id,
        host: _,
    } = *request;
    match query.get("api-version") {
        None => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ))
        }
        Some(v) if !API_VERSIONS.contains(&v) => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for API version '{v}' and type 'factories'. The supported api-versions are '{}'.",
                    API_VERSIONS.join(", ")
                ),
            ))
        }
        Some(_) => {}
    }
    let caller = authenticate(token, state)?;
    let (scope, operation) = parse_route(tail, method)?;
    if state.is_forbidden(&caller.client_id) {
        let (action, resource) = operation.action_and_scope(&scope);
        return Err(authorization_failed(&caller, action, &resource));
    }
    injected_fault(fault, method, request_id)?;
    if !state.factory_exists(scope.key()) {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.DataFactory/factories/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                scope.factory, scope.resource_group
            ),
        ));
    }
    let body = body.map_err(|e| match e {
        BodyError::TooLarge => ArmError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body is too large.",
        ),
        BodyError::Interrupted => ArmError::bad_request("The request body could not be read."),
    })?;
    match operation {
        Operation::GetFactory => Ok(pipelines::get_factory(state, &scope)),
        Operation::GetPipeline(name) => pipelines::get_pipeline(state, &scope, &name),
        Operation::CreateRun(name) => {
            pipelines::create_run(state, &scope, &name, query, &body, now)
        }
        Operation::GetRun(id) => pipeline_runs::get_run(state, &scope, &id, now),
        Operation::CancelRun(id) => pipeline_runs::cancel_run(state, &scope, &id, query, now),
        Operation::QueryActivityRuns(id) => {
            pipeline_runs::query_activity_runs(state, &scope, &id, &body, now)
        }
        Operation::QueryPipelineRuns => {
            pipeline_runs::query_pipeline_runs(state, &scope, &body, now)
        }
        Operation::GetIntegrationRuntimeStatus(name) => {
            integration_runtimes::get_status(state, &scope, &name, now)
        }
    }
}

/// The injected throttling or server error of this request, if any (decided before any side effect).
fn injected_fault(fault: FaultOutcome, method: &Method, request_id: &str) -> Result<(), ArmError> {
    match fault {
        FaultOutcome::Serve => Ok(()),
        FaultOutcome::Throttle { .. } => {
            let kind = if *method == Method::GET { "Read" } else { "Write" };
            Err(ArmError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("The request is being throttled as the limit has been reached for operation type - {kind}. For more information, see - https://aka.ms/srpthrottlinglimits"),
            ))
        }
        FaultOutcome::ServerError { unavailable: false } => Err(ArmError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!(
                "Encountered internal server error. Diagnostic information: timestamp '{}', requestId '{request_id}'.",
                Utc::now().format("%Y%m%dT%H%M%SZ")
            ),
        )),
        FaultOutcome::ServerError { unavailable: true } => Err(ArmError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry the request.",
        )),
    }
}

/// 403 `AuthorizationFailed` for `caller` on `action` over `scope`.
fn authorization_failed(caller: &Caller, action: &str, scope: &str) -> ArmError {
    ArmError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            caller.client_id, caller.object_id
        ),
    )
}

/// An optional boolean query parameter (`true` / `false`, any case); anything else is a 400.
pub(super) fn bool_query(query: &Query, name: &str) -> Result<Option<bool>, ArmError> {
    match query.get(name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(ArmError::bad_request(format!(
            "The query parameter '{name}' value '{v}' is not a boolean."
        ))),
    }
}

/// Who is calling, once the token is known good for ARM.
struct Caller {
    client_id: Arc<str>,
    object_id: Arc<str>,
}

fn authenticate(token: &TokenCheck, state: &SimState) -> Result<Caller, ArmError> {
    let unauthorized = |code: &'static str, message: String| {
        ArmError::new(StatusCode::UNAUTHORIZED, code, message)
    };
    match token {
        TokenCheck::Missing => Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
        )),
        TokenCheck::Malformed => Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.".into(),
        )),
        TokenCheck::Unknown => Err(unauthorized("InvalidAuthenticationToken", "The access token is invalid.".into())),
        TokenCheck::Expired(t) => {
            let expired_at = state.clock.wall(t.expires_at);
            Err(unauthorized(
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    expired_at.format("%-m/%-d/%Y %-I:%M:%S %p"),
                    Utc::now().format("%-m/%-d/%Y %-I:%M:%S %p")
                ),
            ))
        }
        TokenCheck::Valid(t) if !Audience::Arm.accepts(t.audience) => Err(unauthorized(
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
                t.resource
            ),
        )),
        TokenCheck::Valid(t) => Ok(Caller {
            client_id: Arc::clone(&t.client_id),
            object_id: Arc::clone(&t.object_id),
        }),
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    const PREFIX: &str =
        "sub/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/WorkersFactory";

    #[test]
    fn routes_parse_case_insensitively_and_decode_names() {
        let tail = "sub/RESOURCEGROUPS/ADF.procfwk/Providers/microsoft.datafactory/Factories/WorkersFactory/Pipelines/Wait%201/CREATERUN/";
        let (scope, operation) = parse_route(tail, &Method::POST).expect("parses");
        assert_eq!(operation, Operation::CreateRun("Wait 1".into()));
        assert_eq!(scope.factory, "WorkersFactory");
        assert_eq!(
            scope.resource_id(),
            "/subscriptions/sub/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/WorkersFactory"
        );
        let cases = [
            ("", Method::GET, Operation::GetFactory),
            (
                "/pipelines/Wait%2010",
                Method::GET,
                Operation::GetPipeline("Wait 10".into()),
            ),
            (
                "/pipelineRuns/abc",
                Method::GET,
                Operation::GetRun("abc".into()),
            ),
            (
                "/pipelineruns/abc/cancel",
                Method::POST,
                Operation::CancelRun("abc".into()),
            ),
            (
                "/pipelineruns/abc/queryactivityruns",
                Method::POST,
                Operation::QueryActivityRuns("abc".into()),
            ),
            (
                "/querypipelineruns",
                Method::POST,
                Operation::QueryPipelineRuns,
            ),
            (
                "/integrationruntimes/Self%20Hosted/GETSTATUS",
                Method::POST,
                Operation::GetIntegrationRuntimeStatus("Self Hosted".into()),
            ),
        ];
        for (rest, method, expected) in cases {
            let parsed = parse_route(&format!("{PREFIX}{rest}"), &method).map(|(_, op)| op);
            assert_eq!(parsed, Ok(expected), "{rest}");
        }
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let status =
            |tail: &str, method: Method| parse_route(tail, &method).err().map(|e| e.status);
        assert_eq!(
            status("sub/resourceGroups/rg", Method::GET),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(
                "sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
                Method::GET
            ),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(&format!("{PREFIX}/datasets/x"), Method::GET),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(&format!("{PREFIX}/pipelines/x"), Method::PUT),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(&format!("{PREFIX}/pipelines//createRun"), Method::POST),
            Some(StatusCode::NOT_FOUND)
        );
    }
}

#[cfg(test)]
mod tests;

//! The handler table: every function this app serves, one line each — its name, its trigger (HTTP with
//! the methods it accepts and its route, or timer) and its entry point. Everything that needs to know
//! the functions reads [`FUNCTIONS`]: the host's routing ([`Function::lookup`]), [`dispatch`] with its
//! method check (405 naming the allowed methods), and the tests that hold `functions/*/function.json` and
//! `docs/openapi.json` to it.
//!
//! Adding a function: its module in `src/functions/` with `pub async fn handle`, one line below, and its
//! `functions/<Name>/function.json` (which `procfwk package` copies as it is).

use super::{
    cancel_pipeline, check_pipeline_status, dashboard, execute_pipeline, finish_execution,
    get_activity_errors, openapi, prepare_stage, start_execution, validate_pipeline, vm_idle_sweep,
    vm_power,
};
use super::{AppState, FunctionError, Invocation, Reply};
use crate::domain::RequestError;
use crate::policy::budget;
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use tokio::time::Instant;

/// An entry point of a function that takes the request's JSON body.
macro_rules! takes_body {
    ($handle:path) => {
        HttpEntry::Body(|state, body| Box::pin($handle(state, body)))
    };
}
/// An entry point of a function that takes the query string only.
macro_rules! takes_query {
    ($handle:path) => {
        HttpEntry::Query(|state, invocation| Box::pin($handle(state, invocation)))
    };
}
/// A timer's entry point.
macro_rules! on_timer {
    ($handle:path) => {
        TimerTrigger {
            entry: |state| Box::pin($handle(state)),
        }
    };
}

/// Every function, in the order the documentation lists them.
#[rustfmt::skip] // One line per function.
pub static FUNCTIONS: &[Function] = &[
    Function::http("ExecutePipeline", POST, takes_body!(execute_pipeline::handle)),
    Function::http("ExecutePipelineV2", POST, takes_body!(execute_pipeline::handle)),
    Function::http("CheckPipelineStatus", GET_POST, takes_body!(check_pipeline_status::handle)),
    Function::http("GetActivityErrors", GET_POST, takes_body!(get_activity_errors::handle)),
    Function::http("ValidatePipeline", GET_POST, takes_body!(validate_pipeline::handle)),
    Function::http("CancelPipeline", POST, takes_body!(cancel_pipeline::handle)),
    Function::http("StartExecution", POST, takes_body!(start_execution::handle)),
    Function::http("PrepareStage", POST, takes_body!(prepare_stage::handle)),
    Function::http("FinishExecution", POST, takes_body!(finish_execution::handle)),
    Function::http("VmPower", GET_POST, takes_body!(vm_power::handle)),
    Function::http("Dashboard", GET, takes_query!(dashboard::handle)),
    Function::http_at("OpenApi", "openapi.json", GET, takes_query!(openapi::handle)),
    Function::timer("VmIdleSweep", on_timer!(vm_idle_sweep::handle)),
];

/// The methods of an HTTP function, lowercase as `function.json` spells them.
const POST: &[&str] = &["post"];
const GET: &[&str] = &["get"];
const GET_POST: &[&str] = &["get", "post"];

/// A function's future, on the heap: an invocation then holds its own function's state, not the largest
/// of all of them (CheckPipelineStatus needs half of what the largest does).
pub type Handling<'a, T> = Pin<Box<dyn Future<Output = Result<T, FunctionError>> + Send + 'a>>;

/// `handle(state, &body)`: the request's JSON body (a GET without a body: its query fields as an object).
pub type BodyEntry = for<'a> fn(&'a AppState, &'a Value) -> Handling<'a, Reply>;
/// `handle(state, &invocation)`: the query string and no body (the read-only pages).
pub type QueryEntry = for<'a> fn(&'a AppState, &'a Invocation) -> Handling<'a, Reply>;
/// `handle(state)`: a timer's run; its answer goes to the host as `ReturnValue`.
pub type TimerEntry = for<'a> fn(&'a AppState) -> Handling<'a, Value>;

/// One row of the table.
#[derive(Debug)]
pub struct Function {
    /// As the Functions host names it (the folder under `functions/`); matched case-insensitively.
    pub name: &'static str,
    pub trigger: Trigger,
}

/// How the Functions host reaches a function.
#[derive(Debug)]
pub enum Trigger {
    /// `/api/<route>` (HTTP forwarding) or `POST /<Name>` (invocation payload with `Data.req`).
    Http(HttpTrigger),
    /// Only `POST /<Name>` with `Data.timer`, never over HTTP.
    Timer(TimerTrigger),
}

#[derive(Debug)]
pub struct HttpTrigger {
    /// Lowercase, as in `function.json`.
    pub methods: &'static [&'static str],
    /// The route under `/api/` when it is not the function's name (`function.json` sets it too).
    pub route: Option<&'static str>,
    pub entry: HttpEntry,
}

/// What an HTTP function's entry point takes.
#[derive(Debug)]
pub enum HttpEntry {
    Body(BodyEntry),
    Query(QueryEntry),
}

#[derive(Debug)]
pub struct TimerTrigger {
    pub entry: TimerEntry,
}

impl Function {
    const fn http(name: &'static str, methods: &'static [&'static str], entry: HttpEntry) -> Self {
        Self {
            name,
            trigger: Trigger::Http(HttpTrigger {
                methods,
                route: None,
                entry,
            }),
        }
    }

    const fn http_at(
        name: &'static str,
        route: &'static str,
        methods: &'static [&'static str],
        entry: HttpEntry,
    ) -> Self {
        Self {
            name,
            trigger: Trigger::Http(HttpTrigger {
                methods,
                route: Some(route),
                entry,
            }),
        }
    }

    const fn timer(name: &'static str, trigger: TimerTrigger) -> Self {
        Self {
            name,
            trigger: Trigger::Timer(trigger),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The route under `/api/` when it is not the function's name (HTTP functions only).
    pub fn route(&self) -> Option<&'static str> {
        match &self.trigger {
            Trigger::Http(http) => http.route,
            Trigger::Timer(_) => None,
        }
    }

    /// HTTP methods the function accepts, lowercase (none for a timer).
    pub fn methods(&self) -> &'static [&'static str] {
        match &self.trigger {
            Trigger::Http(http) => http.methods,
            Trigger::Timer(_) => &[],
        }
    }

    pub fn is_http(&self) -> bool {
        matches!(self.trigger, Trigger::Http(_))
    }

    pub fn is_timer(&self) -> bool {
        matches!(self.trigger, Trigger::Timer(_))
    }

    /// By name (the invocation payload's `POST /<Name>`, any trigger) or by route (`/api/<route>`),
    /// case-insensitively, as the Functions host matches them.
    pub fn lookup(name: &str) -> Option<&'static Function> {
        FUNCTIONS.iter().find(|f| {
            f.name.eq_ignore_ascii_case(name)
                || f.route().is_some_and(|r| r.eq_ignore_ascii_case(name))
        })
    }

    /// The HTTP functions, in table order.
    pub fn http_functions() -> impl Iterator<Item = &'static Function> {
        FUNCTIONS.iter().filter(|f| f.is_http())
    }

    /// The timer functions, in table order.
    pub fn timer_functions() -> impl Iterator<Item = &'static Function> {
        FUNCTIONS.iter().filter(|f| f.is_timer())
    }
}

/// Run one HTTP invocation of `function` under the configured time budget, after checking its method.
pub async fn dispatch(state: &AppState, function: &Function, invocation: &Invocation) -> Reply {
    let Trigger::Http(http) = &function.trigger else {
        // The host never sends a timer here; answer as for a function that is not served over HTTP.
        return FunctionError::NotFound(function.name.to_string()).into_reply();
    };
    if !http
        .methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&invocation.method))
    {
        return FunctionError::MethodNotAllowed {
            method: invocation.method.clone(),
            allowed: http.methods.join(", ").to_uppercase(),
        }
        .into_reply();
    }
    let deadline = Instant::now() + state.settings.request_budget;
    let outcome = budget::within(deadline, async {
        match http.entry {
            HttpEntry::Body(handle) => handle(state, &request_json(invocation)?).await,
            HttpEntry::Query(handle) => handle(state, invocation).await,
        }
    })
    .await;
    match outcome {
        Ok(reply) => reply,
        Err(e) => e.into_reply(),
    }
}

/// Run one timer invocation of `function` under the configured time budget; the answer is logged and
/// returned to the host as `ReturnValue`.
pub async fn dispatch_timer(state: &AppState, function: &Function) -> Result<Value, FunctionError> {
    let Trigger::Timer(timer) = &function.trigger else {
        return Err(FunctionError::NotFound(function.name.to_string()));
    };
    let deadline = Instant::now() + state.settings.request_budget;
    budget::within(deadline, (timer.entry)(state)).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_routes_are_unique_whatever_their_case() {
        let mut seen: Vec<String> = Vec::new();
        for function in FUNCTIONS {
            for key in std::iter::once(function.name).chain(function.route()) {
                let key = key.to_ascii_lowercase();
                assert!(!seen.contains(&key), "{key} names two functions");
                seen.push(key);
            }
        }
    }

    #[test]
    fn lookup_finds_by_name_or_route_case_insensitively() {
        assert_eq!(
            Function::lookup("checkpipelinestatus").map(Function::name),
            Some("CheckPipelineStatus")
        );
        assert_eq!(
            Function::lookup("OPENAPI.JSON").map(Function::name),
            Some("OpenApi")
        );
        assert!(Function::lookup("VmIdleSweep").is_some_and(Function::is_timer));
        assert!(Function::lookup("NoSuchFunction").is_none());
    }

    #[test]
    fn every_http_function_takes_get_or_post_and_timers_take_none() {
        for function in FUNCTIONS {
            match &function.trigger {
                Trigger::Http(http) => {
                    assert!(!http.methods.is_empty(), "{}", function.name);
                    assert!(
                        http.methods.iter().all(|m| ["get", "post"].contains(m)),
                        "{}",
                        function.name
                    );
                }
                Trigger::Timer(_) => assert!(function.methods().is_empty()),
            }
        }
    }
}

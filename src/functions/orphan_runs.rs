//! Finding the run ADF accepted for a claim whose run id was never recorded (the instance holding the
//! claim died between createRun and `RecordRunId`). ADF's `createRun` has no idempotency key, so before
//! anyone creates another run for such a worker, the orchestrator's runs of the worker's pipeline are listed
//! (`queryPipelineRuns`, over the time since the claim) and the one whose parameters are the ones the
//! claim sent (`PipelineParamsUsed`), started by a REST call (`invokedBy` `Manual`) within the claim's
//! lifetime and not recorded by any other worker, is the claim's run. Anything the look-up cannot decide
//! — ADF unreachable, several such runs — is "not yet": the caller answers "retry later" and never
//! creates a second run.

use super::{AppState, FunctionError};
use crate::domain::{PipelineRequest, RunId};
use crate::orchestration::{RunIdKnown, UnrecordedClaim};
use crate::store::Store;
use azure_core::auth::TokenCredential;
use chrono::NaiveDateTime;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The clock difference allowed between this host and ADF when a run's start is compared with the
/// claim time.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Pages of `queryPipelineRuns` read at most (100 runs each): more runs of one pipeline in one claim's
/// lifetime than that is not decided.
const MAX_PAGES: usize = 20;

/// What ADF lists for a claim.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// This run is the claim's.
    Run(RunId),
    /// ADF lists no run of the claim.
    Nothing,
    /// Cannot be told now; the reason.
    Undecided(String),
}

/// How long a claim's holder may still be at work: its request's time budget and the grace after it
/// (`PROCFWK_CLAIM_GRACE_SECS`). Past that the holder is gone, whatever instance it ran on.
pub fn claim_lifetime(state: &AppState) -> Duration {
    state.settings.request_budget + state.settings.claim_grace
}

/// Whether the claim's holder may still be creating or recording its run.
pub fn holder_may_be_alive(
    state: &AppState,
    since: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> bool {
    match since {
        Some(at) => (now - at).to_std().unwrap_or_default() < claim_lifetime(state),
        None => false,
    }
}

/// The parameters a claim sent, from its `PipelineParamsUsed` (`{"pipelineParameters": {...}}`).
fn sent_parameters(params_used: Option<&str>) -> Option<Map<String, Value>> {
    let value: Value = serde_json::from_str(params_used?).ok()?;
    match value.get("pipelineParameters") {
        Some(Value::Object(map)) => Some(map.clone()),
        Some(Value::Null) | None => Some(Map::new()),
        Some(_) => None,
    }
}

/// ADF shows secure parameters masked.
const MASKED: &str = "**********";

/// Whether a run showing `shown` was created with `sent`: every parameter sent is shown with the same
/// value as ADF spells it (strings; numbers and booleans normalised; arrays and objects JSON-encoded).
/// Parameters ADF shows beyond those are the pipeline's defaults.
pub fn parameters_match(sent: &Map<String, Value>, shown: &Map<String, Value>) -> bool {
    sent.iter().all(|(name, value)| match shown.get(name) {
        Some(shown) => same_value(value, shown),
        None => false,
    })
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same_value(sent: &Value, shown: &Value) -> bool {
    let (sent, shown) = (text_of(sent), text_of(shown));
    if sent == shown || shown == MASKED {
        return true;
    }
    let (a, b) = (sent.trim(), shown.trim());
    if a.eq_ignore_ascii_case(b)
        && (a.eq_ignore_ascii_case("true") || a.eq_ignore_ascii_case("false"))
    {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x == y;
    }
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x @ (Value::Array(_) | Value::Object(_))), Ok(y)) => x == y,
        _ => false,
    }
}

fn offset(at: NaiveDateTime) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.and_utc().timestamp_nanos_opt()?))
        .ok()
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// List the runs ADF has of the claim's pipeline since the claim, and pick the claim's.
pub async fn look_up(
    state: &AppState,
    store: &Store,
    request: &PipelineRequest,
    credential: Arc<dyn TokenCredential>,
    claim: &UnrecordedClaim,
) -> Result<Found, FunctionError> {
    let Some(since) = claim.since.and_then(offset) else {
        return Ok(Found::Undecided("the claim has no time".into()));
    };
    let Some(sent) = sent_parameters(claim.params_used.as_deref()) else {
        return Ok(Found::Undecided(
            "the claim's PipelineParamsUsed cannot be read".into(),
        ));
    };
    let skew = to_time(CLOCK_SKEW);
    let earliest = since - skew;
    let latest = since + to_time(claim_lifetime(state)) + skew;
    let listed = state
        .azure
        .data_factory
        .query_runs(
            credential,
            &request.target,
            &request.pipeline,
            earliest,
            time::OffsetDateTime::now_utc() + skew,
            MAX_PAGES,
        )
        .await;
    let runs = match listed {
        Ok(runs) => runs,
        Err(e) => return Ok(Found::Undecided(format!("ADF could not be asked: {e}"))),
    };
    let mut candidates = Vec::new();
    for run in runs {
        let started_in_claim = run
            .run_start
            .is_some_and(|start| earliest <= start && start <= latest);
        let by_rest_call = run
            .invoked_by_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("Manual"));
        if !(request.pipeline.matches(&run.pipeline_name)
            && started_in_claim
            && by_rest_call
            && parameters_match(&sent, &run.parameters))
        {
            continue;
        }
        let Some(run_id) = run.run_id else {
            continue;
        };
        if !store.run(&RunIdKnown { run_id }).await? {
            candidates.push(run_id);
        }
    }
    Ok(match candidates.as_slice() {
        [] => Found::Nothing,
        [only] => Found::Run(*only),
        several => Found::Undecided(format!(
            "{} runs of {} match the claim",
            several.len(),
            request.pipeline
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_run_matches_when_every_parameter_sent_is_shown_alike() {
        let sent = map(json!({"WaitTime": "5", "Flag": "True", "List": "[1, 2]", "Key": "s3cr3t"}));
        let shown = map(
            json!({"WaitTime": "5", "Flag": "true", "List": "[1,2]", "Key": MASKED, "Default": "x"}),
        );
        assert!(parameters_match(&sent, &shown));
        assert!(!parameters_match(
            &sent,
            &map(json!({"WaitTime": "6", "Flag": "true", "List": "[1,2]", "Key": MASKED}))
        ));
        assert!(!parameters_match(&sent, &map(json!({"WaitTime": "5"}))));
        assert!(parameters_match(&Map::new(), &shown));
        assert!(!same_value(&json!("abc"), &json!("ABC")));
    }

    #[test]
    fn the_parameters_sent_come_from_params_used() {
        assert_eq!(
            sent_parameters(Some(r#"{"pipelineParameters":{"WaitTime":"5"}}"#)),
            Some(map(json!({"WaitTime": "5"})))
        );
        assert_eq!(
            sent_parameters(Some(r#"{"pipelineParameters":{}}"#)),
            Some(Map::new())
        );
        assert_eq!(sent_parameters(Some("not json")), None);
        assert_eq!(sent_parameters(None), None);
    }
}

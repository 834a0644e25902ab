//! Test and operator endpoints under `/_sim/` (not part of any Azure API, never logged, never faulted):
//!
//! - `GET /_sim/health` → `{"status":"ok"}`
//! - `GET /_sim/requests` → the request log, oldest first; `DELETE /_sim/requests` empties it
//! - `GET /_sim/stats` → `{"tokenRequests":{client:n}, "runs":n, "requests":n}`
//! - `GET /_sim/faults` → current faults; `PUT /_sim/faults` (a `Faults` JSON body) replaces them
//! - `GET /_sim/runs/{runId}` → the PipelineRun as Data Factory would answer it, without a token
//! - `GET /_sim/vms` → `{"vms": [VmSummary], "history": [VmEvent]}` (every VM settled now)
//! - `PUT /_sim/vms/{name}` with `{"state": "running" | "stopped" | "deallocated", "nodes_online"?:
//!   bool}` forces a VM's state (cancelling any operation in flight) → the VM's summary

use super::compute::PowerState;
use super::config::Faults;
use super::reply::{ArmError, SimReply};
use super::request::{self, BodyError};
use super::state::SimState;
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::Filter;

/// The routes of this module.
pub(crate) fn routes(state: Arc<SimState>) -> BoxedFilter<(SimReply,)> {
    let with_state = warp::any().map(move || Arc::clone(&state));
    let health = warp::path!("_sim" / "health")
        .and(warp::get())
        .map(|| SimReply::json(StatusCode::OK, &json!({"status": "ok"})));
    let requests = warp::path!("_sim" / "requests")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SimState>| SimReply::json(StatusCode::OK, &state.requests()));
    let clear = warp::path!("_sim" / "requests")
        .and(warp::delete())
        .and(with_state.clone())
        .map(|state: Arc<SimState>| {
            let cleared = state.log.clear();
            SimReply::json(StatusCode::OK, &json!({"cleared": cleared}))
        });
    let stats = warp::path!("_sim" / "stats")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SimState>| {
            let body = json!({
                "tokenRequests": state.token_requests(),
                "runs": state.run_count(),
                "requests": state.log.len(),
            });
            SimReply::json(StatusCode::OK, &body)
        });
    let get_faults = warp::path!("_sim" / "faults")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SimState>| SimReply::json(StatusCode::OK, &state.faults()));
    let put_faults = warp::path!("_sim" / "faults")
        .and(warp::put())
        .and(with_state.clone())
        .and(request::body())
        .map(|state: Arc<SimState>, body: Result<Bytes, BodyError>| put_faults(&state, body));
    let vms = warp::path!("_sim" / "vms")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SimState>| {
            let body = json!({"vms": state.vm_summaries(), "history": state.vm_history()});
            SimReply::json(StatusCode::OK, &body)
        });
    let force_vm = warp::path!("_sim" / "vms" / String)
        .and(warp::put())
        .and(with_state.clone())
        .and(request::body())
        .map(
            |name: String, state: Arc<SimState>, body: Result<Bytes, BodyError>| {
                force_vm(&state, &request::percent_decode(&name), body)
            },
        );
    let run = warp::path!("_sim" / "runs" / String)
        .and(warp::get())
        .and(with_state)
        .map(
            |run_id: String, state: Arc<SimState>| match state.run(&run_id) {
                Some(run) => SimReply::json(StatusCode::OK, &run),
                None => ArmError::new(
                    StatusCode::NOT_FOUND,
                    "PipelineRunNotFound",
                    format!("The pipeline run {run_id} was not found."),
                )
                .into_reply(),
            },
        );
    health
        .or(requests)
        .unify()
        .or(clear)
        .unify()
        .or(stats)
        .unify()
        .or(get_faults)
        .unify()
        .or(put_faults)
        .unify()
        .or(run)
        .unify()
        .or(vms)
        .unify()
        .or(force_vm)
        .unify()
        .boxed()
}

fn put_faults(state: &SimState, body: Result<Bytes, BodyError>) -> SimReply {
    let parsed = body
        .map_err(|_| "The request body could not be read.".to_string())
        .and_then(|b| {
            serde_json::from_slice::<Faults>(&b).map_err(|e| format!("Invalid Faults JSON: {e}."))
        })
        .and_then(|f| f.validate().map(|()| f).map_err(|e| e.to_string()));
    match parsed {
        Ok(faults) => {
            state.set_faults(faults);
            SimReply::json(StatusCode::OK, &state.faults())
        }
        Err(message) => ArmError::bad_request(message).into_reply(),
    }
}

/// The body of `PUT /_sim/vms/{name}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceVm {
    state: String,
    #[serde(default)]
    nodes_online: bool,
}

fn force_vm(state: &SimState, name: &str, body: Result<Bytes, BodyError>) -> SimReply {
    let parsed = body
        .map_err(|_| "The request body could not be read.".to_string())
        .and_then(|b| {
            serde_json::from_slice::<ForceVm>(&b)
                .map_err(|e| format!("Invalid body (expected {{\"state\": \"running\"}}): {e}."))
        })
        .and_then(|f| {
            PowerState::parse(&f.state)
                .map(|s| (s, f.nodes_online))
                .ok_or_else(|| format!("Unknown power state '{}'.", f.state))
        });
    let (power_state, nodes_online) = match parsed {
        Ok(p) => p,
        Err(message) => return ArmError::bad_request(message).into_reply(),
    };
    if state.vm_state(name).is_none() {
        return ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The VM '{name}' is not configured."),
        )
        .into_reply();
    }
    if let Err(message) = state.set_vm_state(name, power_state, nodes_online) {
        return ArmError::bad_request(message).into_reply();
    }
    match state
        .vm_summaries()
        .into_iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
    {
        Some(summary) => SimReply::json(StatusCode::OK, &summary),
        None => SimReply::empty(StatusCode::OK),
    }
}

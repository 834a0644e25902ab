//! Pipeline runs: `GET .../pipelineruns/{id}`, `.../cancel`, `.../queryActivityruns` and the factory's
//! `queryPipelineRuns`. Runs belong to the factory they were created in; another factory's run id is
//! not found.

use super::{bool_query, FactoryScope};
use crate::queries::{Operand, RunQuery};
use crate::reply::{ArmError, SimReply};
use crate::request::Query;
use crate::runs::PipelineRun;
use crate::state::SimState;
use std::sync::Arc;
use tokio::time::Instant;
use warp::http::StatusCode;

fn find_run(
    state: &SimState,
    scope: &FactoryScope,
    id: &str,
) -> Result<Arc<PipelineRun>, ArmError> {
    state
        .runs
        .get(id)
        .filter(|run| run.factory_key == scope.key())
        .ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "PipelineRunNotFound",
                format!("The pipeline run {id} was not found."),
            )
        })
}

/// `GET .../pipelineruns/{id}`: the run as it stands now.
pub(super) fn get_run(
    state: &SimState,
    scope: &FactoryScope,
    id: &str,
    now: Instant,
) -> Result<SimReply, ArmError> {
    let run = find_run(state, scope, id)?;
    Ok(SimReply::json(StatusCode::OK, &run.view(&state.clock, now)))
}

/// `POST .../pipelineruns/{id}/cancel`: 200 with no body; 409 `Conflict` once the run has ended.
pub(super) fn cancel_run(
    state: &SimState,
    scope: &FactoryScope,
    id: &str,
    query: &Query,
    now: Instant,
) -> Result<SimReply, ArmError> {
    bool_query(query, "isRecursive")?;
    let run = find_run(state, scope, id)?;
    run.request_cancel(now).map_err(|finished| {
        ArmError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "The pipeline run {} is already in the terminal state '{}' and cannot be cancelled.",
                run.run_id,
                finished.0.as_str()
            ),
        )
    })?;
    Ok(SimReply::empty(StatusCode::OK))
}

const ACTIVITY_FILTERS: &[Operand] = &[
    Operand::ActivityName,
    Operand::ActivityType,
    Operand::Status,
];
const ACTIVITY_ORDER: &[Operand] = &[
    Operand::ActivityName,
    Operand::ActivityType,
    Operand::ActivityRunStart,
    Operand::ActivityRunEnd,
    Operand::Status,
];

/// `POST .../pipelineruns/{id}/queryActivityruns`: the activities started so far, in the window.
pub(super) fn query_activity_runs(
    state: &SimState,
    scope: &FactoryScope,
    id: &str,
    body: &[u8],
    now: Instant,
) -> Result<SimReply, ArmError> {
    let filter =
        RunQuery::parse(body, ACTIVITY_FILTERS, ACTIVITY_ORDER).map_err(ArmError::bad_request)?;
    let run = find_run(state, scope, id)?;
    let mut views: Vec<_> = run
        .activity_views(&state.clock, now)
        .into_iter()
        .filter(|(_, updated)| filter.in_window(*updated))
        .map(|(view, _)| view)
        .filter(|view| {
            filter.passes(|operand| match operand {
                Operand::ActivityName => view.activity_name.to_string(),
                Operand::ActivityType => view.activity_type.to_string(),
                _ => view.status.to_string(),
            })
        })
        .collect();
    filter.sort(&mut views, |view, operand| match operand {
        Operand::ActivityName => view.activity_name.to_string(),
        Operand::ActivityType => view.activity_type.to_string(),
        Operand::ActivityRunStart => view.activity_run_start.clone(),
        Operand::ActivityRunEnd => view.activity_run_end.clone().unwrap_or_default(),
        _ => view.status.to_string(),
    });
    let (page, next) = filter.page(views);
    Ok(SimReply::json(StatusCode::OK, &page_body(page, next)))
}

const RUN_FILTERS: &[Operand] = &[
    Operand::PipelineName,
    Operand::Status,
    Operand::RunGroupId,
    Operand::LatestOnly,
];
const RUN_ORDER: &[Operand] = &[
    Operand::PipelineName,
    Operand::Status,
    Operand::RunStart,
    Operand::RunEnd,
];

/// `POST .../queryPipelineRuns`: the factory's runs updated in the window, filtered and ordered.
pub(super) fn query_pipeline_runs(
    state: &SimState,
    scope: &FactoryScope,
    body: &[u8],
    now: Instant,
) -> Result<SimReply, ArmError> {
    let filter = RunQuery::parse(body, RUN_FILTERS, RUN_ORDER).map_err(ArmError::bad_request)?;
    let runs = state.runs.in_factory(scope.key());
    let mut views: Vec<_> = runs
        .iter()
        .filter(|run| filter.in_window(run.last_updated(&state.clock, now)))
        .map(|run| run.view(&state.clock, now))
        .filter(|view| {
            filter.passes(|operand| match operand {
                Operand::PipelineName => view.pipeline_name.to_string(),
                Operand::RunGroupId => view.run_group_id.to_string(),
                Operand::LatestOnly => view.is_latest.to_string(),
                _ => view.status.to_string(),
            })
        })
        .collect();
    filter.sort(&mut views, |view, operand| match operand {
        Operand::PipelineName => view.pipeline_name.to_string(),
        Operand::RunStart => view.run_start.clone(),
        Operand::RunEnd => view.run_end.clone().unwrap_or_default(),
        _ => view.status.to_string(),
    });
    let (page, next) = filter.page(views);
    Ok(SimReply::json(StatusCode::OK, &page_body(page, next)))
}

/// A page of query results: `{"value": [...], "continuationToken"?}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    value: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation_token: Option<String>,
}

fn page_body<T: serde::Serialize>(value: Vec<T>, continuation_token: Option<String>) -> Page<T> {
    Page {
        value,
        continuation_token,
    }
}

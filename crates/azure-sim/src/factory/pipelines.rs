//! Pipelines and the factory itself: `GET` of the factory, `GET .../pipelines/{name}` (the definition,
//! shaped so the Azure SDKs' polymorphic activity types parse it) and `POST .../createRun`.

use super::{bool_query, FactoryScope};
use crate::clock::format_timestamp;
use crate::config::ActivityDef;
use crate::parameters;
use crate::reply::{ArmError, SimReply};
use crate::request::Query;
use crate::runs::{PipelineRun, RunPlan};
use crate::state::SimState;
use crate::tokens::derived_object_id;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use warp::http::StatusCode;

pub(super) fn get_factory(state: &SimState, scope: &FactoryScope) -> SimReply {
    let created = format_timestamp(state.clock.started());
    let body = json!({
        "id": scope.resource_id(),
        "name": scope.factory,
        "type": "Microsoft.DataFactory/factories",
        "location": "westeurope",
        "identity": {
            "type": "SystemAssigned",
            "principalId": derived_object_id(scope.key()),
            "tenantId": state.config.tenant_id,
        },
        "properties": {
            "provisioningState": "Succeeded",
            "createTime": created,
            "version": "2018-06-01",
        },
        "eTag": format!("\"{}\"", derived_object_id(&format!("etag:{}", scope.key()))),
        "tags": {},
    });
    SimReply::json(StatusCode::OK, &body)
}

fn pipeline_not_found(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Entity {name} not found"),
    )
}

/// The pipeline definition as a PipelineResource (activities chained with `dependsOn`, inner
/// activities inside their container's `typeProperties`).
pub(super) fn get_pipeline(
    state: &SimState,
    scope: &FactoryScope,
    name: &str,
) -> Result<SimReply, ArmError> {
    let pipeline = state
        .pipeline(name)
        .ok_or_else(|| pipeline_not_found(name))?;
    let activity_json = |a: &ActivityDef, previous: Option<&str>| -> Value {
        let mut type_properties = Map::new();
        if a.activity_type.eq_ignore_ascii_case("Wait") {
            let wait = match (&pipeline.wait_parameter, a.duration_secs) {
                (Some(parameter), None) => {
                    json!({"value": format!("@pipeline().parameters.{parameter}"), "type": "Expression"})
                }
                (_, seconds) => Value::from(seconds.unwrap_or(pipeline.default_duration_secs)),
            };
            type_properties.insert("waitTimeInSeconds".into(), wait);
        } else if a.activity_type.eq_ignore_ascii_case("IfCondition") {
            let condition = match &pipeline.fail_when {
                Some(rule) => format!(
                    "@equals(pipeline().parameters.{},'{}')",
                    rule.parameter, rule.equals
                ),
                None => "@bool(true)".to_string(),
            };
            type_properties.insert(
                "expression".into(),
                json!({"value": condition, "type": "Expression"}),
            );
        }
        if let Some(Value::Object(extra)) = &a.type_properties {
            type_properties.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let depends_on = match previous {
            Some(p) => json!([{"activity": p, "dependencyConditions": ["Succeeded"]}]),
            None => json!([]),
        };
        json!({
            "name": a.name,
            "type": a.activity_type,
            "dependsOn": depends_on,
            "userProperties": [],
            "typeProperties": Value::Object(type_properties),
        })
    };
    let mut activities = Vec::new();
    let mut previous: Option<&str> = None;
    for container in pipeline.activities.iter().filter(|a| a.parent.is_none()) {
        let mut json = activity_json(container, previous);
        let mut inner_previous: Option<&str> = None;
        let mut inner = Vec::new();
        for child in pipeline
            .activities
            .iter()
            .filter(|a| a.parent.as_deref() == Some(container.name.as_str()))
        {
            inner.push(activity_json(child, inner_previous));
            inner_previous = Some(&child.name);
        }
        if !inner.is_empty() {
            let key = if container.activity_type.eq_ignore_ascii_case("IfCondition") {
                "ifTrueActivities"
            } else {
                "activities"
            };
            if let Some(props) = json
                .get_mut("typeProperties")
                .and_then(Value::as_object_mut)
            {
                props.insert(key.into(), Value::Array(inner));
            }
        }
        activities.push(json);
        previous = Some(&container.name);
    }
    let parameters: Map<String, Value> = pipeline
        .parameters
        .iter()
        .map(|(name, def)| {
            let mut spec = Map::new();
            spec.insert("type".into(), Value::from(def.kind.as_str()));
            if let Some(default) = &def.default {
                spec.insert("defaultValue".into(), default.clone());
            }
            (name.clone(), Value::Object(spec))
        })
        .collect();
    let body = json!({
        "id": format!("{}/pipelines/{}", scope.resource_id(), pipeline.name),
        "name": pipeline.name,
        "type": "Microsoft.DataFactory/factories/pipelines",
        "properties": {
            "activities": activities,
            "parameters": parameters,
            "annotations": [],
        },
        "etag": format!("\"{}\"", derived_object_id(&format!("pipeline:{}", pipeline.name))),
    });
    Ok(SimReply::json(StatusCode::OK, &body))
}

/// `POST .../pipelines/{name}/createRun`: checks the parameters, plans the run, answers its id.
pub(super) fn create_run(
    state: &SimState,
    scope: &FactoryScope,
    name: &str,
    query: &Query,
    body: &[u8],
    now: Instant,
) -> Result<SimReply, ArmError> {
    let pipeline = state
        .pipeline(name)
        .ok_or_else(|| pipeline_not_found(name))?;
    let is_recovery = bool_query(query, "isRecovery")?.unwrap_or(false);
    bool_query(query, "startFromFailure")?;
    if let Some(start) = query.get("startActivityName") {
        if !pipeline
            .activities
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(start))
        {
            return Err(ArmError::bad_request(format!(
                "Activity '{start}' does not exist in pipeline '{}'.",
                pipeline.name
            )));
        }
    }
    let reference = match query
        .get("referencePipelineRunId")
        .filter(|r| !r.is_empty())
    {
        None if is_recovery => {
            return Err(ArmError::bad_request(
                "A recovery run needs a referencePipelineRunId.",
            ));
        }
        None => None,
        Some(id) => {
            let found = state
                .runs
                .get(id)
                .filter(|r| r.factory_key == scope.key() && r.pipeline_name == pipeline.name);
            match found {
                Some(run) => Some(run),
                None => {
                    return Err(ArmError::new(
                        StatusCode::BAD_REQUEST,
                        "ReferencedPipelineRunNotValid",
                        format!("Referenced pipeline run id {id} is not a valid run id."),
                    )
                    .with_target(format!("pipeline/{}/", pipeline.name)))
                }
            }
        }
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| ArmError::bad_request("The request body is not UTF-8."))?;
    let given: Option<Map<String, Value>> = if text.trim().is_empty() {
        None
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            Ok(Value::Null) => None,
            Ok(_) => {
                return Err(ArmError::bad_request(
                    "The request body must be a JSON object of pipeline parameters.",
                ))
            }
            Err(e) => {
                return Err(ArmError::bad_request(format!(
                    "The request body is not valid JSON: {e}."
                )))
            }
        }
    };
    let resolved = parameters::resolve(pipeline, given.as_ref()).map_err(ArmError::bad_request)?;
    let plan = RunPlan::new(
        pipeline,
        &resolved,
        state.config.time_scale,
        state.config.canceling_secs,
    );
    let run_group_id = match (&reference, is_recovery) {
        (Some(reference), true) => {
            for run in state.runs.in_factory(scope.key()) {
                if run.run_group_id == reference.run_group_id {
                    run.mark_superseded();
                }
            }
            Some(reference.run_group_id.clone())
        }
        _ => None,
    };
    let run = PipelineRun::new(
        scope.key().to_string(),
        pipeline.name.clone(),
        resolved.display,
        plan,
        run_group_id,
        now,
    );
    let run = state.runs.insert(run);
    tracing::debug!(run_id = %run.run_id, pipeline = %run.pipeline_name, "simulator created a pipeline run");
    Ok(SimReply::json(
        StatusCode::OK,
        &json!({ "runId": run.run_id }),
    ))
}

//! Response bodies, with the exact PascalCase field names procfwk's ADF expressions and SQL `OPENJSON`
//! read verbatim (`RunId`, `SimpleStatus`, `ActualStatus`/`Status`, `Errors[].ActivityRunId`, ...).

use super::names::PipelineName;
use super::request::{Dialect, PipelineRequest};
use super::run_id::RunId;
use super::run_link;
use super::status::RunStatus;
use serde_json::{json, Map, Value};

/// Which spelling of the status to report: `Canceling` as ADF says it (Execute, GetActivityErrors) or
/// procfwk's `Cancelling` (CheckPipelineStatus, CancelPipeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    Adf,
    Procfwk,
}

/// `{PipelineName, RunId, ActualStatus|Status, SimpleStatus, RunLink}`; `RunId` is empty while there is
/// no run (`run_id` `None`: a worker waiting for its runtime), and `RunLink` (the run's page in ADF or
/// Synapse Studio, [`super::run_link`]) is there only when there is a run.
pub fn run_status(
    request: &PipelineRequest,
    run_id: Option<&RunId>,
    status: &RunStatus,
    spelling: Spelling,
) -> Map<String, Value> {
    let dialect = request.dialect;
    let shown = match spelling {
        Spelling::Adf => status.adf_name(),
        Spelling::Procfwk => status.procfwk_name(),
    };
    let status_key = match dialect {
        Dialect::V1 => "Status",
        Dialect::V2 => "ActualStatus",
    };
    let mut body = Map::new();
    body.insert("PipelineName".into(), json!(request.pipeline.as_str()));
    let run_text = run_id.map(RunId::to_string).unwrap_or_default();
    body.insert("RunId".into(), json!(run_text));
    body.insert(status_key.into(), json!(shown));
    body.insert(
        "SimpleStatus".into(),
        json!(status.simple(dialect).as_str()),
    );
    if let Some(run) = run_id {
        body.insert(
            "RunLink".into(),
            json!(run_link::run_link(&request.target, run)),
        );
    }
    body
}

/// One failed activity of a worker run, as `SetErrorLogDetails` shreds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivityError {
    pub activity_run_id: String,
    pub activity_name: String,
    pub activity_type: String,
    pub error_code: String,
    pub error_type: String,
    pub error_message: String,
}

/// GetActivityErrors' body: v2 `{ResponseCount, ResponseErrorCount, Errors, PipelineName, RunId,
/// ActualStatus, SimpleStatus}`; v1 (1.6–1.9) `{PipelineName, PipelineStatus, RunId, ResponseCount,
/// ResponseErrorCount, Errors}`.
pub fn activity_errors(
    request: &PipelineRequest,
    run_id: &RunId,
    status: &RunStatus,
    response_count: usize,
    errors: &[ActivityError],
) -> Value {
    let errors_json = serde_json::to_value(errors).unwrap_or_else(|_| Value::Array(Vec::new()));
    match request.dialect {
        Dialect::V2 => {
            let mut body = Map::new();
            body.insert("ResponseCount".into(), json!(response_count));
            body.insert("ResponseErrorCount".into(), json!(errors.len()));
            body.insert("Errors".into(), errors_json);
            body.extend(run_status(request, Some(run_id), status, Spelling::Adf));
            Value::Object(body)
        }
        Dialect::V1 => json!({
            "PipelineName": request.pipeline.as_str(),
            "PipelineStatus": status.adf_name(),
            "RunId": run_id.to_string(),
            "RunLink": run_link::run_link(&request.target, run_id),
            "ResponseCount": response_count,
            "ResponseErrorCount": errors.len(),
            "Errors": errors_json,
        }),
    }
}

/// What ValidatePipeline learnt about a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineDescription {
    pub id: String,
    pub name: String,
    pub resource_type: String,
    pub activity_count: usize,
}

/// ValidatePipeline's body. `PipelineExists` is the *string* `"True"`/`"False"` (ADF reads it with
/// `@bool(...)`). 1.9.2 (v1) reported `ActivityCount` as a string and `ProvidedPipelineName` when missing.
pub fn validation(
    dialect: Dialect,
    requested: &PipelineName,
    found: Option<&PipelineDescription>,
) -> Value {
    match (dialect, found) {
        (Dialect::V2, Some(p)) => json!({
            "PipelineExists": "True", "PipelineName": p.name, "PipelineId": p.id,
            "PipelineType": p.resource_type, "ActivityCount": p.activity_count,
        }),
        (Dialect::V2, None) => json!({
            "PipelineExists": "False", "PipelineName": requested.as_str(), "PipelineId": "Unknown",
            "PipelineType": "Unknown", "ActivityCount": 0,
        }),
        (Dialect::V1, Some(p)) => json!({
            "PipelineExists": "True", "PipelineName": p.name, "PipelineId": p.id,
            "PipelineType": p.resource_type, "ActivityCount": p.activity_count.to_string(),
        }),
        (Dialect::V1, None) => json!({
            "PipelineExists": "False", "ProvidedPipelineName": requested.as_str(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> PipelineName {
        PipelineName::parse("Wait 1").unwrap_or_else(|_| unreachable!())
    }

    fn run() -> RunId {
        RunId::parse("C5C2E1E7-1234-1234-1234-012345678910").unwrap_or_else(|_| unreachable!())
    }

    fn request(dialect: Dialect) -> PipelineRequest {
        use crate::domain::{Credentials, Guid, OrchestratorType, ResourceName, WorkerTarget};
        PipelineRequest {
            dialect,
            credentials: Credentials::ManagedIdentity,
            target: WorkerTarget {
                subscription: Guid::parse("00000000-0000-0000-0000-000000000001")
                    .unwrap_or_else(|| unreachable!()),
                resource_group: ResourceName::parse("rg").unwrap_or_else(|_| unreachable!()),
                orchestrator: ResourceName::parse("Workers").unwrap_or_else(|_| unreachable!()),
                orchestrator_type: OrchestratorType::Adf,
            },
            pipeline: name(),
            parameters: Map::new(),
        }
    }

    const LINK: &str = "https://adf.azure.com/monitoring/pipelineruns/c5c2e1e7-1234-1234-1234-012345678910?factory=%2Fsubscriptions%2F00000000-0000-0000-0000-000000000001%2FresourceGroups%2Frg%2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2FWorkers";

    #[test]
    fn every_answer_about_a_run_links_to_it_and_none_without_a_run() {
        for dialect in [Dialect::V1, Dialect::V2] {
            let b = run_status(
                &request(dialect),
                Some(&run()),
                &RunStatus::Failed,
                Spelling::Adf,
            );
            assert_eq!(b["RunLink"], LINK);
            let waiting = run_status(&request(dialect), None, &RunStatus::Queued, Spelling::Adf);
            assert_eq!(waiting["RunId"], "");
            assert!(!waiting.contains_key("RunLink"));
            let e = activity_errors(&request(dialect), &run(), &RunStatus::Failed, 0, &[]);
            assert_eq!(e["RunLink"], LINK, "{dialect:?}");
        }
    }

    #[test]
    fn v2_status_shape() {
        let b = run_status(
            &request(Dialect::V2),
            Some(&run()),
            &RunStatus::Canceling,
            Spelling::Procfwk,
        );
        assert_eq!(b["ActualStatus"], "Cancelling");
        assert_eq!(b["SimpleStatus"], "Running");
        assert_eq!(b["RunId"], "c5c2e1e7-1234-1234-1234-012345678910");
        assert!(!b.contains_key("Status"));
    }

    #[test]
    fn v1_status_shape() {
        let b = run_status(
            &request(Dialect::V1),
            Some(&run()),
            &RunStatus::Succeeded,
            Spelling::Procfwk,
        );
        assert_eq!(b["Status"], "Succeeded");
        assert_eq!(b["SimpleStatus"], "Done");
    }

    #[test]
    fn errors_keys_are_verbatim() {
        let e = ActivityError {
            activity_run_id: "a".into(),
            activity_name: "b".into(),
            activity_type: "c".into(),
            error_code: "d".into(),
            error_type: "e".into(),
            error_message: "f".into(),
        };
        let b = activity_errors(&request(Dialect::V2), &run(), &RunStatus::Failed, 3, &[e]);
        let keys: Vec<_> = b["Errors"][0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for k in [
            "ActivityRunId",
            "ActivityName",
            "ActivityType",
            "ErrorCode",
            "ErrorType",
            "ErrorMessage",
        ] {
            assert!(keys.contains(&k.to_string()), "{k}");
        }
        assert_eq!(b["ResponseCount"], 3);
        assert_eq!(b["ResponseErrorCount"], 1);
        assert_eq!(b["SimpleStatus"], "Complete");
    }

    #[test]
    fn validation_strings() {
        assert_eq!(
            validation(Dialect::V2, &name(), None)["PipelineExists"],
            "False"
        );
        assert_eq!(
            validation(Dialect::V1, &name(), None)["ProvidedPipelineName"],
            "Wait 1"
        );
    }
}

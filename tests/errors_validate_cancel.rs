//! GetActivityErrors, ValidatePipeline and CancelPipeline in both dialects.

mod support;
use serde_json::{json, Value};
use support::*;

async fn run_to_end(s: &Stack, body: &Value) -> Value {
    let (status, out) = s.call("ExecutePipelineV2", body).await;
    assert_eq!(status, 200, "{out}");
    let run_id = out["RunId"].clone();
    let check = with(body.clone(), "runId", run_id);
    s.wait_complete(&check).await;
    check
}

#[tokio::test]
async fn activity_errors_of_a_failed_worker_v2() {
    let s = spawn_app();
    let check = run_to_end(
        &s,
        &v2_body(
            "Intentional Error",
            json!({"RaiseErrors": "true", "WaitTime": "1"}),
        ),
    )
    .await;
    let (status, out) = s.call("GetActivityErrors", &check).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ActualStatus"], "Failed");
    assert_eq!(out["SimpleStatus"], "Complete");
    assert_eq!(out["RunId"], check["runId"]);
    assert_eq!(out["ResponseCount"], 3);
    assert_eq!(out["ResponseErrorCount"], 2);
    let errors = out["Errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 2);
    let names: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["ActivityName"].as_str())
        .collect();
    assert!(
        names.contains(&"Raise Errors or Not") && names.contains(&"Call Fail Procedure"),
        "{names:?}"
    );
    for e in &errors {
        for key in [
            "ActivityRunId",
            "ActivityName",
            "ActivityType",
            "ErrorCode",
            "ErrorType",
            "ErrorMessage",
        ] {
            assert!(e[key].is_string(), "{key} in {e}");
        }
        assert!(
            uuid::Uuid::parse_str(e["ActivityRunId"].as_str().unwrap_or("")).is_ok(),
            "OPENJSON reads a GUID"
        );
    }
    let sql = errors
        .iter()
        .find(|e| e["ActivityName"] == "Call Fail Procedure")
        .cloned()
        .unwrap_or_default();
    assert_eq!(sql["ErrorCode"], "2402");
    assert_eq!(sql["ErrorType"], "UserError");
    assert!(sql["ErrorMessage"]
        .as_str()
        .unwrap_or("")
        .contains("The Stored Procedure intentionally failed."));
}

#[tokio::test]
async fn activity_errors_v1_shape_and_none_for_a_success() {
    let s = spawn_app();
    let check = run_to_end(
        &s,
        &v1_body(
            "Intentional Error",
            json!({"RaiseErrors": "true", "WaitTime": 1}),
        ),
    )
    .await;
    let (status, out) = s.call("GetActivityErrors", &check).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["PipelineStatus"], "Failed");
    assert_eq!(out["ResponseErrorCount"], 2);
    assert!(out.get("ActualStatus").is_none());

    let check = run_to_end(
        &s,
        &v2_body(
            "Intentional Error",
            json!({"RaiseErrors": "false", "WaitTime": "1"}),
        ),
    )
    .await;
    let (status, out) = s.call("GetActivityErrors", &check).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ActualStatus"], "Succeeded");
    assert_eq!(
        out["ResponseErrorCount"], 0,
        "succeeded activities carry empty error objects: {out}"
    );
    assert!(out["ResponseCount"].as_u64().is_some_and(|n| n >= 1));
}

#[tokio::test]
async fn validate_pipeline_both_dialects() {
    let s = spawn_app();
    let (status, out) = s
        .call("ValidatePipeline", &v2_body("Wait 1", json!({})))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["PipelineExists"], "True");
    assert_eq!(out["PipelineName"], "Wait 1");
    assert_eq!(
        out["PipelineType"],
        "Microsoft.DataFactory/factories/pipelines"
    );
    assert!(
        out["PipelineId"]
            .as_str()
            .unwrap_or("")
            .ends_with("/pipelines/Wait 1"),
        "{out}"
    );
    assert_eq!(out["ActivityCount"], 1);

    let (status, out) = s
        .call("ValidatePipeline", &v2_body("Does Not Exist", json!({})))
        .await;
    assert_eq!(status, 200, "not found is a 200: {out}");
    assert_eq!(out["PipelineExists"], "False");
    assert_eq!(out["PipelineId"], "Unknown");
    assert_eq!(out["ActivityCount"], 0);

    let (status, out) = s
        .call("ValidatePipeline", &v1_body("Wait 1", json!({})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(out["PipelineExists"], "True");
    assert_eq!(out["ActivityCount"], "1", "1.9.2 reported a string");
    let (_, out) = s
        .invoke("ValidatePipeline", &v1_body("Nope", json!({})))
        .await;
    assert_eq!(out["PipelineExists"], "False");
    assert_eq!(out["ProvidedPipelineName"], "Nope");

    let forbidden = with(
        with(
            v2_body("Wait 1", json!({})),
            "applicationId",
            json!(FORBIDDEN_CLIENT),
        ),
        "authenticationKey",
        json!(FORBIDDEN_SECRET),
    );
    let (status, out) = s.call("ValidatePipeline", &forbidden).await;
    assert_eq!(
        status, 403,
        "a 403 is not passed off as 'does not exist': {out}"
    );
}

#[tokio::test]
async fn cancel_pipeline_waits_for_cancelled_both_dialects() {
    let s = spawn_app();
    for body in [
        v2_body("Wait Long", json!({})),
        v1_body("Wait Long", json!({})),
    ] {
        let (status, out) = s.call("ExecutePipelineV2", &body).await;
        assert_eq!(status, 200, "{out}");
        let run = with(body.clone(), "runId", out["RunId"].clone());
        let (status, out) = s.call("CancelPipeline", &run).await;
        assert_eq!(status, 200, "{out}");
        let key = if body.get("factoryName").is_some() {
            "Status"
        } else {
            "ActualStatus"
        };
        assert_eq!(out[key], "Cancelled", "{out}");
        assert_ne!(out["SimpleStatus"], "Running");
        // A finished run cannot be cancelled again.
        let (status, out) = s.call("CancelPipeline", &run).await;
        assert_eq!(status, 409, "{out}");
        assert_eq!(out["error"]["details"]["ActualStatus"], "Cancelled");
    }
}

#[tokio::test]
async fn cancelling_is_reported_with_procfwk_spelling_and_counts_as_running() {
    // A long "Canceling" phase so a status check can see it.
    let mut config = sim_config();
    config["canceling_secs"] = json!(100.0);
    let s = spawn_app_with(config, &[("PROCFWK_CANCEL_WAIT_CAP_SECS", "0.2".into())]);
    let body = v2_body("Wait Long", json!({}));
    let (_, out) = s.call("ExecutePipelineV2", &body).await;
    let run = with(body, "runId", out["RunId"].clone());
    let (status, out) = s.call("CancelPipeline", &run).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["ActualStatus"], "Cancelling",
        "cap reached while ADF says Canceling: {out}"
    );
    assert_eq!(out["SimpleStatus"], "Running");
    let (_, out) = s.call("CheckPipelineStatus", &run).await;
    assert_eq!(out["ActualStatus"], "Cancelling");
    assert_eq!(out["SimpleStatus"], "Running");
}

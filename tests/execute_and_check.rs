//! ExecutePipelineV2 / ExecutePipeline and CheckPipelineStatus against the simulator, in both dialects
//! and through both host protocols.

mod support;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn v2_execute_then_poll_to_success_over_http_forwarding() {
    let s = spawn_app();
    let body = v2_body("Wait 1", json!({"WaitTime": "2"}));
    let (status, out) = s.call("ExecutePipelineV2", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["PipelineName"], "Wait 1");
    assert_ne!(
        out["ActualStatus"], "Queued",
        "Execute answers once the run has left Queued: {out}"
    );
    assert!(out.get("Status").is_none());
    let run_id = out["RunId"].as_str().expect("RunId").to_string();
    assert_eq!(
        s.arm_run(&run_id).await["parameters"]["WaitTime"],
        "2",
        "parameters reach createRun"
    );

    // Execute's and Check's answers link to the run in ADF Studio.
    let link = format!(
        "https://adf.azure.com/monitoring/pipelineruns/{run_id}?factory=%2Fsubscriptions%2F{SUBSCRIPTION}\
         %2FresourceGroups%2FADF.procfwk%2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2FWorkersFactory"
    );
    assert_eq!(out["RunLink"], link.as_str());

    let done = s.wait_complete(&with(body, "runId", json!(run_id))).await;
    assert_eq!(done["ActualStatus"], "Succeeded");
    assert_eq!(done["SimpleStatus"], "Complete");
    assert_eq!(done["RunId"], run_id.as_str());
    assert_eq!(done["RunLink"], link.as_str());
}

#[tokio::test]
async fn v1_execute_then_poll_to_done_with_scalar_parameters() {
    let s = spawn_app();
    let body = v1_body("Wait 2", json!({"WaitTime": 1}));
    let (status, out) = s.call("ExecutePipelineV2", &body).await;
    assert_eq!(status, 200, "{out}");
    assert!(
        out.get("ActualStatus").is_none(),
        "v1 callers get Status: {out}"
    );
    assert!(out["Status"].is_string());
    let run_id = out["RunId"].as_str().expect("RunId").to_string();
    assert_eq!(s.arm_run(&run_id).await["parameters"]["WaitTime"], "1");
    let check = with(body, "runId", json!(run_id));
    let mut last = Value::Null;
    for _ in 0..500 {
        let (status, out) = s.call("CheckPipelineStatus", &check).await;
        assert_eq!(status, 200);
        if out["SimpleStatus"] != "Running" {
            last = out;
            break;
        }
    }
    assert_eq!(last["SimpleStatus"], "Done");
    assert_eq!(last["Status"], "Succeeded");
}

#[tokio::test]
async fn execute_pipeline_alias_and_invocation_payload_protocol() {
    let s = spawn_app();
    for dialect_body in [
        v2_body("Wait 3", json!({"WaitTime": "1"})),
        v1_body("Wait 3", json!({"WaitTime": "1"})),
    ] {
        let (status, out) = s.invoke("ExecutePipeline", &dialect_body).await;
        assert_eq!(status, 200, "{out}");
        let run_id = out["RunId"].as_str().expect("RunId").to_string();
        let check = with(dialect_body.clone(), "runId", json!(run_id));
        let mut final_status = Value::Null;
        for _ in 0..500 {
            let (status, out) = s.invoke("CheckPipelineStatus", &check).await;
            assert_eq!(status, 200, "{out}");
            if out["SimpleStatus"] != "Running" {
                final_status = out;
                break;
            }
        }
        let key = if dialect_body.get("factoryName").is_some() {
            "Status"
        } else {
            "ActualStatus"
        };
        assert_eq!(final_status[key], "Succeeded", "{final_status}");
    }
}

#[tokio::test]
async fn queued_cap_answers_with_the_run_id_and_keeps_the_infant_polling() {
    let s = spawn_app_with(
        sim_config(),
        &[("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "0.3".into())],
    );
    let started = std::time::Instant::now();
    let body = v2_body("Queued Forever", json!({}));
    let (status, out) = s.call("ExecutePipelineV2", &body).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "bounded by the cap"
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ActualStatus"], "Queued");
    assert_eq!(out["SimpleStatus"], "Running");
    let run_id = out["RunId"].as_str().expect("RunId");
    let (status, out) = s
        .call("CheckPipelineStatus", &with(body, "runId", json!(run_id)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        out["SimpleStatus"], "Running",
        "Queued counts as Running: {out}"
    );
}

#[tokio::test]
async fn check_rejects_a_run_of_another_pipeline() {
    let s = spawn_app();
    let (_, out) = s
        .call(
            "ExecutePipelineV2",
            &v2_body("Wait 1", json!({"WaitTime": "1"})),
        )
        .await;
    let run_id = out["RunId"].as_str().expect("RunId");
    let wrong = with(v2_body("Wait 2", json!({})), "runId", json!(run_id));
    let (status, out) = s.call("CheckPipelineStatus", &wrong).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "pipelineName");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("Expected name: Wait 1"));
}

#[tokio::test]
async fn upstream_not_found_and_forbidden_say_what_arm_said() {
    let s = spawn_app();
    let missing_run = with(
        v2_body("Wait 1", json!({})),
        "runId",
        json!("00000000-0000-0000-0000-000000000001"),
    );
    let (status, out) = s.call("CheckPipelineStatus", &missing_run).await;
    assert_eq!(status, 404, "{out}");
    assert_eq!(out["error"]["upstream"]["status"], 404);
    assert!(out["error"]["upstream"]["code"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));

    let (status, out) = s
        .call("ExecutePipelineV2", &v2_body("No Such Pipeline", json!({})))
        .await;
    assert_eq!(status, 404, "{out}");

    let forbidden = with(
        with(
            v2_body("Wait 1", json!({})),
            "applicationId",
            json!(FORBIDDEN_CLIENT),
        ),
        "authenticationKey",
        json!(FORBIDDEN_SECRET),
    );
    let (status, out) = s.call("ExecutePipelineV2", &forbidden).await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(out["error"]["upstream"]["code"], "AuthorizationFailed");
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after_and_server_errors_are_retried() {
    let s = spawn_app();
    // Every ARM request throttled: the handler keeps retrying within its budget, then says so.
    s.set_faults(json!({"throttle_ratio": 1.0, "retry_after_secs": 0, "server_error_ratio": 0.0, "latency_ms": 0, "latency_ratio": 1.0})).await;
    let body = v2_body("Wait 1", json!({"WaitTime": "1"}));
    let (status, out) = s.call("ExecutePipelineV2", &body).await;
    assert_eq!(status, 503, "throttled past all retries: {out}");
    assert_eq!(out["error"]["upstream"]["status"], 429);

    // A third of the requests throttled: createRun is retried on 429 (ARM did nothing), so callers
    // never see it.
    s.set_faults(json!({"throttle_ratio": 0.3, "retry_after_secs": 0, "server_error_ratio": 0.0, "latency_ms": 0, "latency_ratio": 1.0})).await;
    let mut run_ids = Vec::new();
    for _ in 0..5 {
        let (status, out) = s.call("ExecutePipelineV2", &body).await;
        assert_eq!(status, 200, "{out}");
        run_ids.push(out["RunId"].as_str().unwrap_or_default().to_string());
    }
    // Reads are retried on 5xx too.
    s.set_faults(json!({"throttle_ratio": 0.2, "retry_after_secs": 0, "server_error_ratio": 0.3, "latency_ms": 0, "latency_ratio": 1.0})).await;
    for run_id in &run_ids {
        let (status, out) = s
            .call(
                "CheckPipelineStatus",
                &with(body.clone(), "runId", json!(run_id)),
            )
            .await;
        assert_eq!(status, 200, "{out}");
    }
    let log = s.sim_get("/_sim/requests").await;
    let statuses: Vec<u64> = log
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["status"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        statuses.contains(&429) && statuses.iter().any(|s| *s >= 500),
        "faults were injected: {statuses:?}"
    );
    let creates = log.as_array().map(|a| {
        a.iter()
            .filter(|r| {
                r["status"] == 200
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/createRun"))
            })
            .count()
    });
    assert_eq!(creates, Some(5), "one run per Execute call, never two");
}

#[tokio::test]
async fn persistent_server_errors_become_a_502() {
    let s = spawn_app_with(sim_config(), &[("PROCFWK_ARM_MAX_RETRIES", "2".into())]);
    s.set_faults(json!({"throttle_ratio": 0.0, "retry_after_secs": 0, "server_error_ratio": 1.0, "latency_ms": 0, "latency_ratio": 1.0})).await;
    let check = with(
        v2_body("Wait 1", json!({})),
        "runId",
        json!("00000000-0000-0000-0000-000000000001"),
    );
    let (status, out) = s.call("CheckPipelineStatus", &check).await;
    assert_eq!(status, 502, "{out}");
    assert!(out["error"]["upstream"]["status"]
        .as_u64()
        .is_some_and(|s| s >= 500));
}

#[tokio::test]
async fn executes_waiting_for_queued_do_not_keep_a_check_out() {
    // One upstream slot, so two admission slots; four Executes wait up to 3 s each for a run that
    // never leaves Queued. They give their slots back between polls, so a check answers at once.
    let s = spawn_app_with(
        sim_config(),
        &[
            ("PROCFWK_UPSTREAM_CONCURRENCY", "1".into()),
            ("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "3".into()),
        ],
    );
    let body = v2_body("Wait 1", json!({"WaitTime": "1"}));
    let (_, out) = s.call("ExecutePipelineV2", &body).await;
    let run_id = out["RunId"].as_str().expect("RunId").to_string();
    let queued = v2_body("Queued Forever", json!({}));
    let waits: Vec<_> = (0..4)
        .map(|_| s.call("ExecutePipelineV2", &queued))
        .collect();
    let check = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        let (status, out) = s
            .call(
                "CheckPipelineStatus",
                &with(body.clone(), "runId", json!(run_id)),
            )
            .await;
        (status, out, started.elapsed())
    };
    let (outs, (status, out, took)) = tokio::join!(futures::future::join_all(waits), check);
    assert_eq!(status, 200, "{out}");
    assert!(
        took < std::time::Duration::from_millis(1500),
        "the check waited {took:?} behind the Executes"
    );
    for (status, out) in outs {
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["ActualStatus"], "Queued", "{out}");
    }
}

//! Bad input gets HTTP 400 with a JSON body naming the field and the problem, in both protocols; the
//! function key is enforced when running standalone.

mod support;
use serde_json::{json, Value};
use support::*;

fn without(mut body: Value, key: &str) -> Value {
    if let Some(m) = body.as_object_mut() {
        m.remove(key);
    }
    body
}

#[tokio::test]
async fn every_bad_input_is_a_400_naming_the_field() {
    let s = spawn_app();
    let run = with(v2_body("Wait 1", json!({})), "runId", json!(TENANT));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "ExecutePipelineV2",
            without(v2_body("Wait 1", json!({})), "pipelineName"),
            "pipelineName",
        ),
        (
            "ExecutePipelineV2",
            without(v2_body("Wait 1", json!({})), "subscriptionId"),
            "subscriptionId",
        ),
        (
            "ExecutePipelineV2",
            without(v2_body("Wait 1", json!({})), "resourceGroupName"),
            "resourceGroupName",
        ),
        (
            "ExecutePipelineV2",
            without(v1_body("Wait 1", json!({})), "resourceGroup"),
            "resourceGroup",
        ),
        (
            "ExecutePipelineV2",
            without(v2_body("Wait 1", json!({})), "authenticationKey"),
            "authenticationKey",
        ),
        (
            "ExecutePipelineV2",
            with(
                v2_body("Wait 1", json!({})),
                "tenantId",
                json!("1234-1234-1234-1234-1234"),
            ),
            "tenantId",
        ),
        (
            "ExecutePipelineV2",
            with(
                v2_body("Wait 1", json!({})),
                "subscriptionId",
                json!("not-a-guid"),
            ),
            "subscriptionId",
        ),
        (
            "ExecutePipelineV2",
            with(
                v2_body("Wait 1", json!({})),
                "orchestratorType",
                json!("XYZ"),
            ),
            "orchestratorType",
        ),
        (
            "ExecutePipelineV2",
            with(
                v2_body("Wait 1", json!({})),
                "pipelineParameters",
                json!([1]),
            ),
            "pipelineParameters",
        ),
        (
            "ExecutePipelineV2",
            with(v2_body("Wait 1", json!({})), "pipelineName", json!("a/b")),
            "pipelineName",
        ),
        (
            "CheckPipelineStatus",
            without(run.clone(), "runId"),
            "runId",
        ),
        (
            "CheckPipelineStatus",
            with(run.clone(), "runId", json!("run-1")),
            "runId",
        ),
        (
            "GetActivityErrors",
            with(run.clone(), "runId", json!(42)),
            "runId",
        ),
        (
            "CancelPipeline",
            with(run.clone(), "runId", json!("")),
            "runId",
        ),
        ("ValidatePipeline", json!(["not", "an", "object"]), "body"),
    ];
    for (function, body, field) in cases {
        let (status, out) = s.call(function, &body).await;
        assert_eq!(status, 400, "{function} {body}: {out}");
        assert_eq!(out["error"]["field"], field, "{function}: {out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{out}"
        );
        let (status, out) = s.invoke(function, &body).await;
        assert_eq!(status, 400, "invocation payload, {function}: {out}");
        assert_eq!(out["error"]["field"], field);
    }
}

#[tokio::test]
async fn malformed_json_and_oversized_bodies() {
    let s = spawn_app_with(sim_config(), &[("PROCFWK_MAX_BODY_BYTES", "4096".into())]);
    let (status, out) = s
        .call_raw("CheckPipelineStatus", b"{\"tenantId\": ".to_vec())
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "body");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("not valid JSON"));

    let (status, out) = s.call_raw("CheckPipelineStatus", Vec::new()).await;
    assert_eq!(status, 400, "{out}");

    let big = json!({"pipelineParameters": {"x": "y".repeat(10_000)}});
    let (status, out) = s.call("ExecutePipelineV2", &big).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "body");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("4096"));
    let (status, out) = s.invoke("ExecutePipelineV2", &big).await;
    assert_eq!(status, 400, "{out}");

    // Chunked upload without Content-Length is cut off too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1000])).collect();
    let r = s
        .client
        .post(format!("{}/api/ExecutePipelineV2", s.handler.url))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn unknown_function_and_wrong_method() {
    let s = spawn_app();
    let (status, out) = s.call("NoSuchFunction", &json!({})).await;
    assert_eq!(status, 404, "{out}");
    let r = s
        .client
        .get(format!("{}/api/ExecutePipelineV2", s.handler.url))
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 405);
    let r = s
        .client
        .get(format!("{}/", s.handler.url))
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 200, "readiness probe");
}

#[tokio::test]
async fn function_key_is_enforced_when_standalone() {
    let s = spawn_app_with(
        sim_config(),
        &[("PROCFWK_FUNCTION_KEY", FUNCTION_KEY.into())],
    );
    let body = v2_body("Wait 1", json!({"WaitTime": "1"}));
    let (status, out) = s.call("ValidatePipeline", &body).await;
    assert_eq!(status, 401, "{out}");
    let r = s
        .client
        .post(format!("{}/api/ValidatePipeline", s.handler.url))
        .header("x-functions-key", FUNCTION_KEY)
        .json(&body)
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .client
        .post(format!(
            "{}/api/ValidatePipeline?code={FUNCTION_KEY}",
            s.handler.url
        ))
        .json(&body)
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .client
        .post(format!("{}/api/ValidatePipeline?code=wrong", s.handler.url))
        .json(&body)
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn under_the_functions_host_the_host_checks_keys() {
    // FUNCTIONS_CUSTOMHANDLER_PORT set: listen there, and leave key checks to the host. A real process:
    // which port `procfwk serve` listens on is the point.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let s = stack_with(
        sim_config(),
        &[
            ("PROCFWK_FUNCTION_KEY", FUNCTION_KEY.into()),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string()),
        ],
    );
    assert!(
        s.handler.url.ends_with(&format!(":{port}")),
        "{}",
        s.handler.url
    );
    let (status, out) = s
        .invoke("ValidatePipeline", &v2_body("Wait 1", json!({})))
        .await;
    assert_eq!(status, 200, "{out}");
}

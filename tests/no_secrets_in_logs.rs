//! With logging turned all the way up (`RUST_LOG=trace`), neither the handler nor the simulator writes a
//! client secret, a function key, a bearer token or a Key Vault secret value to its output.

mod support;
use serde_json::json;
use support::*;

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let s = stack_with(
        sim_config(),
        &[("PROCFWK_FUNCTION_KEY", FUNCTION_KEY.into())],
    );
    let key = |url: String| format!("{url}?code={FUNCTION_KEY}");
    let body = v2_body(
        "Intentional Error",
        json!({"RaiseErrors": "true", "WaitTime": "1"}),
    );
    let r = s
        .client
        .post(key(format!("{}/api/ExecutePipelineV2", s.handler.url)))
        .json(&body)
        .send()
        .await
        .expect("reachable");
    let out: serde_json::Value = r.json().await.expect("json");
    let run = with(body, "runId", out["RunId"].clone());
    for function in [
        "CheckPipelineStatus",
        "GetActivityErrors",
        "ValidatePipeline",
    ] {
        let r = s
            .client
            .post(format!("{}/api/{function}", s.handler.url))
            .header("x-functions-key", FUNCTION_KEY)
            .json(&run)
            .send()
            .await
            .expect("reachable");
        assert!(r.status().is_success(), "{function}");
    }
    // Key Vault path and a failing secret.
    let kv = with(
        with(
            v2_body("Wait 1", json!({})),
            "applicationId",
            json!("https://kv.vault.azure.net/secrets/procfwk-app-id"),
        ),
        "authenticationKey",
        json!("https://kv.vault.azure.net/secrets/procfwk-app-secret"),
    );
    let _ = s
        .client
        .post(key(format!("{}/api/ValidatePipeline", s.handler.url)))
        .json(&kv)
        .send()
        .await;
    let wrong = with(
        v2_body("Wait 1", json!({})),
        "authenticationKey",
        json!("wrong-secret-3c1d9a7f"),
    );
    let _ = s
        .client
        .post(key(format!("{}/api/ValidatePipeline", s.handler.url)))
        .json(&wrong)
        .send()
        .await;
    let _ = s
        .client
        .post(format!(
            "{}/api/ValidatePipeline?code=bad-key-5e6f7a8b",
            s.handler.url
        ))
        .json(&kv)
        .send()
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Every access token the simulator issues starts with `simtok.`; none may be logged.
    let token = s.token().await;
    assert!(token.starts_with("simtok."));
    let handler_log = s.handler.output();
    let sim_log = s.sim.output();
    assert!(
        handler_log.contains("invocation"),
        "the handler did log at trace level: {handler_log}"
    );
    for secret in [
        SECRET_A,
        SECRET_B,
        FUNCTION_KEY,
        "wrong-secret-3c1d9a7f",
        "bad-key-5e6f7a8b",
        IDENTITY_HEADER,
    ] {
        assert!(!handler_log.contains(secret), "handler log leaks {secret}");
        assert!(!sim_log.contains(secret), "simulator log leaks {secret}");
    }
    assert!(!sim_log.contains("simtok."), "simulator log leaks a token");
    for marker in ["simtok.", "Bearer ", "access_token", "client_secret="] {
        assert!(
            !handler_log.contains(marker),
            "handler log contains {marker}"
        );
    }
}

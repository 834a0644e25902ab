//! Credentials: the service principal in the body, Key Vault references, the Function App's managed
//! identity, and one token per principal for the life of the process.

mod support;
use serde_json::json;
use support::*;

#[tokio::test]
async fn one_token_per_principal_across_fifty_calls() {
    let s = spawn_app();
    let (_, out) = s
        .call(
            "ExecutePipelineV2",
            &v2_body("Wait 1", json!({"WaitTime": "1"})),
        )
        .await;
    let check = with(v2_body("Wait 1", json!({})), "runId", out["RunId"].clone());
    // 50 calls, half of them concurrent.
    for _ in 0..25 {
        let (status, _) = s.call("CheckPipelineStatus", &check).await;
        assert_eq!(status, 200);
    }
    let calls = (0..25).map(|_| s.call("CheckPipelineStatus", &check));
    for (status, out) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{out}");
    }
    let counts = s.token_requests().await;
    assert_eq!(counts[CLIENT_A], 1, "{counts}");

    // A second principal gets its own token, once.
    let b = with(
        with(check.clone(), "applicationId", json!(CLIENT_B)),
        "authenticationKey",
        json!(SECRET_B),
    );
    for _ in 0..10 {
        assert_eq!(s.call("CheckPipelineStatus", &b).await.0, 200);
    }
    let counts = s.token_requests().await;
    assert_eq!(counts[CLIENT_A], 1, "{counts}");
    assert_eq!(counts[CLIENT_B], 1, "{counts}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_does_not_reuse_a_good_token() {
    let s = spawn_app();
    let good = v2_body("Wait 1", json!({}));
    assert_eq!(s.call("ValidatePipeline", &good).await.0, 200);
    let bad = with(good, "authenticationKey", json!("not-the-secret"));
    let (status, out) = s.call("ValidatePipeline", &bad).await;
    assert_eq!(status, 401, "{out}");
    assert_eq!(out["error"]["code"], "AuthenticationFailed");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("AADSTS"),
        "says what Entra ID said: {out}"
    );
}

#[tokio::test]
async fn key_vault_references_are_read_with_the_managed_identity() {
    // A real process: the managed identity reads IDENTITY_ENDPOINT from the process environment.
    let s = stack();
    let body = with(
        with(
            v2_body("Wait 1", json!({"WaitTime": "1"})),
            "applicationId",
            json!("https://procfwk-kv.vault.azure.net/secrets/procfwk-app-id"),
        ),
        "authenticationKey",
        json!("https://procfwk-kv.vault.azure.net/secrets/procfwk-app-secret"),
    );
    for _ in 0..3 {
        let (status, out) = s.call("ExecutePipelineV2", &body).await;
        assert_eq!(status, 200, "{out}");
    }
    let counts = s.token_requests().await;
    assert_eq!(
        counts[CLIENT_B], 1,
        "the secret from Key Vault belongs to principal B: {counts}"
    );
    assert_eq!(counts["managed-identity"], 1, "one vault token: {counts}");
    let vault_reads = s.vault_reads().await;
    assert_eq!(vault_reads, 2, "each secret read once, then cached");

    let missing = with(
        body,
        "authenticationKey",
        json!("https://procfwk-kv.vault.azure.net/secrets/nope"),
    );
    let (status, out) = s.call("ExecutePipelineV2", &missing).await;
    assert_eq!(status, 404, "{out}");
    assert_eq!(out["error"]["upstream"]["service"], "Key Vault");
}

#[tokio::test]
async fn without_a_principal_the_managed_identity_calls_arm() {
    // A real process: the managed identity reads IDENTITY_ENDPOINT from the process environment.
    let s = stack();
    let mut body = v2_body("Wait 1", json!({"WaitTime": "1"}));
    for k in ["tenantId", "applicationId", "authenticationKey"] {
        body.as_object_mut().map(|m| m.remove(k));
    }
    for _ in 0..3 {
        let (status, out) = s.call("ExecutePipelineV2", &body).await;
        assert_eq!(status, 200, "{out}");
    }
    assert_eq!(s.token_requests().await["managed-identity"], 1);
}

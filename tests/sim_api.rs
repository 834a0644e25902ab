//! Black-box tests of `procfwk sim`: a real simulator on a loopback port, driven over HTTP with
//! reqwest and with the Azure SDK crates the function handler uses (`azure_identity`,
//! `azure_mgmt_datafactory`), so the simulator is held to what real clients parse.

mod support;

use azure_sim::{Faults, Principal, RunningSim, SimConfig, Simulator};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "12345678-1234-1234-1234-012345678910";
const CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT_SECRET: &str = "sim-test-secret";
const SUBSCRIPTION: &str = "12345678-1234-1234-1234-012345678910";
const RESOURCE_GROUP: &str = "ADF.procfwk";
const FACTORY: &str = "WorkersFactory";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const API: &str = "api-version=2018-06-01";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> SimConfig {
    let mut config = SimConfig::sample();
    config.time_scale = 0.01;
    let mut principal = Principal::new(CLIENT_ID, CLIENT_SECRET);
    principal.tenant_id = Some(TENANT.into());
    config.principals = vec![principal];
    config
        .secrets
        .insert("procfwk-secret".into(), "secret-from-vault".into());
    config
}

async fn start(config: SimConfig) -> RunningSim {
    Simulator::start(config, loopback())
        .await
        .expect("simulator starts")
}

fn factory_url(sim: &RunningSim) -> String {
    format!(
        "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.DataFactory/factories/{FACTORY}",
        sim.url()
    )
}

async fn token(http: &reqwest::Client, sim: &RunningSim, scope: &str) -> String {
    let body = support::client_credentials_token(
        http,
        &sim.url(),
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        scope,
    )
    .await;
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].is_u64());
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn create_run(
    http: &reqwest::Client,
    sim: &RunningSim,
    token: &str,
    pipeline: &str,
    parameters: Value,
) -> String {
    let response = http
        .post(format!(
            "{}/pipelines/{pipeline}/createRun?{API}",
            factory_url(sim)
        ))
        .bearer_auth(token)
        .json(&parameters)
        .send()
        .await
        .expect("createRun");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("createRun JSON");
    body["runId"].as_str().expect("runId").to_string()
}

async fn wait_for_terminal(
    http: &reqwest::Client,
    sim: &RunningSim,
    token: &str,
    run_id: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run: Value = http
            .get(format!("{}/pipelineruns/{run_id}?{API}", factory_url(sim)))
            .bearer_auth(token)
            .send()
            .await
            .expect("get run")
            .json()
            .await
            .expect("run JSON");
        let status = run["status"].as_str().unwrap_or_default();
        if matches!(status, "Succeeded" | "Failed" | "Cancelled") || Instant::now() > deadline {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn activity_runs(
    http: &reqwest::Client,
    sim: &RunningSim,
    token: &str,
    run_id: &str,
) -> Value {
    let window = json!({"lastUpdatedAfter": "2000-01-01T00:00:00Z", "lastUpdatedBefore": "2100-01-01T00:00:00Z"});
    let response = http
        .post(format!(
            "{}/pipelineruns/{run_id}/queryActivityruns?{API}",
            factory_url(sim)
        ))
        .bearer_auth(token)
        .json(&window)
        .send()
        .await
        .expect("queryActivityruns");
    assert_eq!(response.status(), 200);
    response.json().await.expect("activity runs JSON")
}

#[tokio::test]
async fn wait_worker_runs_to_success_with_its_activity() {
    let sim = start(config()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim, ARM_SCOPE).await;
    let run_id = create_run(&http, &sim, &token, "Wait%201", json!({"WaitTime": "1"})).await;

    let run = wait_for_terminal(&http, &sim, &token, &run_id).await;
    assert_eq!(run["status"], "Succeeded", "{run}");
    assert_eq!(run["runId"], run_id.as_str());
    assert_eq!(run["pipelineName"], "Wait 1");
    assert_eq!(run["parameters"], json!({"WaitTime": "1"}));
    assert!(run["runEnd"].is_string() && run["durationInMs"].is_i64());
    // What the Rust SDK the handler uses makes of it.
    let parsed: azure_mgmt_datafactory::package_2018_06::models::PipelineRun =
        serde_json::from_value(run.clone()).expect("azure_mgmt_datafactory parses the run");
    assert!(parsed.run_end.is_some() && parsed.last_updated.is_some());

    let activities = activity_runs(&http, &sim, &token, &run_id).await;
    let value = activities["value"].as_array().expect("value array");
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["activityName"], "Wait1");
    assert_eq!(value[0]["activityType"], "Wait");
    assert_eq!(value[0]["status"], "Succeeded");
    assert_eq!(value[0]["error"]["errorCode"], "");
    assert_eq!(value[0]["pipelineRunId"], run_id.as_str());

    let stats = sim.state().token_requests();
    assert_eq!(stats.get(CLIENT_ID), Some(&1));
    sim.shutdown().await;
}

#[tokio::test]
async fn intentional_error_fails_with_two_activity_errors() {
    let sim = start(config()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim, ARM_SCOPE).await;
    let run_id = create_run(
        &http,
        &sim,
        &token,
        "Intentional%20Error",
        json!({"RaiseErrors": "true", "WaitTime": 1}),
    )
    .await;
    let run = wait_for_terminal(&http, &sim, &token, &run_id).await;
    assert_eq!(run["status"], "Failed", "{run}");
    assert!(run["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Operation on target Raise Errors or Not failed"));

    let activities = activity_runs(&http, &sim, &token, &run_id).await;
    let value = activities["value"].as_array().expect("value array");
    assert_eq!(value.len(), 3);
    let errors: Vec<(&str, &str, &str, &str, &str)> = value
        .iter()
        .filter(|a| {
            a["error"]["errorCode"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .map(|a| {
            (
                a["activityName"].as_str().unwrap_or_default(),
                a["activityType"].as_str().unwrap_or_default(),
                a["error"]["errorCode"].as_str().unwrap_or_default(),
                a["error"]["failureType"].as_str().unwrap_or_default(),
                a["error"]["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            ("Raise Errors or Not", "IfCondition", "ActionFailed", "UserError", "Activity failed because an inner activity failed"),
            (
                "Call Fail Procedure",
                "SqlServerStoredProcedure",
                "2402",
                "UserError",
                "Execution fail against sql server. Sql error number: 50000. Error Message: The Stored Procedure intentionally failed."
            ),
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_things_answer_404_and_missing_tokens_401() {
    let sim = start(config()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim, ARM_SCOPE).await;

    let unknown_pipeline = http
        .post(format!(
            "{}/pipelines/Wait%2099/createRun?{API}",
            factory_url(&sim)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown_pipeline.status(), 404);
    let body: Value = unknown_pipeline.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "NotFound");

    let unknown_run = http
        .get(format!(
            "{}/pipelineruns/{}?{API}",
            factory_url(&sim),
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown_run.status(), 404);
    let body: Value = unknown_run.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "PipelineRunNotFound");

    let unknown_route = http
        .get(format!("{}/no/such/thing", sim.url()))
        .send()
        .await
        .expect("request");
    assert_eq!(unknown_route.status(), 404);
    let body: Value = unknown_route.json().await.expect("JSON");
    assert!(body["error"]["code"].is_string());

    let anonymous = http
        .post(format!(
            "{}/pipelines/Wait%201/createRun?{API}",
            factory_url(&sim)
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "AuthenticationFailed");

    let wrong_secret = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", "not-the-secret"),
            ("scope", ARM_SCOPE),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_secret.status(), 401);
    let body: Value = wrong_secret.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(sim.state().run_count(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let mut config = config();
    config.faults = Faults {
        throttle_ratio: 1.0,
        retry_after_secs: 2,
        ..Faults::default()
    };
    let sim = start(config).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim, ARM_SCOPE).await;
    let response = http
        .post(format!(
            "{}/pipelines/Wait%201/createRun?{API}",
            factory_url(&sim)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(sim.state().run_count(), 0);

    // Faults can be switched off at run time through the admin API.
    let put = http
        .put(format!("{}/_sim/faults", sim.url()))
        .json(&Faults::default())
        .send()
        .await
        .expect("request");
    assert_eq!(put.status(), 200);
    create_run(&http, &sim, &token, "Wait%201", json!({})).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn key_vault_secrets_need_a_vault_token() {
    let sim = start(config()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/secrets/procfwk-secret?api-version=7.4", sim.url());
    let anonymous = http.get(&url).send().await.expect("request");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let vault_token = token(&http, &sim, "https://vault.azure.net/.default").await;
    let secret: Value = http
        .get(&url)
        .bearer_auth(&vault_token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(secret["value"], "secret-from-vault");
    // The request log never holds the client secret, tokens or secret values.
    let log = serde_json::to_string(&sim.state().requests()).expect("log JSON");
    for leaked in [CLIENT_SECRET, vault_token.as_str(), "secret-from-vault"] {
        assert!(!log.contains(leaked));
    }
    sim.shutdown().await;
}

/// The crates the function handler is built on, pointed at the simulator, end to end.
#[tokio::test]
async fn azure_sdk_crates_talk_to_the_simulator() {
    use azure_mgmt_datafactory::package_2018_06::models::RunFilterParameters;
    use azure_mgmt_datafactory::package_2018_06::Client;

    let sim = start(config()).await;
    let endpoint = azure_core::Url::parse(&sim.url()).expect("url");
    let credential = Arc::new(azure_identity::ClientSecretCredential::new(
        azure_core::new_http_client(),
        endpoint.clone(),
        TENANT.into(),
        CLIENT_ID.into(),
        CLIENT_SECRET.into(),
    ));
    let client = Client::builder(credential)
        .endpoint(endpoint)
        .scopes(&[ARM_SCOPE])
        .build()
        .expect("client");

    for name in ["Wait 1", "Intentional Error", "Wait Long", "Queued Forever"] {
        let pipeline = client
            .pipelines_client()
            .get(SUBSCRIPTION, RESOURCE_GROUP, FACTORY, name)
            .await
            .expect("PipelineResource parses");
        assert_eq!(pipeline.sub_resource.name.as_deref(), Some(name));
    }

    let created = client
        .pipelines_client()
        .create_run(SUBSCRIPTION, RESOURCE_GROUP, FACTORY, "Wait 1")
        .await
        .expect("createRun");
    let deadline = Instant::now() + Duration::from_secs(10);
    let run = loop {
        let run = client
            .pipeline_runs_client()
            .get(
                SUBSCRIPTION,
                RESOURCE_GROUP,
                FACTORY,
                created.run_id.clone(),
            )
            .await
            .expect("get run");
        if run.status.as_deref() == Some("Succeeded") || Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(run.status.as_deref(), Some("Succeeded"));
    assert_eq!(run.parameters, Some(json!({"WaitTime": "5"})));

    let now = time::OffsetDateTime::now_utc();
    let window =
        RunFilterParameters::new(now - time::Duration::days(1), now + time::Duration::days(1));
    let activities = client
        .activity_runs_client()
        .query_by_pipeline_run(
            SUBSCRIPTION,
            RESOURCE_GROUP,
            FACTORY,
            created.run_id.clone(),
            window.clone(),
        )
        .await
        .expect("activity runs");
    assert_eq!(activities.value.len(), 1);
    assert_eq!(activities.value[0].status.as_deref(), Some("Succeeded"));

    let long = client
        .pipelines_client()
        .create_run(SUBSCRIPTION, RESOURCE_GROUP, FACTORY, "Wait Long")
        .await
        .expect("createRun");
    client
        .pipeline_runs_client()
        .cancel(SUBSCRIPTION, RESOURCE_GROUP, FACTORY, long.run_id.clone())
        .is_recursive(true)
        .send()
        .await
        .expect("cancel");
    let runs = client
        .pipeline_runs_client()
        .query_by_factory(SUBSCRIPTION, RESOURCE_GROUP, FACTORY, window)
        .await
        .expect("query runs");
    assert_eq!(runs.value.len(), 2);
    let cancelled = runs
        .value
        .iter()
        .find(|r| r.run_id.as_deref() == Some(long.run_id.as_str()));
    assert!(matches!(
        cancelled.and_then(|r| r.status.as_deref()),
        Some("Canceling" | "Cancelled")
    ));

    // One token served every call (the credential caches it).
    assert_eq!(sim.state().token_requests().get(CLIENT_ID), Some(&1));
    sim.shutdown().await;
}

//! The Data Factory routes end to end through [`routes`](crate::routes), with `warp::test`.

use crate::config::{FactoryRef, Faults, Principal, SimConfig};
use crate::{routes, SimState};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use warp::http::StatusCode;
use warp::Filter;

const FACTORY: &str = "/subscriptions/sub-1/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/WorkersFactory";
const API: &str = "api-version=2018-06-01";

fn state_with(config: SimConfig) -> Arc<SimState> {
    Arc::new(SimState::new(config).expect("valid config"))
}

fn fast() -> SimConfig {
    SimConfig {
        time_scale: 0.001,
        ..SimConfig::sample()
    }
}

async fn call(
    filter: &(impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, warp::http::HeaderMap) {
    let mut request = warp::test::request().method(method).path(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.reply(filter).await;
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status(), json, response.headers().clone())
}

async fn token_for(
    filter: &(impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    client_id: &str,
    scope: &str,
) -> String {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", "s3cret"),
            ("scope", scope),
        ])
        .finish();
    let response = warp::test::request()
        .method("POST")
        .path("/tenant-1/oauth2/v2.0/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .reply(filter)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    body["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn arm_token(
    filter: &(impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
          + Clone
          + 'static),
) -> String {
    token_for(filter, "app-1", "https://management.azure.com/.default").await
}

#[tokio::test]
async fn create_poll_and_list_activities() {
    let state = state_with(fast());
    let filter = routes(Arc::clone(&state));
    let token = arm_token(&filter).await;
    let (status, body, headers) = call(
        &filter,
        "POST",
        &format!("{FACTORY}/pipelines/Wait%201/createRun?{API}"),
        Some(&token),
        Some(json!({"WaitTime": "1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.contains_key("x-ms-ratelimit-remaining-subscription-writes"));
    assert!(headers.contains_key("x-ms-request-id"));
    let run_id = body["runId"].as_str().unwrap_or_default().to_string();
    assert!(uuid::Uuid::parse_str(&run_id).is_ok());

    // Lower-case fixed words are fine, as in ARM.
    let lower = FACTORY
        .replace("resourceGroups", "resourcegroups")
        .replace("Microsoft.DataFactory", "microsoft.datafactory");
    let run_path = format!("{lower}/pipelineRuns/{run_id}?{API}");
    let (status, run, headers) = call(&filter, "GET", &run_path, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("x-ms-ratelimit-remaining-subscription-reads"));
    assert_eq!(run["pipelineName"], "Wait 1");
    assert_eq!(run["parameters"]["WaitTime"], "1");
    assert!(matches!(
        run["status"].as_str(),
        Some("Queued" | "InProgress" | "Succeeded")
    ));

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let run = loop {
        let (_, run, _) = call(&filter, "GET", &run_path, Some(&token), None).await;
        if run["status"] == "Succeeded" || std::time::Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(run["status"], "Succeeded");
    assert!(run["durationInMs"].is_i64());

    let window = json!({"lastUpdatedAfter": "2000-01-01T00:00:00Z", "lastUpdatedBefore": "2999-01-01T00:00:00Z"});
    let (status, activities, _) = call(
        &filter,
        "POST",
        &format!("{FACTORY}/pipelineruns/{run_id}/queryActivityruns?{API}"),
        Some(&token),
        Some(window.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{activities}");
    assert_eq!(activities["value"][0]["activityName"], "Wait1");
    assert_eq!(activities["value"][0]["error"]["errorCode"], "");

    let (status, runs, _) = call(
        &filter,
        "POST",
        &format!("{FACTORY}/queryPipelineRuns?{API}"),
        Some(&token),
        Some(json!({
            "lastUpdatedAfter": "2000-01-01T00:00:00Z", "lastUpdatedBefore": "2999-01-01T00:00:00Z",
            "filters": [{"operand": "Status", "operator": "Equals", "values": ["Succeeded"]}]
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        state
            .requests()
            .iter()
            .filter(|r| r.path.contains("/pipelines/Wait 1/"))
            .count(),
        1
    );
}

#[tokio::test]
async fn parameter_and_lookup_errors() {
    let filter = routes(state_with(fast()));
    let token = arm_token(&filter).await;
    let create = |name: &str| format!("{FACTORY}/pipelines/{name}/createRun?{API}");
    let (status, body, _) = call(
        &filter,
        "POST",
        &create("Wait%201"),
        Some(&token),
        Some(json!({"WaitTime": "abc"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "BadRequest");
    let (status, _, _) = call(
        &filter,
        "POST",
        &create("Wait%201"),
        Some(&token),
        Some(json!({"Nope": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(
        &filter,
        "POST",
        &create("Wait%201"),
        Some(&token),
        Some(json!([1])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body, _) = call(&filter, "POST", &create("Wait%2099"), Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "Entity Wait 99 not found");
    let (status, body, _) = call(
        &filter,
        "GET",
        &format!("{FACTORY}/pipelineruns/{}?{API}", uuid::Uuid::new_v4()),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "PipelineRunNotFound");
    let (status, body, _) = call(
        &filter,
        "GET",
        &format!("{FACTORY}/pipelines/Wait%201"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");
    let (status, body, _) = call(
        &filter,
        "GET",
        &format!("{FACTORY}/pipelines/Intentional%20Error?{API}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "Intentional Error");
    assert_eq!(body["type"], "Microsoft.DataFactory/factories/pipelines");
    assert_eq!(body["properties"]["parameters"]["WaitTime"]["type"], "Int");
    assert_eq!(
        body["properties"]["activities"][1]["typeProperties"]["ifTrueActivities"][0]["name"],
        "Call Fail Procedure"
    );
    let (status, _, _) = call(
        &filter,
        "GET",
        &format!("{FACTORY}/linkedservices/x?{API}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(
        &filter,
        "DELETE",
        &format!("{FACTORY}/pipelines/Wait%201?{API}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn authentication_and_authorization_gates() {
    let mut config = fast();
    config.principals = vec![
        Principal::new("app-1", "s3cret"),
        Principal::new("reader", "s3cret"),
    ];
    config.forbidden_clients = vec!["reader".into()];
    config.factories = Some(vec![FactoryRef {
        subscription_id: "sub-1".into(),
        resource_group: "adf.procfwk".into(),
        name: "workersfactory".into(),
    }]);
    let state = state_with(config);
    let filter = routes(Arc::clone(&state));
    let path = format!("{FACTORY}/pipelines/Wait%201/createRun?{API}");

    let (status, body, _) = call(&filter, "POST", &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    let (status, body, _) = call(&filter, "POST", &path, Some("made-up"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    let vault_token = token_for(&filter, "app-1", "https://vault.azure.net/.default").await;
    let (status, body, _) = call(&filter, "POST", &path, Some(&vault_token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");

    let reader = token_for(&filter, "reader", "https://management.azure.com/.default").await;
    let (status, body, _) = call(&filter, "POST", &path, Some(&reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("'Microsoft.DataFactory/factories/pipelines/createRun/action'"),
        "{message}"
    );
    assert!(
        message.starts_with("The client 'reader' with object id '"),
        "{message}"
    );

    let token = arm_token(&filter).await;
    let (status, _, _) = call(&filter, "POST", &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let other = path.replace("WorkersFactory", "NoSuchFactory");
    let (status, body, _) = call(&filter, "POST", &other, Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert_eq!(
        body["error"]["message"].as_str().map(|m| m.starts_with(
            "The Resource 'Microsoft.DataFactory/factories/NoSuchFactory' under resource group 'ADF.procfwk' was not found."
        )),
        Some(true)
    );
    assert_eq!(
        state
            .requests()
            .iter()
            .filter_map(|r| r.client_id.as_deref())
            .filter(|c| *c == "reader")
            .count(),
        1
    );
}

#[tokio::test]
async fn cancel_and_recovery() {
    // Canceling lasts 50 × 0.01 = 0.5 s: long enough to observe, short enough to wait for.
    let filter = routes(state_with(SimConfig {
        time_scale: 0.01,
        canceling_secs: 50.0,
        ..SimConfig::sample()
    }));
    let token = arm_token(&filter).await;
    let (_, body, _) = call(
        &filter,
        "POST",
        &format!("{FACTORY}/pipelines/Wait%20Long/createRun?{API}"),
        Some(&token),
        None,
    )
    .await;
    let run_id = body["runId"].as_str().unwrap_or_default().to_string();
    let cancel = format!("{FACTORY}/pipelineruns/{run_id}/cancel?isRecursive=true&{API}");
    let response = warp::test::request()
        .method("POST")
        .path(&cancel)
        .header("authorization", format!("Bearer {token}"))
        .reply(&filter)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.body().is_empty());
    let run_path = format!("{FACTORY}/pipelineruns/{run_id}?{API}");
    let (_, run, _) = call(&filter, "GET", &run_path, Some(&token), None).await;
    assert_eq!(run["status"], "Canceling");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, run, _) = call(&filter, "GET", &run_path, Some(&token), None).await;
    assert_eq!(run["status"], "Cancelled");
    let (status, body, _) = call(&filter, "POST", &cancel, Some(&token), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "Conflict");

    let recover = format!(
        "{FACTORY}/pipelines/Wait%20Long/createRun?referencePipelineRunId={run_id}&isRecovery=true&{API}"
    );
    let (status, body, _) = call(&filter, "POST", &recover, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let second = body["runId"].as_str().unwrap_or_default().to_string();
    let (_, first, _) = call(&filter, "GET", &run_path, Some(&token), None).await;
    assert_eq!(first["isLatest"], false);
    let (_, latest, _) = call(
        &filter,
        "GET",
        &format!("{FACTORY}/pipelineruns/{second}?{API}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(latest["isLatest"], true);
    assert_eq!(latest["runGroupId"], first["runGroupId"]);
    let bad_reference = format!(
        "{FACTORY}/pipelines/Wait%20Long/createRun?referencePipelineRunId={}&{API}",
        uuid::Uuid::new_v4()
    );
    let (status, body, _) = call(&filter, "POST", &bad_reference, Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ReferencedPipelineRunNotValid");
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_and_creates_nothing() {
    let state = state_with(fast());
    let filter = routes(Arc::clone(&state));
    let token = arm_token(&filter).await;
    state.set_faults(Faults {
        throttle_ratio: 1.0,
        retry_after_secs: 3,
        ..Faults::default()
    });
    let (status, body, headers) = call(
        &filter,
        "POST",
        &format!("{FACTORY}/pipelines/Wait%201/createRun?{API}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("3")
    );
    assert_eq!(state.run_count(), 0);

    state.set_faults(Faults {
        server_error_ratio: 1.0,
        ..Faults::default()
    });
    let (status, _, _) = call(
        &filter,
        "GET",
        &format!("{FACTORY}/pipelines/Wait%201?{API}"),
        Some(&token),
        None,
    )
    .await;
    assert!(
        status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE
    );
    // Token routes are never faulted.
    let _ = arm_token(&filter).await;
}

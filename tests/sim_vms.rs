//! Black-box tests of the simulator's VMs and self-hosted integration runtimes: a real `procfwk sim`
//! on a loopback port, driven over HTTP with reqwest (and `azure_mgmt_datafactory` for getStatus), the
//! way the VmPower function will drive Azure: start → poll the async operation → runtime node
//! `Online` after its start-up delay → deallocate, with 409s on conflicting operations and 429s under
//! fault injection.

mod support;

use azure_sim::{Faults, PowerState, Principal, RunningSim, SimConfig, Simulator, VmEvent};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "12345678-1234-1234-1234-012345678910";
const CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT_SECRET: &str = "sim-vm-test-secret";
const SUBSCRIPTION: &str = "12345678-1234-1234-1234-012345678910";
const RESOURCE_GROUP: &str = "ADF.procfwk";
const FACTORY: &str = "FrameworkFactory";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const COMPUTE_API: &str = "api-version=2024-07-01";
const ADF_API: &str = "api-version=2018-06-01";
/// Scaled: start 90 s → 180 ms, deallocate 60 s → 120 ms, node start-up 100 s → 200 ms.
const TIME_SCALE: f64 = 0.002;

fn config() -> SimConfig {
    let mut config = SimConfig::sample();
    config.time_scale = TIME_SCALE;
    config.node_online_secs = 100.0;
    let mut principal = Principal::new(CLIENT_ID, CLIENT_SECRET);
    principal.tenant_id = Some(TENANT.into());
    config.principals = vec![principal];
    config
}

async fn start(config: SimConfig) -> RunningSim {
    Simulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

async fn token(http: &reqwest::Client, sim: &RunningSim) -> String {
    let body = support::client_credentials_token(
        http,
        &sim.url(),
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        ARM_SCOPE,
    )
    .await;
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn vm_url(sim: &RunningSim, vm: &str) -> String {
    format!(
        "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/{vm}",
        sim.url()
    )
}

fn runtime_url(sim: &RunningSim, runtime: &str) -> String {
    format!(
        "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.DataFactory/factories/{FACTORY}/integrationRuntimes/{runtime}/getStatus?{ADF_API}",
        sim.url()
    )
}

struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(http: &reqwest::Client, method: reqwest::Method, url: &str, token: &str) -> Answer {
    let response = http
        .request(method, url)
        .bearer_auth(token)
        .header("content-length", "0")
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        headers,
    }
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Answer {
    send(http, reqwest::Method::GET, url, token).await
}

async fn post(http: &reqwest::Client, url: &str, token: &str) -> Answer {
    send(http, reqwest::Method::POST, url, token).await
}

/// The `PowerState/…` of an instance view, as the VmPower adapter reads it (by code, not position).
fn power_state(instance_view: &Value) -> String {
    procfwk::adapters::compute::power_state_of(instance_view)
        .map_or("", |s| s.as_str())
        .to_string()
}

async fn instance_state(http: &reqwest::Client, sim: &RunningSim, vm: &str, token: &str) -> String {
    let answer = get(
        http,
        &format!("{}/instanceView?{COMPUTE_API}", vm_url(sim, vm)),
        token,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    power_state(&answer.body)
}

/// Polls `Azure-AsyncOperation` until the operation is terminal; returns its last body.
async fn wait_for_operation(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(http, url, token).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let status = answer.body["status"].as_str().unwrap_or_default();
        if status != "InProgress" || Instant::now() > deadline {
            return answer.body;
        }
        assert!(answer.header("retry-after").is_some());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn node_statuses(status: &Value) -> Vec<String> {
    status["properties"]["typeProperties"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn start_poll_run_runtime_online_deallocate() {
    let sim = start(config()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim).await;
    let vm = vm_url(&sim, "shir-vm-1");

    assert_eq!(
        instance_state(&http, &sim, "shir-vm-1", &token).await,
        "deallocated"
    );
    let status = post(&http, &runtime_url(&sim, "SelfHostedRuntime"), &token).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.body["properties"]["state"], "Offline");
    assert_eq!(node_statuses(&status.body), ["Offline"]);

    // start → 202 with the three long-running-operation headers.
    let started = post(&http, &format!("{vm}/start?{COMPUTE_API}"), &token).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let async_url = started
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation")
        .to_string();
    let location = started.header("location").expect("Location").to_string();
    assert!(async_url.starts_with(&format!(
        "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/westeurope/operations/",
        sim.url()
    )));
    assert!(started.header("retry-after").is_some());
    assert_eq!(
        instance_state(&http, &sim, "shir-vm-1", &token).await,
        "starting"
    );
    assert_eq!(
        get(&http, &location, &token).await.status,
        202,
        "Location answers 202 while in progress"
    );

    let done = wait_for_operation(&http, &async_url, &token).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert!(done["startTime"].is_string() && done["endTime"].is_string());
    assert_eq!(get(&http, &location, &token).await.status, 200);
    assert_eq!(
        instance_state(&http, &sim, "shir-vm-1", &token).await,
        "running"
    );

    // The VM runs, but the runtime node is not ready yet: "VM running" is not "runtime ready".
    let status = post(&http, &runtime_url(&sim, "SelfHostedRuntime"), &token).await;
    assert_eq!(node_statuses(&status.body), ["Initializing"]);
    assert_eq!(status.body["properties"]["state"], "Offline");
    let deadline = Instant::now() + Duration::from_secs(10);
    let online = loop {
        let status = post(&http, &runtime_url(&sim, "SelfHostedRuntime"), &token).await;
        if node_statuses(&status.body) == ["Online"] || Instant::now() > deadline {
            break status.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(online["properties"]["state"], "Online");
    let node = &online["properties"]["typeProperties"]["nodes"][0];
    assert_eq!(node["isActiveDispatcher"], true);
    assert_eq!(node["concurrentJobsLimit"], 4);
    // The four-node cluster shares shir-vm-1: one node of four online.
    let cluster = post(&http, &runtime_url(&sim, "SelfHostedCluster"), &token).await;
    assert_eq!(cluster.body["properties"]["state"], "Limited");
    assert_eq!(
        node_statuses(&cluster.body),
        ["Online", "Offline", "Offline", "Offline"]
    );

    // Start on a running VM: 200, nothing to poll.
    let again = post(&http, &format!("{vm}/start?{COMPUTE_API}"), &token).await;
    assert_eq!(again.status, 200);
    assert!(again.header("azure-asyncoperation").is_none());

    // deallocate → the node is Offline at once; start while deallocating → 409.
    let deallocating = post(&http, &format!("{vm}/deallocate?{COMPUTE_API}"), &token).await;
    assert_eq!(deallocating.status, 202);
    let status = post(&http, &runtime_url(&sim, "SelfHostedRuntime"), &token).await;
    assert_eq!(node_statuses(&status.body), ["Offline"]);
    assert_eq!(status.body["properties"]["state"], "Offline");
    let conflict = post(&http, &format!("{vm}/start?{COMPUTE_API}"), &token).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["error"]["code"], "OperationNotAllowed");
    assert!(conflict.body["error"]["message"].is_string());

    // Poll the Location URL this time (as a client without Azure-AsyncOperation support would).
    let location = deallocating
        .header("location")
        .expect("Location")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&http, &location, &token).await;
        if answer.status == 200 || Instant::now() > deadline {
            assert_eq!(answer.status, 200);
            break;
        }
        assert_eq!(answer.status, 202);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        instance_state(&http, &sim, "shir-vm-1", &token).await,
        "deallocated"
    );
    let gone = post(&http, &format!("{vm}/deallocate?{COMPUTE_API}"), &token).await;
    assert_eq!(gone.status, 200, "deallocate on deallocated is a no-op");

    // The history, in simulated seconds.
    let state = sim.state();
    let history: Vec<VmEvent> = state
        .vm_history()
        .into_iter()
        .filter(|e| e.vm == "shir-vm-1")
        .collect();
    let labels: Vec<String> = history
        .iter()
        .map(|e| e.state.clone().unwrap_or_else(|| e.event.clone()))
        .collect();
    assert_eq!(
        labels,
        [
            "deallocated",
            "start_requested",
            "starting",
            "running",
            "start_requested",
            "deallocate_requested",
            "deallocating",
            "deallocated",
            "deallocate_requested",
        ]
    );
    let at = |label: &str| {
        history
            .iter()
            .find(|e| e.state.as_deref() == Some(label))
            .map(|e| e.at_secs)
            .unwrap_or(f64::NAN)
    };
    assert!(((at("running") - at("starting")) - 90.0).abs() < 1e-6);
    let deallocated_at = history
        .iter()
        .rev()
        .find(|e| e.state.as_deref() == Some("deallocated"))
        .map(|e| e.at_secs)
        .unwrap_or(f64::NAN);
    assert!(((deallocated_at - at("deallocating")) - 60.0).abs() < 1e-6);
    let billed = state.allocated_seconds("shir-vm-1").expect("configured VM");
    assert!(
        (billed - (deallocated_at - at("starting"))).abs() < 1e-6,
        "{billed}"
    );
    assert_eq!(state.vm_state("shir-vm-1").as_deref(), Some("deallocated"));

    // The admin view holds the same.
    let admin: Value = http
        .get(format!("{}/_sim/vms", sim.url()))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("admin JSON");
    let vms = admin["vms"].as_array().cloned().unwrap_or_default();
    assert_eq!(vms.len(), 4);
    assert_eq!(vms[0]["power_state"], "deallocated");
    assert!(admin["history"].as_array().is_some_and(|h| h.len() >= 12));
    sim.shutdown().await;
}

#[tokio::test]
async fn throttled_power_requests_carry_retry_after_and_change_nothing() {
    let sim = start(config()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim).await;
    let faults = Faults {
        throttle_ratio: 1.0,
        retry_after_secs: 2,
        ..Faults::default()
    };
    let put = http
        .put(format!("{}/_sim/faults", sim.url()))
        .json(&faults)
        .send()
        .await
        .expect("faults");
    assert_eq!(put.status(), 200);

    let vm = vm_url(&sim, "shir-vm-2");
    let throttled = post(&http, &format!("{vm}/start?{COMPUTE_API}"), &token).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("2"));
    assert_eq!(throttled.body["error"]["code"], "TooManyRequests");
    assert!(throttled
        .header("x-ms-ratelimit-remaining-subscription-writes")
        .is_some());
    let throttled = post(&http, &runtime_url(&sim, "SelfHostedCluster"), &token).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(
        sim.state().vm_state("shir-vm-2").as_deref(),
        Some("deallocated")
    );

    sim.state().set_faults(Faults::default());
    let accepted = post(&http, &format!("{vm}/start?{COMPUTE_API}"), &token).await;
    assert_eq!(accepted.status, 202);
    assert_eq!(
        sim.state().vm_state("shir-vm-2").as_deref(),
        Some("starting")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn get_status_parses_with_the_sdk_and_admin_can_force_states() {
    use azure_mgmt_datafactory::package_2018_06::models::{
        self_hosted_integration_runtime_node::Status, IntegrationRuntimeState,
        IntegrationRuntimeStatusResponse, IntegrationRuntimeStatusUnion,
    };
    use azure_mgmt_datafactory::package_2018_06::Client;

    let sim = start(config()).await;
    let http = reqwest::Client::new();
    // Force two of the cluster's VMs running, one with its node online at once.
    for (vm, nodes_online) in [("shir-vm-2", true), ("shir-vm-3", false)] {
        let put = http
            .put(format!("{}/_sim/vms/{vm}", sim.url()))
            .json(&json!({"state": "running", "nodes_online": nodes_online}))
            .send()
            .await
            .expect("force");
        assert_eq!(put.status(), 200);
        let summary: Value = put.json().await.expect("summary");
        assert_eq!(summary["power_state"], "running");
        assert_eq!(summary["nodes_online"], nodes_online);
    }
    let unknown = http
        .put(format!("{}/_sim/vms/nope", sim.url()))
        .json(&json!({"state": "running"}))
        .send()
        .await
        .expect("force");
    assert_eq!(unknown.status(), 404);
    let transitional = http
        .put(format!("{}/_sim/vms/shir-vm-4", sim.url()))
        .json(&json!({"state": "starting"}))
        .send()
        .await
        .expect("force");
    assert_eq!(transitional.status(), 400);

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
    let response: IntegrationRuntimeStatusResponse = client
        .integration_runtimes_client()
        .get_status(SUBSCRIPTION, RESOURCE_GROUP, FACTORY, "SelfHostedCluster")
        .await
        .expect("the SDK parses getStatus");
    assert_eq!(response.name.as_deref(), Some("SelfHostedCluster"));
    let IntegrationRuntimeStatusUnion::SelfHosted(status) = response.properties else {
        panic!("a self-hosted runtime status was expected");
    };
    assert_eq!(
        status.integration_runtime_status.state,
        Some(IntegrationRuntimeState::Limited)
    );
    let nodes: Vec<(Option<String>, Option<Status>, Option<bool>)> = status
        .type_properties
        .nodes
        .iter()
        .map(|n| {
            (
                n.node_name.clone(),
                n.status.clone(),
                n.is_active_dispatcher,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            (Some("shir-vm-1".into()), Some(Status::Offline), Some(false)),
            (Some("shir-vm-2".into()), Some(Status::Online), Some(true)),
            (
                Some("shir-vm-3".into()),
                Some(Status::Initializing),
                Some(false)
            ),
            (Some("shir-vm-4".into()), Some(Status::Offline), Some(false)),
        ]
    );
    assert!(status.type_properties.nodes[1].last_connect_time.is_some());

    // Forcing deallocated takes the node offline at once.
    sim.state()
        .set_vm_state("shir-vm-2", PowerState::Deallocated, false)
        .expect("forced");
    let token = token(&http, &sim).await;
    let status = post(&http, &runtime_url(&sim, "SelfHostedCluster"), &token).await;
    assert_eq!(status.body["properties"]["state"], "Offline");
    let unknown = post(&http, &runtime_url(&sim, "NoSuchRuntime"), &token).await;
    assert_eq!(unknown.status, 404);
    sim.shutdown().await;
}

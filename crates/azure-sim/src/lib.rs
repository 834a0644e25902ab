//! # azure-sim — a loopback stand-in for Azure (`procfwk sim`)
//!
//! One HTTP server that answers like the Azure services procfwk talks to, so the function handler, its
//! tests and even the Azure SDKs can run without a subscription: Entra ID client-credentials tokens,
//! the App Service managed-identity endpoint, Key Vault secrets and the Data Factory ARM API
//! (`2018-06-01`) with worker pipelines whose runs move through `Queued → InProgress → Succeeded |
//! Failed` (or `Canceling → Cancelled`) on a scalable clock, plus Compute virtual machines (start,
//! deallocate, powerOff as long-running operations) and the self-hosted integration runtimes whose
//! nodes they host (`getStatus`). Faults (throttling, server errors,
//! latency) can be injected, and every request is logged for tests to inspect.
//!
//! This crate (`azure-sim`) owns the simulator and nothing of the handler: it depends on no procfwk
//! code, and speaks to the handler only over HTTP. Its power states ([`PowerState`]) and redacted
//! secrets ([`Secret`]) are its own small types. It has no binary of its own: `procfwk sim` runs it, and
//! procfwk links it only with its `devtools` feature (on by default; the zip-deploy package is built
//! without it, so no simulator is deployed).
//!
//! Start it in tests with [`Simulator::start`] on `127.0.0.1:0`, or from the command line with
//! `procfwk sim` ([`SimArgs`], [`run`]). Point clients at it with `AZURE_AUTHORITY_HOST=<url>`,
//! `IDENTITY_ENDPOINT=<url>/msi/token`, the ARM endpoint `<url>` and Key Vault URLs on `<url>`.
//!
//! ## Layout
//! - [`config`](SimConfig): what exists — pipelines, principals, factories, secrets, time scale,
//!   faults — with procfwk's sample workers as the default.
//! - `state`: [`SimState`], the configuration as lookup tables plus everything that changes.
//! - `identity`: Entra token endpoints (v1 and v2), OpenID metadata, managed identity.
//! - `tokens`: issued tokens and bearer-token checks shared by Key Vault and Data Factory.
//! - `keyvault`: `GET /secrets/{name}[/{version}]`.
//! - `factory`: the Data Factory ARM routes and their gates (api-version, auth, RBAC, faults);
//!   `factory::pipelines` (factory, pipeline definitions, createRun) and `factory::pipeline_runs`
//!   (get, cancel, activity-run and pipeline-run queries), `factory::integration_runtimes`
//!   (getStatus); `factory::virtual_machines`: the Compute routes behind the same gates.
//! - `power`: [`PowerState`], the instance view's `PowerState/…` vocabulary. `secret`: [`Secret`].
//! - [`compute`]: the VM engine — power states settled lazily from operation end times, the power
//!   history and billed time. `runtimes`: integration runtimes, node states derived from their VMs.
//! - `runs`: the run engine — a run's timeline is planned at creation and its state computed from
//!   elapsed time, so nothing runs in the background.
//! - `parameters`: createRun parameter checking and display values. `queries`: `RunFilterParameters`.
//! - `faults`: seeded fault decisions. `log`: the bounded request log. `clock`: time and timestamps.
//! - `reply` / `request`: the response type, the ARM error body, and request parsing helpers.
//! - `admin`: `/_sim/…` endpoints for tests (request log, stats, faults, health).

mod admin;
mod clock;
pub mod compute;
mod config;
mod factory;
mod faults;
mod identity;
mod keyvault;
mod log;
mod parameters;
mod power;
mod queries;
mod reply;
mod request;
mod runs;
mod runtimes;
mod secret;
mod state;
mod tokens;

pub use compute::{PowerState, VmEvent, VmSummary, VM_HISTORY_CAPACITY};
pub use config::{
    ActivityDef, FactoryRef, FailRule, Faults, NodeDef, ParamDef, ParamType, PipelineDef,
    Principal, RuntimeDef, SimConfig, VmDef, VmRef, MAX_RUNTIME_NODES, SAMPLE_TENANT_ID,
};
pub use log::{RequestRecord, LOG_CAPACITY};
pub use secret::Secret;
pub use state::{SimState, MANAGED_IDENTITY_KEY};

use reply::{ArmError, SimReply};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::http::{Method, StatusCode};
use warp::Filter;

/// Why the simulator could not start (or stopped waiting for Ctrl-C in [`run`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read simulator config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator config {path} is not a valid configuration: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    #[error("waiting for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
    #[error("simulator cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the request log needs to know about a request before it is handled.
struct RequestStart {
    method: Method,
    path: warp::path::FullPath,
    query: String,
    started: std::time::Instant,
}

/// Every simulator route, as one warp filter that never rejects: unknown routes get a 404 ARM error.
/// Requests (other than `/_sim/…`) are recorded in the state's request log.
pub fn routes(
    state: Arc<SimState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let api = admin::routes(Arc::clone(&state))
        .or(identity::routes(Arc::clone(&state)))
        .unify()
        .or(keyvault::routes(Arc::clone(&state)))
        .unify()
        .or(factory::routes(Arc::clone(&state)))
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            Ok::<_, Infallible>(reply_for_rejection(&rejection))
        })
        .unify();
    let start = warp::method()
        .and(warp::path::full())
        .and(request::raw_query())
        .map(|method, path, query| RequestStart {
            method,
            path,
            query,
            started: std::time::Instant::now(),
        });
    start
        .and(api)
        .and(warp::any().map(move || Arc::clone(&state)))
        .map(
            |start: RequestStart, reply: SimReply, state: Arc<SimState>| {
                record(&state, start, &reply);
                reply.into_response()
            },
        )
}

/// Requests no route accepted.
fn reply_for_rejection(rejection: &warp::Rejection) -> SimReply {
    if rejection.is_not_found() {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested resource was not found.",
        )
        .into_reply()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The requested resource does not support this http method.",
        )
        .into_reply()
    } else {
        ArmError::bad_request("The request is not valid.").into_reply()
    }
}

fn record(state: &SimState, start: RequestStart, reply: &SimReply) {
    let raw_path = start.path.as_str();
    if raw_path == "/_sim" || raw_path.starts_with("/_sim/") {
        return;
    }
    let path = request::percent_decode(raw_path).into_owned();
    tracing::debug!(method = %start.method, path = %path, status = reply.status.as_u16(), "simulator request");
    state.log.push(RequestRecord {
        at: clock::format_timestamp(chrono::Utc::now()),
        method: start.method.to_string(),
        path,
        query: log::redact_query(&start.query),
        status: reply.status.as_u16(),
        client_id: reply.client_id.as_deref().map(String::from),
        duration_ms: start.started.elapsed().as_secs_f64() * 1000.0,
    });
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Validates `config`, binds `addr` (use `127.0.0.1:0` in tests) and serves until
    /// [`RunningSim::shutdown`] (or until the `RunningSim` is dropped).
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<RunningSim, SimError> {
        let state = Arc::new(SimState::new(config)?);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = warp::serve(routes(Arc::clone(&state)))
            .incoming(listener)
            .graceful(async move {
                // A send or a dropped sender both mean stop.
                let _ = stopped.await;
            });
        let task = tokio::spawn(server.run());
        tracing::info!(addr = %local, "procfwk simulator started");
        Ok(RunningSim {
            addr: local,
            state,
            stop,
            task,
        })
    }
}

/// A simulator serving in the background. Dropping it stops the server too.
pub struct RunningSim {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> Arc<SimState> {
        Arc::clone(&self.state)
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        tracing::info!(addr = %self.addr, "procfwk simulator stopped");
    }
}

/// `procfwk sim` options. Flags override the config file (or the sample configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 7072)]
    pub port: u16,
    /// Address to listen on (keep it a loopback address: the simulator accepts any credentials).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// JSON configuration file (default: procfwk's sample workers, any client accepted).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Multiplies every simulated duration (0.01: a 10 s worker takes 100 ms).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Share (0..=1) of Data Factory requests answered 429.
    #[arg(long)]
    pub throttle_ratio: Option<f64>,
    /// Retry-After seconds of throttled answers.
    #[arg(long)]
    pub retry_after_secs: Option<u64>,
    /// Share (0..=1) of Data Factory requests answered 500/503.
    #[arg(long)]
    pub server_error_ratio: Option<f64>,
    /// Milliseconds of latency added to Data Factory requests.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Seed of the fault decisions.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SimArgs {
    /// The configuration these options describe, validated.
    pub fn to_config(&self) -> Result<SimConfig, SimError> {
        let mut config = match &self.config {
            Some(path) => SimConfig::load(path)?,
            None => SimConfig::sample(),
        };
        if let Some(v) = self.time_scale {
            config.time_scale = v;
        }
        if let Some(v) = self.throttle_ratio {
            config.faults.throttle_ratio = v;
        }
        if let Some(v) = self.retry_after_secs {
            config.faults.retry_after_secs = v;
        }
        if let Some(v) = self.server_error_ratio {
            config.faults.server_error_ratio = v;
        }
        if let Some(v) = self.latency_ms {
            config.faults.latency_ms = v;
        }
        if let Some(v) = self.seed {
            config.seed = v;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `procfwk sim`: starts the simulator, prints `procfwk sim listening on http://…` and serves until
/// Ctrl-C.
pub async fn run(args: SimArgs) -> Result<(), SimError> {
    let config = args.to_config()?;
    if !args.bind.is_loopback() {
        tracing::warn!(bind = %args.bind, "the simulator accepts any credentials; bind it to a loopback address");
    }
    let sim = Simulator::start(config, SocketAddr::new(args.bind, args.port)).await?;
    println!("procfwk sim listening on {}", sim.url());
    tokio::signal::ctrl_c().await.map_err(SimError::Signal)?;
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn filter_and_state() -> (
        impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + 'static,
        Arc<SimState>,
    ) {
        let mut config = SimConfig::sample();
        config
            .secrets
            .insert("procfwk-secret".into(), "kv-value".into());
        let state = Arc::new(SimState::new(config).expect("valid"));
        (routes(Arc::clone(&state)), state)
    }

    fn json_of(response: &warp::http::Response<bytes::Bytes>) -> Value {
        serde_json::from_slice(response.body()).unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn unknown_routes_get_an_arm_404() {
        let (filter, _) = filter_and_state();
        let response = warp::test::request()
            .path("/nothing/here")
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(json_of(&response)["error"]["code"], "NotFound");
        let response = warp::test::request()
            .method("GET")
            .path("/t/oauth2/v2.0/token")
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(json_of(&response)["error"]["code"].is_string());
    }

    #[tokio::test]
    async fn the_log_never_holds_secrets_and_skips_admin_routes() {
        let (filter, state) = filter_and_state();
        let response = warp::test::request()
            .method("POST")
            .path("/t/oauth2/v2.0/token?code=function-key")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=app&client_secret=VerySecret1&scope=https%3A%2F%2Fvault.azure.net%2F.default")
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let token = json_of(&response)["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let response = warp::test::request()
            .path("/secrets/procfwk-secret?api-version=7.4")
            .header("authorization", format!("Bearer {token}"))
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json_of(&response)["value"], "kv-value");
        let _ = warp::test::request()
            .path("/_sim/health")
            .reply(&filter)
            .await;

        let log = state.requests();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].query, "code=REDACTED");
        assert_eq!(log[0].client_id, None);
        assert_eq!(log[1].client_id.as_deref(), Some("app"));
        assert_eq!(log[1].path, "/secrets/procfwk-secret");
        let text = serde_json::to_string(&log).unwrap_or_default();
        for secret in ["VerySecret1", "function-key", "kv-value", token.as_str()] {
            assert!(!text.contains(secret), "log leaks {secret}");
        }
        assert_eq!(state.token_requests()["app"], 1);
    }

    #[tokio::test]
    async fn admin_endpoints() {
        let (filter, state) = filter_and_state();
        let health = warp::test::request()
            .path("/_sim/health")
            .reply(&filter)
            .await;
        assert_eq!(json_of(&health), json!({"status": "ok"}));
        let _ = warp::test::request().path("/nothing").reply(&filter).await;
        let requests = warp::test::request()
            .path("/_sim/requests")
            .reply(&filter)
            .await;
        assert_eq!(json_of(&requests).as_array().map(Vec::len), Some(1));
        let stats = warp::test::request()
            .path("/_sim/stats")
            .reply(&filter)
            .await;
        assert_eq!(json_of(&stats)["runs"], 0);
        assert!(json_of(&stats)["tokenRequests"].is_object());
        let cleared = warp::test::request()
            .method("DELETE")
            .path("/_sim/requests")
            .reply(&filter)
            .await;
        assert_eq!(json_of(&cleared)["cleared"], 1);
        assert!(state.requests().is_empty());

        let put = warp::test::request()
            .method("PUT")
            .path("/_sim/faults")
            .json(&json!({"throttle_ratio": 0.5, "retry_after_secs": 2}))
            .reply(&filter)
            .await;
        assert_eq!(put.status(), StatusCode::OK);
        assert_eq!(state.faults().throttle_ratio, 0.5);
        assert_eq!(state.faults().latency_ratio, 1.0);
        let bad = warp::test::request()
            .method("PUT")
            .path("/_sim/faults")
            .json(&json!({"throttle_ratio": 2.0}))
            .reply(&filter)
            .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let missing = warp::test::request()
            .path(&format!("/_sim/runs/{}", uuid::Uuid::new_v4()))
            .reply(&filter)
            .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn managed_identity_and_openid_metadata_through_the_router() {
        let (filter, state) = filter_and_state();
        let response = warp::test::request()
            .path("/msi/token?resource=https%3A%2F%2Fmanagement.azure.com&api-version=2019-08-01")
            .header("x-identity-header", state.config().identity_header.as_str())
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(json_of(&response)["expires_on"].is_string());
        assert_eq!(state.token_requests()[MANAGED_IDENTITY_KEY], 1);
        let response = warp::test::request()
            .path("/my-tenant/v2.0/.well-known/openid-configuration")
            .header("host", "127.0.0.1:9999")
            .reply(&filter)
            .await;
        assert_eq!(
            json_of(&response)["token_endpoint"],
            "http://127.0.0.1:9999/my-tenant/oauth2/v2.0/token"
        );
    }

    #[test]
    fn args_override_the_configuration() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            sim: SimArgs,
        }
        let cli = Cli::try_parse_from([
            "sim",
            "--time-scale",
            "0.01",
            "--throttle-ratio",
            "0.2",
            "--seed",
            "9",
        ])
        .expect("parses");
        assert_eq!(cli.sim.port, 7072);
        assert!(cli.sim.bind.is_loopback());
        let config = cli.sim.to_config().expect("valid");
        assert_eq!(config.time_scale, 0.01);
        assert_eq!(config.faults.throttle_ratio, 0.2);
        assert_eq!(config.seed, 9);
        let bad = Cli::try_parse_from(["sim", "--throttle-ratio", "3"]).expect("parses");
        assert!(bad.sim.to_config().is_err());
    }

    #[tokio::test]
    async fn start_serves_on_an_ephemeral_port_and_shuts_down() {
        let sim = Simulator::start(SimConfig::sample(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("starts");
        assert_ne!(sim.addr().port(), 0);
        assert_eq!(sim.url(), format!("http://127.0.0.1:{}", sim.addr().port()));
        let health = reqwest::get(format!("{}/_sim/health", sim.url()))
            .await
            .expect("answers");
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        let addr = sim.addr();
        sim.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}

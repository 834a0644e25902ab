//! Test harness: the handler and the simulator on loopback ports, talked to over HTTP. [`spawn_app`] runs
//! both inside the test's own process (most tests); [`stack`] starts real `procfwk` processes, for the
//! tests where the process is the point (its log on stderr, signals, crashes, restarts, the CLI). Both
//! return the same [`Stack`], so a test switches by changing one line. Each test gets its own handler and
//! simulator, so tests run in parallel without sharing state.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TENANT: &str = "12345678-1234-1234-1234-012345678910";
pub const SUBSCRIPTION: &str = "12345678-1234-1234-1234-012345678910";
pub const CLIENT_A: &str = "11111111-1111-1111-1111-111111111111";
pub const SECRET_A: &str = "sim-secret-A-7f3c9e1b";
pub const CLIENT_B: &str = "22222222-2222-2222-2222-222222222222";
pub const SECRET_B: &str = "sim-secret-B-5d2a8c4e";
pub const FORBIDDEN_CLIENT: &str = "44444444-4444-4444-4444-444444444444";
pub const FORBIDDEN_SECRET: &str = "sim-secret-F-0b1d3f5a";
pub const IDENTITY_HEADER: &str = "identity-header-9e8d7c6b";
pub const FUNCTION_KEY: &str = "function-key-1a2b3c4d5e";

/// A running `procfwk` child process; killed on drop.
pub struct Proc {
    child: Child,
    pub url: String,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Everything the process wrote to stderr and stdout so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (`libc::SIGTERM`, …) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) only sends a signal to our own child.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "kill({}, {signal})", self.child.id());
    }

    /// Wait up to `bound` for the process to exit; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + bound;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL the process (no clean-up of any kind) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has ended (by itself: an abort, a crash).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_procfwk"))
}

/// Start `procfwk <args>` and wait for its "listening on <url>" line.
pub fn spawn(args: &[&str], envs: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .env_remove("PROCFWK_FUNCTION_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn procfwk");
    let output = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = output.clone();
    std::thread::spawn(move || {
        let reader = BufReader::new(stdout);
        let mut sent = false;
        for line in reader.lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
            if !sent {
                if let Some(pos) = line.find("listening on ") {
                    let url = line[pos + "listening on ".len()..].trim().to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("procfwk {args:?} did not start"));
    Proc { child, url, output }
}

/// The simulator configuration used by most tests: the sample workers at time scale 0.01 and a
/// few principals, one of them without rights on the factories.
pub fn sim_config() -> Value {
    json!({
        "time_scale": 0.01,
        "seed": 7,
        "tenant_id": TENANT,
        "principals": [
            {"client_id": CLIENT_A, "client_secret": SECRET_A, "tenant_id": TENANT},
            {"client_id": CLIENT_B, "client_secret": SECRET_B, "tenant_id": TENANT},
            {"client_id": FORBIDDEN_CLIENT, "client_secret": FORBIDDEN_SECRET, "tenant_id": TENANT}
        ],
        "forbidden_clients": [FORBIDDEN_CLIENT],
        "secrets": {"procfwk-app-id": CLIENT_B, "procfwk-app-secret": SECRET_B},
        "identity_header": IDENTITY_HEADER,
    })
}

/// The handler or the simulator of a [`Stack`]: a child process, or a server in this process.
pub struct Node {
    pub url: String,
    proc: Option<Proc>,
}

impl Node {
    fn process(&self) -> &Proc {
        self.proc.as_ref().expect(
            "this test needs a real process: start it with stack()/stack_with(), not spawn_app()",
        )
    }

    /// Everything the process wrote to stderr and stdout so far (a note when it runs in-process: its
    /// log is not captured, so a test that checks the log must use a real process).
    pub fn output(&self) -> String {
        match &self.proc {
            Some(p) => p.output(),
            None => "(in-process server: no captured log)".to_string(),
        }
    }

    /// Send `signal` to the process (real processes only).
    pub fn signal(&self, signal: i32) {
        self.process().signal(signal)
    }

    pub fn pid(&self) -> u32 {
        self.process().pid()
    }

    /// The child process (real processes only).
    pub fn proc_mut(&mut self) -> &mut Proc {
        self.proc.as_mut().expect(
            "this test needs a real process: start it with stack()/stack_with(), not spawn_app()",
        )
    }
}

impl From<Proc> for Node {
    fn from(proc: Proc) -> Self {
        Self {
            url: proc.url.clone(),
            proc: Some(proc),
        }
    }
}

pub struct Stack {
    pub sim: Node,
    pub handler: Node,
    /// The runtime the in-process servers run on (`spawn_app`); stopped when the stack is dropped.
    in_process: Option<InProcess>,
    _dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

/// Start the simulator with `config` (written to a file in `dir`).
pub fn spawn_sim(config: &Value, dir: &std::path::Path) -> Proc {
    let path = dir.join("sim.json");
    std::fs::write(&path, config.to_string()).expect("write sim config");
    spawn(
        &[
            "sim",
            "--port",
            "0",
            "--config",
            path.to_str().unwrap_or_default(),
        ],
        &[],
    )
}

/// The environment of a handler wired to `sim` (ARM, Entra ID, Key Vault and managed identity all
/// pointed at the simulator), with trace logging on so secret-leak checks see everything; `extra`
/// entries replace or add to it.
pub fn handler_env(sim: &Proc, extra: &[(&str, String)]) -> Vec<(String, String)> {
    handler_env_for(&sim.url, extra)
}

/// [`handler_env`] for the simulator at `sim_url`.
pub fn handler_env_for(sim_url: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PROCFWK_ARM_ENDPOINT", sim_url.to_string()),
        ("AZURE_AUTHORITY_HOST", sim_url.to_string()),
        ("PROCFWK_KEYVAULT_ENDPOINT", sim_url.to_string()),
        ("IDENTITY_ENDPOINT", format!("{sim_url}/msi/token")),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_string()),
        ("PROCFWK_POLL_INITIAL_MS", "20".to_string()),
        ("PROCFWK_POLL_MAX_SECS", "0.1".to_string()),
        ("RUST_LOG", "trace".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

/// `procfwk serve --port 0` with `env`.
pub fn spawn_handler(env: &[(String, String)]) -> Proc {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    spawn(&["serve", "--port", "0"], &env)
}

/// Start the simulator with `config` and a handler wired to it.
pub fn stack_with(config: Value, handler_env_extra: &[(&str, String)]) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = spawn_sim(&config, dir.path());
    let handler = spawn_handler(&handler_env(&sim, handler_env_extra));
    Stack {
        sim: sim.into(),
        handler: handler.into(),
        in_process: None,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

/// The simulator and the handler of an in-process [`Stack`], served by a runtime of their own on a thread
/// of their own: the test's runtime may be paused, or blocked in a `std::process::Command`, without
/// stalling them. Dropping it stops both servers and the runtime.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The settings a handler started with the environment `env` would read (`Settings::from_lookup` over
/// the pairs, not the process environment).
pub fn settings_from(env: &[(String, String)]) -> procfwk::config::Settings {
    procfwk::config::Settings::from_lookup(|name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid handler settings")
}

/// Like [`stack`], in this process: the simulator (`azure_sim::Simulator`) with [`sim_config`] and the
/// handler (`procfwk::host::Application`) wired to it, both on 127.0.0.1 port 0.
pub fn spawn_app() -> Stack {
    spawn_app_with(sim_config(), &[])
}

/// Like [`stack_with`], in this process. `handler_env_extra` holds the same settings `stack_with` puts
/// in the child's environment; here they become a `Settings` value. Settings the library reads from the
/// process environment itself (the managed identity's `IDENTITY_ENDPOINT`, `PROCFWK_FAULT_POINT`,
/// `RUST_LOG`) do not apply: tests that need them use [`stack_with`].
pub fn spawn_app_with(config: Value, handler_env_extra: &[(&str, String)]) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim_config: azure_sim::SimConfig =
        serde_json::from_value(config).expect("simulator config");
    sim_config.validate().expect("valid simulator config");
    let extra: Vec<(String, String)> = handler_env_extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let (urls_tx, urls_rx) = std::sync::mpsc::channel::<(String, String)>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("in-process-stack".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                let sim = azure_sim::Simulator::start(sim_config, loopback)
                    .await
                    .expect("start the simulator");
                let sim_url = sim.url();
                let mut env = handler_env_for(&sim_url, &[]);
                for (k, v) in extra {
                    env.retain(|(ek, _)| *ek != k);
                    env.push((k, v));
                }
                let state =
                    procfwk::startup::AppState::new(settings_from(&env)).expect("handler state");
                let app = procfwk::host::Application::start(state, loopback)
                    .await
                    .expect("start the handler");
                let _ = urls_tx.send((sim_url, app.url()));
                let _ = stopped.await;
                // Like the SIGKILL that ends a child process: no drain, the runtime's shutdown below
                // cancels every task and closes every socket.
                drop((app, sim));
            });
            // Blocking work of a call cut at the stop (a store call) does not hold the test up.
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
        .expect("server thread");
    let (sim_url, handler_url) = urls_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the in-process simulator and handler started");
    Stack {
        sim: Node {
            url: sim_url,
            proc: None,
        },
        handler: Node {
            url: handler_url,
            proc: None,
        },
        in_process: Some(InProcess {
            stop: Some(stop),
            thread: Some(thread),
        }),
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

/// A fresh SQLite metadata database in `dir` with procfwk's sample (`db init`, `db seed-sample`).
pub fn sample_db(dir: &std::path::Path) -> String {
    let db = format!("sqlite:{}", dir.join("procfwk.db").display());
    for args in [&["db", "init"][..], &["db", "seed-sample"][..]] {
        let out = Command::new(binary())
            .args(args)
            .env("PROCFWK_METADATA_DB", &db)
            .output()
            .expect("run procfwk db");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    db
}

pub fn stack() -> Stack {
    stack_with(sim_config(), &[])
}

/// A 2.x request body for `pipeline` with service principal A.
pub fn v2_body(pipeline: &str, params: Value) -> Value {
    json!({
        "tenantId": TENANT, "applicationId": CLIENT_A, "authenticationKey": SECRET_A,
        "subscriptionId": SUBSCRIPTION, "resourceGroupName": "ADF.procfwk",
        "orchestratorName": "WorkersFactory", "orchestratorType": "ADF",
        "pipelineName": pipeline, "pipelineParameters": params,
    })
}

/// The same in the v1.x dialect.
pub fn v1_body(pipeline: &str, params: Value) -> Value {
    json!({
        "tenantId": TENANT, "applicationId": CLIENT_A, "authenticationKey": SECRET_A,
        "subscriptionId": SUBSCRIPTION, "resourceGroup": "ADF.procfwk", "factoryName": "WorkersFactory",
        "pipelineName": pipeline, "pipelineParameters": params,
    })
}

pub fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

impl Stack {
    /// Call a function through HTTP forwarding (`/api/<name>`).
    pub async fn call(&self, function: &str, body: &Value) -> (u16, Value) {
        self.call_raw(function, body.to_string().into_bytes()).await
    }

    pub async fn call_raw(&self, function: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/api/{function}", self.handler.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("handler reachable");
        let status = r.status().as_u16();
        let json = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Call a function the way the Functions host does without forwarding: the invocation payload on
    /// `POST /<name>`. Returns the caller's status and body from `Outputs.res`.
    pub async fn invoke(&self, function: &str, body: &Value) -> (u16, Value) {
        let payload = json!({
            "Data": {"req": {
                "Url": format!("http://localhost:7071/api/{function}"), "Method": "POST",
                "Query": {}, "Headers": {"Content-Type": ["application/json"], "x-functions-key": [FUNCTION_KEY]},
                "Params": {}, "Identities": [], "Body": body.to_string(),
            }},
            "Metadata": {"sys": {"MethodName": function}},
        });
        let r = self
            .client
            .post(format!("{}/{function}", self.handler.url))
            .json(&payload)
            .send()
            .await
            .expect("handler reachable");
        assert_eq!(
            r.status().as_u16(),
            200,
            "the handler's reply to the host is always 200"
        );
        let envelope: Value = r.json().await.expect("JSON envelope");
        let res = &envelope["Outputs"]["res"];
        assert!(envelope["Logs"].is_array());
        assert_eq!(
            res["headers"]["Content-Type"],
            "application/json; charset=utf-8"
        );
        let status = res["statusCode"].as_u64().unwrap_or(0) as u16;
        let body: Value =
            serde_json::from_str(res["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        sim_get(&self.client, &self.sim.url, path).await
    }

    pub async fn set_faults(&self, faults: Value) {
        let r = self
            .client
            .put(format!("{}/_sim/faults", self.sim.url))
            .json(&faults)
            .send()
            .await
            .expect("sim reachable");
        assert!(r.status().is_success());
    }

    /// Poll CheckPipelineStatus until SimpleStatus is no longer Running.
    pub async fn wait_complete(&self, body: &Value) -> Value {
        for _ in 0..500 {
            let (status, out) = self.call("CheckPipelineStatus", body).await;
            assert_eq!(status, 200, "{out}");
            if out["SimpleStatus"] != "Running" {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("worker did not complete");
    }
}

impl Stack {
    /// A token from the simulator for principal A (what a direct ARM caller would hold).
    pub async fn token(&self) -> String {
        let r: Value = self
            .client
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", self.sim.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_A),
                ("client_secret", SECRET_A),
                ("scope", "https://management.azure.com/.default"),
            ])
            .send()
            .await
            .expect("sim reachable")
            .json()
            .await
            .expect("token JSON");
        r["access_token"].as_str().unwrap_or_default().to_string()
    }

    /// The simulator's view of a run, straight from its ARM API.
    pub async fn arm_run(&self, run_id: &str) -> Value {
        let token = self.token().await;
        self.client
            .get(format!(
                "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/WorkersFactory/pipelineruns/{run_id}?api-version=2018-06-01",
                self.sim.url
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("sim reachable")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// Token requests the simulator has answered, per client id (`managed-identity` for the MSI endpoint).
    pub async fn token_requests(&self) -> Value {
        self.sim_get("/_sim/stats").await["tokenRequests"].clone()
    }

    /// How many Key Vault secret reads reached the simulator.
    pub async fn vault_reads(&self) -> usize {
        let log = self.sim_get("/_sim/requests").await;
        log.as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| {
                        r["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("/secrets/"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A client-credentials token answer (`access_token`, `token_type`, `expires_in`, …) from the Entra ID
/// token endpoint at `authority` (the simulator in tests); panics unless it is a 200.
pub async fn client_credentials_token(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    client_id: &str,
    client_secret: &str,
    scope: &str,
) -> Value {
    let response = http
        .post(format!("{authority}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("token JSON")
}

/// The rows `sql` reads from the metadata store `db`.
pub async fn query(db: &str, sql: &str) -> Vec<procfwk::store::Row> {
    struct Query(procfwk::store::Statement);
    #[async_trait::async_trait]
    impl procfwk::store::Transition for Query {
        type Output = Vec<procfwk::store::Row>;
        type Error = procfwk::store::StoreError;
        async fn apply(
            &self,
            tx: &mut dyn procfwk::store::Tx,
        ) -> Result<Vec<procfwk::store::Row>, procfwk::store::StoreError> {
            tx.query(&self.0, &[]).await
        }
    }
    let statement = procfwk::store::Statement {
        name: "test",
        sql: Box::leak(sql.to_string().into_boxed_str()),
    };
    procfwk::startup::open_store(db, None)
        .await
        .expect("open store")
        .run(&Query(statement))
        .await
        .expect("query")
}

/// GET `path` of the simulator at `sim_url` as JSON (`null` when the answer is not JSON).
pub async fn sim_get(http: &reqwest::Client, sim_url: &str, path: &str) -> Value {
    http.get(format!("{sim_url}{path}"))
        .send()
        .await
        .expect("sim reachable")
        .json()
        .await
        .unwrap_or(Value::Null)
}

//! `procfwk run`: plays Grandparent → Parent → Child → Infant by calling the metadata-mode functions over
//! HTTP exactly as the shipped ADF pipelines do — `StartExecution`, then per stage (in sequence)
//! `PrepareStage`, then per worker (in parallel) `ExecutePipelineV2` and `CheckPipelineStatus` every
//! `PipelineStatusCheckDuration` seconds, then `FinishExecution` — with a live progress display and a
//! final summary. Exits non-zero when the execution does not succeed, like the Parent pipeline.
//!
//! Without `--functions-url` the handler runs in this process; `--simulate` also starts the Azure
//! simulator in-process and wires handler, simulator and the metadata store together (`--sim-config`
//! gives it a JSON config instead of the sample's, e.g. to refuse a VM's power actions; both only with
//! the `devtools` feature).
//!
//! `--infant vm-power` plays `04-Infant-VmPower` for every worker instead: VmPower `start` (worker mode:
//! the VM comes from the worker's `procfwk.WorkerRuntimes` row), `status` until ready, the worker as in
//! the plain Infant, then VmPower `stop` — not after a failed start, and a failed stop does not change
//! the worker's result.

use anyhow::{anyhow, bail, Context};
use procfwk::config::Settings;
use procfwk::functions::AppState;
use procfwk::host::Application;
use procfwk::pipeline_retries;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run one batch (when the UseExecutionBatches property is 1).
    #[arg(long)]
    pub batch: Option<String>,
    /// Multiply every wait (and, with --simulate, every worker's duration) by this factor.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Call a running handler (e.g. `http://localhost:7071` or the Function App) instead of starting one.
    #[arg(long)]
    pub functions_url: Option<String>,
    /// Function key for --functions-url.
    #[arg(long, env = "PROCFWK_FUNCTION_KEY", hide_env_values = true)]
    pub function_key: Option<String>,
    /// Start the Azure simulator in-process and point the handler at it (no Azure at all).
    #[cfg(feature = "devtools")]
    #[arg(long)]
    pub simulate: bool,
    /// The metadata store of the in-process handler and of --report.
    #[command(flatten)]
    pub store: super::MetadataDb,
    /// The name the execution records as its caller (CallingOrchestratorName).
    #[arg(long, default_value = "procfwk-run")]
    pub calling_orchestrator: String,
    /// Only print the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Write every function call made (in order, with the fields each answer had) to this JSON file.
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
    /// Write the execution dashboard (as `procfwk db report --html` does) of the --db store to this file
    /// when the run is over.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Which Infant pipeline to play for each worker.
    #[arg(long, value_enum, default_value_t = Infant::Plain)]
    pub infant: Infant,
    /// With --simulate: the simulator's JSON config (keys left out keep the sample's values).
    #[cfg(feature = "devtools")]
    #[arg(long)]
    pub sim_config: Option<std::path::PathBuf>,
}

/// The Infant pipeline `procfwk run` plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Infant {
    /// `04-Infant`: execute, then check until over.
    Plain,
    /// `04-Infant-VmPower`: start the worker's VM, wait until ready, the worker, stop the VM.
    VmPower,
}

/// One call the run made, in order (tests compare this with the shipped pipelines).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Call {
    pub function: String,
    pub status: u16,
    /// The stage and worker the call was about, when its body named them.
    pub stage_id: Option<i64>,
    pub pipeline_id: Option<i64>,
    /// VmPower's `action`, when the body had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The top-level fields of the answer.
    pub fields: Vec<String>,
}

/// What happened to one worker.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkerReport {
    pub stage_id: i64,
    pub pipeline_id: i64,
    pub pipeline_name: String,
    pub run_id: Option<String>,
    pub status: String,
    pub seconds: f64,
    /// With the VmPower Infant: what happened to the VM (`started`, `not started: …`, `stop failed: …`).
    pub vm: Option<String>,
}

/// The outcome of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    pub execution_id: Option<String>,
    pub mode: Option<String>,
    pub succeeded: bool,
    pub message: String,
    pub workers: Vec<WorkerReport>,
    pub calls: Vec<Call>,
    pub seconds: f64,
    /// Workers of the execution by framework status, as FinishExecution reported them (blocked ones too).
    pub final_counts: std::collections::BTreeMap<String, i64>,
}

struct Caller {
    client: reqwest::Client,
    base: String,
    key: Option<String>,
    calls: Mutex<Vec<Call>>,
}

impl Caller {
    async fn call(&self, function: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .client
            .post(format!("{}/api/{function}", self.base))
            .json(body);
        if let Some(k) = &self.key {
            request = request.header("x-functions-key", k);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let out: Value = response.json().await.unwrap_or(Value::Null);
                Ok((status, out))
            }
            Err(e) => Err(e),
        };
        // A call that got no answer is recorded with status 0 (ADF sees a failed activity either way).
        let (status, out) = match &answer {
            Ok((status, out)) => (*status, out.clone()),
            Err(_) => (0, Value::Null),
        };
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(Call {
                function: function.to_string(),
                status,
                stage_id: body["stageId"].as_i64(),
                pipeline_id: body["pipelineId"].as_i64(),
                action: body["action"].as_str().map(String::from),
                fields: out
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default(),
            });
        }
        answer
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{function}: the handler is unreachable"))
    }

    /// Call `function` as its ADF activity does: a failed attempt (an answer other than 200, or none) is
    /// retried as the shipped pipelines retry that call ([`pipeline_retries`]), the interval scaled by
    /// `time_scale`; after the last retry the activity has failed.
    async fn activity(
        &self,
        function: &str,
        body: &Value,
        time_scale: f64,
    ) -> Result<Value, Failure> {
        let policy = pipeline_retries::for_call(function, body["action"].as_str());
        let mut retried = 0;
        loop {
            let failure = match self.call(function, body).await {
                Ok((200, out)) => return Ok(out),
                Ok((status, out)) => Failure {
                    problem: format!("{status}: {}", error_text(&out)),
                    out,
                },
                Err(e) => Failure {
                    problem: format!("{e:#}"),
                    out: Value::Null,
                },
            };
            if retried >= policy.retries {
                return Err(failure);
            }
            retried += 1;
            tokio::time::sleep(scaled(policy.interval(), time_scale)).await;
        }
    }
}

/// A failed activity: what went wrong, and the last answer's body (`null` when there was none).
struct Failure {
    problem: String,
    out: Value,
}

/// `wait` × `time_scale` (zero for a scale that is not a positive number).
fn scaled(wait: Duration, time_scale: f64) -> Duration {
    Duration::try_from_secs_f64(wait.as_secs_f64() * time_scale).unwrap_or(Duration::ZERO)
}

fn error_text(out: &Value) -> String {
    out["error"]["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| out.to_string())
}

impl WorkerReport {
    /// A worker of a `PrepareStage` answer, before anything happened to it.
    fn unknown(item: &Value) -> Self {
        Self {
            stage_id: item["stageId"].as_i64().unwrap_or(0),
            pipeline_id: item["pipelineId"].as_i64().unwrap_or(0),
            pipeline_name: item["PipelineName"].as_str().unwrap_or("?").to_string(),
            run_id: None,
            status: "Unknown".into(),
            seconds: 0.0,
            vm: None,
        }
    }
}

/// One Infant playing one worker of a `PrepareStage` answer: what it calls the functions with, and
/// where its progress lines go.
struct InfantRun {
    caller: Arc<Caller>,
    /// The worker as `PrepareStage` listed it.
    item: Value,
    time_scale: f64,
    quiet: bool,
    stage_name: String,
}

impl InfantRun {
    /// Play `infant` for the worker, from its first call to its result.
    async fn play(self, infant: Infant) -> WorkerReport {
        let started = Instant::now();
        let mut report = WorkerReport::unknown(&self.item);
        match infant {
            Infant::Plain => self.worker(&mut report, started).await,
            Infant::VmPower => self.with_vm(&mut report, started).await,
        }
        report
    }

    /// A progress line under the stage's name (none with `--quiet`).
    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            println!("  [{}] {line}", self.stage_name);
        }
    }

    /// The worker's keys, as every metadata-mode call about it names them.
    fn worker_ids(&self) -> Value {
        json!({"executionId": self.item["executionId"], "stageId": self.item["stageId"], "pipelineId": self.item["pipelineId"]})
    }

    async fn vm_power(&self, action: &str) -> Result<Value, Failure> {
        let mut body = json!({"action": action});
        for key in ["executionId", "stageId", "pipelineId"] {
            body[key] = self.item[key].clone();
        }
        self.caller
            .activity("VmPower", &body, self.time_scale)
            .await
    }

    /// `04-Infant-VmPower`: start the worker's VM (no stop if that fails), wait until ready, the worker
    /// as in the plain Infant, then stop the VM whatever happened since the start; a failed stop is
    /// reported and does not change the worker's result.
    async fn with_vm(&self, report: &mut WorkerReport, started: Instant) {
        let name = report.pipeline_name.clone();
        // Start VM; on failure the Infant fails at "VM Not Started" and Stop VM is skipped.
        if let Err(Failure { problem, .. }) = self.vm_power("start").await {
            report.status = format!("VmNotStarted: {problem}");
            report.vm = Some(format!("not started: {problem}"));
            report.seconds = started.elapsed().as_secs_f64();
            self.say(format_args!(
                "{name}: its VM could not be started: {problem}"
            ));
            return;
        }
        report.vm = Some("started".into());
        match self.wait_until_vm_ready().await {
            Ok(()) => {
                self.say(format_args!("{name}: its VM is ready"));
                self.worker(report, started).await;
            }
            Err(problem) => {
                report.status = format!("VmNotReady: {problem}");
                self.say(format_args!(
                    "{name}: its VM did not become ready: {problem}"
                ));
            }
        }
        // Stop VM on every path after a successful start; Worker Result follows it whatever it did.
        if let Err(Failure { problem, .. }) = self.vm_power("stop").await {
            report.vm = Some(format!("stop failed: {problem}"));
            self.say(format_args!("{name}: VmPower stop failed ({problem}); the lease expires by itself and the idle sweep deallocates the VM"));
        } else {
            report.vm = Some("started and released".into());
        }
        report.seconds = started.elapsed().as_secs_f64();
    }

    /// Wait Until VM Ready: Get VM Status, then Wait For VM, until the answer says `Ready`.
    async fn wait_until_vm_ready(&self) -> Result<(), String> {
        loop {
            match self.vm_power("status").await {
                Ok(out) if out["Ready"] == true => return Ok(()),
                Ok(out) => {
                    let secs = out["RetryAfterSeconds"].as_f64().unwrap_or(1.0).max(1.0);
                    tokio::time::sleep(Duration::from_secs_f64(secs * self.time_scale)).await;
                }
                Err(failure) => return Err(failure.problem),
            }
        }
    }

    /// The worker part of both Infants: start the worker, poll it until it is over; fills `report`.
    async fn worker(&self, report: &mut WorkerReport, started: Instant) {
        let name = report.pipeline_name.clone();
        let ids = self.worker_ids();
        let out = match self
            .caller
            .activity("ExecutePipelineV2", &ids, self.time_scale)
            .await
        {
            Ok(out) => out,
            Err(Failure { problem, .. }) => {
                report.status = format!("ExecuteWorkerPipelineError: {problem}");
                report.seconds = started.elapsed().as_secs_f64();
                self.say(format_args!("{name}: could not start: {problem}"));
                return;
            }
        };
        let run_id = out["RunId"].as_str().unwrap_or_default().to_string();
        report.run_id = Some(run_id.clone());
        self.say(format_args!("{name} started, run {run_id}"));
        let wait = scaled(
            Duration::try_from_secs_f64(
                out["PipelineStatusCheckDuration"].as_f64().unwrap_or(30.0),
            )
            .unwrap_or(Duration::ZERO),
            self.time_scale,
        );
        let mut check = ids;
        check["runId"] = json!(run_id);
        let last = match self.check_until_over(&check, wait).await {
            Ok(last) => last,
            Err(problem) => {
                // The check activity failed after its retries: the Until, and the Infant, fail (the
                // run itself is left to ADF).
                report.status = format!("GetWorkerPipelineStatusError: {problem}");
                report.seconds = started.elapsed().as_secs_f64();
                return;
            }
        };
        report.status = last["WorkerStatus"]
            .as_str()
            .unwrap_or(last["ActualStatus"].as_str().unwrap_or("Unknown"))
            .to_string();
        report.seconds = started.elapsed().as_secs_f64();
        self.say(format_args!(
            "{name} {} ({}) after {:.2}s",
            report.status,
            last["ActualStatus"].as_str().unwrap_or("?"),
            report.seconds
        ));
    }

    /// `CheckPipelineStatus` every `wait` until the run is no longer `Running`: its last answer, or
    /// what went wrong when the check activity failed. ADF's Until is a do-while: the first check comes
    /// straight after the start, even when the start already reported a finished run — the check is
    /// what records the result.
    async fn check_until_over(&self, check: &Value, wait: Duration) -> Result<Value, String> {
        loop {
            match self
                .caller
                .activity("CheckPipelineStatus", check, self.time_scale)
                .await
            {
                Ok(out) if out["SimpleStatus"] != "Running" => return Ok(out),
                Ok(_) => tokio::time::sleep(wait).await,
                Err(Failure { problem, .. }) => return Err(problem),
            }
        }
    }
}

/// Play the hierarchy against the handler at `base`.
pub async fn play(base: String, key: Option<String>, args: &RunArgs) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let mut play = Parent {
        caller: Arc::new(Caller {
            client: reqwest::Client::new(),
            base,
            key,
            calls: Mutex::new(Vec::new()),
        }),
        args,
        report: RunReport {
            execution_id: None,
            mode: None,
            succeeded: false,
            message: String::new(),
            workers: Vec::new(),
            calls: Vec::new(),
            seconds: 0.0,
            final_counts: Default::default(),
        },
        stopped: None,
    };
    let mut start = json!({"callingOrchestratorName": args.calling_orchestrator});
    if let Some(b) = &args.batch {
        start["batchName"] = json!(b);
    }
    let out = match play.activity("StartExecution", &start).await {
        Ok(out) => out,
        Err(Failure { problem, .. }) => {
            play.report.message = format!("StartExecution failed ({problem})");
            return Ok(play.into_report());
        }
    };
    let execution_id = out["ExecutionId"].as_str().unwrap_or_default().to_string();
    play.report.execution_id = Some(execution_id.clone());
    play.report.mode = out["Mode"].as_str().map(String::from);
    if !args.quiet {
        println!(
            "execution {execution_id} ({}), {} stage(s)",
            out["Mode"].as_str().unwrap_or("?"),
            out["Stages"].as_array().map_or(0, Vec::len)
        );
    }
    let stages = out["Stages"].as_array().cloned().unwrap_or_default();
    for stage in &stages {
        play.stage(&execution_id, stage).await?;
    }
    play.finish(&execution_id).await;
    let mut report = play.into_report();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The Parent and Child pipelines' part of a run: the stages in sequence, each stage's workers in
/// parallel, then the execution's end.
struct Parent<'a> {
    caller: Arc<Caller>,
    args: &'a RunArgs,
    report: RunReport,
    /// Why the execution stopped: the first stage that could not be prepared.
    stopped: Option<String>,
}

impl Parent<'_> {
    async fn activity(&self, function: &str, body: &Value) -> Result<Value, Failure> {
        self.caller
            .activity(function, body, self.args.time_scale)
            .await
    }

    /// The report, with every call made.
    fn into_report(mut self) -> RunReport {
        self.report.calls = self
            .caller
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        self.report
    }

    /// Prepare one stage and run its workers.
    async fn stage(&mut self, execution_id: &str, stage: &Value) -> anyhow::Result<()> {
        let stage_id = stage["StageId"].clone();
        let stage_name = format!("{} {}", stage_id, stage["StageName"].as_str().unwrap_or(""));
        let prepared = self
            .activity(
                "PrepareStage",
                &json!({"executionId": execution_id, "stageId": stage_id}),
            )
            .await;
        let out = match prepared {
            Ok(out) => out,
            Err(failure) => {
                let message = match failure.out {
                    Value::Null => failure.problem,
                    out => error_text(&out),
                };
                if !self.args.quiet {
                    println!("stage {stage_name}: {message}");
                }
                // Like ADF's sequential ForEach in the Parent, a failed stage does not stop the loop:
                // each later stage is prepared (and refused) in turn.
                self.stopped.get_or_insert(message);
                return Ok(());
            }
        };
        let workers = out["Workers"].as_array().cloned().unwrap_or_default();
        if !self.args.quiet {
            println!(
                "stage {stage_name}: {} worker(s) in parallel",
                workers.len()
            );
        }
        self.run_workers(&stage_name, workers).await
    }

    /// A stage's workers, each under its own Infant, all at once; with live progress: the stage's
    /// counts each time one of its workers finishes.
    async fn run_workers(&mut self, stage_name: &str, workers: Vec<Value>) -> anyhow::Result<()> {
        let done_before = self.report.workers.len();
        let tasks: Vec<_> = workers
            .into_iter()
            .map(|item| {
                let run = InfantRun {
                    caller: self.caller.clone(),
                    item,
                    time_scale: self.args.time_scale,
                    quiet: self.args.quiet,
                    stage_name: stage_name.to_string(),
                };
                tokio::spawn(run.play(self.args.infant))
            })
            .collect();
        let total = tasks.len();
        let mut pending: futures::stream::FuturesUnordered<_> = tasks.into_iter().collect();
        let mut tally = std::collections::BTreeMap::<String, usize>::new();
        while let Some(joined) = futures::StreamExt::next(&mut pending).await {
            let worker = joined.map_err(|e| anyhow!("a worker task failed: {e}"))?;
            *tally
                .entry(worker.status.split(':').next().unwrap_or("").to_string())
                .or_default() += 1;
            self.report.workers.push(worker);
            if !self.args.quiet {
                let parts: Vec<String> = tally.iter().map(|(k, v)| format!("{v} {k}")).collect();
                println!(
                    "stage {stage_name}: {} running, {}",
                    (total + done_before).saturating_sub(self.report.workers.len()),
                    parts.join(", ")
                );
            }
        }
        Ok(())
    }

    /// `FinishExecution`, and the run's outcome: its workers by status, whether it succeeded and why.
    async fn finish(&mut self, execution_id: &str) {
        let finished = self
            .activity("FinishExecution", &json!({"executionId": execution_id}))
            .await;
        let counts = match &finished {
            Ok(out) => &out["Workers"],
            Err(failure) => &failure.out["error"]["details"]["Workers"],
        };
        self.report.final_counts = counts
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        self.report.succeeded = finished.is_ok() && self.stopped.is_none();
        self.report.message = match (&self.stopped, &finished) {
            (Some(m), _) => format!("stopped: {m}"),
            (None, Ok(_)) => "all workers succeeded".into(),
            (
                None,
                Err(Failure {
                    out: Value::Null,
                    problem,
                }),
            ) => problem.clone(),
            (None, Err(Failure { out, .. })) => error_text(out),
        };
    }
}

fn print_summary(report: &RunReport) {
    println!();
    if !report.final_counts.is_empty() {
        let parts: Vec<String> = report
            .final_counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!("workers by status: {}", parts.join(", "));
    }
    println!(
        "{:<6} {:<9} {:<20} {:<22} {:>8}",
        "stage", "pipeline", "name", "status", "seconds"
    );
    for w in &report.workers {
        println!(
            "{:<6} {:<9} {:<20} {:<22} {:>8.2}",
            w.stage_id,
            w.pipeline_id,
            w.pipeline_name,
            w.status.chars().take(22).collect::<String>(),
            w.seconds
        );
    }
    for w in &report.workers {
        if let Some(vm) = w.vm.as_deref().filter(|v| v.starts_with("stop failed")) {
            println!(
                "worker {} ({}): VM {vm}; left to the lease expiry and the idle sweep",
                w.pipeline_id, w.pipeline_name
            );
        }
    }
    println!(
        "\nexecution {} {} in {:.2}s: {}",
        report.execution_id.as_deref().unwrap_or("-"),
        if report.succeeded {
            "succeeded"
        } else {
            "FAILED"
        },
        report.seconds,
        report.message
    );
}

/// With `--simulate`: the simulator started in this process, and `settings` pointed at it.
#[cfg(feature = "devtools")]
async fn start_simulator(
    args: &RunArgs,
    settings: &mut Settings,
) -> anyhow::Result<Option<azure_sim::RunningSim>> {
    use azure_sim::{SimConfig, Simulator};
    if !args.simulate {
        return Ok(None);
    }
    // The handler reaches the simulator as it reaches Azure: ARM, Entra ID, and the managed
    // identity endpoint (set before any credential is created).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let base = match &args.sim_config {
        Some(path) => {
            SimConfig::load(path).with_context(|| format!("simulator config {}", path.display()))?
        }
        None => SimConfig::sample(),
    };
    let config = SimConfig {
        time_scale: args.time_scale,
        ..base
    };
    std::env::set_var("IDENTITY_ENDPOINT", format!("{url}/msi/token"));
    std::env::set_var("IDENTITY_HEADER", &config.identity_header);
    let running = Simulator::start(config, ([127, 0, 0, 1], port).into())
        .await
        .context("could not start the simulator")?;
    settings.arm_endpoint = url::Url::parse(&url)?;
    settings.authority_host = url::Url::parse(&url)?;
    settings.keyvault_endpoint = Some(url::Url::parse(&url)?);
    if !args.quiet {
        println!("simulator on {url} (time scale {})", args.time_scale);
    }
    Ok(Some(running))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    #[cfg(feature = "devtools")]
    let mut sim = None;
    let mut app = None;
    let base = match &args.functions_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let mut settings = Settings::from_env().context("invalid configuration")?;
            settings.poll_initial = Duration::from_millis(20);
            #[cfg(feature = "devtools")]
            {
                sim = start_simulator(&args, &mut settings).await?;
            }
            let store = procfwk::startup::open_store(&args.store.db, None)
                .await
                .context("could not open the metadata store")?;
            let state = AppState::with_store(settings, store)?;
            let started = Application::start(state, ([127, 0, 0, 1], 0).into()).await?;
            let url = started.url();
            app = Some(started);
            url
        }
    };
    let report = play(base, args.function_key.clone(), &args).await;
    if let Some(a) = app {
        a.shutdown().await;
    }
    #[cfg(feature = "devtools")]
    if let Some(s) = sim {
        s.shutdown().await;
    }
    let report = report?;
    if let Some(path) = &args.record {
        let calls = serde_json::to_vec_pretty(&report.calls)?;
        std::fs::write(path, calls)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    print_summary(&report);
    match &args.report {
        Some(path) => {
            let store = procfwk::startup::open_store(&args.store.db, None)
                .await
                .context("could not open the metadata store for the report")?;
            super::db::write_report(&store, procfwk::dashboard::Options::default(), path).await?;
            println!("dashboard: {}", path.display());
        }
        None => println!(
            "dashboard: run with --report procfwk-report.html, or `procfwk db report --html procfwk-report.html`"
        ),
    }
    if !report.succeeded {
        bail!("the execution did not succeed: {}", report.message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller_of(base: String) -> Arc<Caller> {
        Arc::new(Caller {
            client: reqwest::Client::new(),
            base,
            key: None,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn statuses(caller: &Caller) -> Vec<u16> {
        caller
            .calls
            .lock()
            .map(|c| c.iter().map(|c| c.status).collect())
            .unwrap_or_default()
    }

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1)
    }

    #[tokio::test]
    async fn a_worker_call_is_retried_as_the_pipelines_retry_it_across_a_restart_then_gives_up() {
        let port = closed_port();
        let caller = caller_of(format!("http://127.0.0.1:{port}"));
        let policy = pipeline_retries::for_call("ExecutePipelineV2", None);
        let time_scale = 0.01;
        let started = Instant::now();
        let call = {
            let caller = caller.clone();
            tokio::spawn(async move {
                let body = json!({"executionId": "not-a-guid", "stageId": 1, "pipelineId": 1});
                caller
                    .activity("ExecutePipelineV2", &body, time_scale)
                    .await
                    .err()
                    .map(|f| f.problem)
            })
        };
        // The handler is down for the first attempt, then up (and refusing this body with a 400)
        // for the retries.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = AppState::new(Settings::default()).expect("state");
        let app = Application::start(state, ([127, 0, 0, 1], port).into())
            .await
            .expect("handler on the same port");
        let problem = call.await.ok().flatten().unwrap_or_default();
        let seen = statuses(&caller);
        let mut expected = vec![400; policy.retries as usize];
        expected.insert(0, 0);
        assert_eq!(seen, expected, "one refused connection, then the retries");
        assert!(problem.starts_with("400"), "{problem}");
        assert!(
            started.elapsed() >= scaled(policy.interval(), time_scale) * policy.retries,
            "the retries wait the (scaled) interval"
        );
        app.shutdown().await;
    }

    #[tokio::test]
    async fn start_execution_is_not_repeated() {
        let caller = caller_of(format!("http://127.0.0.1:{}", closed_port()));
        let failed = caller
            .activity("StartExecution", &json!({}), 0.01)
            .await
            .is_err();
        assert!(failed);
        assert_eq!(statuses(&caller), [0]);
    }
}

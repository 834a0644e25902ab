//! Crash consistency (issue #10): the real handler, the simulator and the embedded SQLite store, with
//! the handler killed — by a deterministic fault point (`PROCFWK_FAULT_POINT`, see `procfwk::fault`) at
//! each named moment, and by SIGKILL at random times — then restarted and driven on as the shipped
//! pipelines would: the failed call retried (a few times, a short interval apart); when the handler
//! stays down longer than those retries, the Infant fails (its stage's other Infants and the later
//! stages go on, as ADF's ForEach loops do), then the Parent fails, and a new Parent run restarts the
//! execution from its point of failure.
//!
//! After each scenario: 0 duplicate runs (the simulator's runs per worker and execution), 0 simulator
//! runs the store does not know, 0 rows left Running/Preparing once the execution has ended, and no
//! restart refused once the Parent's run is over and no worker run is in progress.
//!
//! Knobs: `PROCFWK_CRASH_KILLS` (random SIGKILLs in total, default 100), `PROCFWK_CRASH_SEED` (default:
//! from the clock; printed), `PROCFWK_CRASH_PARALLEL` (scenarios at once, default 2).

mod support;

use futures::future::join_all;
use procfwk::fault;
use procfwk::store::{Row, Statement, StoreError, Transition, Tx};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use support::*;

/// The simulator's time scale: the sample's waits (2–10 s) take 0.1–0.5 s.
const TIME_SCALE: f64 = 0.05;
/// The driver's retries of a failed call (as the pipelines' activity retries): this many, this far apart.
const RETRIES: u32 = 10;
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Handler restart delays: within the retries, and longer than all of them (the Parent fails).
const SHORT_RESTART: Duration = Duration::from_millis(300);
const LONG_RESTART: Duration = Duration::from_millis(6_000);
/// A scenario that has not ended by then is stuck.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(120);
/// The Parent's stand-in in the simulator: a long wait in the framework factory.
const PARENT_PIPELINE: &str = "Wait Long";
const FACTORY: &str = "FrameworkFactory";

fn handler_settings() -> Vec<(&'static str, String)> {
    vec![
        ("RUST_LOG", "info".into()),
        // A claim's lifetime (budget + grace) of 3.5 s, inside the driver's 5 s of retries.
        ("PROCFWK_REQUEST_BUDGET_SECS", "3".into()),
        ("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "2".into()),
        ("PROCFWK_CLAIM_GRACE_SECS", "0.5".into()),
    ]
}

/// What a scenario does to the handler.
#[derive(Clone, Debug)]
enum Fault {
    /// Abort at the n-th time the point is reached; restart after the delay.
    Point {
        name: &'static str,
        nth: u32,
        restart: Duration,
    },
    /// SIGKILL this many times at random moments (one kill in ten is followed by the long restart
    /// delay).
    Random { kills: usize, seed: u64 },
}

/// The handler that gets killed, and how to bring it back.
struct Handler {
    env: Vec<(String, String)>,
    proc: Mutex<Option<Proc>>,
    url: RwLock<String>,
    /// Delay before the next restart.
    restart_after: Mutex<Duration>,
    deaths: AtomicUsize,
    fault_fired: AtomicBool,
    stop: AtomicBool,
}

impl Handler {
    fn start(env: Vec<(String, String)>, fault_env: Option<String>) -> Arc<Self> {
        let mut first = env.clone();
        if let Some(point) = fault_env {
            first.push((fault::ENV.into(), point));
        }
        let proc = spawn_handler(&first);
        let url = proc.url.clone();
        Arc::new(Self {
            env,
            proc: Mutex::new(Some(proc)),
            url: RwLock::new(url),
            restart_after: Mutex::new(SHORT_RESTART),
            deaths: AtomicUsize::new(0),
            fault_fired: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    fn url(&self) -> String {
        self.url.read().map(|u| u.clone()).unwrap_or_default()
    }

    fn is_up(&self) -> bool {
        self.proc.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    /// SIGKILL it now (if it is up); it comes back after `restart`.
    fn kill(&self, restart: Duration) -> bool {
        let mut guard = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.as_mut() else {
            return false;
        };
        if p.has_exited() {
            return false;
        }
        *self.restart_after.lock().unwrap_or_else(|e| e.into_inner()) = restart;
        p.kill();
        true
    }

    /// Watch the process: when it has died (killed or aborted at a fault point), wait the restart
    /// delay and start it again (without any fault point).
    async fn supervise(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let dead = {
                let mut guard = self.proc.lock().unwrap_or_else(|e| e.into_inner());
                let exited = guard.as_mut().is_some_and(|p| p.has_exited());
                if exited {
                    guard.take()
                } else {
                    None
                }
            };
            if let Some(dead) = dead {
                // Let the output readers catch the last lines before looking for the abort.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if dead
                    .output()
                    .contains(&format!("{}: aborting at", fault::ENV))
                {
                    self.fault_fired.store(true, Ordering::SeqCst);
                }
                drop(dead);
                self.deaths.fetch_add(1, Ordering::SeqCst);
                let delay = *self.restart_after.lock().unwrap_or_else(|e| e.into_inner());
                tokio::time::sleep(delay).await;
                let env = self.env.clone();
                let proc = tokio::task::spawn_blocking(move || spawn_handler(&env))
                    .await
                    .expect("respawn");
                *self.url.write().unwrap_or_else(|e| e.into_inner()) = proc.url.clone();
                *self.proc.lock().unwrap_or_else(|e| e.into_inner()) = Some(proc);
                *self.restart_after.lock().unwrap_or_else(|e| e.into_inner()) = SHORT_RESTART;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One scenario's world: simulator, metadata database, the handler, and what was observed.
struct World {
    sim: Proc,
    db: String,
    _dir: tempfile::TempDir,
    handler: Arc<Handler>,
    http: reqwest::Client,
    started: chrono::DateTime<chrono::Utc>,
    report: Mutex<Observed>,
}

#[derive(Debug, Default, Clone)]
struct Observed {
    parent_restarts: usize,
    /// Restarts refused (409) although the Parent's run was over and no worker run was going.
    refused_restarts: usize,
    /// Answers the driver did not expect (for diagnosis).
    unexpected: Vec<String>,
}

/// The answer to one call: the HTTP status and body, or no answer (connection refused or dropped).
type Answer = Option<(u16, Value)>;

fn retryable(answer: &Answer) -> bool {
    match answer {
        None => true,
        Some((status, _)) if *status >= 500 => true,
        Some((409, body)) => {
            let message = body.to_string();
            message.contains("another call is starting") || message.contains("not settled yet")
        }
        _ => false,
    }
}

impl World {
    async fn new(fault_env: Option<String>) -> Self {
        Self::with(fault_env, &[]).await
    }

    /// The same with more handler settings.
    async fn with(fault_env: Option<String>, settings: &[(&'static str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sample_db(dir.path());
        let mut config = sim_config();
        config["time_scale"] = json!(TIME_SCALE);
        let sim = spawn_sim(&config, dir.path());
        let mut extra = handler_settings();
        extra.extend(settings.iter().cloned());
        extra.push(("PROCFWK_METADATA_DB", db.clone()));
        let env = handler_env(&sim, &extra);
        let handler = Handler::start(env, fault_env);
        tokio::spawn(Arc::clone(&handler).supervise());
        Self {
            sim,
            db,
            _dir: dir,
            handler,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            started: chrono::Utc::now(),
            report: Mutex::new(Observed::default()),
        }
    }

    fn note(&self, what: String) {
        if let Ok(mut r) = self.report.lock() {
            r.unexpected.push(what);
        }
    }

    async fn call_once(&self, function: &str, body: &Value) -> Answer {
        let response = self
            .http
            .post(format!("{}/api/{function}", self.handler.url()))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.ok()?;
        Some((status, body))
    }

    /// A call as an ADF activity with retries makes it: the final answer, or `None` once the retries
    /// are used up.
    async fn call(&self, function: &str, body: &Value) -> Answer {
        let mut answer = self.call_once(function, body).await;
        for _ in 0..RETRIES {
            if !retryable(&answer) {
                return answer;
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
            answer = self.call_once(function, body).await;
        }
        if retryable(&answer) {
            None
        } else {
            answer
        }
    }

    // ---------------------------------------------------------------- the simulator's view

    async fn arm_token(&self) -> String {
        let token = client_credentials_token(
            &self.http,
            &self.sim.url,
            TENANT,
            CLIENT_A,
            SECRET_A,
            "https://management.azure.com/.default",
        )
        .await;
        token["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn factory_url(&self, tail: &str) -> String {
        format!(
            "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/{FACTORY}/{tail}?api-version=2018-06-01",
            self.sim.url
        )
    }

    /// Every run in the framework factory (workers and Parents).
    async fn sim_runs(&self) -> Vec<Value> {
        let token = self.arm_token().await;
        let mut runs = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut body = json!({
                "lastUpdatedAfter": (self.started - chrono::Duration::hours(1)).to_rfc3339(),
                "lastUpdatedBefore": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            });
            if let Some(c) = &continuation {
                body["continuationToken"] = json!(c);
            }
            let page: Value = self
                .http
                .post(self.factory_url("queryPipelineRuns"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("sim reachable")
                .json()
                .await
                .expect("runs JSON");
            runs.extend(page["value"].as_array().cloned().unwrap_or_default());
            match page["continuationToken"].as_str() {
                Some(c) => continuation = Some(c.to_string()),
                None => return runs,
            }
        }
    }

    /// A new Parent run (the stand-in that "holds" the execution while it is driven).
    async fn new_parent(&self) -> String {
        self.create_run(PARENT_PIPELINE, &json!({"WaitTime": 1_000_000}))
            .await
    }

    /// `createRun` straight at the simulator's ARM API.
    async fn create_run(&self, pipeline: &str, parameters: &Value) -> String {
        let token = self.arm_token().await;
        let created: Value = self
            .http
            .post(self.factory_url(&format!("pipelines/{pipeline}/createRun")))
            .bearer_auth(&token)
            .json(parameters)
            .send()
            .await
            .expect("sim reachable")
            .json()
            .await
            .expect("createRun JSON");
        created["runId"].as_str().expect("run id").to_string()
    }

    /// The Parent failed: its run ends (cancelled), and the runs its Infants left behind end too.
    async fn end_parent(&self, run_id: &str) {
        let token = self.arm_token().await;
        let _ = self
            .http
            .post(self.factory_url(&format!("pipelineruns/{run_id}/cancel")))
            .bearer_auth(&token)
            .send()
            .await;
        for _ in 0..600 {
            let runs = self.sim_runs().await;
            let going = runs.iter().any(|r| {
                matches!(
                    r["status"].as_str(),
                    Some("Queued" | "InProgress" | "Canceling")
                ) && (r["runId"] == json!(run_id) || r["pipelineName"] != json!(PARENT_PIPELINE))
            });
            if !going {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("runs did not end");
    }

    // ---------------------------------------------------------------- the pipelines

    /// The Parent: start (or restart) the execution, run its stages, finish it. `Err` when it fails.
    async fn parent(&self, parent_run_id: &str, restart: bool) -> Result<(), String> {
        let body = json!({"callingOrchestratorName": FACTORY, "parentRunId": parent_run_id});
        let mut started = None;
        for _ in 0..40 {
            match self.call("StartExecution", &body).await {
                Some((200, out)) => {
                    started = Some(out);
                    break;
                }
                Some((409, out)) if restart => {
                    // The previous Parent's run is over and every worker run has ended: nothing
                    // may refuse this restart.
                    if let Ok(mut r) = self.report.lock() {
                        r.refused_restarts += 1;
                    }
                    self.note(format!("restart refused: {out}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return Err(format!("StartExecution: {other:?}")),
            }
        }
        let started = started.ok_or("StartExecution refused every time")?;
        let execution_id = started["ExecutionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stages: Vec<i64> = started["Stages"]
            .as_array()
            .map(|s| s.iter().filter_map(|x| x["StageId"].as_i64()).collect())
            .unwrap_or_default();
        // As in ADF: a failed Infant fails its Child, but the Parent's sequential stage loop goes on to
        // the next stage; the Parent fails when a stage is all blocked, when one of its own calls
        // fails, or at FinishExecution.
        let mut infant_failed = None;
        for stage in stages {
            let prepared = self
                .call(
                    "PrepareStage",
                    &json!({"executionId": execution_id, "stageId": stage}),
                )
                .await;
            let workers = match prepared {
                Some((200, out)) => out["Workers"].as_array().cloned().unwrap_or_default(),
                other => {
                    let why = format!("PrepareStage {stage}: {other:?}");
                    return Err(infant_failed.map_or(why.clone(), |i| format!("{i}; {why}")));
                }
            };
            let infants = join_all(workers.iter().map(|w| self.infant(w))).await;
            if let Some(failed) = infants.into_iter().find_map(Result::err) {
                infant_failed = Some(failed);
            }
        }
        match self
            .call("FinishExecution", &json!({"executionId": execution_id}))
            .await
        {
            Some((200, _)) => Ok(()),
            other => {
                let why = format!("FinishExecution: {other:?}");
                Err(infant_failed.map_or(why.clone(), |i| format!("{i}; {why}")))
            }
        }
    }

    /// An Infant: Execute, then Check until the run is over.
    async fn infant(&self, worker: &Value) -> Result<(), String> {
        let body = json!({
            "executionId": worker["executionId"], "stageId": worker["stageId"],
            "pipelineId": worker["pipelineId"],
        });
        let run_id = match self.call("ExecutePipelineV2", &body).await {
            Some((200, out)) => out["RunId"].as_str().unwrap_or_default().to_string(),
            Some((409, out)) if out["details"]["WorkerStatus"].is_string() => {
                // Already settled (an earlier attempt got that far): nothing left to do.
                return Ok(());
            }
            other => return Err(format!("Execute {body}: {other:?}")),
        };
        let mut check = body.clone();
        check["runId"] = json!(run_id);
        for _ in 0..2_000 {
            match self.call("CheckPipelineStatus", &check).await {
                Some((200, out)) if out["SimpleStatus"] == "Running" => {}
                Some((200, out)) if out["ActualStatus"] == "Succeeded" => return Ok(()),
                Some((200, out)) => {
                    self.note(format!("worker {body} ended {out}"));
                    return Ok(());
                }
                other => return Err(format!("Check {check}: {other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("worker {body} never ended"))
    }

    /// Drive the execution to its end through every Parent failure; true if it ended in time.
    async fn drive(&self) -> bool {
        let deadline = Instant::now() + SCENARIO_DEADLINE;
        let mut parent = self.new_parent().await;
        let mut restart = false;
        while Instant::now() < deadline {
            match self.parent(&parent, restart).await {
                Ok(()) => return true,
                Err(why) => {
                    note_parent_failure(&why);
                    self.end_parent(&parent).await;
                    if let Ok(mut r) = self.report.lock() {
                        r.parent_restarts += 1;
                    }
                    // Give the handler time to come back before the new Parent's first call.
                    while !self.handler.is_up() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    parent = self.new_parent().await;
                    restart = true;
                }
            }
        }
        false
    }

    // ---------------------------------------------------------------- the verdict

    async fn rows(&self, sql: &'static str) -> Vec<Row> {
        let store = procfwk::startup::open_store(&self.db, None)
            .await
            .expect("open store");
        store
            .run(&Query(Statement { name: "test", sql }))
            .await
            .expect("query")
    }

    async fn verdict(&self, ended: bool) -> Verdict {
        let recorded = self
            .rows("SELECT LocalExecutionId, PipelineName, PipelineRunId FROM procfwk.ExecutionLog WHERE PipelineRunId IS NOT NULL \
                   UNION SELECT LocalExecutionId, PipelineName, PipelineRunId FROM procfwk.CurrentExecution WHERE PipelineRunId IS NOT NULL")
            .await;
        let known: HashMap<String, (String, String)> = recorded
            .iter()
            .filter_map(|r| {
                Some((
                    r.guid("PipelineRunId").ok()?.to_string(),
                    (
                        r.guid("LocalExecutionId").ok()?.to_string(),
                        r.text("PipelineName").ok()?,
                    ),
                ))
            })
            .collect();
        let mut per_worker: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        let mut unknown = 0;
        for run in self.sim_runs().await {
            if run["pipelineName"] == json!(PARENT_PIPELINE) {
                continue;
            }
            let id = run["runId"].as_str().unwrap_or_default().to_lowercase();
            match known.get(&id) {
                Some(worker) => {
                    per_worker.entry(worker.clone()).or_default().insert(id);
                }
                None => unknown += 1,
            }
        }
        let duplicates = per_worker.values().map(|runs| runs.len() - 1).sum();
        let left = self
            .rows("SELECT COUNT(0) AS N FROM procfwk.CurrentExecution WHERE PipelineStatus IN ('Running', 'Preparing')")
            .await
            .first()
            .and_then(|r| r.i64("N").ok())
            .unwrap_or(-1);
        let observed = self.report.lock().map(|r| r.clone()).unwrap_or_default();
        Verdict {
            ended,
            duplicates,
            unknown,
            left_running: left,
            refused: observed.refused_restarts,
            parent_restarts: observed.parent_restarts,
            deaths: self.handler.deaths.load(Ordering::SeqCst),
            fault_fired: self.handler.fault_fired.load(Ordering::SeqCst),
            unexpected: observed.unexpected,
        }
    }
}

fn note_parent_failure(why: &str) {
    eprintln!(
        "  parent failed: {}",
        why.chars().take(300).collect::<String>()
    );
}

struct Query(Statement);

#[async_trait::async_trait]
impl Transition for Query {
    type Output = Vec<Row>;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<Row>, StoreError> {
        tx.query(&self.0, &[]).await
    }
}

#[derive(Debug, Clone)]
struct Verdict {
    ended: bool,
    duplicates: usize,
    unknown: usize,
    left_running: i64,
    refused: usize,
    parent_restarts: usize,
    deaths: usize,
    fault_fired: bool,
    unexpected: Vec<String>,
}

impl Verdict {
    fn clean(&self) -> bool {
        self.ended
            && self.duplicates == 0
            && self.unknown == 0
            && self.left_running == 0
            && self.refused == 0
    }

    fn outcome(&self) -> String {
        if self.clean() {
            return format!(
                "ok ({} deaths, {} parent restarts)",
                self.deaths, self.parent_restarts
            );
        }
        format!(
            "FAILED ended={} duplicates={} unknown-runs={} left-running={} refused-restarts={}",
            self.ended, self.duplicates, self.unknown, self.left_running, self.refused
        )
    }
}

async fn run_scenario(fault: Fault) -> Verdict {
    let fault_env = match &fault {
        Fault::Point { name, nth, .. } => Some(format!("{name}@{nth}")),
        Fault::Random { .. } => None,
    };
    let world = World::new(fault_env).await;
    if let Fault::Point { restart, .. } = &fault {
        *world
            .handler
            .restart_after
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = *restart;
    }
    let killer = match &fault {
        Fault::Random { kills, seed } => {
            let handler = Arc::clone(&world.handler);
            let (kills, seed) = (*kills, *seed);
            Some(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut done = 0;
                while done < kills && !handler.stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1_200))).await;
                    let restart = if rng.gen_range(0..10) == 0 {
                        LONG_RESTART
                    } else {
                        SHORT_RESTART
                    };
                    if handler.kill(restart) {
                        done += 1;
                    }
                }
                done
            }))
        }
        Fault::Point { .. } => None,
    };
    // Executions are driven until every random kill has landed (each one a new Parent run).
    let mut ended = world.drive().await;
    while ended && killer.as_ref().is_some_and(|k| !k.is_finished()) {
        ended = world.drive().await;
    }
    world.handler.stop.store(true, Ordering::SeqCst);
    if let Some(k) = killer {
        k.abort();
    }
    let verdict = world.verdict(ended).await;
    if let Ok(mut guard) = world.handler.proc.lock() {
        if let Some(p) = guard.as_mut() {
            p.kill();
        }
    }
    verdict
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_handler_killed_at_any_moment_leaves_no_orphan_no_duplicate_and_nothing_stuck() {
    let seed: u64 = std::env::var("PROCFWK_CRASH_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    let total_kills = env_usize("PROCFWK_CRASH_KILLS", 100);
    let parallel = env_usize("PROCFWK_CRASH_PARALLEL", 2).max(1);
    println!("crash test: seed {seed} (PROCFWK_CRASH_SEED), {total_kills} random kills (PROCFWK_CRASH_KILLS)");

    // Deterministic points: the n-th hit (so the crash lands mid-execution), each with a restart the
    // retries ride out and one they do not (the Parent fails and a new Parent restarts).
    let mut scenarios: Vec<(String, Fault)> = Vec::new();
    for (name, nth) in [
        (fault::AFTER_CLAIM, 3),
        (fault::AFTER_CREATE_RUN, 3),
        (fault::CHECK_APPLY, 2),
        (fault::PREPARE_STAGE, 2),
        (fault::FINISH_EXECUTION, 1),
    ] {
        for (label, restart) in [
            ("restart 0.3 s", SHORT_RESTART),
            ("restart 6 s", LONG_RESTART),
        ] {
            scenarios.push((
                format!("{name}@{nth} / {label}"),
                Fault::Point { name, nth, restart },
            ));
        }
    }
    let per_scenario = 10;
    let random_scenarios = total_kills.div_ceil(per_scenario);
    for i in 0..random_scenarios {
        let kills = per_scenario.min(total_kills - i * per_scenario);
        scenarios.push((
            format!("random #{i} ({kills} kills)"),
            Fault::Random {
                kills,
                seed: seed.wrapping_add(i as u64),
            },
        ));
    }

    let started = Instant::now();
    let mut results: Vec<(String, Fault, Verdict)> = Vec::new();
    for chunk in scenarios.chunks(parallel) {
        let verdicts = join_all(chunk.iter().map(|(_, f)| run_scenario(f.clone()))).await;
        for ((label, fault), verdict) in chunk.iter().cloned().zip(verdicts) {
            println!("  {label}: {}", verdict.outcome());
            results.push((label, fault, verdict));
        }
    }

    println!("\ncrash matrix (point × outcome):");
    println!(
        "  {:<34} {:>6} {:>7} {:>5} {:>8} {:>7} {:>7}  outcome",
        "scenario", "deaths", "parentR", "dups", "unknown", "left", "refused"
    );
    for (label, _, v) in &results {
        println!(
            "  {:<34} {:>6} {:>7} {:>5} {:>8} {:>7} {:>7}  {}",
            label,
            v.deaths,
            v.parent_restarts,
            v.duplicates,
            v.unknown,
            v.left_running,
            v.refused,
            if v.clean() { "ok" } else { "FAILED" }
        );
    }
    let sum = |f: fn(&Verdict) -> usize| results.iter().map(|(_, _, v)| f(v)).sum::<usize>();
    let random_deaths: usize = results
        .iter()
        .filter(|(_, f, _)| matches!(f, Fault::Random { .. }))
        .map(|(_, _, v)| v.deaths)
        .sum();
    println!(
        "\ntotals: {} scenarios, {} handler deaths ({} by random SIGKILL), {} parent restarts, {} duplicate runs, {} unknown runs, {} rows left Running/Preparing, {} refused restarts, {} not ended; {:.0} s",
        results.len(),
        sum(|v| v.deaths),
        random_deaths,
        sum(|v| v.parent_restarts),
        sum(|v| v.duplicates),
        sum(|v| v.unknown),
        results.iter().map(|(_, _, v)| v.left_running.max(0) as usize).sum::<usize>(),
        sum(|v| v.refused),
        results.iter().filter(|(_, _, v)| !v.ended).count(),
        started.elapsed().as_secs_f64()
    );
    for (label, fault, v) in &results {
        if let Fault::Point { .. } = fault {
            assert!(v.fault_fired, "{label}: the fault point was never reached");
        }
        if !v.clean() {
            for u in &v.unexpected {
                println!("  {label}: {u}");
            }
        }
    }
    let failed: Vec<&String> = results
        .iter()
        .filter(|(_, _, v)| !v.clean())
        .map(|(l, _, _)| l)
        .collect();
    assert!(
        random_deaths >= total_kills,
        "only {random_deaths} of {total_kills} random kills landed"
    );
    assert!(failed.is_empty(), "scenarios that failed: {failed:?}");
}

/// The runs the simulator has of one pipeline.
async fn runs_of(world: &World, pipeline: &str) -> Vec<Value> {
    world
        .sim_runs()
        .await
        .into_iter()
        .filter(|r| r["pipelineName"] == json!(pipeline))
        .collect()
}

/// A worker whose Execute died after createRun (the fault point), in a fresh world: its key body, its
/// pipeline name, and the one run ADF has of it.
async fn worker_whose_start_died_after_create_run(world: &World) -> (Value, String, Value) {
    let parent = world.new_parent().await;
    let (status, started) = world
        .call_once(
            "StartExecution",
            &json!({"callingOrchestratorName": FACTORY, "parentRunId": parent}),
        )
        .await
        .expect("StartExecution answered");
    assert_eq!(status, 200, "{started}");
    let execution_id = started["ExecutionId"].clone();
    let stage = started["Stages"][0]["StageId"].clone();
    let prepared = world
        .call_once(
            "PrepareStage",
            &json!({"executionId": execution_id, "stageId": stage}),
        )
        .await
        .expect("PrepareStage answered");
    let worker = prepared.1["Workers"][0].clone();
    let pipeline = worker["PipelineName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let body =
        json!({"executionId": execution_id, "stageId": stage, "pipelineId": worker["pipelineId"]});
    assert!(
        world.call_once("ExecutePipelineV2", &body).await.is_none(),
        "the handler died at the fault point"
    );
    while !world.handler.is_up() || world.handler.deaths.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = runs_of(world, &pipeline).await;
    assert_eq!(
        runs.len(),
        1,
        "ADF accepted the run before the handler died"
    );
    (body, pipeline, runs[0].clone())
}

/// Item 1's "cannot decide": while ADF cannot be asked, or lists two runs that fit the dead claim, a
/// retried Execute answers "not yet" (409) and creates nothing; once ADF answers, the run is adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_be_decided_answers_not_yet_and_creates_no_run() {
    let settings = [("PROCFWK_ARM_MAX_RETRIES", "0".to_string())];
    let world = World::with(Some(format!("{}@1", fault::AFTER_CREATE_RUN)), &settings).await;
    let (body, pipeline, orphan) = worker_whose_start_died_after_create_run(&world).await;
    let faults = |ratio: f64| json!({"throttle_ratio": 0.0, "retry_after_secs": 0, "server_error_ratio": ratio, "latency_ms": 0, "latency_ratio": 1.0});
    let put_faults = |ratio: f64| {
        world
            .http
            .put(format!("{}/_sim/faults", world.sim.url))
            .json(&faults(ratio))
            .send()
    };
    assert!(put_faults(1.0).await.expect("sim").status().is_success());
    let (status, out) = world
        .call_once("ExecutePipelineV2", &body)
        .await
        .expect("answer");
    assert_eq!(status, 409, "{out}");
    assert!(out.to_string().contains("not settled yet"), "{out}");
    assert!(put_faults(0.0).await.expect("sim").status().is_success());
    assert_eq!(runs_of(&world, &pipeline).await.len(), 1, "no second run");
    let (status, out) = world
        .call_once("ExecutePipelineV2", &body)
        .await
        .expect("answer");
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["RunId"], orphan["runId"],
        "the run ADF accepted is adopted"
    );
    assert_eq!(runs_of(&world, &pipeline).await.len(), 1, "no second run");

    // Two runs that fit the claim (someone started the same pipeline with the same parameters).
    let world = World::new(Some(format!("{}@1", fault::AFTER_CREATE_RUN))).await;
    let (body, pipeline, orphan) = worker_whose_start_died_after_create_run(&world).await;
    world.create_run(&pipeline, &orphan["parameters"]).await;
    let (status, out) = world
        .call_once("ExecutePipelineV2", &body)
        .await
        .expect("answer");
    assert_eq!(status, 409, "{out}");
    assert!(out.to_string().contains("match the claim"), "{out}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, out) = world
        .call_once("ExecutePipelineV2", &body)
        .await
        .expect("answer");
    assert_eq!(
        status, 409,
        "still undecided past the claim's lifetime: {out}"
    );
    assert_eq!(runs_of(&world, &pipeline).await.len(), 2, "no third run");
    world.handler.stop.store(true, Ordering::SeqCst);
}

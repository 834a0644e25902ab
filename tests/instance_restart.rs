//! A Function App instance that stops or restarts: `procfwk serve` on SIGTERM (a burst of calls in
//! flight: every accepted call answered, the store consistent, the exit within the bound; a call held
//! past the bound: the exit at the bound), and `procfwk run` riding out a handler restarted on the same
//! port in the middle of a run, as the shipped pipelines' retry policies do.

mod support;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

/// What became of one call.
#[derive(Debug)]
enum Outcome {
    /// An HTTP answer and its JSON body.
    Answered(u16, Value),
    /// The connection was refused: the request was never sent.
    NotConnected,
    /// Sent, and then no (complete) answer.
    Broken(#[allow(dead_code)] String),
}

/// A client that opens a connection per request, so that no outcome depends on its pool reusing a
/// connection the server closed in between.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

async fn post(client: reqwest::Client, url: String, body: Value) -> Outcome {
    match client.post(url).json(&body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => Outcome::Answered(
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                ),
                Err(e) => Outcome::Broken(format!("body: {e:?}")),
            }
        }
        Err(e) if e.is_connect() => Outcome::NotConnected,
        Err(e) => Outcome::Broken(format!("{e:?}")),
    }
}

/// The invocation payload the Functions host sends for an HTTP call of `function` with `body`.
fn invocation_payload(function: &str, body: &Value) -> Value {
    json!({
        "Data": {"req": {
            "Url": format!("http://localhost:7071/api/{function}"), "Method": "POST", "Query": {},
            "Headers": {"Content-Type": ["application/json"]}, "Params": {}, "Body": body.to_string(),
        }},
        "Metadata": {"sys": {"MethodName": function}},
    })
}

/// A retryable 503 `ShuttingDown` JSON answer.
fn is_shutdown_refusal(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Answered(503, body)
        if body["error"]["code"] == "ShuttingDown" && body["error"]["retryable"] == true)
}

/// Wait (without holding up the runtime's other threads) for `proc` to exit; its status and when.
fn wait_exit(proc: &mut Proc, bound: Duration) -> (Option<std::process::ExitStatus>, Instant) {
    let status = tokio::task::block_in_place(|| proc.wait_exit(bound));
    (status, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_burst_answers_every_accepted_call_and_leaves_the_store_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sample_db(dir.path());
    let grace = Duration::from_secs(20);
    let mut stack = stack_with(
        sim_config(),
        &[
            ("PROCFWK_METADATA_DB", db.clone()),
            ("PROCFWK_SHUTDOWN_GRACE_SECS", grace.as_secs().to_string()),
            ("RUST_LOG", "info".into()),
        ],
    );
    let (status, started) = stack
        .call(
            "StartExecution",
            &json!({"callingOrchestratorName": "shutdown-test"}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let execution = started["ExecutionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, prepared) = stack
        .call(
            "PrepareStage",
            &json!({"executionId": execution, "stageId": 1}),
        )
        .await;
    assert_eq!(status, 200, "{prepared}");
    let workers: Vec<Value> = prepared["Workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 4, "{prepared}");
    // Every Data Factory call now takes 1.5 s: a start (createRun, then the run's status) takes 3 s or
    // more, a validation (the pipeline's definition) 1.5 s.
    stack.set_faults(json!({"latency_ms": 1500})).await;

    let client = fresh_connections();
    let base = stack.handler.url.clone();
    let validate = v2_body("Wait 1", json!({"WaitTime": "1"}));
    let execute = |worker: &Value| {
        let body = json!({"executionId": worker["executionId"], "stageId": worker["stageId"], "pipelineId": worker["pipelineId"]});
        tokio::spawn(post(
            client.clone(),
            format!("{base}/api/ExecutePipelineV2"),
            body,
        ))
    };
    // Wave 1, before the signal: two worker starts, 20 validations over HTTP forwarding, 6 through
    // the invocation payload.
    let mut first = Vec::new();
    for worker in &workers[..2] {
        first.push((
            "ExecutePipelineV2",
            worker["pipelineId"].as_i64(),
            execute(worker),
        ));
    }
    for n in 0..26 {
        let (url, body) = if n < 20 {
            (format!("{base}/api/ValidatePipeline"), validate.clone())
        } else {
            (
                format!("{base}/ValidatePipeline"),
                invocation_payload("ValidatePipeline", &validate),
            )
        };
        first.push((
            "ValidatePipeline",
            None,
            tokio::spawn(post(client.clone(), url, body)),
        ));
    }
    // Long enough for all of them to be admitted (on a busy machine too), well before the first
    // one's 1.5 s upstream call ends.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stack.handler.signal(libc::SIGTERM);
    let signalled = Instant::now();
    while !stack
        .handler
        .output()
        .contains("shutting down: refusing new calls")
    {
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "no shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Wave 2, once shutdown has begun: the other two worker starts and 20 validations, one every
    // 50 ms.
    let mut second = Vec::new();
    for worker in &workers[2..] {
        second.push((
            "ExecutePipelineV2",
            worker["pipelineId"].as_i64(),
            execute(worker),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        second.push((
            "ValidatePipeline",
            None,
            tokio::spawn(post(
                client.clone(),
                format!("{base}/api/ValidatePipeline"),
                validate.clone(),
            )),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (exit, exited) = wait_exit(stack.handler.proc_mut(), grace + Duration::from_secs(5));
    let exit_after = exited - signalled;
    println!(
        "SIGTERM with {} calls in flight: the handler exited {:.2} s later ({exit:?}; bound {} s)",
        first.len(),
        exit_after.as_secs_f64(),
        grace.as_secs()
    );

    let mut outcomes = Vec::new();
    for (wave, calls) in [(1, first), (2, second)] {
        for (function, pipeline, task) in calls {
            let outcome = task.await.expect("call task");
            outcomes.push((wave, function, pipeline, outcome));
        }
    }
    let broken: Vec<_> = outcomes
        .iter()
        .filter(|(_, _, _, o)| matches!(o, Outcome::Broken(_)))
        .collect();
    assert!(
        broken.is_empty(),
        "calls cut after they were sent: {broken:#?}"
    );
    for (wave, function, pipeline, outcome) in &outcomes {
        match wave {
            // Admitted before shutdown began: answered, and by the function itself.
            1 => assert!(
                matches!(outcome, Outcome::Answered(200, _)),
                "{function} {pipeline:?}: {outcome:?}"
            ),
            // After: refused with a clean, retryable 503 (or not connected at all, once the
            // listener has closed).
            _ => assert!(
                is_shutdown_refusal(outcome) || matches!(outcome, Outcome::NotConnected),
                "{function} {pipeline:?}: {outcome:?}"
            ),
        }
    }
    let refused = outcomes
        .iter()
        .filter(|(_, _, _, o)| is_shutdown_refusal(o))
        .count();
    assert!(refused > 0, "no call met the shutdown refusal");
    println!(
        "wave 1: {} answered 200; wave 2: {refused} refused with 503 ShuttingDown, {} not connected",
        outcomes.iter().filter(|(w, ..)| *w == 1).count(),
        outcomes
            .iter()
            .filter(|(_, _, _, o)| matches!(o, Outcome::NotConnected))
            .count()
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit 0 once every in-flight call was answered: {exit:?}\n{}",
        stack.handler.output()
    );
    assert!(exit_after < grace, "{exit_after:?}");
    let log = stack.handler.output();
    assert!(
        log.contains("shut down: every in-flight call was answered"),
        "{log}"
    );
    // What the in-flight calls did is on record: both worker starts, answered during shutdown.
    let recorded_starts = log
        .lines()
        .filter(|l| {
            l.contains("in-flight request answered during shutdown")
                && l.contains("POST /api/ExecutePipelineV2")
                && l.contains("status=200")
        })
        .count();
    assert_eq!(recorded_starts, 2, "{log}");

    // The store: each worker whose start was answered has its run recorded; each refused one is as
    // PrepareStage left it; the simulator has exactly the recorded runs.
    let answered: BTreeMap<i64, String> = outcomes
        .iter()
        .filter_map(|(_, f, pipeline, o)| match (f, pipeline, o) {
            (&"ExecutePipelineV2", Some(p), Outcome::Answered(200, body)) => {
                Some((*p, body["RunId"].as_str().unwrap_or_default().to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(answered.len(), 2, "{outcomes:#?}");
    let rows = query(
        &db,
        "SELECT PipelineId, PipelineStatus, PipelineRunId FROM procfwk.CurrentExecution WHERE StageId = 1",
    )
    .await;
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let pipeline = row.i32("PipelineId").expect("PipelineId") as i64;
        let status = row.opt_text("PipelineStatus").ok().flatten();
        let run = row
            .opt_guid("PipelineRunId")
            .ok()
            .flatten()
            .map(|g| g.to_string());
        match answered.get(&pipeline) {
            Some(run_id) => {
                assert_eq!(run.as_deref(), Some(run_id.as_str()), "worker {pipeline}");
                assert_ne!(status.as_deref(), Some("Preparing"), "worker {pipeline}");
            }
            None => {
                assert_eq!(run, None, "refused worker {pipeline} has no run");
                assert_eq!(status.as_deref(), Some("Preparing"), "worker {pipeline}");
            }
        }
    }
    let stats = stack.sim_get("/_sim/stats").await;
    assert_eq!(
        stats["runs"].as_u64(),
        Some(answered.len() as u64),
        "the simulator's runs are the recorded ones: {stats}"
    );
}

/// A handler with shutdown grace `grace` whose simulator answers after 30 s, one call sent to it (held
/// there), then SIGTERM: the stack, the held call and when the signal was sent.
async fn sigterm_with_a_call_held(
    grace: Duration,
) -> (Stack, tokio::task::JoinHandle<Outcome>, Instant) {
    let stack = stack_with(
        sim_config(),
        &[
            (
                "PROCFWK_SHUTDOWN_GRACE_SECS",
                grace.as_secs_f64().to_string(),
            ),
            ("RUST_LOG", "info".into()),
        ],
    );
    stack.set_faults(json!({"latency_ms": 30000})).await;
    let held = tokio::spawn(post(
        fresh_connections(),
        format!("{}/api/ValidatePipeline", stack.handler.url),
        v2_body("Wait 1", json!({"WaitTime": "1"})),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.handler.signal(libc::SIGTERM);
    (stack, held, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_past_the_bound_makes_the_process_exit_at_the_bound() {
    let grace = Duration::from_millis(1500);
    let (mut stack, held, signalled) = sigterm_with_a_call_held(grace).await;
    let (exit, exited) = wait_exit(stack.handler.proc_mut(), Duration::from_secs(10));
    let exit_after = exited - signalled;
    println!(
        "SIGTERM with a call held for 30 s: the handler exited {:.2} s later ({exit:?}; bound {} s)",
        exit_after.as_secs_f64(),
        grace.as_secs_f64()
    );
    assert!(
        exit.is_some_and(|s| !s.success()),
        "exits non-zero when a call was cut: {exit:?}"
    );
    assert!(
        exit_after >= grace && exit_after < grace + Duration::from_secs(1),
        "exits at the bound: {exit_after:?}"
    );
    let output = stack.handler.output();
    assert!(
        output.contains("were cut: POST /api/ValidatePipeline"),
        "names the call it cut: {output}"
    );
    assert!(matches!(held.await.expect("task"), Outcome::Broken(_)));
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procfwk_run_rides_out_a_handler_stopped_and_restarted_on_the_same_port() {
    run_across_a_restart(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procfwk_run_rides_out_a_handler_killed_and_restarted_on_the_same_port() {
    // Killed while only status checks are in flight (stage 1's workers run; their starts were
    // answered long before): the checks cut off are retried like the refused ones.
    run_across_a_restart(libc::SIGKILL).await;
}

/// `procfwk run` against a handler that gets `signal` mid-run and is started again on the same port
/// 2.5 s after it exited: the run succeeds, every worker ran once.
async fn run_across_a_restart(signal: i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sample_db(dir.path());
    // Workers take 0.6 – 3 s; the Infant checks them every 5 s × 0.05 = 0.25 s, while a failed call
    // is retried after the activity's retry interval, 30 s × 0.05 = 1.5 s (not after the Until's wait).
    let set = std::process::Command::new(binary())
        .args(["db", "set-property", "PipelineStatusCheckDuration", "5"])
        .env("PROCFWK_METADATA_DB", &db)
        .output()
        .expect("procfwk db set-property");
    assert!(set.status.success());
    let mut config = sim_config();
    config["time_scale"] = json!(0.3);
    let sim = spawn_sim(&config, dir.path());
    let port = free_port().to_string();
    let env = handler_env(
        &sim,
        &[
            ("PROCFWK_METADATA_DB", db.clone()),
            ("RUST_LOG", "info".to_string()),
        ],
    );
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let serve = ["serve", "--port", port.as_str()];
    let mut handler = spawn(&serve, &env);
    let record = dir.path().join("calls.json");
    // Every wait of the runner scales by 0.05.
    let runner = std::process::Command::new(binary())
        .args([
            "run",
            "--functions-url",
            &handler.url,
            "--time-scale",
            "0.05",
            "--quiet",
            "--record",
            record.to_str().unwrap_or_default(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn procfwk run");

    // Mid-run (stage 1's workers running): stop the handler, keep it down for 2.5 s, and start it
    // again on the same port. Three retries 1.5 s apart outlast the gap; four checks 0.25 s apart
    // would not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    handler.signal(signal);
    let (exit, _) = wait_exit(&mut handler, Duration::from_secs(15));
    assert!(exit.is_some(), "the handler exited");
    if signal == libc::SIGTERM {
        assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restarted = spawn(&serve, &env);
    assert_eq!(restarted.url, handler.url);

    let out = tokio::task::spawn_blocking(move || runner.wait_with_output())
        .await
        .expect("join")
        .expect("procfwk run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the run succeeds: {text}");
    let calls: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&record).expect("record")).expect("calls JSON");
    let failed: Vec<&Value> = calls.iter().filter(|c| c["status"] != 200).collect();
    assert!(!failed.is_empty(), "the restart met no call: {calls:#?}");
    println!(
        "{} calls, {} of them failed during the restart and were retried: {:?}",
        calls.len(),
        failed.len(),
        failed
            .iter()
            .map(|c| format!("{} {}", c["function"], c["status"]))
            .collect::<Vec<_>>()
    );
    // Every worker ran once: one simulator run each, all recorded and archived as Success.
    let archived = query(
        &db,
        "SELECT PipelineStatus, PipelineRunId FROM procfwk.ExecutionLog",
    )
    .await;
    assert_eq!(archived.len(), 11, "the sample's 11 enabled workers");
    assert!(archived
        .iter()
        .all(|r| r.opt_text("PipelineStatus").ok().flatten().as_deref() == Some("Success")));
    let runs: std::collections::BTreeSet<String> = archived
        .iter()
        .filter_map(|r| r.opt_guid("PipelineRunId").ok().flatten())
        .map(|g| g.to_string())
        .collect();
    assert_eq!(runs.len(), 11);
    let stats: Value = fresh_connections()
        .get(format!("{}/_sim/stats", sim.url))
        .send()
        .await
        .expect("sim")
        .json()
        .await
        .expect("stats");
    assert_eq!(
        stats["runs"].as_u64(),
        Some(11),
        "no duplicate run: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_the_same_way() {
    let mut stack = stack_with(sim_config(), &[("RUST_LOG", "info".into())]);
    let (status, _) = stack
        .call(
            "ValidatePipeline",
            &v2_body("Wait 1", json!({"WaitTime": "1"})),
        )
        .await;
    assert_eq!(status, 200);
    stack.handler.signal(libc::SIGINT);
    let (exit, _) = wait_exit(stack.handler.proc_mut(), Duration::from_secs(5));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    let log = stack.handler.output();
    assert!(log.contains("signal=\"SIGINT\""), "{log}");
    assert!(
        log.contains("shut down: every in-flight call was answered"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_without_waiting() {
    let (mut stack, _held, signalled) = sigterm_with_a_call_held(Duration::from_secs(20)).await;
    while !stack
        .handler
        .output()
        .contains("shutting down: refusing new calls")
    {
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "no shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stack.handler.signal(libc::SIGINT);
    let again = Instant::now();
    let (exit, exited) = wait_exit(stack.handler.proc_mut(), Duration::from_secs(10));
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}");
    assert!(
        exited - again < Duration::from_secs(2),
        "{:?}",
        exited - again
    );
    assert!(
        stack
            .handler
            .output()
            .contains("SIGINT during shutdown: exiting without waiting"),
        "{}",
        stack.handler.output()
    );
}

//! The sample metadata end to end through `procfwk run` (Parent → Child → Infant over HTTP, against a
//! handler process and the simulator), asserting the rows of CurrentExecution, ExecutionLog and ErrorLog
//! by status for each of procfwk's scenarios.

mod support;
use procfwk::store::{Row, Statement, Store, StoreError, Transition, Tx};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use support::*;

struct Scenario {
    stack: Stack,
    db: String,
    _dir: tempfile::TempDir,
}

/// A fresh SQLite metadata database with procfwk's sample, and a handler + simulator using it.
fn scenario() -> Scenario {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sample_db(dir.path());
    let stack = stack_with(
        sim_config(),
        &[
            ("PROCFWK_METADATA_DB", db.clone()),
            ("RUST_LOG", "info".into()),
        ],
    );
    Scenario {
        stack,
        db,
        _dir: dir,
    }
}

impl Scenario {
    fn run_command(&self, extra: &[&str]) -> std::process::Command {
        let mut cmd = Command::new(binary());
        cmd.args([
            "run",
            "--functions-url",
            &self.stack.handler.url,
            "--time-scale",
            "0.01",
        ])
        .args(extra);
        cmd
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.run_command(extra).output().expect("run procfwk run")
    }

    async fn store(&self) -> Store {
        procfwk::startup::open_store(&self.db, None)
            .await
            .expect("open store")
    }

    async fn exec(&self, sql: &str) {
        let statement = Statement {
            name: "test",
            sql: Box::leak(sql.to_string().into_boxed_str()),
        };
        self.store()
            .await
            .run(&Exec(statement))
            .await
            .expect("statement");
    }

    async fn rows(&self, sql: &str) -> Vec<Row> {
        query(&self.db, sql).await
    }

    /// Rows of a table by PipelineStatus.
    async fn by_status(&self, table: &str) -> BTreeMap<String, i64> {
        let rows = self
            .rows(&format!("SELECT COALESCE(PipelineStatus, 'Not Started') AS S, COUNT(0) AS N FROM procfwk.{table} GROUP BY PipelineStatus"))
            .await;
        rows.iter()
            .map(|r| (r.text("S").unwrap_or_default(), r.i64("N").unwrap_or(0)))
            .collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.rows(sql)
            .await
            .first()
            .and_then(|r| r.i64("N").ok())
            .unwrap_or(-1)
    }

    async fn raise_errors(&self, on: bool) {
        self.exec(&format!(
            "UPDATE procfwk.PipelineParameters SET ParameterValue = '{on}' WHERE ParameterName = 'RaiseErrors'"
        ))
        .await;
    }

    async fn property(&self, name: &str, value: &str) {
        self.exec(&format!("UPDATE procfwk.Properties SET PropertyValue = '{value}' WHERE PropertyName = '{name}' AND ValidTo IS NULL")).await;
    }
}

struct Exec(Statement);

#[async_trait::async_trait]
impl Transition for Exec {
    type Output = u64;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<u64, StoreError> {
        tx.execute(&self.0, &[]).await
    }
}

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn no_error_archives_every_worker_as_success() {
    let s = scenario();
    let out = s.run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        s.by_status("CurrentExecution").await,
        BTreeMap::new(),
        "archived"
    );
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Success", 11)]));
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.ErrorLog").await,
        0
    );
    assert_eq!(
        s.count(
            "SELECT COUNT(0) AS N FROM procfwk.ExecutionControl WHERE ControlStatus = 'Success'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn simple_failure_handling_blocks_later_stages_and_restart_reruns_only_what_failed() {
    let s = scenario();
    s.raise_errors(true).await;
    let out = s.run(&[]);
    assert!(!out.status.success(), "the Parent fails: {}", text(&out));
    assert!(
        text(&out).contains("All pipelines are blocked"),
        "{}",
        text(&out)
    );
    assert_eq!(
        s.by_status("CurrentExecution").await,
        map(&[("Success", 3), ("Failed", 1), ("Blocked", 7)])
    );
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Failed", 1)]));
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.ErrorLog").await,
        2
    );
    let first_ids = s.rows("SELECT PipelineId, PipelineRunId FROM procfwk.CurrentExecution WHERE PipelineStatus = 'Success' ORDER BY PipelineId").await;
    let execution = s
        .rows("SELECT DISTINCT LocalExecutionId FROM procfwk.CurrentExecution")
        .await;

    // Restart from the point of failure: same execution id, successful workers keep their runs.
    s.raise_errors(false).await;
    let out = s.run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(Restart)"), "{}", text(&out));
    let log = s.rows("SELECT LocalExecutionId, PipelineId, PipelineRunId, PipelineStatus FROM procfwk.ExecutionLog WHERE PipelineStatus = 'Success' ORDER BY PipelineId").await;
    assert_eq!(log.len(), 11);
    assert!(log
        .iter()
        .all(|r| r.guid("LocalExecutionId").ok() == execution[0].guid("LocalExecutionId").ok()));
    for first in &first_ids {
        let id = first.i64("PipelineId").unwrap_or(0);
        let again = log
            .iter()
            .find(|r| r.i64("PipelineId").ok() == Some(id))
            .and_then(|r| r.opt_guid("PipelineRunId").ok().flatten());
        assert_eq!(
            again,
            first.opt_guid("PipelineRunId").ok().flatten(),
            "worker {id} was not run again"
        );
    }
    assert_eq!(
        s.by_status("ExecutionLog").await,
        map(&[("Failed", 1), ("Success", 11)])
    );
}

/// Every logged run — succeeded or failed, and a restart's too — keeps the ADF Studio page of that very
/// run in `RunLink`, built from the worker's factory: run id in the path, the factory's resource id in
/// `factory`.
#[tokio::test]
async fn execution_log_links_every_run_to_its_adf_studio_page() {
    let s = scenario();
    s.raise_errors(true).await;
    assert!(!s.run(&[]).status.success());
    s.raise_errors(false).await;
    assert!(s.run(&[]).status.success());
    let rows = s
        .rows(
            "SELECT l.PipelineRunId, l.RunLink, o.SubscriptionId, o.ResourceGroupName, o.OrchestratorName \
             FROM procfwk.ExecutionLog l JOIN procfwk.Orchestrators o ON o.OrchestratorName = l.OrchestratorName \
             WHERE l.PipelineRunId IS NOT NULL",
        )
        .await;
    assert_eq!(
        rows.len(),
        12,
        "one failed and eleven successful runs logged"
    );
    for row in rows {
        let run = row.guid("PipelineRunId").expect("run id");
        let link = row.text("RunLink").expect("every logged run has a link");
        let resource = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DataFactory/factories/{}",
            row.guid("SubscriptionId").expect("subscription"),
            row.text("ResourceGroupName").expect("rg"),
            row.text("OrchestratorName").expect("factory"),
        );
        let url = url::Url::parse(&link).expect("a URL");
        assert_eq!(url.host_str(), Some("adf.azure.com"), "{link}");
        assert_eq!(
            url.path(),
            format!("/monitoring/pipelineruns/{run}"),
            "{link}"
        );
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(query, vec![("factory".to_string(), resource)], "{link}");
    }
}

#[tokio::test]
async fn dependency_chain_blocks_only_dependants() {
    let s = scenario();
    s.raise_errors(true).await;
    s.property("FailureHandling", "DependencyChain").await;
    let out = s.run(&[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not all Worker pipelines succeeded"),
        "{}",
        text(&out)
    );
    assert_eq!(
        s.by_status("CurrentExecution").await,
        map(&[("Success", 6), ("Failed", 1), ("Blocked", 4)])
    );
    let blocked: Vec<i64> = s
        .rows("SELECT PipelineId FROM procfwk.CurrentExecution WHERE IsBlocked = 1 ORDER BY PipelineId")
        .await
        .iter()
        .filter_map(|r| r.i64("PipelineId").ok())
        .collect();
    assert_eq!(
        blocked,
        vec![6, 7, 10, 11],
        "Wait 5, Wait 6, and transitively Wait 9 and Wait 10"
    );
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.ErrorLog").await,
        2
    );
}

#[tokio::test]
async fn no_failure_handling_runs_everything_and_fails_at_the_end() {
    let s = scenario();
    s.raise_errors(true).await;
    s.property("FailureHandling", "None").await;
    let out = s.run(&[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        s.by_status("CurrentExecution").await,
        map(&[("Success", 10), ("Failed", 1)])
    );
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Failed", 1)]));
}

#[tokio::test]
async fn override_restart_archives_and_starts_a_new_execution() {
    let s = scenario();
    s.raise_errors(true).await;
    assert!(!s.run(&[]).status.success());
    let first = s
        .rows("SELECT DISTINCT LocalExecutionId FROM procfwk.CurrentExecution")
        .await;
    s.raise_errors(false).await;
    s.property("OverideRestart", "1").await;
    let out = s.run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(New)"), "{}", text(&out));
    let executions = s.rows("SELECT LocalExecutionId, COUNT(0) AS N FROM procfwk.ExecutionLog GROUP BY LocalExecutionId").await;
    assert_eq!(executions.len(), 2, "the abandoned execution and a new one");
    let new = executions
        .iter()
        .find(|r| r.guid("LocalExecutionId").ok() != first[0].guid("LocalExecutionId").ok());
    assert_eq!(new.and_then(|r| r.i64("N").ok()), Some(11));
    // The abandoned execution's rows were archived as they were.
    assert_eq!(
        s.by_status("ExecutionLog").await,
        map(&[("Failed", 2), ("Success", 14), ("Blocked", 7)])
    );
}

async fn cancel_a_worker(s: &Scenario, blocks: bool) -> Output {
    s.property(
        "CancelledWorkerResultBlocks",
        if blocks { "1" } else { "0" },
    )
    .await;
    // Wait 1 runs long enough to be cancelled (1000 s × 0.01).
    s.exec("UPDATE procfwk.PipelineParameters SET ParameterValue = '1000' WHERE PipelineId = 1 AND ParameterName = 'WaitTime'").await;
    let child = s
        .run_command(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn run");
    let mut run_id = None;
    for _ in 0..200 {
        let rows = s.rows("SELECT PipelineRunId FROM procfwk.CurrentExecution WHERE PipelineId = 1 AND PipelineRunId IS NOT NULL").await;
        if let Some(id) = rows
            .first()
            .and_then(|r| r.opt_guid("PipelineRunId").ok().flatten())
        {
            run_id = Some(id);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let run_id = run_id.expect("Wait 1 started");
    // Cancelled by someone in ADF monitoring.
    let token = s.stack.token().await;
    let r = s
        .stack
        .client
        .post(format!(
            "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/FrameworkFactory/pipelineruns/{run_id}/cancel?isRecursive=true&api-version=2018-06-01",
            s.stack.sim.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("sim");
    assert!(r.status().is_success(), "{}", r.status());
    child.wait_with_output().expect("run finished")
}

#[tokio::test]
async fn a_cancelled_worker_that_blocks() {
    let s = scenario();
    let out = cancel_a_worker(&s, true).await;
    assert!(!out.status.success(), "{}", text(&out));
    let log = s.stack.handler.output();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("refused"))
        .collect();
    eprintln!("handler problems: {problems:#?}");
    assert_eq!(
        s.by_status("CurrentExecution").await,
        map(&[("Success", 3), ("Cancelled", 1), ("Blocked", 7)])
    );
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Cancelled", 1)]));
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.ErrorLog").await,
        0
    );
}

#[tokio::test]
async fn a_cancelled_worker_that_does_not_block() {
    let s = scenario();
    let out = cancel_a_worker(&s, false).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        s.by_status("CurrentExecution").await,
        map(&[("Success", 10), ("Cancelled", 1)])
    );
}

#[tokio::test]
async fn two_executions_started_together_one_is_refused() {
    let s = scenario();
    // Long enough (3 s) that the two executions overlap even on a loaded machine.
    s.exec("UPDATE procfwk.PipelineParameters SET ParameterValue = '300' WHERE PipelineId = 1 AND ParameterName = 'WaitTime'").await;
    let a = s
        .run_command(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("a");
    let b = s
        .run_command(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("b");
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one runs:\n{}\n---\n{}", text(&a), text(&b));
    let refused = if a.status.success() { &b } else { &a };
    assert!(
        text(refused).contains("already an execution run in progress"),
        "{}",
        text(refused)
    );
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Success", 11)]));
}

#[tokio::test]
async fn batches_run_concurrently_but_the_same_batch_only_once() {
    let s = scenario();
    s.property("UseExecutionBatches", "1").await;
    // Hourly runs the Speed stage: enable it and its workers.
    s.exec("UPDATE procfwk.Stages SET Enabled = 1 WHERE StageName = 'Speed'")
        .await;
    s.exec("UPDATE procfwk.Pipelines SET Enabled = 1 WHERE StageId = 5")
        .await;
    let spawn = |batch: &str| {
        s.run_command(&["--batch", batch])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (daily, hourly) = (spawn("Daily"), spawn("Hourly"));
    let (daily, hourly) = (
        daily.wait_with_output().expect("daily"),
        hourly.wait_with_output().expect("hourly"),
    );
    assert!(daily.status.success(), "{}", text(&daily));
    assert!(hourly.status.success(), "{}", text(&hourly));
    assert_eq!(
        s.count("SELECT COUNT(DISTINCT LocalExecutionId) AS N FROM procfwk.ExecutionLog")
            .await,
        2
    );
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Success", 15)]));
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.BatchExecution WHERE BatchStatus = 'Success'")
            .await,
        2
    );

    // Long enough (3 s) that the two runs of Daily overlap even on a loaded machine.
    s.exec("UPDATE procfwk.PipelineParameters SET ParameterValue = '300' WHERE PipelineId = 1 AND ParameterName = 'WaitTime'").await;
    let (one, two) = (spawn("Daily"), spawn("daily"));
    let (one, two) = (
        one.wait_with_output().expect("one"),
        two.wait_with_output().expect("two"),
    );
    assert_eq!(
        [&one, &two].iter().filter(|o| o.status.success()).count(),
        1,
        "{}\n---\n{}\n---\n{}",
        text(&one),
        text(&two),
        s.stack.handler.output()
    );
    let refused = if one.status.success() { &two } else { &one };
    assert!(
        text(refused).contains("already an batch execution run in progress"),
        "{}",
        text(refused)
    );
}

/// A batch's Parent stopped after every worker succeeded, before FinishExecution. A later Parent
/// takes the stale scope over: nothing is left to restart, so the old execution ends as a success
/// and a new one starts. Before, the restart found no stage to run and answered 409 NoEnabledWork
/// while the scope stayed Running, so the batch could never run again without OverideRestart (found
/// by the stress run, tests/stress.rs).
#[tokio::test]
async fn a_batch_whose_workers_all_succeeded_but_never_finished_starts_again() {
    let s = scenario();
    s.property("UseExecutionBatches", "1").await;
    let (status, first) = s
        .stack
        .call("StartExecution", &json_start("parent-1"))
        .await;
    assert_eq!(status, 200, "{first}");
    s.exec("UPDATE procfwk.CurrentExecution SET PipelineStatus = 'Success'")
        .await;
    s.exec("UPDATE procfwk.ExecutionControl SET LastActivityDateTime = '2000-01-01T00:00:00'")
        .await;
    let (status, second) = s
        .stack
        .call("StartExecution", &json_start("parent-2"))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["Mode"], "New", "{second}");
    assert_ne!(second["ExecutionId"], first["ExecutionId"]);
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Success", 11)]));
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.BatchExecution WHERE BatchStatus = 'Success'")
            .await,
        1
    );
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.BatchExecution WHERE BatchStatus = 'Running'")
            .await,
        1
    );
}

fn json_start(parent: &str) -> serde_json::Value {
    serde_json::json!({"batchName": "Daily", "callingOrchestratorName": "FrameworkFactory", "parentRunId": parent})
}

#[allow(dead_code)]
fn unused(_: PathBuf) {}

/// Workers whose metadata says they need a self-hosted runtime: the whole stage waits for the VM
/// (deallocated at first), every worker holds a lease while its run goes on, one VM start serves them
/// all, and once the last one finished the VM is deallocated (grace 0) with no lease left.
#[tokio::test]
async fn workers_on_a_self_hosted_runtime_start_it_once_and_release_it() {
    let s = scenario();
    s.raise_errors(false).await;
    // The orchestrator of the sample's workers needs shir-vm-1 with its runtime node Online.
    s.exec(&format!(
        "INSERT INTO procfwk.WorkerRuntimes (OrchestratorId, SubscriptionId, ResourceGroupName, VmNames, FactoryName, IntegrationRuntimeName, GraceSeconds) \
         SELECT OrchestratorId, '{SUBSCRIPTION}', 'ADF.procfwk', 'shir-vm-1', 'FrameworkFactory', 'SelfHostedRuntime', 0 FROM procfwk.Orchestrators \
         WHERE OrchestratorId IN (SELECT OrchestratorId FROM procfwk.Pipelines WHERE PipelineId = 1)"
    ))
    .await;
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.WorkerRuntimes")
            .await,
        1
    );
    let out = s.run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.by_status("ExecutionLog").await, map(&[("Success", 11)]));
    let vms = s.stack.sim_get("/_sim/vms").await;
    let events = |event: &str| {
        vms["history"].as_array().map_or(0, |h| {
            h.iter()
                .filter(|e| e["vm"] == "shir-vm-1" && e["event"] == event)
                .count()
        })
    };
    assert!(events("start_requested") >= 1, "{vms}");
    assert!(events("deallocate_requested") >= 1, "{vms}");
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.VmLeases").await,
        0,
        "every worker released its lease"
    );
    // Every worker took and released a lease (11 workers, all on that orchestrator).
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.VmPowerLog WHERE Event = 'LeaseTaken'")
            .await,
        11
    );
    assert_eq!(
        s.count("SELECT COUNT(0) AS N FROM procfwk.VmPowerLog WHERE Event = 'LeaseReleased'")
            .await,
        11
    );
}

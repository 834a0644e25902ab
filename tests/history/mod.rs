//! Metadata stores with history for the dashboard tests: procfwk's sample metadata (through the
//! library's own schema and seed), plus executions written into the log tables as the lifecycle leaves
//! them — a finished one, a failed one with its ErrorLog rows, one still running — or a year of nightly
//! executions for the render-time measurement.
#![allow(dead_code)]

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const RESOURCE_GROUP: &str = "ADF.procfwk";
pub const FACTORY: &str = "WorkersFactory";
/// The sample's tenant, which is also its subscription.
pub const SUBSCRIPTION: &str = "12345678-1234-1234-1234-012345678910";

pub fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

pub fn day(n: i64) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(1, 0, 0))
        .unwrap_or_default()
        + Duration::days(n)
}

/// A new store in `dir` with the schema and the sample metadata; returns its path.
pub fn sample_store(dir: &Path) -> PathBuf {
    let path = dir.join("procfwk.db");
    let setting = format!("sqlite:{}", path.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = procfwk::startup::open_store(&setting, None)
            .await
            .expect("open store");
        store.init_schema().await.expect("schema");
        store
            .run(&procfwk::orchestration::sample::SeedSample {
                now: procfwk::orchestration::now(),
            })
            .await
            .expect("seed sample");
    });
    path
}

/// One worker of a fixture execution.
#[derive(Clone, Debug)]
pub struct Worker {
    pub stage: i64,
    pub pipeline_id: i64,
    pub name: String,
    /// `None`: not started yet (current execution only).
    pub status: Option<&'static str>,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
    pub run_id: Option<Uuid>,
}

impl Worker {
    pub fn done(
        stage: i64,
        pipeline_id: i64,
        name: &str,
        status: &'static str,
        start: NaiveDateTime,
        seconds: i64,
    ) -> Self {
        Self {
            stage,
            pipeline_id,
            name: name.into(),
            status: Some(status),
            start: Some(start),
            end: Some(start + Duration::seconds(seconds)),
            run_id: Some(Uuid::new_v4()),
        }
    }
}

/// Log rows of one execution, as FinishExecution archives them.
pub fn log_execution(conn: &Connection, execution: Uuid, workers: &[Worker]) {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO ExecutionLog (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, EndDateTime, PipelineRunId, PipelineParamsUsed) \
             VALUES (?1, ?2, ?3, 'FrameworkFactory', ?4, 'ADF', ?5, ?6, ?7, ?8, ?9, ?10, 'None')",
        )
        .expect("prepare log insert");
    for w in workers {
        insert
            .execute(params![
                execution.to_string(),
                w.stage,
                w.pipeline_id,
                RESOURCE_GROUP,
                FACTORY,
                w.name,
                w.start.map(ts),
                w.status,
                w.end.map(ts),
                w.run_id.map(|r| r.to_string()),
            ])
            .expect("insert log row");
    }
}

/// The current execution's rows.
pub fn current_execution(
    conn: &Connection,
    execution: Uuid,
    workers: &[Worker],
    now: NaiveDateTime,
) {
    for w in workers {
        let check = (w.status == Some("Running") || w.end.is_some()).then(|| ts(now));
        conn.execute(
            "INSERT INTO CurrentExecution (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, LastStatusCheckDateTime, EndDateTime, IsBlocked, PipelineRunId) \
             VALUES (?1, ?2, ?3, 'FrameworkFactory', ?4, 'ADF', ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11)",
            params![
                execution.to_string(),
                w.stage,
                w.pipeline_id,
                RESOURCE_GROUP,
                FACTORY,
                w.name,
                w.start.map(ts),
                w.status,
                check,
                w.end.map(ts),
                w.run_id.map(|r| r.to_string()),
            ],
        )
        .expect("insert current row");
    }
}

pub fn error_row(conn: &Connection, execution: Uuid, run: Uuid, message: &str) {
    conn.execute(
        "INSERT INTO ErrorLog (LocalExecutionId, PipelineRunId, ActivityRunId, ActivityName, ActivityType, ErrorCode, ErrorType, ErrorMessage) VALUES (?1, ?2, ?3, 'Raise Errors or Not', 'Lookup', '2100', 'UserError', ?4)",
        params![execution.to_string(), run.to_string(), Uuid::new_v4().to_string(), message],
    )
    .expect("insert error row");
}

/// The three states a person looks at: a finished execution, a failed one, and one running now.
pub struct ThreeStates {
    pub path: PathBuf,
    pub finished: Uuid,
    pub failed: Uuid,
    pub failed_worker: String,
    pub failed_run: Uuid,
    pub running: Uuid,
}

pub fn three_states(dir: &Path) -> ThreeStates {
    let path = sample_store(dir);
    let conn = Connection::open(&path).expect("open sqlite");
    let now = procfwk::orchestration::now();
    let finished = Uuid::new_v4();
    let t0 = now - Duration::hours(50);
    log_execution(
        &conn,
        finished,
        &[
            Worker::done(1, 1, "Intentional Error", "Success", t0, 60),
            Worker::done(1, 2, "Wait 1", "Success", t0, 40),
            Worker::done(2, 5, "Wait 4", "Success", t0 + Duration::seconds(70), 90),
            Worker::done(3, 9, "Wait 8", "Success", t0 + Duration::seconds(170), 30),
        ],
    );
    let failed = Uuid::new_v4();
    let t1 = now - Duration::hours(26);
    let broken = Worker::done(1, 1, "Intentional Error", "Failed", t1, 20);
    let failed_run = broken.run_id.unwrap_or_default();
    log_execution(
        &conn,
        failed,
        &[
            broken,
            Worker::done(1, 2, "Wait 1", "Success", t1, 45),
            Worker::done(2, 5, "Wait 4", "Blocked", t1 + Duration::seconds(50), 0),
        ],
    );
    error_row(
        &conn,
        failed,
        failed_run,
        "Operation on target Raise Errors or Not failed: <the error> & \"quoted\"",
    );
    let running = Uuid::new_v4();
    let t2 = now - Duration::minutes(5);
    let mut stage2_running =
        Worker::done(2, 6, "Wait 5", "Running", t2 + Duration::seconds(100), 0);
    stage2_running.end = None;
    current_execution(
        &conn,
        running,
        &[
            Worker::done(1, 1, "Intentional Error", "Success", t2, 50),
            Worker::done(1, 2, "Wait 1", "Success", t2, 90),
            Worker::done(2, 5, "Wait 4", "Success", t2 + Duration::seconds(95), 60),
            stage2_running,
            Worker {
                stage: 3,
                pipeline_id: 9,
                name: "Wait 8".into(),
                status: None,
                start: None,
                end: None,
                run_id: None,
            },
        ],
        now,
    );
    ThreeStates {
        path,
        finished,
        failed,
        failed_worker: "Intentional Error".into(),
        failed_run,
        running,
    }
}

/// `executions` nightly executions of `workers` workers over four stages (one in twenty fails one
/// worker, with an ErrorLog row), and a VM pool leased and started each night.
pub fn year_of_nights(dir: &Path, executions: i64, workers: i64) -> PathBuf {
    let path = sample_store(dir);
    let mut conn = Connection::open(&path).expect("open sqlite");
    let tx = conn.transaction().expect("transaction");
    let per_stage = (workers / 4).max(1);
    for n in 0..executions {
        let execution = Uuid::new_v4();
        let start = day(n);
        let mut rows = Vec::with_capacity(workers as usize);
        for i in 0..workers {
            let stage = (i / per_stage).min(3) + 1;
            let stage_start = start + Duration::minutes(20 * (stage - 1));
            let seconds = 60 + (i * 37 + n * 11) % 900;
            let status = if n % 20 == 7 && i == 3 {
                "Failed"
            } else {
                "Success"
            };
            rows.push(Worker::done(
                stage,
                i + 1,
                &format!("Worker {i:03}"),
                status,
                stage_start + Duration::seconds((i * 13) % 120),
                seconds,
            ));
        }
        log_execution(&tx, execution, &rows);
        if let Some(w) = rows.iter().find(|w| w.status == Some("Failed")) {
            error_row(
                &tx,
                execution,
                w.run_id.unwrap_or_default(),
                "Worker 003 failed on purpose",
            );
        }
    }
    let pool =
        format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/vms/shir-vm-1");
    tx.execute(
        "INSERT INTO VmPools (PoolKey, SubscriptionId, ResourceGroupName, FactoryName, FactoryResourceGroupName, IntegrationRuntimeName, JobsPerNode, MinNodes, GraceSeconds, Version, CreatedDateTime, LastDecisionDateTime) VALUES (?1, ?2, ?3, ?4, ?3, 'SelfHostedIR', 4, 0, 600, 1, ?5, ?5)",
        params![pool, SUBSCRIPTION, RESOURCE_GROUP, FACTORY, ts(day(0))],
    )
    .expect("pool");
    tx.execute(
        "INSERT INTO VmPoolNodes (PoolKey, NodeIndex, VmKey, VmName, LastPowerState) VALUES (?1, 0, ?2, 'shir-vm-1', 'deallocated')",
        params![pool, format!("{pool}/0")],
    )
    .expect("node");
    for n in 0..executions {
        let start = day(n);
        for (offset, event, holder, vm) in [
            (0, "LeaseTaken", Some("night"), None),
            (0, "StartRequested", Some("night"), Some("shir-vm-1")),
            (95, "LeaseReleased", Some("night"), None),
            (105, "DeallocateRequested", None, Some("shir-vm-1")),
        ] {
            tx.execute(
                "INSERT INTO VmPowerLog (PoolKey, VmName, EventDateTime, Event, Holder, PowerState, ActiveLeases, Detail) VALUES (?1, ?2, ?3, ?4, ?5, NULL, 0, NULL)",
                params![pool, vm, ts(start + Duration::minutes(offset)), event, holder],
            )
            .expect("power event");
        }
    }
    tx.commit().expect("commit");
    path
}

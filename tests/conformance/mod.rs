//! One conformance suite for every metadata-store backend: the lifecycle transitions, run directly
//! against a `Store`, must behave the same on the embedded SQLite store and on Azure SQL (tiberius, here
//! through the project's TDS test server).
#![allow(dead_code)]

use procfwk::domain::response::ActivityError;
use procfwk::domain::RunId;
use procfwk::orchestration::sample::{SeedSample, SetProperty};
use procfwk::orchestration::stage::Prepared;
use procfwk::orchestration::{
    now, Applied, ApplyResult, Claim, ClaimWorker, FinishExecution, LifecycleError, PrepareStage,
    ReadWorker, RecordCheck, RecordRunId, StartExecution, StartMode, WorkerActivityFailed,
    WorkerKey, WorkerOutcome,
};
use procfwk::store::{Row, Statement, Store, StoreError, Transition, Tx};
use std::collections::BTreeMap;
use uuid::Uuid;

pub struct Query(pub &'static str);

#[async_trait::async_trait]
impl Transition for Query {
    type Output = Vec<Row>;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<Row>, StoreError> {
        tx.query(
            &Statement {
                name: "test",
                sql: self.0,
            },
            &[],
        )
        .await
    }
}

pub struct Exec(pub &'static str);

#[async_trait::async_trait]
impl Transition for Exec {
    type Output = u64;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<u64, StoreError> {
        tx.execute(
            &Statement {
                name: "test",
                sql: self.0,
            },
            &[],
        )
        .await
    }
}

pub async fn by_status(store: &Store, table: &'static str) -> BTreeMap<String, i64> {
    let sql: &'static str = Box::leak(
        format!("SELECT COALESCE(PipelineStatus, 'Not Started') AS S, COUNT(0) AS N FROM procfwk.{table} GROUP BY PipelineStatus")
            .into_boxed_str(),
    );
    let rows = store.run(&Query(sql)).await.expect("query");
    rows.iter()
        .map(|r| (r.text("S").unwrap_or_default(), r.i64("N").unwrap_or(0)))
        .collect()
}

pub async fn count(store: &Store, sql: &'static str) -> i64 {
    store
        .run(&Query(sql))
        .await
        .expect("count")
        .first()
        .and_then(|r| r.i64("N").ok())
        .unwrap_or(-1)
}

pub fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn errors() -> Vec<ActivityError> {
    vec![
        ActivityError {
            activity_run_id: Uuid::new_v4().to_string(),
            activity_name: "Raise Errors or Not".into(),
            activity_type: "IfCondition".into(),
            error_code: "ActionFailed".into(),
            error_type: "UserError".into(),
            error_message: "Activity failed because an inner activity failed".into(),
        },
        ActivityError {
            activity_run_id: Uuid::new_v4().to_string(),
            activity_name: "Call Fail Procedure".into(),
            activity_type: "SqlServerStoredProcedure".into(),
            error_code: "2402".into(),
            error_type: "UserError".into(),
            error_message: "Execution fail against sql server. Sql error number: 50000. Error Message: The Stored Procedure intentionally failed.".into(),
        },
    ]
}

pub fn start() -> StartExecution {
    StartExecution {
        batch: None,
        calling_orchestrator: "FrameworkFactory".into(),
        parent_run_id: None,
        previous_parent: None,
        now: now(),
    }
}

/// A run link for a recorded run the test does not look at.
pub fn test_link() -> String {
    "https://adf.azure.com/monitoring/pipelineruns/00000000-0000-0000-0000-000000000000".into()
}

/// Start, claim and settle one worker; returns its run id.
pub async fn run_worker(store: &Store, key: WorkerKey, outcome: WorkerOutcome) -> RunId {
    let plan = store.run(&ReadWorker { key }).await.expect("plan");
    let token = Uuid::new_v4();
    let claim = store
        .run(&ClaimWorker {
            key,
            params_used: plan.params_used(),
            token,
            now: now(),
        })
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Claimed, "{key}");
    let run_id = RunId::from_store(Uuid::new_v4());
    assert!(store
        .run(&RecordRunId {
            key,
            run_id,
            token,
            link: format!("https://adf.azure.com/monitoring/pipelineruns/{run_id}"),
        })
        .await
        .expect("record"));
    store
        .run(&RecordCheck { key, now: now() })
        .await
        .expect("check");
    let errors = if outcome == WorkerOutcome::Failed {
        errors()
    } else {
        Vec::new()
    };
    let applied = store
        .run(&ApplyResult {
            key,
            run_id,
            outcome,
            errors,
            now: now(),
        })
        .await
        .expect("apply");
    assert!(matches!(applied, Applied::Applied { .. }), "{applied:?}");
    run_id
}

pub async fn prepare(store: &Store, execution_id: Uuid, stage_id: i32) -> Prepared {
    store
        .run(&PrepareStage {
            execution_id,
            stage_id,
            now: now(),
        })
        .await
        .expect("prepare")
}

pub fn keys(execution_id: Uuid, stage_id: i32, prepared: &Prepared) -> Vec<WorkerKey> {
    match prepared {
        Prepared::Workers(w) => w
            .iter()
            .map(|w| WorkerKey {
                execution_id,
                stage_id,
                pipeline_id: w.pipeline_id,
            })
            .collect(),
        Prepared::AllBlocked { .. } => Vec::new(),
    }
}

/// The whole suite, against one backend.
///
/// `init` creates the schema through the backend (the TDS test server gets it at start instead: it
/// executes plain statements, not the idempotent `IF … CREATE` deployment scripts).
pub async fn suite(store: Store, init: bool) {
    if init {
        store.init_schema().await.expect("schema");
    }
    assert_eq!(
        store.run(&SeedSample { now: now() }).await.expect("seed"),
        19
    );
    assert!(
        matches!(
            store.run(&SeedSample { now: now() }).await,
            Err(LifecycleError::Metadata(_))
        ),
        "seed once"
    );

    // Worker plan: parameters in order, NULL values omitted, orchestrator and tenant from the metadata.
    store.run(&Exec("INSERT INTO procfwk.PipelineParameters (PipelineId, ParameterName, ParameterValue) VALUES (3, 'Ignored', NULL)")).await.expect("null param");
    let started = store.run(&start()).await.expect("start");
    assert_eq!(started.mode, StartMode::New);
    let stages: Vec<(i32, i64)> = started
        .stages
        .iter()
        .map(|s| (s.stage_id, s.workers))
        .collect();
    assert_eq!(stages, vec![(1, 4), (2, 4), (3, 2), (4, 1)]);
    let id = started.execution_id;
    assert!(
        matches!(
            store.run(&start()).await,
            Err(LifecycleError::AlreadyRunning(_))
        ),
        "one execution at a time"
    );

    let ie = WorkerKey {
        execution_id: id,
        stage_id: 1,
        pipeline_id: 3,
    };
    let plan = store.run(&ReadWorker { key: ie }).await.expect("plan");
    assert_eq!(plan.pipeline_name, "Intentional Error");
    assert_eq!(plan.orchestrator_name, "FrameworkFactory");
    assert_eq!(plan.orchestrator_type, "ADF");
    assert_eq!(plan.resource_group, "ADF.procfwk");
    assert_eq!(
        plan.tenant_id.to_string(),
        "12345678-1234-1234-1234-012345678910"
    );
    assert_eq!(
        serde_json::Value::Object(plan.parameters.clone()),
        serde_json::json!({"RaiseErrors": "false", "WaitTime": "10"})
    );
    assert!(plan.credential.is_none());

    // Stage 1: claims are exclusive, retries find the run, results are applied once.
    let workers = keys(id, 1, &prepare(&store, id, 1).await);
    assert_eq!(workers.len(), 4);
    assert_eq!(
        by_status(&store, "CurrentExecution").await,
        map(&[("Preparing", 4), ("Not Started", 7)])
    );
    let token = Uuid::new_v4();
    let claim_ie = |token: Uuid| ClaimWorker {
        key: ie,
        params_used: plan.params_used(),
        token,
        now: now(),
    };
    let claim = store.run(&claim_ie(token)).await.expect("claim");
    assert_eq!(claim, Claim::Claimed);
    let replay = store.run(&claim_ie(token)).await.expect("claim");
    assert_eq!(
        replay,
        Claim::Claimed,
        "a replay of the same claim is its own"
    );
    let other = Uuid::new_v4();
    let again = store.run(&claim_ie(other)).await.expect("claim");
    assert!(
        matches!(again, Claim::InFlight { token: Some(t), .. } if t == token),
        "{again:?}"
    );
    let run_id = RunId::from_store(Uuid::new_v4());
    assert!(
        !store
            .run(&RecordRunId {
                key: ie,
                run_id: RunId::from_store(Uuid::new_v4()),
                token: other,
                link: test_link(),
            })
            .await
            .expect("not the claim's holder"),
        "only the claim's holder records a run id"
    );
    assert!(store
        .run(&RecordRunId {
            key: ie,
            run_id,
            token,
            link: format!("https://adf.azure.com/monitoring/pipelineruns/{run_id}"),
        })
        .await
        .expect("record"));
    assert!(
        store
            .run(&RecordRunId {
                key: ie,
                run_id,
                token,
                link: test_link(),
            })
            .await
            .expect("replayed record"),
        "a replayed record finds its own run id"
    );
    assert!(
        !store
            .run(&RecordRunId {
                key: ie,
                run_id: RunId::from_store(Uuid::new_v4()),
                token,
                link: test_link(),
            })
            .await
            .expect("second id"),
        "first run id wins"
    );
    let again = store.run(&claim_ie(other)).await.expect("claim");
    assert_eq!(again, Claim::AlreadyStarted { run_id });
    for key in workers.iter().filter(|k| k.pipeline_id != 3) {
        run_worker(&store, *key, WorkerOutcome::Success).await;
    }
    let failed = ApplyResult {
        key: ie,
        run_id,
        outcome: WorkerOutcome::Failed,
        errors: errors(),
        now: now(),
    };
    assert_eq!(
        store.run(&failed).await.expect("apply"),
        Applied::Applied {
            status: procfwk::domain::WorkerStatus::Failed,
            blocked: 7
        }
    );
    assert!(
        matches!(
            store.run(&failed).await.expect("again"),
            Applied::AlreadyApplied { .. }
        ),
        "applied once"
    );
    assert_eq!(
        by_status(&store, "CurrentExecution").await,
        map(&[("Success", 3), ("Failed", 1), ("Blocked", 7)])
    );
    assert_eq!(
        by_status(&store, "ExecutionLog").await,
        map(&[("Failed", 1)])
    );
    // The failed worker's run link went to the log with its run id.
    let logged = store
        .run(&Query(
            "SELECT PipelineRunId, RunLink FROM procfwk.ExecutionLog WHERE PipelineStatus = 'Failed'",
        ))
        .await
        .expect("log");
    assert_eq!(logged.len(), 1);
    let run = logged[0].guid("PipelineRunId").expect("run id");
    assert_eq!(
        logged[0].opt_text("RunLink").expect("RunLink"),
        Some(format!(
            "https://adf.azure.com/monitoring/pipelineruns/{run}"
        ))
    );
    assert_eq!(
        count(&store, "SELECT COUNT(0) AS N FROM procfwk.ErrorLog").await,
        2
    );
    let logged = store
        .run(&Query(
            "SELECT ActivityName, ErrorCode, PipelineRunId FROM procfwk.ErrorLog ORDER BY LogId",
        ))
        .await
        .expect("errors");
    assert_eq!(logged[1].text("ErrorCode").ok().as_deref(), Some("2402"));
    assert_eq!(
        logged[0].guid("PipelineRunId").ok(),
        Some(run_id.to_store())
    );

    // Simple failure handling stops the execution at the next stage.
    assert_eq!(
        prepare(&store, id, 2).await,
        Prepared::AllBlocked { blocked: 4 }
    );
    let finished = store
        .run(&FinishExecution {
            execution_id: id,
            now: now(),
        })
        .await
        .expect("finish");
    assert!(!finished.succeeded);

    // Restart: same id, only the failed and blocked workers.
    let restarted = store.run(&start()).await.expect("restart");
    assert_eq!(restarted.mode, StartMode::Restart);
    assert_eq!(restarted.execution_id, id);
    assert_eq!(
        restarted
            .stages
            .iter()
            .map(|s| s.workers)
            .collect::<Vec<_>>(),
        vec![1, 4, 2, 1]
    );
    for stage in [1, 2, 3, 4] {
        for key in keys(id, stage, &prepare(&store, id, stage).await) {
            run_worker(&store, key, WorkerOutcome::Success).await;
        }
    }
    let finished = store
        .run(&FinishExecution {
            execution_id: id,
            now: now(),
        })
        .await
        .expect("finish");
    assert!(finished.succeeded);
    assert_eq!(by_status(&store, "CurrentExecution").await, BTreeMap::new());
    assert_eq!(
        by_status(&store, "ExecutionLog").await,
        map(&[("Failed", 1), ("Success", 11)])
    );
    let again = store
        .run(&FinishExecution {
            execution_id: id,
            now: now(),
        })
        .await
        .expect("finish twice");
    assert!(again.succeeded, "a retried finish is answered, not refused");

    // DependencyChain and activity failures.
    store
        .run(&SetProperty {
            name: "FailureHandling".into(),
            value: "DependencyChain".into(),
            description: None,
            now: now(),
        })
        .await
        .expect("prop");
    let started = store.run(&start()).await.expect("start");
    assert_eq!(started.mode, StartMode::New);
    let id = started.execution_id;
    for key in keys(id, 1, &prepare(&store, id, 1).await) {
        if key.pipeline_id == 3 {
            let plan = store.run(&ReadWorker { key }).await.expect("plan");
            store
                .run(&ClaimWorker {
                    key,
                    params_used: plan.params_used(),
                    token: Uuid::new_v4(),
                    now: now(),
                })
                .await
                .expect("claim");
            assert!(store
                .run(&WorkerActivityFailed {
                    key,
                    activity: "InvalidPipelineName",
                    now: now()
                })
                .await
                .expect("fail"));
        } else {
            run_worker(&store, key, WorkerOutcome::Success).await;
        }
    }
    for stage in [2, 3, 4] {
        for key in keys(id, stage, &prepare(&store, id, stage).await) {
            run_worker(&store, key, WorkerOutcome::Success).await;
        }
    }
    assert_eq!(
        by_status(&store, "CurrentExecution").await,
        map(&[
            ("Success", 6),
            ("InvalidPipelineNameError", 1),
            ("Blocked", 4)
        ])
    );
    let finished = store
        .run(&FinishExecution {
            execution_id: id,
            now: now(),
        })
        .await
        .expect("finish");
    assert!(!finished.succeeded);

    // Override restart archives what is there and starts anew.
    store
        .run(&SetProperty {
            name: "OverideRestart".into(),
            value: "1".into(),
            description: None,
            now: now(),
        })
        .await
        .expect("prop");
    let started = store.run(&start()).await.expect("start");
    assert_eq!(started.mode, StartMode::New);
    assert_ne!(started.execution_id, id);
    store
        .run(&FinishExecution {
            execution_id: started.execution_id,
            now: now(),
        })
        .await
        .expect("stop");

    // Batches: each batch its own execution; the same batch once.
    store
        .run(&SetProperty {
            name: "UseExecutionBatches".into(),
            value: "1".into(),
            description: None,
            now: now(),
        })
        .await
        .expect("prop");
    store
        .run(&SetProperty {
            name: "OverideRestart".into(),
            value: "0".into(),
            description: None,
            now: now(),
        })
        .await
        .expect("prop");
    store
        .run(&Exec(
            "UPDATE procfwk.Stages SET Enabled = 1 WHERE StageId = 5",
        ))
        .await
        .expect("speed");
    store
        .run(&Exec(
            "UPDATE procfwk.Pipelines SET Enabled = 1 WHERE StageId = 5",
        ))
        .await
        .expect("speed");
    store
        .run(&Exec("DELETE FROM procfwk.CurrentExecution"))
        .await
        .expect("clear");
    assert!(matches!(
        store.run(&start()).await,
        Err(LifecycleError::BatchMode(_))
    ));
    let batch = |name: &str| StartExecution {
        batch: Some(name.into()),
        ..start()
    };
    let daily = store.run(&batch("Daily")).await.expect("daily");
    let hourly = store.run(&batch("hourly")).await.expect("hourly");
    assert_ne!(daily.execution_id, hourly.execution_id);
    assert_eq!(
        hourly.stages.iter().map(|s| s.stage_id).collect::<Vec<_>>(),
        vec![5]
    );
    assert!(matches!(
        store.run(&batch("DAILY")).await,
        Err(LifecycleError::AlreadyRunning(_))
    ));
    assert!(matches!(
        store.run(&batch("Weekly")).await,
        Err(LifecycleError::BatchNotFound(_))
    ));
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(0) AS N FROM procfwk.BatchExecution WHERE BatchStatus = 'Running'"
        )
        .await,
        2
    );
}

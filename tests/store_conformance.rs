//! The store conformance suite on the embedded SQLite store and on tiberius talking TDS to the project's
//! test server (which executes the statements on PostgreSQL, with the schema of deploy/sql); and the fault test: the store connection fails
//! or is killed in the middle of lifecycle transitions, and no transition is ever half-applied or applied
//! twice.

mod conformance;

use conformance::*;
use procfwk::adapters::sqlserver::{SqlServerBackend, SqlServerOptions};
use procfwk::orchestration::sample::SeedSample;
use procfwk::orchestration::{
    now, Applied, ApplyResult, ClaimWorker, FinishExecution, ReadWorker, RecordRunId, WorkerKey,
    WorkerOutcome,
};
use procfwk::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tds_test_server::{ServerHandle, ServerOptions, TdsTestServer};
use uuid::Uuid;

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("conformance.db").display());
    let store = procfwk::startup::open_store(&url, None)
        .await
        .expect("open");
    suite(store, true).await;
}

async fn tds() -> (ServerHandle, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    // PostgreSQL behind the TDS server: Azure SQL's concurrency semantics; the schema comes from
    // deploy/sql as `procfwk db init` runs it.
    let server = TdsTestServer::start(ServerOptions {
        backend: tds_test_server::Backend::postgres_for_tests().expect("PostgreSQL for the tests"),
        database_path: dir.path().join("procfwk.db"),
        users: vec![("procfwk".into(), "conformance-Pw1".into())],
        ..Default::default()
    })
    .await
    .expect("TDS test server");
    let url = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;User ID=procfwk;Password=conformance-Pw1;Encrypt=DANGER_PLAINTEXT",
        server.port()
    );
    let backend = SqlServerBackend::connect_with(
        &url,
        None,
        SqlServerOptions {
            pool_size: 4,
            checkout_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await
    .expect("backend");
    let store = Store::new(Arc::new(backend));
    store.init_schema().await.expect("db init (deploy/sql)");
    (server, store, dir)
}

#[tokio::test]
async fn tiberius_store_conforms_over_tds() {
    let (server, store, _dir) = tds().await;
    suite(store, false).await;
    // The statements really went over TDS, parameterised.
    let sent = server.statements();
    assert!(sent.iter().any(|s| s
        .contains("UPDATE procfwk.CurrentExecution SET PipelineStatus = 'Running'")
        && s.contains("@P4")));
    assert!(sent.len() > 100, "{} statements", sent.len());
}

/// Start an execution and settle stage 1's workers, one of them failed, while the store connection fails
/// at given points. Returns the execution id.
async fn lifecycle_under_faults(server: &ServerHandle, store: &Store) -> Uuid {
    store.run(&SeedSample { now: now() }).await.expect("seed");
    let id = store.run(&start()).await.expect("start").execution_id;
    let workers = keys(id, 1, &prepare(store, id, 1).await);
    for (i, key) in workers.iter().enumerate() {
        let plan = store.run(&ReadWorker { key: *key }).await.expect("plan");
        // Kill every connection between steps…
        server.kill_connections();
        let token = Uuid::new_v4();
        store
            .run(&ClaimWorker {
                key: *key,
                params_used: plan.params_used(),
                token,
                now: now(),
            })
            .await
            .expect("claim");
        let run_id = procfwk::domain::RunId::from_store(Uuid::new_v4());
        // …fail the next statement with Azure SQL's "database not available"…
        server.fail_next(1, 40613);
        store
            .run(&RecordRunId {
                key: *key,
                run_id,
                token,
                link: test_link(),
            })
            .await
            .expect("record");
        let outcome = if key.pipeline_id == 3 {
            WorkerOutcome::Failed
        } else {
            WorkerOutcome::Success
        };
        let errors = if outcome == WorkerOutcome::Failed {
            vec![procfwk::domain::response::ActivityError {
                activity_run_id: Uuid::new_v4().to_string(),
                activity_name: "Call Fail Procedure".into(),
                activity_type: "SqlServerStoredProcedure".into(),
                error_code: "2402".into(),
                error_type: "UserError".into(),
                error_message: "The Stored Procedure intentionally failed.".into(),
            }]
        } else {
            Vec::new()
        };
        // …and drop the connection in the middle of the multi-statement result transition.
        server.drop_connection_after(2 + i % 3);
        let applied = store
            .run(&ApplyResult {
                key: *key,
                run_id,
                outcome,
                errors: errors.clone(),
                now: now(),
            })
            .await
            .expect("apply survives a dropped connection");
        assert!(
            matches!(
                applied,
                Applied::Applied { .. } | Applied::AlreadyApplied { .. }
            ),
            "{applied:?}"
        );
        // A repeated call (ADF retry) changes nothing.
        let again = store
            .run(&ApplyResult {
                key: *key,
                run_id,
                outcome,
                errors,
                now: now(),
            })
            .await
            .expect("again");
        assert!(matches!(again, Applied::AlreadyApplied { .. }), "{again:?}");
    }
    id
}

#[tokio::test]
async fn no_half_applied_transition_when_the_connection_fails() {
    let (server, store, _dir) = tds().await;
    let id = lifecycle_under_faults(&server, &store).await;
    // Exactly one result per worker, one log row and one error row for the failed one, 7 blocked.
    assert_eq!(
        by_status(&store, "CurrentExecution").await,
        map(&[("Success", 3), ("Failed", 1), ("Blocked", 7)])
    );
    assert_eq!(
        by_status(&store, "ExecutionLog").await,
        map(&[("Failed", 1)])
    );
    assert_eq!(
        count(&store, "SELECT COUNT(0) AS N FROM procfwk.ErrorLog").await,
        1
    );
    let finished = store
        .run(&FinishExecution {
            execution_id: id,
            now: now(),
        })
        .await
        .expect("finish");
    assert!(!finished.succeeded);
    let _ = WorkerKey {
        execution_id: id,
        stage_id: 1,
        pipeline_id: 1,
    };
}

#[tokio::test]
async fn a_failed_transaction_leaves_the_previous_state() {
    // Without retries the failure is visible — and nothing of the transition is.
    let (server, store, _dir) = tds().await;
    store.run(&SeedSample { now: now() }).await.expect("seed");
    let before = count(&store, "SELECT COUNT(0) AS N FROM procfwk.CurrentExecution").await;
    assert_eq!(before, 0);
    // StartExecution writes 11 rows and a control row in several statements; kill it after the insert.
    // Requests: checkout check, BEGIN, properties, control, executions present, the 11-row insert, the
    // control insert — then the connection drops before the stage query and the COMMIT.
    server.clear_statements();
    server.drop_connection_after(7);
    let store_once = store.clone().with_attempts(1);
    assert!(
        store_once.run(&start()).await.is_err(),
        "the transition failed"
    );
    let sent = server.statements();
    assert!(
        sent.iter()
            .any(|s| s.starts_with("INSERT INTO procfwk.CurrentExecution")),
        "{sent:#?}"
    );
    assert!(
        sent.iter()
            .any(|s| s.starts_with("INSERT INTO procfwk.ExecutionControl")),
        "{sent:#?}"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(0) AS N FROM procfwk.CurrentExecution").await,
        0,
        "no rows half-written"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(0) AS N FROM procfwk.ExecutionControl").await,
        0
    );
    // And the same transition then goes through.
    assert!(store.run(&start()).await.is_ok());
    assert_eq!(
        count(&store, "SELECT COUNT(0) AS N FROM procfwk.CurrentExecution").await,
        11
    );
}

/// On SQLite the credential read is the same statement: its DECRYPTBYPASSPHRASE is the Rust one,
/// opening secrets made as procfwk's AddServicePrincipal makes them, with procfwk's passphrase rule.
#[tokio::test]
async fn sqlite_decrypts_store_in_database_secrets_with_procfwks_passphrase() {
    use procfwk::store::passphrase::{encrypt, utf16le};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.db");
    let store = procfwk::startup::open_store(&format!("sqlite:{}", path.display()), None)
        .await
        .expect("open");
    store.init_schema().await.expect("db init");
    store.run(&SeedSample { now: now() }).await.expect("seed");
    {
        let conn = rusqlite::Connection::open(&path).expect("file");
        let wide = encrypt(
            "FrameworkFactoryADF",
            &utf16le("secret-of-everyone"),
            [1; 16],
        );
        let own = encrypt(
            "FrameworkFactoryADFWait 3",
            &utf16le("secret-of-wait-3"),
            [2; 16],
        );
        let stale = encrypt(
            "OldFactoryNameADFWait 2",
            &utf16le("secret-of-wait-2"),
            [3; 16],
        );
        for (id, client, secret) in [(1, 'a', wide), (2, 'b', own), (3, 'c', stale)] {
            conn.execute(
                "INSERT INTO ServicePrincipals (CredentialId, PrincipalId, PrincipalSecret) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, client.to_string().repeat(8) + "-0000-0000-0000-000000000000", secret],
            )
            .expect("principal");
        }
        conn.execute_batch(
            "INSERT INTO PipelineAuthLink (PipelineId, OrchestratorId, CredentialId) VALUES (NULL, 1, 1), (4, 1, 2), (2, 1, 3)",
        )
        .expect("links");
    }
    let started = store.run(&start()).await.expect("start");
    prepare(&store, started.execution_id, 1).await;
    let secret = |pipeline_id: i32| {
        let store = store.clone();
        async move {
            let key = WorkerKey {
                execution_id: started.execution_id,
                stage_id: 1,
                pipeline_id,
            };
            let plan = store.run(&ReadWorker { key }).await.expect("plan");
            let credential = plan.credential.expect("a credential");
            (
                credential.credential_id,
                credential.has_stored_secret,
                credential.stored_secret.map(|s| s.expose().to_string()),
            )
        }
    };
    assert_eq!(
        secret(1).await,
        (1, true, Some("secret-of-everyone".into()))
    );
    assert_eq!(
        secret(4).await,
        (2, true, Some("secret-of-wait-3".into())),
        "its own wins"
    );
    assert_eq!(
        secret(2).await,
        (3, true, None),
        "stored under another passphrase"
    );
}

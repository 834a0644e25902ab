//! An existing procfwk database, upgraded in place: a database shaped like one procfwk master made
//! (tests/data/procfwk-master: tables, views, synonyms, procedures, rows) on the multi-version engine
//! (PostgreSQL behind the TDS test server), `procfwk db upgrade --dry-run` and `procfwk db init` run as
//! the binary through tiberius, and workers started in metadata mode with procfwk's credentials:
//! `StoreInDatabase` secrets decrypted on the server, a `StoreInKeyVault` one, and none at all.

mod support;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use support::*;
use tds_test_server::{ServerHandle, ServerOptions, TdsTestServer};
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

const USER: &str = "procfwk";
const PASSWORD: &str = "Master-Pw-4e1";
const SCHEMA: &str = include_str!("data/procfwk-master/01_schema.sql");
const ROWS: &str = include_str!("data/procfwk-master/02_rows.sql");

type Conn = Client<Compat<TcpStream>>;

struct Master {
    server: ServerHandle,
    /// `PROCFWK_METADATA_DB` for the binary.
    db: String,
}

/// A fresh database built by the fixture scripts, batch by batch as sqlcmd would send them.
async fn master() -> Master {
    let server = TdsTestServer::start(ServerOptions {
        backend: tds_test_server::Backend::postgres_for_tests().expect("PostgreSQL for the tests"),
        users: vec![(USER.into(), PASSWORD.into())],
        ..Default::default()
    })
    .await
    .expect("TDS test server");
    let db = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;User ID={USER};Password={PASSWORD};Encrypt=DANGER_PLAINTEXT",
        server.port()
    );
    let master = Master { server, db };
    let mut c = master.connect().await;
    for script in [SCHEMA, ROWS] {
        for batch in procfwk::store::schema::script_batches(script) {
            run(&mut c, &batch)
                .await
                .unwrap_or_else(|e| panic!("fixture batch failed: {e}\n{batch}"));
        }
    }
    master
}

impl Master {
    async fn connect(&self) -> Conn {
        let config =
            Config::from_ado_string(&self.server.connection_string(USER, PASSWORD, "procfwk"))
                .expect("config");
        let tcp = TcpStream::connect(config.get_addr()).await.expect("tcp");
        Client::connect(config, tcp.compat_write())
            .await
            .expect("login")
    }

    /// `procfwk db …` as a process (the TDS server lives in this one: off the async threads).
    async fn procfwk_db(&self, args: &[&str]) -> (bool, String) {
        let db = self.db.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(binary())
                .arg("db")
                .args(&args)
                .env("PROCFWK_METADATA_DB", &db)
                .output()
        })
        .await
        .expect("join")
        .expect("procfwk db");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Every object (schema.name → type) and every table's row count.
    async fn snapshot(&self) -> (BTreeMap<String, String>, BTreeMap<String, i64>) {
        let mut c = self.connect().await;
        let objects: BTreeMap<String, String> = rows(
            &mut c,
            "SELECT s.name AS SchemaName, o.name AS ObjectName, o.type AS ObjectType FROM sys.objects o \
             INNER JOIN sys.schemas s ON s.schema_id = o.schema_id \
             WHERE s.name IN (N'procfwk', N'procfwkHelpers', N'procfwkReporting', N'procfwkTesting', N'dbo')",
        )
        .await
        .into_iter()
        .map(|r| (format!("{}.{}", r[0], r[1]), r[2].trim().to_string()))
        .collect();
        let mut counts = BTreeMap::new();
        for (name, kind) in &objects {
            if kind == "U" {
                let n = rows(&mut c, &format!("SELECT COUNT(*) AS N FROM {name}")).await;
                counts.insert(name.clone(), n[0][0].parse::<i64>().expect("count"));
            }
        }
        (objects, counts)
    }
}

async fn run(c: &mut Conn, sql: &str) -> Result<(), tiberius::error::Error> {
    c.simple_query(sql).await?.into_results().await.map(|_| ())
}

/// Rows of a query, every column as text.
async fn rows(c: &mut Conn, sql: &str) -> Vec<Vec<String>> {
    let result = c
        .simple_query(sql)
        .await
        .expect("query")
        .into_first_result()
        .await
        .expect("rows");
    result
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<&str, _>(i)
                        .ok()
                        .flatten()
                        .map(str::to_string)
                        .or_else(|| r.try_get::<i32, _>(i).ok().flatten().map(|v| v.to_string()))
                        .or_else(|| r.try_get::<i64, _>(i).ok().flatten().map(|v| v.to_string()))
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_upgrade_on_a_procfwk_master_database_keeps_every_row_and_a_second_run_is_a_no_op() {
    let m = master().await;
    let (objects, counts) = m.snapshot().await;
    assert_eq!(objects["procfwk.LastExecution"], "SN", "{objects:?}");
    assert_eq!(objects["procfwk.AddProperty"], "SN");
    assert_eq!(objects["procfwk.ExecutionWrapper"], "P");
    assert_eq!(objects["procfwkReporting.LastExecution"], "V");
    assert_eq!(counts["procfwk.ExecutionLog"], 10 + 4, "{counts:?}");

    // The dry run lists what it would change, and changes nothing.
    let (ok, plan) = m.procfwk_db(&["upgrade", "--dry-run"]).await;
    assert!(ok, "{plan}");
    assert!(plan.contains("no schema version recorded"), "{plan}");
    for change in [
        "CREATE TABLE [procfwk].[SchemaVersion]",
        "CREATE TABLE [procfwk].[ExecutionControl]",
        "CREATE VIEW [procfwk].[ServicePrincipals]",
        "CREATE TABLE [procfwk].[VmPools]",
        "ALTER TABLE [procfwk].[CurrentExecution] ADD [ClaimToken] UNIQUEIDENTIFIER NULL",
        "CREATE INDEX [IX_ExecutionLog_LocalExecutionId]",
    ] {
        assert!(plan.contains(change), "{change} missing from:\n{plan}");
    }
    for untouched in [
        "[procfwk].[LastExecution]",
        "[procfwk].[CurrentExecutionSummary]",
        "[procfwk].[CompleteExecutionLog]",
        "[procfwk].[CurrentProperties]",
        "[procfwk].[Pipelines]",
        "CREATE TABLE [procfwk].[ServicePrincipals]",
    ] {
        assert!(!plan.contains(untouched), "{untouched} listed:\n{plan}");
    }
    assert_eq!(
        m.snapshot().await,
        (objects.clone(), counts.clone()),
        "the dry run changed something"
    );

    let (ok, out) = m.procfwk_db(&["init"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("now at version 5"), "{out}");
    let (after_objects, after_counts) = m.snapshot().await;
    for (table, n) in &counts {
        assert_eq!(after_counts.get(table), Some(n), "{table} kept its rows");
    }
    for (name, kind) in &objects {
        assert_eq!(
            after_objects.get(name),
            Some(kind),
            "{name} is still a {kind}"
        );
    }
    assert_eq!(after_objects["procfwk.ExecutionControl"], "U");
    assert_eq!(after_objects["procfwk.ServicePrincipals"], "V");
    assert_eq!(after_objects["procfwk.VmLeaseIntents"], "U");
    let mut c = m.connect().await;
    assert_eq!(
        rows(
            &mut c,
            "SELECT MAX(Version) AS V FROM procfwk.SchemaVersion"
        )
        .await,
        [["5"]]
    );
    assert_eq!(
        rows(
            &mut c,
            "SELECT COUNT(*) AS N FROM procfwk.CurrentExecution WHERE ClaimToken IS NULL"
        )
        .await,
        [["0"]],
        "the claim columns are there"
    );
    assert_eq!(
        rows(
            &mut c,
            "SELECT COUNT(*) AS N FROM procfwk.ExecutionLog WHERE RunLink IS NOT NULL"
        )
        .await,
        [["0"]],
        "the run link column is there, empty for procfwk's own rows"
    );

    // The read-outs work through procfwk's synonyms.
    let (ok, last) = m.procfwk_db(&["last-execution"]).await;
    assert!(ok, "{last}");
    assert!(
        last.contains("Intentional Error") && last.contains("Failed"),
        "{last}"
    );

    // A second run consults the recorded version: nothing to do, nothing sent but the version read.
    m.server.clear_statements();
    let (ok, again) = m.procfwk_db(&["init"]).await;
    assert!(ok, "{again}");
    assert!(
        again.contains("schema version 5: nothing to change"),
        "{again}"
    );
    assert!(
        !m.server
            .statements()
            .iter()
            .any(|s| s.contains("CREATE") || s.contains("ALTER")),
        "{:?}",
        m.server.statements()
    );
    assert_eq!(m.snapshot().await, (after_objects, after_counts));
    m.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_of_an_unusable_shape_is_refused_by_name_before_anything_changes() {
    let m = master().await;
    let mut c = m.connect().await;
    // A CurrentExecution from before 1.6 (no PipelineParamsUsed): db init cannot add what procfwk's
    // own procedures would have to fill.
    run(
        &mut c,
        "ALTER TABLE [procfwk].[CurrentExecution] DROP COLUMN [PipelineParamsUsed]",
    )
    .await
    .expect("drop column");
    let before = m.snapshot().await;
    for args in [&["upgrade", "--dry-run"][..], &["init"][..]] {
        let (ok, out) = m.procfwk_db(args).await;
        assert!(!ok, "{out}");
        assert!(
            out.contains("procfwk.CurrentExecution (table): it has no column PipelineParamsUsed"),
            "{out}"
        );
        assert!(out.contains("Nothing was changed"), "{out}");
        assert_eq!(m.snapshot().await, before, "nothing changed ({args:?})");
    }
    run(
        &mut c,
        "ALTER TABLE [procfwk].[CurrentExecution] ADD [PipelineParamsUsed] NVARCHAR(MAX) NULL",
    )
    .await
    .expect("add it back");

    // An object of the name of one of our views that is no view: a procedure.
    run(&mut c, "DROP SYNONYM [procfwk].[LastExecution]")
        .await
        .expect("drop synonym");
    run(
        &mut c,
        "CREATE PROCEDURE [procfwk].[LastExecution] AS SELECT 1 AS [LogId]",
    )
    .await
    .expect("procedure");
    let before = m.snapshot().await;
    let (ok, out) = m.procfwk_db(&["init"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("procfwk.LastExecution (stored procedure): procfwk needs a view"),
        "{out}"
    );
    assert_eq!(m.snapshot().await, before);
    m.server.shutdown().await;
}

/// An upgraded master database and a handler on it, with the simulator.
async fn upgraded_stack() -> (Master, Stack) {
    let m = master().await;
    let (ok, out) = m.procfwk_db(&["init"]).await;
    assert!(ok, "{out}");
    let stack = stack_with(sim_config(), &[("PROCFWK_METADATA_DB", m.db.clone())]);
    (m, stack)
}

async fn start_stage_one(stack: &Stack) -> String {
    let (status, started) = stack.call("StartExecution", &json!({})).await;
    assert_eq!(status, 200, "{started}");
    let execution = started["ExecutionId"].as_str().expect("id").to_string();
    let (status, stage) = stack
        .call(
            "PrepareStage",
            &json!({"executionId": execution, "stageId": 1}),
        )
        .await;
    assert_eq!(status, 200, "{stage}");
    execution
}

fn worker(execution: &str, pipeline: i64) -> Value {
    json!({"executionId": execution, "stageId": 1, "pipelineId": pipeline})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_in_database_and_key_vault_workers_run_with_procfwks_credentials() {
    let (m, stack) = upgraded_stack().await;
    let execution = start_stage_one(&stack).await;

    // Wait 1: the orchestrator-wide credential, its secret decrypted on the server with
    // CONCAT(OrchestratorName, OrchestratorType): the simulator's token endpoint sees A's secret.
    let (status, out) = stack
        .call("ExecutePipelineV2", &worker(&execution, 1))
        .await;
    assert_eq!(status, 200, "{out}\n{}", stack.handler.output());
    let tokens = stack.token_requests().await;
    assert_eq!(tokens[CLIENT_A], 1, "{tokens}");
    assert_eq!(tokens.get(CLIENT_B), None, "{tokens}");
    // Wait 3: its own credential (pipeline-specific wins over orchestrator-wide), passphrase
    // CONCAT(OrchestratorName, OrchestratorType, PipelineName): principal B.
    let (status, out3) = stack
        .call("ExecutePipelineV2", &worker(&execution, 4))
        .await;
    assert_eq!(status, 200, "{out3}");
    assert_eq!(stack.token_requests().await[CLIENT_B], 1);
    // Wait 2: StoreInKeyVault URLs, read from Key Vault with the managed identity.
    let (status, out2) = stack
        .call("ExecutePipelineV2", &worker(&execution, 2))
        .await;
    assert_eq!(status, 200, "{out2}");
    assert_eq!(stack.vault_reads().await, 2);

    // Wait 1 runs to its end, checked with the same credential.
    let check = with(worker(&execution, 1), "runId", out["RunId"].clone());
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = stack.call("CheckPipelineStatus", &check).await;
        assert_eq!(status, 200, "{body}");
        last = body;
        if last["SimpleStatus"] != "Running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(last["WorkerStatus"], "Success", "{last}");
    assert_eq!(
        stack.token_requests().await[CLIENT_A],
        1,
        "one token per principal"
    );
    let log = stack.handler.output();
    for secret in [SECRET_A, SECRET_B] {
        assert!(!log.contains(secret), "a decrypted secret reached the log");
    }
    m.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_credentials_is_refused_unless_the_metadata_says_managed_identity() {
    let (m, stack) = upgraded_stack().await;
    let mut c = m.connect().await;
    run(&mut c, "DELETE FROM [procfwk].[PipelineAuthLink]")
        .await
        .expect("no credentials");
    let execution = start_stage_one(&stack).await;

    let (status, out) = stack
        .call("ExecutePipelineV2", &worker(&execution, 1))
        .await;
    assert_eq!(status, 500, "{out}");
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no credential")
            && message.contains("UseManagedIdentityForUnlinkedWorkers"),
        "{out}"
    );
    assert_eq!(
        rows(
            &mut c,
            "SELECT PipelineStatus FROM procfwk.CurrentExecution WHERE PipelineId = 1"
        )
        .await,
        [["ExecuteWorkerPipelineError"]],
        "recorded as the worker's failure"
    );
    assert_eq!(
        stack.token_requests().await.get("managed-identity"),
        None,
        "the managed identity was not used"
    );

    let (ok, out) = m
        .procfwk_db(&["set-property", "UseManagedIdentityForUnlinkedWorkers", "1"])
        .await;
    assert!(ok, "{out}");
    let (status, out) = stack
        .call("ExecutePipelineV2", &worker(&execution, 2))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(stack.token_requests().await["managed-identity"], 1);
    m.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_encryptbypassphrase_and_rusts_decrypt_agree_both_ways() {
    use procfwk::store::passphrase;
    let m = master().await;
    let mut c = m.connect().await;
    // Made by the engine's ENCRYPTBYPASSPHRASE (02_rows.sql), opened in Rust.
    let stored = c
        .simple_query("SELECT PrincipalSecret FROM dbo.ServicePrincipals WHERE CredentialId = 1")
        .await
        .expect("query")
        .into_row()
        .await
        .expect("row")
        .and_then(|r| r.get::<&[u8], _>(0).map(<[u8]>::to_vec))
        .expect("a secret");
    assert_eq!(&stored[..4], &[2, 0, 0, 0], "SQL Server's version-2 layout");
    let clear = passphrase::decrypt("FrameworkFactoryADF", &stored).expect("decrypts in Rust");
    assert_eq!(passphrase::from_utf16le(&clear).as_deref(), Some(SECRET_A));
    assert_eq!(
        passphrase::decrypt("FrameworkFactoryADFWait 1", &stored),
        None
    );
    // Made in Rust, opened by the engine's DECRYPTBYPASSPHRASE.
    let ours = passphrase::encrypt(
        "FrameworkFactoryADFWait 3",
        &passphrase::utf16le(SECRET_B),
        [9; 16],
    )
    .expect("encrypts");
    let opened = c
        .query(
            "SELECT DECRYPTBYPASSPHRASE(CONCAT(N'FrameworkFactory', 'ADF', N'Wait 3'), @P1) AS Clear",
            &[&ours.as_slice()],
        )
        .await
        .expect("query")
        .into_row()
        .await
        .expect("row")
        .and_then(|r| r.get::<&[u8], _>(0).map(<[u8]>::to_vec));
    assert_eq!(opened, Some(passphrase::utf16le(SECRET_B)));
    m.server.shutdown().await;
}

//! Answers that say what to do: an uninitialised store (missing SQLite file, or a file without procfwk's
//! tables) answers 503 `MetadataStoreNotInitialised` naming `procfwk db init`, and the file is not
//! created; a malformed `PROCFWK_METADATA_DB` stops `procfwk serve` at start-up naming the setting; a
//! pipeline parameter ARM refuses is a 400 naming `pipelineParameters.<name>` beside ARM's own code and
//! message; `orchestratorType: "SYN"` is a 400 naming `orchestratorType`.

mod support;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use support::*;

fn vm_body() -> Value {
    json!({"action": "status", "subscriptionId": SUBSCRIPTION, "resourceGroupName": "ADF.procfwk",
           "vmName": "shir-vm-1", "holder": "run-1",
           "factoryName": "FrameworkFactory", "integrationRuntimeName": "SelfHostedRuntime"})
}

fn assert_not_initialised(function: &str, status: u16, out: &Value) {
    assert_eq!(status, 503, "{function}: {out}");
    assert_eq!(
        out["error"]["code"], "MetadataStoreNotInitialised",
        "{function}: {out}"
    );
    let message = out["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("procfwk db init"), "{function}: {out}");
}

#[tokio::test]
async fn a_missing_sqlite_file_is_not_created_and_answers_503_saying_db_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("never-initialised.db");
    // A real process: the managed identity reads IDENTITY_ENDPOINT from the process environment.
    let s = stack_with(
        sim_config(),
        &[("PROCFWK_METADATA_DB", format!("sqlite:{}", file.display()))],
    );
    let (status, out) = s.call("StartExecution", &json!({})).await;
    assert_not_initialised("StartExecution", status, &out);
    let (status, out) = s.invoke("StartExecution", &json!({})).await;
    assert_not_initialised("StartExecution (invocation)", status, &out);
    let (status, out) = s.call("VmPower", &vm_body()).await;
    assert_not_initialised("VmPower", status, &out);
    assert!(!file.exists(), "serve created the SQLite file");

    // Once `db init` has run, the same process uses it without a restart.
    let init = Command::new(binary())
        .args(["db", "init"])
        .env("PROCFWK_METADATA_DB", format!("sqlite:{}", file.display()))
        .output()
        .expect("db init");
    assert!(init.status.success(), "{init:?}");
    let (status, out) = s.call("StartExecution", &json!({})).await;
    assert_ne!(status, 503, "{out}");
    assert_ne!(out["error"]["code"], "MetadataStoreNotInitialised", "{out}");
}

#[tokio::test]
async fn a_file_without_procfwk_tables_answers_503_saying_db_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("empty.db");
    std::fs::write(&file, b"").expect("empty file");
    // A real process: the managed identity reads IDENTITY_ENDPOINT from the process environment.
    let s = stack_with(
        sim_config(),
        &[("PROCFWK_METADATA_DB", format!("sqlite:{}", file.display()))],
    );
    let mut checked = 0;
    for function in ["StartExecution", "PrepareStage", "FinishExecution"] {
        let body = json!({"executionId": "6b5a6c1e-0000-4000-8000-000000000001", "stageId": 1});
        let (status, out) = s.call(function, &body).await;
        if status == 400 {
            // Bad input is answered before the store is read.
            continue;
        }
        assert_not_initialised(function, status, &out);
        checked += 1;
    }
    assert!(checked >= 2, "the store was reached by most metadata calls");
    let (status, out) = s.call("VmPower", &vm_body()).await;
    assert_not_initialised("VmPower", status, &out);
}

#[test]
fn serve_refuses_a_malformed_metadata_db_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(binary())
        .args(["serve", "--port", "0"])
        .current_dir(dir.path())
        .env("PROCFWK_METADATA_DB", "sqlite3://x.db")
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .stdin(Stdio::null())
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "serve started anyway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PROCFWK_METADATA_DB"), "{stderr}");
    assert!(stderr.contains("sqlite:<path>"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it must not listen"
    );
    assert!(
        std::fs::read_dir(dir.path()).map_or(0, |d| d.count()) == 0,
        "no file created"
    );
}

#[tokio::test]
async fn a_parameter_arm_refuses_names_the_field() {
    let s = spawn_app();
    let body = v2_body("Wait 1", json!({"WaitTime": "ten"}));
    for (status, out) in [
        s.call("ExecutePipelineV2", &body).await,
        s.invoke("ExecutePipelineV2", &body).await,
    ] {
        assert_eq!(status, 400, "{out}");
        assert_eq!(
            out["error"]["field"], "pipelineParameters.WaitTime",
            "{out}"
        );
        assert_eq!(out["error"]["upstream"]["status"], 400, "{out}");
        assert!(out["error"]["upstream"]["code"].is_string(), "{out}");
        let said = out["error"]["upstream"]["message"].as_str().unwrap_or("");
        assert!(
            said.contains("'WaitTime'") && said.contains("not of type 'Int'"),
            "ARM's own message stays: {out}"
        );
    }
    // A parameter the pipeline does not declare.
    let body = v2_body("Wait 1", json!({"WaitTime": 1, "Nope": 2}));
    let (status, out) = s.call("ExecutePipelineV2", &body).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "pipelineParameters.Nope", "{out}");
}

#[tokio::test]
async fn synapse_is_a_400_naming_orchestrator_type() {
    let s = spawn_app();
    let body = with(
        v2_body("Wait 1", json!({"WaitTime": 1})),
        "orchestratorType",
        json!("SYN"),
    );
    for function in ["ExecutePipelineV2", "ValidatePipeline"] {
        let (status, out) = s.call(function, &body).await;
        assert_eq!(status, 400, "{function}: {out}");
        assert_eq!(out["error"]["code"], "Unsupported", "{out}");
        assert_eq!(
            out["error"]["field"], "orchestratorType",
            "{function}: {out}"
        );
    }
}

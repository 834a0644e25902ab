//! VmPower and VmIdleSweep end to end: a real `procfwk serve` and `procfwk sim` on loopback ports, the
//! leases in a SQLite metadata store, VMs and self-hosted runtimes in the simulator (time scale 0.01:
//! a start takes about 1 s, the runtime node comes online 0.45 s after the VM runs).

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;

struct VmStack {
    stack: Stack,
    db: String,
    _dir: tempfile::TempDir,
}

fn vm_stack(extra: &[(&str, String)]) -> VmStack {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("leases.db").display());
    let init = std::process::Command::new(binary())
        .args(["db", "init"])
        .env("PROCFWK_METADATA_DB", &db)
        .output()
        .expect("procfwk db init runs");
    assert!(init.status.success(), "db init: {init:?}");
    let mut env = vec![("PROCFWK_METADATA_DB", db.clone())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    VmStack {
        stack: stack_with(sim_config(), &env),
        db,
        _dir: dir,
    }
}

fn body(action: &str, holder: &str) -> Value {
    json!({"action": action, "subscriptionId": SUBSCRIPTION, "resourceGroupName": "ADF.procfwk",
           "vmName": "shir-vm-1", "holder": holder,
           "factoryName": "FrameworkFactory", "integrationRuntimeName": "SelfHostedRuntime"})
}

impl VmStack {
    async fn power(&self, body: &Value) -> Value {
        let (status, reply) = self.stack.call("VmPower", body).await;
        assert_eq!(status, 200, "{reply}");
        reply
    }

    /// Poll `status` until Ready (at most 15 s); returns the replies seen.
    async fn until_ready(&self, body: &Value) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut status = body.clone();
        status["action"] = json!("status");
        loop {
            let reply = self.power(&status).await;
            let ready = reply["Ready"] == true;
            seen.push(reply);
            if ready || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn vm(&self, name: &str) -> Value {
        let vms = self.stack.sim_get("/_sim/vms").await;
        vms["vms"]
            .as_array()
            .and_then(|list| list.iter().find(|v| v["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    async fn history(&self, name: &str, event: &str) -> usize {
        let sim = self.stack.sim_get("/_sim/vms").await;
        sim["history"].as_array().map_or(0, |events| {
            events
                .iter()
                .filter(|e| e["vm"] == name && e["event"] == event)
                .count()
        })
    }

    async fn sweep(&self) -> Value {
        let payload = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true},
            "ScheduleStatus": null, "IsPastDue": false}}, "Metadata": {}});
        let r = self
            .stack
            .client
            .post(format!("{}/VmIdleSweep", self.stack.handler.url))
            .json(&payload)
            .send()
            .await
            .expect("handler reachable");
        assert_eq!(r.status().as_u16(), 200);
        let reply: Value = r.json().await.expect("JSON");
        assert!(reply["Logs"].is_array(), "{reply}");
        reply["ReturnValue"].clone()
    }
}

#[tokio::test]
async fn start_answers_at_once_ready_waits_for_the_runtime_node_and_stop_deallocates() {
    let s = vm_stack(&[]);
    let mut start = body("start", "parent-run-1");
    start["graceSeconds"] = json!(0);
    let begun = Instant::now();
    let reply = s.power(&start).await;
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "start must not wait for the boot"
    );
    assert_eq!(reply["Action"], "start");
    assert_eq!(reply["VmName"], "shir-vm-1");
    assert_eq!(reply["PowerState"], "starting");
    assert_eq!(reply["Ready"], false);
    assert_eq!(reply["Started"], true);
    assert_eq!(reply["ActiveLeases"], 1);
    assert_eq!(reply["Holder"], "parent-run-1");
    assert!(reply["LeaseExpiresAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(reply["RetryAfterSeconds"].as_u64().is_some_and(|s| s > 0));

    let seen = s.until_ready(&start).await;
    let last = seen.last().cloned().unwrap_or(Value::Null);
    assert_eq!(last["Ready"], true, "{seen:?}");
    assert_eq!(last["PowerState"], "running");
    assert_eq!(last["RuntimeState"], "Online");
    assert_eq!(last["Nodes"][0]["RuntimeNodeStatus"], "Online");
    // The VM ran before its runtime node was Online: some poll saw running but not ready.
    assert!(
        seen.iter()
            .any(|r| r["PowerState"] == "running" && r["Ready"] == false),
        "Ready must wait for the runtime node: {seen:?}"
    );
    assert_eq!(s.history("shir-vm-1", "start_requested").await, 1);

    let mut stop = start.clone();
    stop["action"] = json!("stop");
    let reply = s.power(&stop).await;
    assert_eq!(reply["Deallocated"], true, "{reply}");
    assert_eq!(reply["ActiveLeases"], 0);
    assert_eq!(reply["PowerState"], "deallocating");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(s.vm("shir-vm-1").await["power_state"], "deallocated");
}

#[tokio::test]
async fn back_to_back_pipelines_within_grace_do_not_stop_and_start_the_vm() {
    let s = vm_stack(&[("PROCFWK_VM_GRACE_SECS", "60".into())]);
    let first = body("start", "run-a");
    s.power(&first).await;
    assert_eq!(
        s.until_ready(&first)
            .await
            .last()
            .map(|r| r["Ready"].clone()),
        Some(json!(true))
    );
    let mut stop = first.clone();
    stop["action"] = json!("stop");
    let reply = s.power(&stop).await;
    assert_eq!(reply["Deallocated"], false, "{reply}");
    assert_eq!(reply["PowerState"], "running");
    assert!(reply["DeallocateAfter"].is_string(), "{reply}");
    // The next pipeline arrives inside the grace period: the VM is still there and ready.
    let second = body("start", "run-b");
    let reply = s.power(&second).await;
    assert_eq!(reply["Started"], false);
    assert_eq!(reply["Ready"], true, "{reply}");
    // A sweep inside the grace leaves it alone.
    let swept = s.sweep().await;
    assert_eq!(swept["Deallocated"], json!([]), "{swept}");
    assert_eq!(s.history("shir-vm-1", "start_requested").await, 1);
    assert_eq!(s.history("shir-vm-1", "deallocate_requested").await, 0);

    // The cost report reads the same story from the power log: one start, two leases.
    let report = std::process::Command::new(binary())
        .args(["db", "vm-report", "--json"])
        .env("PROCFWK_METADATA_DB", &s.db)
        .output()
        .expect("procfwk db vm-report runs");
    assert!(report.status.success(), "{report:?}");
    let costs: Value = serde_json::from_slice(&report.stdout).expect("JSON report");
    assert_eq!(costs[0]["starts"], 1, "{costs}");
    assert_eq!(costs[0]["leases"], 2, "{costs}");
    assert_eq!(costs[0]["deallocations"], 0, "{costs}");
    let allocated = costs[0]["allocated_hours"].as_f64().unwrap_or(0.0);
    let leased = costs[0]["leased_hours"].as_f64().unwrap_or(1.0);
    assert!(allocated >= leased && allocated > 0.0, "{costs}");
}

#[tokio::test]
async fn a_crashed_holder_expires_and_the_sweeper_deallocates() {
    let s = vm_stack(&[("PROCFWK_VM_GRACE_SECS", "0".into())]);
    let mut start = body("start", "crashing-run");
    start["leaseSeconds"] = json!(1);
    s.power(&start).await;
    // The holder never calls stop. Its lease runs out; the sweeper notices.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let swept = s.sweep().await;
    assert_eq!(swept["Pools"], 1, "{swept}");
    assert_eq!(swept["ExpiredLeases"], 1, "{swept}");
    assert_eq!(
        swept["Deallocated"].as_array().map(Vec::len),
        Some(1),
        "{swept}"
    );
    let status = s.power(&body("status", "someone-else")).await;
    assert_eq!(status["ActiveLeases"], 0);
    assert!(
        ["deallocating", "deallocated"].contains(&status["PowerState"].as_str().unwrap_or("")),
        "{status}"
    );
}

#[tokio::test]
async fn a_multi_node_runtime_scales_up_with_the_leases_and_down_when_they_go() {
    let s = vm_stack(&[("PROCFWK_VM_GRACE_SECS", "0".into())]);
    let pool = |action: &str, holder: &str| {
        json!({"action": action, "subscriptionId": SUBSCRIPTION, "resourceGroupName": "ADF.procfwk",
               "vmNames": ["shir-vm-2", "shir-vm-3", "shir-vm-4"], "holder": holder, "jobsPerNode": 1,
               "factoryName": "FrameworkFactory", "integrationRuntimeName": "SelfHostedCluster"})
    };
    let one = s.power(&pool("start", "w1")).await;
    assert_eq!(one["NodesNeeded"], 1, "{one}");
    s.power(&pool("start", "w2")).await;
    let three = s.power(&pool("start", "w3")).await;
    assert_eq!(three["NodesNeeded"], 3, "{three}");
    assert_eq!(three["ActiveLeases"], 3);
    for vm in ["shir-vm-2", "shir-vm-3", "shir-vm-4"] {
        assert_eq!(s.history(vm, "start_requested").await, 1, "{vm}");
    }
    let seen = s.until_ready(&pool("status", "w1")).await;
    assert_eq!(
        seen.last().map(|r| r["Ready"].clone()),
        Some(json!(true)),
        "{seen:?}"
    );
    // Load drops to one lease: the two surplus nodes go, the first stays.
    s.power(&pool("stop", "w3")).await;
    let down = s.power(&pool("stop", "w2")).await;
    assert_eq!(down["NodesNeeded"], 1, "{down}");
    assert_eq!(down["Nodes"][0]["PowerState"], "running", "{down}");
    assert_eq!(s.history("shir-vm-2", "deallocate_requested").await, 0);
    assert_eq!(s.history("shir-vm-3", "deallocate_requested").await, 1);
    assert_eq!(s.history("shir-vm-4", "deallocate_requested").await, 1);
    // A VM of this pool cannot be claimed by another pool.
    let mut other = body("start", "x");
    other["vmName"] = json!("shir-vm-3");
    other["integrationRuntimeName"] = json!("SelfHostedCluster");
    let (status, reply) = s.stack.call("VmPower", &other).await;
    assert_eq!(status, 409, "{reply}");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let s = vm_stack(&[]);
    for (patch, field) in [
        (json!({"action": "reboot"}), "action"),
        (json!({"subscriptionId": "x"}), "subscriptionId"),
        (json!({"holder": null}), "holder"),
        (json!({"vmName": "bad/name"}), "vmName"),
        (json!({"leaseSeconds": "soon"}), "leaseSeconds"),
    ] {
        let mut b = body("start", "h");
        for (k, v) in patch.as_object().into_iter().flatten() {
            b[k] = v.clone();
        }
        let (status, reply) = s.stack.call("VmPower", &b).await;
        assert_eq!(status, 400, "{patch}: {reply}");
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    // The invocation-payload path runs the same code.
    let (status, reply) = s.stack.invoke("VmPower", &json!({"action": "start"})).await;
    assert_eq!(status, 400, "{reply}");
}

#[tokio::test]
async fn a_service_principal_in_the_body_is_used_and_never_logged() {
    let s = vm_stack(&[]);
    let mut start = body("start", "sp-run");
    start["tenantId"] = json!(TENANT);
    start["applicationId"] = json!(CLIENT_A);
    start["authenticationKey"] = json!(SECRET_A);
    let reply = s.power(&start).await;
    assert_eq!(reply["Started"], true, "{reply}");
    // A wrong secret is refused by Entra ID: 401, and the secret is not echoed.
    start["authenticationKey"] = json!("wrong-secret-77aa");
    let (status, reply) = s.stack.call("VmPower", &start).await;
    assert_eq!(status, 401, "{reply}");
    assert!(!reply.to_string().contains("wrong-secret-77aa"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.stack.handler.output();
    assert!(logs.contains("VmPower decision"), "trace logging is on");
    for secret in [
        SECRET_A,
        "wrong-secret-77aa",
        IDENTITY_HEADER,
        "simtok.",
        "Bearer ",
        "client_secret=",
    ] {
        assert!(!logs.contains(secret), "{secret} reached the handler log");
    }
}

#[tokio::test]
async fn worker_mode_bad_bodies_name_the_field() {
    let vm = vm_stack(&[]);
    let worker = |patch: Value| {
        let mut b = json!({"action": "start", "executionId": "8a6b5c4d-1e2f-4a3b-9c8d-7e6f5a4b3c2d",
                           "stageId": 1, "pipelineId": 1});
        for (k, v) in patch.as_object().into_iter().flatten() {
            b[k] = v.clone();
        }
        b
    };
    for (patch, field) in [
        (json!({"action": "reboot"}), "action"),
        (json!({"executionId": "not-a-guid"}), "executionId"),
        (json!({"stageId": "one"}), "stageId"),
        (json!({"pipelineId": null}), "pipelineId"),
        // A worker with no procfwk.WorkerRuntimes row needs no VM.
        (json!({}), "pipelineId"),
    ] {
        let (status, reply) = vm.stack.call("VmPower", &worker(patch.clone())).await;
        assert_eq!(status, 400, "{patch}: {reply}");
        assert_eq!(reply["error"]["field"], field, "{patch}: {reply}");
    }
}

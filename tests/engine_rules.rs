//! What Azure SQL does differently from SQLite, shown on the multi-version engine (PostgreSQL behind
//! the TDS test server, with Azure SQL's case-insensitive collation and 900-byte key limit): lease
//! holders that differ only in case are one holder, and pools of long VM names still fit their keys.

use procfwk::domain::{Guid, PowerState, ResourceName};
use procfwk::leases::{
    Change, Decision, OperationOutcome, PoolSpec, PowerControl, PowerRequest, RuntimeRef,
    RuntimeStatus, Sizing, VmRef,
};
use procfwk::orchestration::now;
use procfwk::store::sqlserver::{SqlServerBackend, SqlServerOptions};
use procfwk::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tds_test_server::{ServerHandle, ServerOptions, TdsTestServer};

async fn db() -> (ServerHandle, Store) {
    let server = TdsTestServer::start(ServerOptions {
        backend: tds_test_server::Backend::postgres_for_tests().expect("PostgreSQL for the tests"),
        users: vec![("procfwk".into(), "Rules-Pw1".into())],
        ..Default::default()
    })
    .await
    .expect("TDS test server");
    let url = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;User ID=procfwk;Password=Rules-Pw1;Encrypt=DANGER_PLAINTEXT",
        server.port()
    );
    let backend = SqlServerBackend::connect_with(
        &url,
        None,
        SqlServerOptions {
            pool_size: 2,
            checkout_timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await
    .expect("backend");
    let store = Store::new(Arc::new(backend));
    store.init_schema().await.expect("db init");
    (server, store)
}

/// VMs that are always running (these tests are about keys, not power).
struct Running;

#[async_trait::async_trait]
impl PowerControl for Running {
    async fn power_state(&self, _: &VmRef) -> Result<PowerState, procfwk::adapters::UpstreamError> {
        Ok(PowerState::Running)
    }
    async fn start(&self, _: &VmRef) -> Result<PowerRequest, procfwk::adapters::UpstreamError> {
        Ok(PowerRequest::Accepted {
            operation_url: None,
            retry_after_secs: None,
        })
    }
    async fn deallocate(
        &self,
        _: &VmRef,
    ) -> Result<PowerRequest, procfwk::adapters::UpstreamError> {
        Ok(PowerRequest::Accepted {
            operation_url: None,
            retry_after_secs: None,
        })
    }
    async fn operation(
        &self,
        _: &str,
    ) -> Result<OperationOutcome, procfwk::adapters::UpstreamError> {
        Ok(OperationOutcome::Succeeded)
    }
    async fn runtime_status(
        &self,
        _: &RuntimeRef,
    ) -> Result<RuntimeStatus, procfwk::adapters::UpstreamError> {
        Ok(RuntimeStatus {
            state: "Online".into(),
            nodes: Vec::new(),
        })
    }
}

fn spec(vms: &[String]) -> PoolSpec {
    PoolSpec {
        subscription: Guid::parse("11111111-2222-3333-4444-555555555555").expect("guid"),
        resource_group: ResourceName::parse(&"r".repeat(90)).expect("rg"),
        vms: vms
            .iter()
            .map(|v| ResourceName::parse(v).expect("vm"))
            .collect(),
        runtime: None,
        sizing: Sizing {
            jobs_per_node: 4,
            min_nodes: 1,
            grace_secs: 600,
        },
    }
}

fn take(spec: &PoolSpec, holder: &str) -> Decision {
    Decision::new(
        spec.clone(),
        Change::Take {
            holder: holder.into(),
            lease_secs: 300,
        },
        now(),
        Arc::new(Running),
    )
}

#[tokio::test]
async fn holders_that_differ_only_in_case_are_one_holder() {
    let (_server, store) = db().await;
    let pool = spec(&["shir-vm-01".to_string()]);
    let first = take(&pool, "Nightly-Run-1")
        .run(&store)
        .await
        .expect("take");
    assert_eq!(first.active_leases, 1);
    let again = take(&pool, "nightly-run-1")
        .run(&store)
        .await
        .expect("the same holder in other case renews, it does not collide on the key");
    assert_eq!(again.active_leases, 1, "{again:?}");
    let release = Decision::new(
        pool.clone(),
        Change::Release {
            holder: "NIGHTLY-RUN-1".into(),
        },
        now(),
        Arc::new(Running),
    )
    .run(&store)
    .await
    .expect("release");
    assert_eq!(release.active_leases, 0, "{release:?}");
}

#[tokio::test]
async fn long_names_keep_the_lease_key_within_900_bytes() {
    let (_server, store) = db().await;
    let vms: Vec<String> = (1..=4).map(|i| format!("{}{i}", "v".repeat(63))).collect();
    let pool = spec(&vms);
    assert!(pool.key().chars().count() <= procfwk::leases::MAX_POOL_KEY_CHARS);
    let holder = "h".repeat(200);
    let report = take(&pool, &holder).run(&store).await.expect("no 1946");
    assert_eq!(report.active_leases, 1);
}

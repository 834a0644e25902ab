//! Shared by the tests that run the Azure SQL path on the multi-version engine (PostgreSQL behind the
//! TDS test server): a store made by `procfwk db init`, and an ARM stand-in for power decisions whose
//! VMs are always running, with an optional latency per call and a count of deallocations.
#![allow(dead_code)]

use procfwk::adapters::sqlserver::{SqlServerBackend, SqlServerOptions};
use procfwk::domain::{Guid, PowerState, ResourceName};
use procfwk::leases::{
    OperationOutcome, PoolSpec, PowerControl, PowerRequest, RuntimeRef, RuntimeStatus, Sizing,
    VmRef,
};
use procfwk::store::{Row, SqlValue, Statement, Store, StoreError, Transition, Tx};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tds_test_server::{ServerHandle, ServerOptions, TdsTestServer};

pub struct PgDb {
    pub server: ServerHandle,
    /// The connection string of the database (tiberius, no TLS), for `procfwk` processes.
    pub url: String,
    pub backend: Arc<SqlServerBackend>,
    pub store: Store,
}

impl PgDb {
    /// The `N` that a `SELECT COUNT(…) AS N …` reads (-1 when there is none).
    pub async fn count(&self, sql: &'static str) -> i64 {
        let rows = self.store.run(&Sql(sql, vec![])).await.expect(sql);
        count(&rows)
    }

    /// Whether `task` comes to wait for a lock in this database (a session of it shows PostgreSQL's
    /// `wait_event_type = 'Lock'`) rather than finishing: false as soon as it has finished, or when it
    /// neither waits nor finishes within 10 s. Tests hold one transaction and call this for the one
    /// other they run, so the waiting session is that task's.
    pub async fn waits_for_a_lock<T>(&self, task: &tokio::task::JoinHandle<T>) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !task.is_finished() && tokio::time::Instant::now() < deadline {
            let waiting = self
                .count(
                    "SELECT COUNT(0) AS N FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .await;
            if waiting > 0 {
                return !task.is_finished();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// A fresh database with the schema of `deploy/sql`, reached through tiberius with a pool of
/// `pool_size` connections.
pub async fn pg_db(pool_size: u32) -> PgDb {
    let server = TdsTestServer::start(ServerOptions {
        backend: tds_test_server::Backend::postgres_for_tests().expect("PostgreSQL for the tests"),
        users: vec![("procfwk".into(), "Pg-Tests-Pw1".into())],
        ..Default::default()
    })
    .await
    .expect("TDS test server");
    let url = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;User ID=procfwk;Password=Pg-Tests-Pw1;Encrypt=DANGER_PLAINTEXT",
        server.port()
    );
    let backend = Arc::new(
        SqlServerBackend::connect_with(
            &url,
            None,
            SqlServerOptions {
                pool_size,
                checkout_timeout: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
        .expect("backend"),
    );
    let store = Store::new(backend.clone());
    store.init_schema().await.expect("db init");
    PgDb {
        server,
        url,
        backend,
        store,
    }
}

/// ARM for power decisions: VMs always running, every call taking `latency`, deallocations counted.
#[derive(Default)]
pub struct RunningVms {
    pub latency: Duration,
    pub deallocations: AtomicUsize,
}

impl RunningVms {
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    pub fn deallocations(&self) -> usize {
        self.deallocations.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

fn accepted() -> PowerRequest {
    PowerRequest::Accepted {
        operation_url: None,
        retry_after_secs: None,
    }
}

#[async_trait::async_trait]
impl PowerControl for RunningVms {
    async fn power_state(&self, _: &VmRef) -> Result<PowerState, procfwk::adapters::UpstreamError> {
        self.wait().await;
        Ok(PowerState::Running)
    }
    async fn start(&self, _: &VmRef) -> Result<PowerRequest, procfwk::adapters::UpstreamError> {
        self.wait().await;
        Ok(accepted())
    }
    async fn deallocate(
        &self,
        _: &VmRef,
    ) -> Result<PowerRequest, procfwk::adapters::UpstreamError> {
        self.wait().await;
        self.deallocations.fetch_add(1, Ordering::SeqCst);
        Ok(accepted())
    }
    async fn operation(
        &self,
        _: &str,
    ) -> Result<OperationOutcome, procfwk::adapters::UpstreamError> {
        self.wait().await;
        Ok(OperationOutcome::Succeeded)
    }
    async fn runtime_status(
        &self,
        _: &RuntimeRef,
    ) -> Result<RuntimeStatus, procfwk::adapters::UpstreamError> {
        self.wait().await;
        Ok(RuntimeStatus {
            state: "Online".into(),
            nodes: Vec::new(),
        })
    }
}

/// A pool of the given VMs in resource group `rg`, one node's worth of jobs `jobs_per_node`.
pub fn pool(rg: &str, vms: &[&str], jobs_per_node: u32, grace_secs: u32) -> PoolSpec {
    PoolSpec {
        subscription: Guid::parse("11111111-2222-3333-4444-555555555555").expect("guid"),
        resource_group: ResourceName::parse(rg).expect("rg"),
        vms: vms
            .iter()
            .map(|v| ResourceName::parse(v).expect("vm"))
            .collect(),
        runtime: None,
        sizing: Sizing {
            jobs_per_node,
            min_nodes: 1,
            grace_secs,
        },
    }
}

/// A statement of the test's own (a check or a staged state), with its parameters, run as one
/// transition through the store.
pub struct Sql(pub &'static str, pub Vec<SqlValue>);

#[async_trait::async_trait]
impl Transition for Sql {
    type Output = Vec<Row>;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<Row>, StoreError> {
        let statement = Statement {
            name: "test",
            sql: self.0,
        };
        if self
            .0
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("SELECT")
        {
            tx.query(&statement, &self.1).await
        } else {
            tx.execute(&statement, &self.1).await?;
            Ok(Vec::new())
        }
    }
}

/// The `N` column of the first row (-1 when there is none).
pub fn count(rows: &[Row]) -> i64 {
    rows.first().and_then(|r| r.i64("N").ok()).unwrap_or(-1)
}

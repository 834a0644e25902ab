//! The SQL Server backend (`procfwk::adapters::sqlserver`) end to end: real tiberius connections over TCP to
//! the project's TDS test server on 127.0.0.1 (which runs what it receives on PostgreSQL, with the
//! schema of deploy/sql), Entra tokens from the in-process Azure simulator.

use azure_sim::{SimConfig, Simulator, MANAGED_IDENTITY_KEY, SAMPLE_TENANT_ID};
use procfwk::adapters::sqlserver::{SqlServerBackend, SqlServerOptions, SQL_TOKEN_SCOPE};
use procfwk::adapters::Identity;
use procfwk::config::Settings;
use procfwk::domain::{Credentials, Guid, SecretSource};
use procfwk::secret::Secret;
use procfwk::store::{statements, Backend, SqlValue, Statement, Store, StoreError, Transition, Tx};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tds_test_server::{LoginRecord, ServerHandle, ServerOptions, TdsTestServer};

/// The log-capturing test runs alone: while other tests of this binary hit the same log callsites on
/// their own threads (with no subscriber), its thread-local subscriber missed the events.
static LOG_CAPTURE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const USER: &str = "procfwk_app";
const PASSWORD: &str = "Pw-7f3c91;Secr\"et";
/// `PASSWORD` written as an ADO.NET value.
const PASSWORD_ADO: &str = "\"Pw-7f3c91;Secr\"\"et\"";

const ROUND_TRIP_DDL: &str = "CREATE TABLE procfwk.RoundTrip (Id INT NOT NULL PRIMARY KEY, I BIGINT NULL, F FLOAT NULL, \
     B BIT NULL, T NVARCHAR(400) NULL, G UNIQUEIDENTIFIER NULL, D DATETIME2 NULL, N NVARCHAR(50) NULL)";
const INSERT_ROUND_TRIP: Statement = Statement {
    name: "INSERT_ROUND_TRIP",
    sql: "INSERT INTO procfwk.RoundTrip (Id, I, F, B, T, G, D, N) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)",
};
const SELECT_ROUND_TRIP: Statement = Statement {
    name: "SELECT_ROUND_TRIP",
    sql: "SELECT Id, I, F, B, T, G, D, N FROM procfwk.RoundTrip WHERE Id = @P1",
};
const COUNT_PROPERTIES: Statement = Statement {
    name: "COUNT_PROPERTIES",
    sql: "SELECT COUNT(0) AS N FROM procfwk.Properties",
};

struct TestDb {
    server: ServerHandle,
    _dir: tempfile::TempDir,
}

impl TestDb {
    async fn start(tokens: Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // PostgreSQL behind the TDS server (Azure SQL's concurrency semantics); the procfwk schema
        // is deploy/sql as written, batch by batch as `procfwk db init` sends it (run by the engine
        // at start, so that logins and recorded statements belong to the test).
        let mut init_sql: Vec<String> = procfwk::store::schema::SCHEMA_SCRIPTS
            .iter()
            .flat_map(|(_, text)| procfwk::store::schema::script_batches(text))
            .collect();
        init_sql.push(ROUND_TRIP_DDL.into());
        let server = TdsTestServer::start(ServerOptions {
            backend: tds_test_server::Backend::postgres_for_tests()
                .expect("PostgreSQL for the tests"),
            database_path: dir.path().join("procfwk.db"),
            users: vec![(USER.into(), PASSWORD.into())],
            accept_fedauth_tokens: tokens,
            init_sql,
            ..Default::default()
        })
        .await
        .expect("TDS test server starts");
        Self { server, _dir: dir }
    }

    fn sql_login(&self, password_ado: &str) -> String {
        format!(
            "Server=tcp:127.0.0.1,{};Database=procfwk;User ID={USER};Password={password_ado};Encrypt=DANGER_PLAINTEXT",
            self.server.port()
        )
    }

    async fn backend(&self, pool_size: u32) -> SqlServerBackend {
        SqlServerBackend::connect_with(
            &self.sql_login(PASSWORD_ADO),
            None,
            SqlServerOptions {
                pool_size,
                checkout_timeout: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .await
        .expect("backend")
    }
}

fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

async fn property_count(backend: &dyn Backend) -> i64 {
    let mut tx = backend.begin().await.expect("begin");
    let rows = tx.query(&COUNT_PROPERTIES, &[]).await.expect("count");
    tx.commit().await.expect("commit");
    rows[0].i64("N").expect("N")
}

fn insert_property(name: &str) -> [SqlValue; 4] {
    [name.into(), "value".into(), SqlValue::Null, now().into()]
}

// ------------------------------------------------------------------------------------------------ logins

#[tokio::test]
async fn sql_login_and_wrong_password() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = db.backend(2).await;
    assert_eq!(property_count(&backend).await, 0);
    assert_eq!(
        db.server.logins(),
        vec![LoginRecord {
            user: USER.into(),
            database: "procfwk".into()
        }]
    );

    let wrong =
        SqlServerBackend::connect_with(&db.sql_login("not-it"), None, SqlServerOptions::default())
            .await
            .expect("a wrong password is found at the first connection, not before");
    let started = Instant::now();
    let err = wrong.begin().await.err().expect("login fails");
    assert!(
        matches!(err, StoreError::Database { number: 18456, .. }),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reported at once, not after the pool timeout"
    );
    db.server.shutdown().await;
}

#[tokio::test]
async fn service_principal_token_login() {
    let _shared = LOG_CAPTURE.read().await;
    let sim = Simulator::start(SimConfig::sample(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim");
    let settings = Settings {
        authority_host: url::Url::parse(&sim.url()).expect("url"),
        ..Settings::default()
    };
    let http = procfwk::adapters::http::shared_client(&settings).expect("http");
    let identity = Arc::new(Identity::new(http, &settings));
    let (client_id, secret) = ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "sp-s3cret-value");
    // The token the simulator issues to this principal is the only one the server accepts.
    let credential = identity
        .credential(&Credentials::ServicePrincipal {
            tenant: Guid::parse(SAMPLE_TENANT_ID).expect("tenant"),
            client_id: SecretSource::Value(Secret::new(client_id)),
            client_secret: SecretSource::Value(Secret::new(secret)),
        })
        .await
        .expect("credential");
    let token = credential
        .get_token(&[SQL_TOKEN_SCOPE])
        .await
        .expect("token");
    let db = TestDb::start(vec![token.token.secret().to_string()]).await;

    let setting = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;Authentication=Active Directory Service Principal;\
         User ID={client_id};Password={secret};Tenant Id={SAMPLE_TENANT_ID};Encrypt=DANGER_PLAINTEXT",
        db.server.port()
    );
    let backend =
        SqlServerBackend::connect_with(&setting, Some(identity), SqlServerOptions::default())
            .await
            .expect("backend");
    assert_eq!(property_count(&backend).await, 0);
    assert_eq!(db.server.logins()[0].user, "fedauth");
    let description = backend.describe();
    assert!(description.contains("service principal"), "{description}");
    assert!(!description.contains(secret), "{description}");
    db.server.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn managed_identity_token_login() {
    let _shared = LOG_CAPTURE.read().await;
    let sim = Simulator::start(SimConfig::sample(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim");
    // Read by the managed identity credential when it is created (only this test uses them).
    std::env::set_var("IDENTITY_ENDPOINT", format!("{}/msi/token", sim.url()));
    std::env::set_var("IDENTITY_HEADER", SimConfig::sample().identity_header);
    let settings = Settings::default();
    let identity = Arc::new(Identity::new(
        procfwk::adapters::http::shared_client(&settings).expect("http"),
        &settings,
    ));
    let db = TestDb::start(vec![]).await;
    let setting = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;Authentication=Active Directory Managed Identity;Encrypt=DANGER_PLAINTEXT",
        db.server.port()
    );
    let backend =
        SqlServerBackend::connect_with(&setting, Some(identity), SqlServerOptions::default())
            .await
            .expect("backend");
    assert_eq!(property_count(&backend).await, 0);
    assert_eq!(db.server.logins()[0].user, "fedauth");
    assert_eq!(
        sim.state().token_requests().get(MANAGED_IDENTITY_KEY),
        Some(&1)
    );
    db.server.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn plaintext_is_refused_for_a_remote_server() {
    let _shared = LOG_CAPTURE.read().await;
    for server in [
        "tcp:10.1.2.3,1433",
        "myserver.database.windows.net",
        "tcp:localhost.example.com,1433",
    ] {
        let setting = format!(
            "Server={server};Database=procfwk;User ID=u;Password=p;Encrypt=DANGER_PLAINTEXT"
        );
        match SqlServerBackend::connect_with(&setting, None, SqlServerOptions::default()).await {
            Err(StoreError::Config(m)) => assert!(m.contains("DANGER_PLAINTEXT"), "{m}"),
            Err(e) => panic!("{server}: unexpected {e}"),
            Ok(_) => panic!("{server}: plaintext accepted"),
        }
    }
    // TLS is the default for a remote server (nothing is opened until the first transaction).
    let ok = SqlServerBackend::connect_with(
        "Server=tcp:myserver.database.windows.net,1433;Database=procfwk;User ID=u;Password=p",
        None,
        SqlServerOptions::default(),
    )
    .await
    .expect("valid setting");
    assert!(ok.describe().contains("TLS required"), "{}", ok.describe());
}

// ------------------------------------------------------------------------------------------------ values and transactions

#[tokio::test]
async fn every_value_type_round_trips() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = db.backend(1).await;
    let guid = uuid::Uuid::new_v4();
    let when = chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
        .and_then(|d| d.and_hms_milli_opt(23, 59, 58, 123))
        .expect("date");
    let text = "Grüße, 'quoted' — ünïcode ✓";
    let mut tx = backend.begin().await.expect("begin");
    let inserted = tx
        .execute(
            &INSERT_ROUND_TRIP,
            &[
                SqlValue::Int(1),
                SqlValue::Int(9_007_199_254_740_993),
                SqlValue::Float(-1.25e-3),
                SqlValue::Bool(true),
                SqlValue::Text(text.into()),
                SqlValue::Guid(guid),
                SqlValue::DateTime(when),
                SqlValue::Null,
            ],
        )
        .await
        .expect("insert");
    assert_eq!(inserted, 1);
    tx.commit().await.expect("commit");

    let mut tx = backend.begin().await.expect("begin");
    let rows = tx
        .query(&SELECT_ROUND_TRIP, &[1.into()])
        .await
        .expect("select");
    tx.commit().await.expect("commit");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        row.value("I").ok(),
        Some(&SqlValue::Int(9_007_199_254_740_993))
    );
    assert_eq!(row.value("F").ok(), Some(&SqlValue::Float(-1.25e-3)));
    assert_eq!(row.value("B").ok(), Some(&SqlValue::Bool(true)));
    assert_eq!(row.value("T").ok(), Some(&SqlValue::Text(text.into())));
    assert_eq!(row.value("G").ok(), Some(&SqlValue::Guid(guid)));
    assert_eq!(row.value("D").ok(), Some(&SqlValue::DateTime(when)));
    assert_eq!(row.value("N").ok(), Some(&SqlValue::Null));
    assert_eq!(row.i32("Id").ok(), Some(1));
    db.server.shutdown().await;
}

#[tokio::test]
async fn commit_is_visible_rollback_and_drop_are_not() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = db.backend(1).await;

    let mut tx = backend.begin().await.expect("begin");
    assert_eq!(
        tx.execute(&statements::INSERT_PROPERTY, &insert_property("Committed"))
            .await
            .ok(),
        Some(1)
    );
    tx.commit().await.expect("commit");

    let mut tx = backend.begin().await.expect("begin");
    tx.execute(&statements::INSERT_PROPERTY, &insert_property("RolledBack"))
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");

    // Dropped without commit (an early `?`): the connection is discarded, the server rolls back, and
    // the next transaction neither sees the row nor waits on its lock.
    let mut tx = backend.begin().await.expect("begin");
    tx.execute(&statements::INSERT_PROPERTY, &insert_property("Dropped"))
        .await
        .expect("insert");
    drop(tx);

    let started = Instant::now();
    let mut tx = backend.begin().await.expect("begin");
    let rows = tx
        .query(&statements::CURRENT_PROPERTIES, &[])
        .await
        .expect("query");
    tx.commit().await.expect("commit");
    assert!(started.elapsed() < Duration::from_secs(2));
    let names: Vec<String> = rows
        .iter()
        .filter_map(|r| r.text("PropertyName").ok())
        .collect();
    assert_eq!(names, vec!["Committed".to_string()]);
    db.server.shutdown().await;
}

#[tokio::test]
async fn a_failed_statement_ends_the_transaction() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = db.backend(1).await;
    let mut tx = backend.begin().await.expect("begin");
    tx.execute(
        &INSERT_ROUND_TRIP,
        &[
            1.into(),
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
        ],
    )
    .await
    .expect("first insert");
    let dup = tx
        .execute(
            &INSERT_ROUND_TRIP,
            &[
                1.into(),
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
            ],
        )
        .await
        .expect_err("duplicate key");
    assert!(
        matches!(dup, StoreError::Database { number: 2627, .. }),
        "{dup}"
    );
    // XACT_ABORT rolled everything back: a statement now would run outside any transaction.
    let refused = tx
        .query(&SELECT_ROUND_TRIP, &[1.into()])
        .await
        .expect_err("refused");
    assert!(
        matches!(refused, StoreError::Database { number: 2627, .. }),
        "{refused}"
    );
    let commit = tx.commit().await.expect_err("commit reports the failure");
    assert!(
        matches!(commit, StoreError::Database { number: 2627, .. }),
        "{commit}"
    );

    let mut tx = backend
        .begin()
        .await
        .expect("the connection is usable again");
    assert!(tx
        .query(&SELECT_ROUND_TRIP, &[1.into()])
        .await
        .expect("select")
        .is_empty());
    tx.commit().await.expect("commit");
    db.server.shutdown().await;
}

// ------------------------------------------------------------------------------------------------ failures

/// Inserts one property; on its first run it first has something go wrong.
struct InsertProperty<'a> {
    name: &'static str,
    runs: AtomicU32,
    on_first_run: Box<dyn Fn() + Send + Sync + 'a>,
}

#[async_trait::async_trait]
impl Transition for InsertProperty<'_> {
    type Output = u32;
    type Error = StoreError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<u32, StoreError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        tx.execute(&statements::INSERT_PROPERTY, &insert_property(self.name))
            .await?;
        if run == 1 {
            (self.on_first_run)();
        }
        tx.execute(
            &statements::CLOSE_PROPERTY,
            &["Unrelated".into(), now().into()],
        )
        .await?;
        Ok(run)
    }
}

#[tokio::test]
async fn a_transient_error_reruns_the_transition() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend: Arc<dyn Backend> = Arc::new(db.backend(2).await);
    let store = Store::new(Arc::clone(&backend));
    let server = &db.server;
    let transition = InsertProperty {
        name: "Retried",
        runs: AtomicU32::new(0),
        on_first_run: Box::new(move || server.fail_next(1, 40613)),
    };
    assert_eq!(
        store.run(&transition).await.ok(),
        Some(2),
        "succeeds on the second run"
    );
    assert_eq!(
        property_count(backend.as_ref()).await,
        1,
        "the first run left nothing behind"
    );

    // A failure armed before the transition is met by the check-out and does not reach it.
    server.fail_next(1, 40613);
    let again = InsertProperty {
        name: "Again",
        runs: AtomicU32::new(0),
        on_first_run: Box::new(|| {}),
    };
    assert!(store.run(&again).await.is_ok());
    assert_eq!(property_count(backend.as_ref()).await, 2);
    drop(transition);
    db.server.shutdown().await;
}

#[tokio::test]
async fn killed_connections_are_not_reused() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = db.backend(2).await;
    assert_eq!(property_count(&backend).await, 0);
    assert_eq!(backend.pool_status().connections, 1);

    // Between transactions: the next transaction gets a working connection.
    db.server.kill_connections();
    let mut tx = backend.begin().await.expect("a fresh connection");
    tx.execute(&statements::INSERT_PROPERTY, &insert_property("AfterKill"))
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    assert_eq!(
        db.server.logins().len(),
        2,
        "the killed connection was replaced"
    );

    // In the middle of a transaction: nothing of it is written.
    let mut tx = backend.begin().await.expect("begin");
    tx.execute(
        &statements::INSERT_PROPERTY,
        &insert_property("HalfWritten"),
    )
    .await
    .expect("insert");
    db.server.kill_connections();
    let err = tx
        .execute(&statements::INSERT_PROPERTY, &insert_property("Never"))
        .await
        .expect_err("the connection is gone");
    assert!(matches!(err, StoreError::Connection(_)), "{err}");
    assert!(err.is_transient());
    assert!(tx.commit().await.is_err());
    assert_eq!(property_count(&backend).await, 1);

    // Through Store::run: killed mid-transition, run again from the start, written once.
    let backend = Arc::new(backend);
    let store = Store::new(backend.clone());
    let server = &db.server;
    let transition = InsertProperty {
        name: "KilledOnce",
        runs: AtomicU32::new(0),
        on_first_run: Box::new(move || server.kill_connections()),
    };
    assert_eq!(store.run(&transition).await.ok(), Some(2));
    let mut tx = backend.begin().await.expect("begin");
    let rows = tx
        .query(&statements::CURRENT_PROPERTIES, &[])
        .await
        .expect("query");
    tx.commit().await.expect("commit");
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(|r| r.text("PropertyName").ok())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["AfterKill".to_string(), "KilledOnce".to_string()]
    );
    drop(transition);
    db.server.shutdown().await;
}

#[tokio::test]
async fn concurrent_transitions_share_a_small_pool() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = Arc::new(db.backend(2).await);
    let store = Store::new(backend.clone());
    let names = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"];
    let transitions: Vec<InsertProperty> = names
        .iter()
        .map(|n| InsertProperty {
            name: n,
            runs: AtomicU32::new(0),
            on_first_run: Box::new(|| {}),
        })
        .collect();
    let results = futures::future::join_all(transitions.iter().map(|t| store.run(t))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(property_count(backend.as_ref()).await, 8);
    assert!(
        backend.pool_status().connections <= 2,
        "{:?}",
        backend.pool_status()
    );
    db.server.shutdown().await;
}

#[tokio::test]
async fn db_init_consults_the_recorded_version_and_sends_the_scripts_batch_by_batch() {
    let _shared = LOG_CAPTURE.read().await;
    let db = TestDb::start(vec![]).await;
    let backend = db.backend(1).await;
    // The database has the schema (the engine ran the scripts as written at start): its recorded
    // version says so, and db init sends no script at all.
    let report = backend
        .upgrade_schema(false)
        .await
        .expect("db init on an initialised database");
    assert_eq!(report.found_version, Some(procfwk::store::SCHEMA_VERSION));
    assert!(report.changes.is_empty(), "{report:?}");
    assert!(
        !db.server
            .statements()
            .iter()
            .any(|s| s.contains("SCHEMA_ID")),
        "nothing is sent when the recorded version is current"
    );
    // Without the recorded version, the scripts are gone through again, batch by batch: each guard is
    // evaluated, and only the batches whose guard holds (the version rows) are sent, as written.
    let mut conn = backend.begin().await.expect("tx");
    conn.execute(
        &Statement {
            name: "FORGET_VERSIONS",
            sql: "DELETE FROM procfwk.SchemaVersion",
        },
        &[],
    )
    .await
    .expect("forget");
    conn.commit().await.expect("commit");
    let report = backend.upgrade_schema(false).await.expect("db init again");
    assert_eq!(report.found_version, None);
    let changes: Vec<&str> = report.changes.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(
        changes.len(),
        procfwk::store::SCHEMA_VERSION as usize,
        "one version row per script: {changes:?}"
    );
    assert!(
        changes.iter().all(|c| c.contains("[SchemaVersion]")),
        "{changes:?}"
    );
    let sent = db.server.statements();
    let first = sent
        .iter()
        .find(|s| s.contains("INSERT INTO [procfwk].[SchemaVersion]"))
        .expect("a version batch sent");
    assert!(
        first.starts_with("--") || first.starts_with("IF"),
        "{first}"
    );
    assert!(
        !first.lines().any(|l| l.trim().eq_ignore_ascii_case("GO")),
        "{first}"
    );
    db.server.shutdown().await;
}

// ------------------------------------------------------------------------------------------------ secrets

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn describe_errors_and_logs_never_show_the_password() {
    let _alone = LOG_CAPTURE.write().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            procfwk::telemetry::directives(Some("trace")),
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = TestDb::start(vec![]).await;
    let backend = db.backend(1).await;
    assert_eq!(property_count(&backend).await, 0);
    db.server.kill_connections();
    assert_eq!(property_count(&backend).await, 0);
    let mut shown = vec![backend.describe()];

    let wrong_secret = "Wr0ng-pass-5ecret";
    let wrong = SqlServerBackend::connect_with(
        &db.sql_login(wrong_secret),
        None,
        SqlServerOptions::default(),
    )
    .await
    .expect("backend");
    shown.push(wrong.describe());
    shown.push(
        wrong
            .begin()
            .await
            .err()
            .map(|e| format!("{e} {e:?}"))
            .unwrap_or_default(),
    );
    let refused = SqlServerBackend::connect_with(
        &format!(
            "Server=tcp:10.0.0.1,1433;User ID=u;Password={wrong_secret};Encrypt=DANGER_PLAINTEXT"
        ),
        None,
        SqlServerOptions::default(),
    )
    .await
    .err()
    .map(|e| format!("{e} {e:?}"))
    .unwrap_or_default();
    shown.push(refused);

    let logs =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    assert!(
        logs.contains("connection pool ready"),
        "logging was captured: {logs}"
    );
    shown.push(logs);
    for text in shown {
        for secret in [PASSWORD, "Pw-7f3c91", wrong_secret] {
            assert!(!text.contains(secret), "{secret} shown in: {text}");
        }
    }
    db.server.shutdown().await;
}

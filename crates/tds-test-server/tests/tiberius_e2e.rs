//! End-to-end tests: real tiberius 0.13 clients over TCP on 127.0.0.1
//! against the TDS test server.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tds_test_server::{Backend, LoginRecord, ServerHandle, ServerOptions, TdsTestServer};
use tiberius::{AuthMethod, Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use uuid::Uuid;

type Conn = Client<Compat<TcpStream>>;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn temp_db() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("tds-e2e-{}-{n}-{nanos}.db", std::process::id()))
}

struct TestServer {
    handle: Option<ServerHandle>,
    path: PathBuf,
}

impl TestServer {
    fn h(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// A server on PostgreSQL (Azure SQL's concurrency semantics), the engine
/// the SQL Server path is tested on.
async fn start_with(opts: impl FnOnce(&mut ServerOptions)) -> TestServer {
    let backend = Backend::postgres_for_tests().expect("PostgreSQL for the tests");
    start_on(backend, opts).await
}

/// A server on SQLite (for tests of the SQLite backend itself).
async fn start_sqlite_with(opts: impl FnOnce(&mut ServerOptions)) -> TestServer {
    start_on(Backend::Sqlite, opts).await
}

async fn start_on(backend: Backend, opts: impl FnOnce(&mut ServerOptions)) -> TestServer {
    let path = temp_db();
    let mut o = ServerOptions {
        backend,
        database_path: path.clone(),
        users: vec![("sa".into(), "Secr3t!".into())],
        ..Default::default()
    };
    opts(&mut o);
    let handle = TdsTestServer::start(o).await.expect("server starts");
    TestServer {
        handle: Some(handle),
        path,
    }
}

async fn start(init: &[&str]) -> TestServer {
    let init: Vec<String> = init.iter().map(|s| s.to_string()).collect();
    start_with(|o| o.init_sql = init).await
}

async fn start_sqlite(init: &[&str]) -> TestServer {
    let init: Vec<String> = init.iter().map(|s| s.to_string()).collect();
    start_sqlite_with(|o| o.init_sql = init).await
}

async fn connect_config(config: Config) -> Result<Conn, tiberius::error::Error> {
    let tcp = TcpStream::connect(config.get_addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

async fn connect_as(
    server: &TestServer,
    user: &str,
    password: &str,
) -> Result<Conn, tiberius::error::Error> {
    let config = Config::from_ado_string(&server.h().connection_string(user, password, "procfwk"))?;
    connect_config(config).await
}

async fn connect(server: &TestServer) -> Conn {
    connect_as(server, "sa", "Secr3t!").await.expect("connects")
}

fn server_code(e: &tiberius::error::Error) -> Option<u32> {
    match e {
        tiberius::error::Error::Server(t) => Some(t.code()),
        _ => None,
    }
}

async fn scalar_i32(c: &mut Conn, sql: &str) -> i32 {
    let row = c
        .simple_query(sql)
        .await
        .expect("query")
        .into_row()
        .await
        .expect("row")
        .expect("one row");
    row.get::<i32, _>(0).expect("non-null int")
}

#[tokio::test]
async fn sql_login_and_wrong_password() {
    let server = start(&[]).await;
    let mut c = connect(&server).await;
    assert_eq!(scalar_i32(&mut c, "SELECT 1").await, 1);
    let err = connect_as(&server, "sa", "wrong")
        .await
        .expect_err("login fails");
    assert_eq!(server_code(&err), Some(18456), "{err}");
    let err = connect_as(&server, "nobody", "Secr3t!")
        .await
        .expect_err("login fails");
    assert_eq!(server_code(&err), Some(18456));
    assert_eq!(
        server.h().logins(),
        vec![LoginRecord {
            user: "sa".into(),
            database: "procfwk".into()
        }]
    );
    let version: String = c
        .simple_query("SELECT @@VERSION")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<&str, _>(0)
        .unwrap()
        .to_string();
    assert!(
        version.starts_with("Microsoft SQL Server (tds-test-server on PostgreSQL"),
        "{version}"
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn aad_token_login() {
    let server = start_with(|o| o.accept_fedauth_tokens = vec!["good-token".into()]).await;
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(server.h().port());
    config.database("procfwk");
    config.encryption(tiberius::EncryptionLevel::NotSupported);
    config.authentication(AuthMethod::AADToken("good-token".into()));
    let mut c = connect_config(config.clone())
        .await
        .expect("token accepted");
    assert_eq!(scalar_i32(&mut c, "SELECT 42").await, 42);
    config.authentication(AuthMethod::AADToken("bad-token".into()));
    let err = connect_config(config).await.expect_err("token rejected");
    assert_eq!(server_code(&err), Some(18456));
    let logins = server.h().logins();
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].user, "fedauth");
    assert!(!format!("{logins:?}").contains("good-token"));
    drop(c);
    server.stop().await;
}

const TYPES_TABLE: &str = "CREATE TABLE typed (
    id INT PRIMARY KEY, big BIGINT, small SMALLINT, tiny TINYINT, flag BIT,
    name NVARCHAR(100), long_text NVARCHAR(MAX), guid UNIQUEIDENTIFIER, ratio FLOAT,
    created DATETIME2, stamped DATETIMEOFFSET, day DATE, data VARBINARY(MAX), note NVARCHAR(50))";

#[tokio::test]
async fn parameters_of_every_type_round_trip() {
    let server = start(&[TYPES_TABLE]).await;
    let mut c = connect(&server).await;
    let guid = Uuid::new_v4();
    let long = "ü".repeat(5000);
    let created = NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_micro_opt(23, 59, 58, 123_456)
        .unwrap();
    let offset = FixedOffset::east_opt(2 * 3600).unwrap();
    let stamped: DateTime<FixedOffset> = offset.with_ymd_and_hms(2024, 3, 1, 10, 30, 0).unwrap();
    let day = NaiveDate::from_ymd_opt(2023, 12, 31).unwrap();
    let data: &[u8] = &[0, 1, 2, 255];
    let ratio = 0.25f64;
    let no_note: Option<&str> = None;
    let res = c
        .execute(
            "INSERT INTO [dbo].[typed] (id, big, small, tiny, flag, name, long_text, guid, ratio, created, stamped, day, data, note)
             VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13, @P14)",
            &[
                &7i32, &(1i64 << 40), &-3i16, &200u8, &true, &"hello", &long.as_str(), &guid, &ratio,
                &created, &stamped, &day, &data, &no_note,
            ],
        )
        .await
        .expect("insert");
    assert_eq!(res.rows_affected(), &[1]);
    let none_int: Option<i32> = None;
    c.execute(
        "INSERT INTO typed (id, big, flag, guid, ratio) VALUES (@P1, @P2, @P3, @P4, @P5)",
        &[&8i32, &none_int, &false, &Option::<Uuid>::None, &1.5f32],
    )
    .await
    .expect("insert with typed NULLs");

    let rows = c
        .query("SELECT * FROM typed WHERE id >= @P1 ORDER BY id", &[&7i32])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(r.get::<i32, _>("id"), Some(7));
    assert_eq!(r.get::<i64, _>("big"), Some(1i64 << 40));
    assert_eq!(r.get::<i16, _>("small"), Some(-3));
    assert_eq!(r.get::<u8, _>("tiny"), Some(200));
    assert_eq!(r.get::<bool, _>("flag"), Some(true));
    assert_eq!(r.get::<&str, _>("name"), Some("hello"));
    assert_eq!(r.get::<&str, _>("long_text"), Some(long.as_str()));
    assert_eq!(r.get::<Uuid, _>("guid"), Some(guid));
    assert_eq!(r.get::<f64, _>("ratio"), Some(0.25));
    assert_eq!(r.get::<NaiveDateTime, _>("created"), Some(created));
    assert_eq!(r.get::<DateTime<FixedOffset>, _>("stamped"), Some(stamped));
    assert_eq!(r.get::<NaiveDate, _>("day"), Some(day));
    assert_eq!(r.get::<&[u8], _>("data"), Some(data));
    assert_eq!(r.get::<&str, _>("note"), None);
    let r = &rows[1];
    assert_eq!(r.get::<i64, _>("big"), None);
    assert_eq!(r.get::<bool, _>("flag"), Some(false));
    assert_eq!(r.get::<Uuid, _>("guid"), None);
    assert_eq!(r.get::<f64, _>("ratio"), Some(1.5));

    // Parameters and expressions in the select list keep their types.
    let row = c
        .query(
            "SELECT @P1 AS g, @P2 AS b, @P3 AS t, NEWID() AS n, GETUTCDATE() AS now, CAST('1' AS BIT) AS bit, COUNT(*) AS cnt, CAST(@P4 AS BIGINT) AS big FROM typed",
            &[&guid, &true, &created, &5i32],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<Uuid, _>("g"), Some(guid));
    assert_eq!(row.get::<bool, _>("b"), Some(true));
    assert_eq!(row.get::<NaiveDateTime, _>("t"), Some(created));
    assert!(row.get::<Uuid, _>("n").is_some());
    let now = row.get::<NaiveDateTime, _>("now").unwrap();
    assert!((chrono::Utc::now().naive_utc() - now).num_seconds().abs() < 60);
    assert_eq!(row.get::<bool, _>("bit"), Some(true));
    assert_eq!(row.get::<i32, _>("cnt"), Some(2));
    assert_eq!(row.get::<i64, _>("big"), Some(5));
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn multiple_statements_and_result_sets() {
    let server = start(&["CREATE TABLE t (id INT PRIMARY KEY, v NVARCHAR(10))"]).await;
    let mut c = connect(&server).await;
    let res = c
        .execute(
            "INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b')\nUPDATE t SET v = 'z'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(res.rows_affected(), &[1, 1, 2]);
    let sets = c
        .simple_query("SELECT id FROM t ORDER BY id; SELECT COUNT(*) AS n, MAX(v) AS m FROM t; SELECT @@ROWCOUNT AS rc")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[0].len(), 2);
    assert_eq!(sets[0][1].get::<i32, _>(0), Some(2));
    assert_eq!(sets[1][0].get::<i32, _>("n"), Some(2));
    assert_eq!(sets[1][0].get::<&str, _>("m"), Some("z"));
    assert_eq!(sets[2][0].get::<i32, _>("rc"), Some(1));
    // TOP, OFFSET/FETCH, OUTPUT.
    let rows = c
        .query("SELECT TOP (1) id FROM t ORDER BY id DESC", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i32, _>(0), Some(2));
    let row = c
        .query(
            "UPDATE t SET v = @P1 OUTPUT INSERTED.id, INSERTED.v WHERE id = @P2",
            &[&"new", &1i32],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>("id"), Some(1));
    assert_eq!(row.get::<&str, _>("v"), Some("new"));
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn transactions_commit_and_rollback() {
    let server = start(&["CREATE TABLE t (id INT PRIMARY KEY)"]).await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    a.simple_query("BEGIN TRAN")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(scalar_i32(&mut a, "SELECT @@TRANCOUNT").await, 1);
    a.execute("INSERT INTO t VALUES (@P1)", &[&1i32])
        .await
        .unwrap();
    assert_eq!(
        scalar_i32(&mut b, "SELECT COUNT(*) FROM t").await,
        0,
        "uncommitted is invisible"
    );
    a.simple_query("COMMIT TRANSACTION")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(scalar_i32(&mut a, "SELECT @@TRANCOUNT").await, 0);
    assert_eq!(
        scalar_i32(&mut b, "SELECT COUNT(*) FROM t").await,
        1,
        "committed is visible"
    );

    a.execute(
        "BEGIN TRANSACTION; INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)",
        &[],
    )
    .await
    .unwrap();
    a.simple_query("ROLLBACK")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(
        scalar_i32(&mut b, "SELECT COUNT(*) FROM t").await,
        1,
        "rolled back"
    );

    // XACT_ABORT: an error rolls back the whole transaction.
    let err = a
        .execute(
            "SET XACT_ABORT ON; BEGIN TRAN; INSERT INTO t VALUES (4); INSERT INTO t VALUES (1); COMMIT",
            &[],
        )
        .await
        .expect_err("duplicate key");
    assert_eq!(server_code(&err), Some(2627));
    assert_eq!(scalar_i32(&mut a, "SELECT @@TRANCOUNT").await, 0);
    assert_eq!(scalar_i32(&mut b, "SELECT COUNT(*) FROM t").await, 1);
    let err = a.simple_query("COMMIT").await.expect_err("no transaction");
    assert_eq!(server_code(&err), Some(3902));
    drop((a, b));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_serialize_without_lost_updates() {
    // The SQLite backend: one writer at a time, so B's BEGIN TRAN waits. (On
    // the PostgreSQL backend, as on Azure SQL, B's read would not wait: see
    // tests/postgres_engine.rs.)
    let server = start_sqlite(&[
        "CREATE TABLE counter (id INT PRIMARY KEY, v INT)",
        "INSERT INTO counter VALUES (1, 0)",
    ])
    .await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    a.simple_query("BEGIN TRAN")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let seen_a = scalar_i32(
        &mut a,
        "SELECT v FROM counter WITH (UPDLOCK, HOLDLOCK) WHERE id = 1",
    )
    .await;
    let b_task = tokio::spawn(async move {
        // Waits for A's write lock.
        b.simple_query("BEGIN TRAN")
            .await
            .unwrap()
            .into_results()
            .await
            .unwrap();
        let seen = scalar_i32(&mut b, "SELECT v FROM counter WHERE id = 1").await;
        b.execute("UPDATE counter SET v = @P1 WHERE id = 1", &[&(seen + 1)])
            .await
            .unwrap();
        b.simple_query("COMMIT")
            .await
            .unwrap()
            .into_results()
            .await
            .unwrap();
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b_task.is_finished(),
        "B's BEGIN TRAN waits for A's transaction"
    );
    a.execute("UPDATE counter SET v = @P1 WHERE id = 1", &[&(seen_a + 1)])
        .await
        .unwrap();
    a.simple_query("COMMIT")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let seen_b = b_task.await.unwrap();
    assert_eq!(seen_b, 1, "B read A's committed value");
    assert_eq!(
        scalar_i32(&mut a, "SELECT v FROM counter WHERE id = 1").await,
        2,
        "no lost update"
    );
    drop(a);
    server.stop().await;
}

#[tokio::test]
async fn fail_next_injects_transient_error() {
    let server = start(&[]).await;
    let mut c = connect(&server).await;
    server.h().fail_next(1, 40613);
    let err = c
        .query("SELECT @P1", &[&1i32])
        .await
        .expect_err("injected failure");
    assert_eq!(server_code(&err), Some(40613));
    assert!(
        err.to_string().contains("is not currently available"),
        "{err}"
    );
    assert_eq!(scalar_i32(&mut c, "SELECT 5").await, 5);
    server.h().fail_next(2, 1205);
    assert_eq!(
        server_code(&c.simple_query("SELECT 1").await.err().unwrap()),
        Some(1205)
    );
    assert_eq!(
        server_code(&c.execute("SELECT 1", &[]).await.err().unwrap()),
        Some(1205)
    );
    assert_eq!(scalar_i32(&mut c, "SELECT 6").await, 6);
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn killed_connection_rolls_back_its_transaction() {
    let server = start(&["CREATE TABLE t (id INT PRIMARY KEY)"]).await;
    let mut a = connect(&server).await;
    a.execute("BEGIN TRAN; INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    server.h().kill_connections();
    assert!(a.simple_query("COMMIT").await.is_err(), "socket is gone");
    let mut b = connect(&server).await;
    assert_eq!(scalar_i32(&mut b, "SELECT COUNT(*) FROM t").await, 0);
    // The write lock was released: a new transaction can write at once.
    let started = Instant::now();
    b.execute("BEGIN TRAN; INSERT INTO t VALUES (2); COMMIT", &[])
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(scalar_i32(&mut b, "SELECT COUNT(*) FROM t").await, 1);
    drop(b);
    server.stop().await;
}

#[tokio::test]
async fn drop_connection_after_closes_socket_before_answering() {
    let server = start(&["CREATE TABLE t (id INT PRIMARY KEY)"]).await;
    let mut c = connect(&server).await;
    server.h().drop_connection_after(1);
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    assert!(c.execute("INSERT INTO t VALUES (2)", &[]).await.is_err());
    let mut d = connect(&server).await;
    assert_eq!(
        scalar_i32(&mut d, "SELECT COUNT(*) FROM t").await,
        1,
        "dropped request did not run"
    );
    assert_eq!(scalar_i32(&mut d, "SELECT 1").await, 1, "one-shot");
    drop(d);
    server.stop().await;
}

#[tokio::test]
async fn errors_map_to_sql_server_numbers() {
    let server = start(&[
        "CREATE TABLE t (id INT PRIMARY KEY, u NVARCHAR(10) UNIQUE, n INT NOT NULL DEFAULT 0)",
    ])
    .await;
    let mut c = connect(&server).await;
    c.execute("INSERT INTO t (id, u) VALUES (1, 'a')", &[])
        .await
        .unwrap();
    let code = |r: Result<tiberius::ExecuteResult, tiberius::error::Error>| {
        server_code(&r.expect_err("error"))
    };
    assert_eq!(
        code(
            c.execute("INSERT INTO t (id, u) VALUES (@P1, 'b')", &[&1i32])
                .await
        ),
        Some(2627)
    );
    assert_eq!(
        code(
            c.execute("INSERT INTO t (id, u) VALUES (2, 'a')", &[])
                .await
        ),
        Some(2627)
    );
    assert_eq!(
        code(
            c.execute("INSERT INTO t (id, u, n) VALUES (3, 'c', NULL)", &[])
                .await
        ),
        Some(515)
    );
    assert_eq!(code(c.execute("SELEC 1", &[]).await), Some(102));
    assert_eq!(
        code(c.execute("SELECT * FROM missing", &[]).await),
        Some(208)
    );
    assert_eq!(code(c.execute("DECLARE @x INT", &[]).await), Some(40517));
    assert_eq!(
        code(c.execute("THROW 50001, N'custom failure', 1", &[]).await),
        Some(50001)
    );
    assert_eq!(
        code(c.execute("RAISERROR('bad %s', 16, 1, 'thing')", &[]).await),
        Some(50000)
    );
    assert_eq!(code(c.execute("SELECT @undeclared", &[]).await), Some(137));
    // A statement-level error does not stop the rest of the batch.
    let err = c
        .execute(
            "INSERT INTO t (id, u) VALUES (1, 'x'); INSERT INTO t (id, u) VALUES (5, 'e')",
            &[],
        )
        .await
        .err()
        .unwrap();
    assert_eq!(server_code(&err), Some(2627));
    assert_eq!(scalar_i32(&mut c, "SELECT COUNT(*) FROM t").await, 2);
    // A syntax error anywhere in the batch means nothing in it runs.
    let err = c
        .execute("INSERT INTO t (id, u) VALUES (9, 'z'); SELEC oops", &[])
        .await
        .expect_err("syntax error");
    assert_eq!(server_code(&err), Some(102));
    assert_eq!(scalar_i32(&mut c, "SELECT COUNT(*) FROM t").await, 2);
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn statements_are_recorded() {
    let server = start(&[]).await;
    let mut c = connect(&server).await;
    server.h().clear_statements();
    c.simple_query("SELECT 1; SELECT 2")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    c.query("SELECT @P1", &[&3i32])
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(
        server.h().statements(),
        vec!["SELECT 1; SELECT 2".to_string(), "SELECT @P1".to_string()]
    );
    server.h().clear_statements();
    assert!(server.h().statements().is_empty());
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn malformed_packets_close_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(&[]).await;
    let mut raw = TcpStream::connect(server.h().addr()).await.unwrap();
    // A PRELOGIN header announcing more bytes than sent, then garbage.
    raw.write_all(&[0x12, 0x01, 0x00, 0x09, 0, 0, 0, 0, 0xFF])
        .await
        .unwrap();
    raw.write_all(&[0x12, 0x01, 0x00, 0x02, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server closed the bad connection");
    let mut c = connect(&server).await;
    assert_eq!(scalar_i32(&mut c, "SELECT 1").await, 1);
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn translated_tsql_runs_on_sqlite() {
    // About the SQLite backend's translation itself.
    let server = start_sqlite(&[]).await;
    let mut c = connect(&server).await;
    // DDL in T-SQL dialect over the wire.
    c.execute(
        "CREATE TABLE [procfwk].[Queue] (
            [Id] INT IDENTITY(1,1) NOT NULL,
            [RunId] UNIQUEIDENTIFIER NOT NULL DEFAULT NEWID(),
            [Status] NVARCHAR(20) NOT NULL,
            [Payload] NVARCHAR(MAX) NULL,
            [Created] DATETIME2 NOT NULL DEFAULT GETUTCDATE(),
            CONSTRAINT [PK_Queue] PRIMARY KEY CLUSTERED ([Id])
        ) ON [PRIMARY]",
        &[],
    )
    .await
    .expect("create table");
    let run = Uuid::new_v4();
    for (i, status) in ["pending", "pending", "done"].iter().enumerate() {
        let row = c
            .query(
                "SET NOCOUNT ON;
                 INSERT INTO [procfwk].[Queue] ([RunId], [Status], [Payload])
                 OUTPUT INSERTED.[Id], INSERTED.[RunId], INSERTED.[Created]
                 VALUES (@P1, @P2, N'payload ' + @P3)",
                &[&run, status, &format!("#{i}")],
            )
            .await
            .unwrap()
            .into_row()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get::<i32, _>("Id"), Some(i as i32 + 1));
        assert_eq!(row.get::<Uuid, _>("RunId"), Some(run));
        assert!(row.get::<NaiveDateTime, _>("Created").is_some());
    }
    // Queue claim: UPDATE TOP (1) ... WITH (UPDLOCK, READPAST) ... OUTPUT.
    let claimed = c
        .query(
            "UPDATE TOP (1) [procfwk].[Queue] WITH (UPDLOCK, READPAST)
             SET [Status] = 'running'
             OUTPUT INSERTED.[Id], INSERTED.[Status]
             WHERE [Status] = @P1",
            &[&"pending"],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].get::<&str, _>("Status"), Some("running"));
    let row = c
        .query(
            "SELECT COUNT(*) AS n, MAX([Created]) AS newest, ISNULL(MAX([Payload]), 'none') AS p,
                    SUM(CASE WHEN [Created] > DATEADD(minute, -5, GETUTCDATE()) THEN 1 ELSE 0 END) AS recent,
                    MIN(DATEDIFF(second, [Created], GETUTCDATE())) AS age,
                    LEN(MAX([Status])) AS len, CONCAT('a', 1, NULL) AS cat,
                    CAST(MIN([RunId]) AS UNIQUEIDENTIFIER) AS run
             FROM [dbo].[Queue] WITH (NOLOCK) WHERE [RunId] = @P1",
            &[&run],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>("n"), Some(3));
    assert!(row.get::<NaiveDateTime, _>("newest").is_some());
    assert_eq!(row.get::<&str, _>("p"), Some("payload #2"));
    assert_eq!(row.get::<i32, _>("recent"), Some(3));
    assert!(row.get::<i32, _>("age").unwrap() < 60);
    assert_eq!(row.get::<i32, _>("len"), Some(7));
    assert_eq!(row.get::<&str, _>("cat"), Some("a1"));
    assert_eq!(row.get::<Uuid, _>("run"), Some(run));
    let page = c
        .query(
            "SELECT [Id] FROM [procfwk].[Queue] ORDER BY [Id] OFFSET @P1 ROWS FETCH NEXT @P2 ROWS ONLY",
            &[&1i32, &1i32],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].get::<i32, _>(0), Some(2));
    let deleted = c
        .execute("DELETE FROM [procfwk].[Queue] WHERE [Status] = 'done'", &[])
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), &[1]);
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn aggregates_keep_the_declared_column_type() {
    let server = start_sqlite(&[
        "CREATE TABLE seq (id INT PRIMARY KEY, n BIGINT, label NVARCHAR(30), flag BIT)",
        "INSERT INTO seq VALUES (1, 5, '2024-01-01 00:00:00', 1), (2, 7, '2024-01-02 00:00:00', 0)",
    ])
    .await;
    let mut c = connect(&server).await;
    let row = c
        .query(
            "SELECT MAX(n) AS maxn, ISNULL(SUM(n), 0) AS total, MIN(label) AS first_label, MAX(flag) AS anyflag, MAX(id) AS maxid FROM seq",
            &[],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i64, _>("maxn"), Some(7));
    assert_eq!(row.get::<i64, _>("total"), Some(12));
    assert_eq!(
        row.get::<&str, _>("first_label"),
        Some("2024-01-01 00:00:00")
    );
    assert_eq!(row.get::<bool, _>("anyflag"), Some(true));
    assert_eq!(row.get::<i32, _>("maxid"), Some(2));
    drop(c);
    server.stop().await;
}

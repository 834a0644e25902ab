//! The PostgreSQL backend: T-SQL from tiberius runs on PostgreSQL, whose
//! `READ COMMITTED` gives Azure SQL's default concurrency semantics
//! (`READ_COMMITTED_SNAPSHOT ON`): statement-level snapshot reads that never
//! wait, row locks that writers wait for, and a write that waited re-checked
//! against the latest committed row. Lock timeouts and deadlocks come back as
//! SQL Server's 1222 and 1205.
//!
//! Every database the backend serves gets the objects of `bootstrap.sql`
//! (schema `tds`: the case-insensitive collation `tds.ci`, the `tds.bit`
//! domain, `OBJECT_ID`, `DATEDIFF`, …; schema `dbo`). See [`translate`] for
//! the T-SQL that is understood and [`exec`] for the session rules.

pub mod exec;
pub mod translate;

use crate::error::ServerError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Objects every served database needs (idempotent).
pub const BOOTSTRAP_SQL: &str = include_str!("bootstrap.sql");

/// The environment variable naming the PostgreSQL server tests use: a libpq
/// connection string (`host=127.0.0.1 port=… user=… dbname=…`) of a role
/// that may `CREATE DATABASE`. `scripts/deps/20-postgres.sh` sets it.
pub const TEST_POSTGRES_ENV: &str = "PROCFWK_TEST_POSTGRES";

/// Where the PostgreSQL backend keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// libpq-style connection string (`host=… port=… user=… dbname=…`).
    pub conninfo: String,
    /// Create a new, empty database for this server (dropped again by
    /// [`crate::ServerHandle::shutdown`]); otherwise use the database of
    /// `conninfo` as it is.
    pub fresh_database: bool,
}

/// A prepared database.
pub(crate) struct PgDatabase {
    /// How sessions connect.
    pub(crate) config: postgres::Config,
    /// (admin connection, database name) to drop at shutdown.
    pub(crate) drop_on_shutdown: Option<(postgres::Config, String)>,
}

fn pg_err(what: &str) -> impl FnOnce(postgres::Error) -> ServerError + '_ {
    move |source| ServerError::Postgres {
        what: what.to_string(),
        source,
    }
}

/// Creates (when asked) and bootstraps the database; runs `init_sql` as
/// T-SQL.
pub(crate) fn prepare(target: &PgTarget, init_sql: &[String]) -> Result<PgDatabase, ServerError> {
    let mut config: postgres::Config =
        target
            .conninfo
            .parse()
            .map_err(|source| ServerError::Postgres {
                what: "the PostgreSQL connection string does not parse".into(),
                source,
            })?;
    let mut drop_on_shutdown = None;
    if target.fresh_database {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "tds_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = config
            .connect(postgres::NoTls)
            .map_err(pg_err("cannot connect to PostgreSQL"))?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            ))
            .map_err(pg_err("CREATE DATABASE failed"))?;
        drop_on_shutdown = Some((config.clone(), name.clone()));
        config.dbname(&name);
    }
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(pg_err("cannot connect to the PostgreSQL database"))?;
    client
        .batch_execute(BOOTSTRAP_SQL)
        .map_err(pg_err("the PostgreSQL bootstrap failed"))?;
    drop(client);
    if !init_sql.is_empty() {
        let mut exec = exec::PgExecutor::open(&config, 1, "master")
            .map_err(|e| ServerError::Backend(e.to_string()))?;
        for (index, sql) in init_sql.iter().enumerate() {
            exec.run_script(sql)
                .map_err(|error| ServerError::InitTsql { index, error })?;
        }
    }
    Ok(PgDatabase {
        config,
        drop_on_shutdown,
    })
}

/// Drops a database made for one server.
pub(crate) fn drop_database(admin: &postgres::Config, name: &str) {
    if let Ok(mut c) = admin.connect(postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    }
}

/// The PostgreSQL server for tests: [`TEST_POSTGRES_ENV`] when set;
/// otherwise, when PostgreSQL is installed (`/usr/lib/postgresql/*/bin`),
/// a loopback cluster started by `scripts/deps/20-postgres.sh` (once per
/// process). Fails with a message naming `bash scripts/test` when neither
/// is possible — PostgreSQL-backed tests never skip silently.
pub fn test_postgres() -> Result<String, String> {
    static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Ok(v) = std::env::var(TEST_POSTGRES_ENV) {
                if !v.trim().is_empty() {
                    return Ok(v);
                }
            }
            let help = format!(
                "the PostgreSQL-backed tests need a PostgreSQL server: run them with `bash scripts/test` \
                 (or `source scripts/deps/20-postgres.sh` first), which starts one on 127.0.0.1 and sets {TEST_POSTGRES_ENV}"
            );
            let installed = std::fs::read_dir("/usr/lib/postgresql")
                .map(|d| d.flatten().any(|e| e.path().join("bin/initdb").exists()))
                .unwrap_or(false);
            if !installed {
                return Err(format!("{TEST_POSTGRES_ENV} is not set and PostgreSQL is not installed: {help}"));
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/deps/20-postgres.sh");
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "source '{script}' >&2 && printf '%s' \"${TEST_POSTGRES_ENV}\""
                ))
                .env("PROCFWK_PG_NO_INSTALL", "1")
                .output()
                .map_err(|e| format!("cannot run {script}: {e}; {help}"))?;
            let conninfo = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() || conninfo.is_empty() {
                return Err(format!(
                    "{script} could not start PostgreSQL ({}): {help}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(conninfo)
        })
        .clone()
}

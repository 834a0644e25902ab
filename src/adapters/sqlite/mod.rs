//! The embedded metadata store: one SQLite file (bundled SQLite, no system library), with the same tables
//! and columns as Azure SQL. The file is attached under the schema name `procfwk`, so the statements in
//! [`statements`](crate::store::statements) run here exactly as they run on SQL Server.
//!
//! One connection per process, behind an async mutex: a transaction holds it from `BEGIN IMMEDIATE` to
//! `COMMIT`, so transitions in this process are serialised, and other processes on the same file wait on
//! SQLite's write lock (busy timeout 5 s).

use crate::store::passphrase;
use crate::store::schema::SchemaReport;
use crate::store::{
    Backend, Row, SqlValue, Statement, StoreError, Tx, DATETIME_FORMAT, SCHEMA_VERSION,
};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The SQLite DDL (table and view names without schema prefix), one statement per `;`.
pub const SCHEMA_SQL: &str = include_str!("sqlite_schema.sql");

/// The DDL split into single statements (comments removed).
pub fn schema_statements() -> Vec<String> {
    SCHEMA_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub struct SqliteBackend {
    path: String,
    /// `None` until the file exists: only `db init` creates it.
    conn: Arc<Mutex<Option<Connection>>>,
}

fn db_error(e: rusqlite::Error) -> StoreError {
    // Preparing a statement reports its problem as SqlInputError (with the statement's text), running
    // one as SqliteFailure.
    let (code, message) = match &e {
        rusqlite::Error::SqliteFailure(code, message) => (*code, message.clone()),
        rusqlite::Error::SqlInputError { error, msg, .. } => (*error, Some(msg.clone())),
        other => {
            return StoreError::Database {
                number: 50000,
                message: other.to_string(),
            }
        }
    };
    use rusqlite::ErrorCode::*;
    let text = message.as_deref().unwrap_or("");
    let number = match code.code {
        DatabaseBusy | DatabaseLocked => 1205,
        ConstraintViolation => 2627,
        // As SQL Server numbers them: "Invalid object name" / "Invalid column name".
        _ if text.starts_with("no such table") => 208,
        _ if text.starts_with("no such column") => 207,
        _ => 50000,
    };
    StoreError::Database {
        number,
        message: message.unwrap_or_else(|| code.to_string()),
    }
}

/// A connection with the file at `path` attached as `procfwk` (the file must exist: ATTACH would
/// create it).
fn attach(path: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_in_memory().map_err(db_error)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(db_error)?;
    conn.execute("ATTACH DATABASE ?1 AS procfwk", [path])
        .map_err(db_error)?;
    conn.execute_batch("PRAGMA procfwk.journal_mode = WAL; PRAGMA foreign_keys = ON;")
        .map_err(db_error)?;
    register_functions(&conn)?;
    Ok(conn)
}

/// SQL Server's functions the shared statements use that SQLite lacks: `DECRYPTBYPASSPHRASE(passphrase,
/// data)` in SQL Server's version-2 layout ([`passphrase`]): a BLOB, or NULL for a wrong passphrase,
/// NULL input or data that is not a version-2 blob.
fn register_functions(conn: &Connection) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "DECRYPTBYPASSPHRASE",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let passphrase = match ctx.get_raw(0) {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => return Ok(None),
            };
            let clear = match ctx.get_raw(1) {
                ValueRef::Blob(b) => passphrase::decrypt(&passphrase, b),
                _ => None,
            };
            Ok(clear)
        },
    )
    .map_err(db_error)
}

impl SqliteBackend {
    /// Open the SQLite file at `path`. A missing file is not created (only [`Backend::init_schema`],
    /// `procfwk db init`, does that): transactions then fail with [`StoreError::NotInitialised`] until
    /// it exists.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        if path.trim().is_empty() {
            return Err(StoreError::Config(
                "sqlite: needs a file path, e.g. sqlite:procfwk.db".into(),
            ));
        }
        let conn = if std::path::Path::new(path).exists() {
            Some(attach(path)?)
        } else {
            None
        };
        Ok(Self {
            path: path.to_string(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        let mut guard = self.conn.clone().lock_owned().await;
        if guard.is_none() {
            if !std::path::Path::new(&self.path).exists() {
                return Err(StoreError::NotInitialised(format!(
                    "the SQLite file {} does not exist",
                    self.path
                )));
            }
            *guard = Some(attach(&self.path)?);
        }
        let conn = guard
            .as_ref()
            .ok_or_else(|| StoreError::Connection("no SQLite connection".into()))?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
        Ok(Box::new(SqliteTx { conn: Some(guard) }))
    }

    async fn upgrade_schema(&self, dry_run: bool) -> Result<SchemaReport, StoreError> {
        let exists = std::path::Path::new(&self.path).exists();
        if !exists && dry_run {
            return Ok(SchemaReport {
                found_version: None,
                version: SCHEMA_VERSION,
                changes: vec![(
                    "sqlite_schema.sql".into(),
                    format!("create the SQLite file {} with the whole schema", self.path),
                )],
                dry_run,
            });
        }
        // The DDL names tables without a prefix, so it runs on a plain connection to the file itself
        // (which creates the file when it is missing).
        let conn = Connection::open(&self.path).map_err(db_error)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db_error)?;
        let found = recorded_version(&conn)?;
        if let Some(v) = found {
            if v > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let mut report = SchemaReport {
            found_version: found,
            version: SCHEMA_VERSION,
            changes: Vec::new(),
            dry_run,
        };
        if found == Some(SCHEMA_VERSION) {
            return Ok(report);
        }
        // One transaction (SQLite's DDL is transactional): what changed is read from the catalogue
        // before and after; a dry run rolls it all back.
        let before = catalogue(&conn)?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
        let applied = conn
            .execute_batch(SCHEMA_SQL)
            .map_err(db_error)
            .and_then(|()| upgrade_in_place(&conn))
            .and_then(|()| catalogue(&conn));
        let after = match applied {
            Ok(after) => after,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        conn.execute_batch(if dry_run { "ROLLBACK" } else { "COMMIT" })
            .map_err(db_error)?;
        report.changes = after
            .into_iter()
            .filter(|entry| !before.contains(entry))
            .map(|entry| ("sqlite_schema.sql".to_string(), entry))
            .collect();
        Ok(report)
    }

    fn describe(&self) -> String {
        format!("SQLite file {}", self.path)
    }
}

/// The newest schema version the file records (`None`: no SchemaVersion table, or no row).
fn recorded_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let present: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'SchemaVersion'",
            [],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if present == 0 {
        return Ok(None);
    }
    conn.query_row("SELECT MAX(Version) FROM SchemaVersion", [], |r| r.get(0))
        .map_err(db_error)
}

/// The file's objects, table columns and recorded versions, one line each as `db upgrade` lists them.
fn catalogue(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut objects = conn
        .prepare(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY rowid",
        )
        .map_err(db_error)?;
    let objects: Vec<(String, String)> = objects
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_error)?
        .collect::<Result<_, _>>()
        .map_err(db_error)?;
    for (kind, name) in &objects {
        out.push(format!("CREATE {} {name}", kind.to_ascii_uppercase()));
        if kind == "table" {
            let mut columns = conn
                .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .map_err(db_error)?;
            let columns: Vec<String> = columns
                .query_map([name], |r| r.get(0))
                .map_err(db_error)?
                .collect::<Result<_, _>>()
                .map_err(db_error)?;
            out.extend(
                columns
                    .iter()
                    .map(|c| format!("ALTER TABLE {name} ADD {c}")),
            );
        }
    }
    if objects
        .iter()
        .any(|(k, n)| k == "table" && n == "SchemaVersion")
    {
        let mut versions = conn
            .prepare("SELECT Version FROM SchemaVersion ORDER BY Version")
            .map_err(db_error)?;
        let versions: Vec<i64> = versions
            .query_map([], |r| r.get(0))
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        out.extend(
            versions
                .iter()
                .map(|v| format!("record schema version {v}")),
        );
    }
    Ok(out)
}

/// Columns added after a table was first shipped, with the schema version that added them: a file made
/// by an older `db init` gets them here (`CREATE TABLE IF NOT EXISTS` leaves an existing table alone).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("CurrentExecution", "ClaimToken", "UNIQUEIDENTIFIER NULL"),
    ("CurrentExecution", "ClaimedDateTime", "DATETIME2 NULL"),
    ("CurrentExecution", "RunLink", "NVARCHAR(1000) NULL"),
    ("ExecutionLog", "RunLink", "NVARCHAR(1000) NULL"),
];

fn upgrade_in_place(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, definition) in ADDED_COLUMNS {
        let present: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |r| r.get(0),
            )
            .map_err(db_error)?;
        if present == 0 {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))
            .map_err(db_error)?;
        }
    }
    conn.execute(
        "INSERT OR IGNORE INTO SchemaVersion (Version, Description, AppliedDateTime) VALUES (3, 'worker claims (ClaimToken, ClaimedDateTime)', '2026-12-01 00:00:00.000')",
        [],
    )
    .map_err(db_error)?;
    Ok(())
}

struct SqliteTx {
    /// The process's connection (always `Some` inside: [`SqliteBackend::begin`] made sure).
    conn: Option<OwnedMutexGuard<Option<Connection>>>,
}

impl SqliteTx {
    fn conn(&self) -> Result<&Connection, StoreError> {
        self.conn
            .as_deref()
            .and_then(Option::as_ref)
            .ok_or_else(|| StoreError::Connection("the transaction is already finished".into()))
    }
}

fn to_sql(value: &SqlValue) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Int(i) => Value::Integer(*i),
        SqlValue::Float(f) => Value::Real(*f),
        SqlValue::Bool(b) => Value::Integer(i64::from(*b)),
        SqlValue::Text(t) => Value::Text(t.clone()),
        SqlValue::Guid(g) => Value::Text(g.hyphenated().to_string()),
        SqlValue::DateTime(d) => Value::Text(d.format(DATETIME_FORMAT).to_string()),
    }
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[SqlValue]) -> Result<(), StoreError> {
    for (i, value) in params.iter().enumerate() {
        let name = format!("@P{}", i + 1);
        if let Some(index) = stmt.parameter_index(&name).map_err(db_error)? {
            stmt.raw_bind_parameter(index, to_sql(value))
                .map_err(db_error)?;
        }
    }
    Ok(())
}

fn from_ref(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(f) => SqlValue::Float(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Text(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

#[async_trait::async_trait]
impl Tx for SqliteTx {
    async fn query(
        &mut self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(statement.sql).map_err(db_error)?;
        bind(&mut stmt, params)?;
        let names: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            let mut columns = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                columns.push((name.clone(), from_ref(row.get_ref(i).map_err(db_error)?)));
            }
            out.push(Row::new(columns));
        }
        Ok(out)
    }

    async fn execute(
        &mut self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(statement.sql).map_err(db_error)?;
        bind(&mut stmt, params)?;
        let changed = stmt.raw_execute().map_err(db_error)?;
        Ok(changed as u64)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let conn = self.conn.take();
        match conn.as_deref().and_then(Option::as_ref) {
            Some(c) => c.execute_batch("COMMIT").map_err(db_error),
            None => Ok(()),
        }
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), StoreError> {
        if let Some(c) = self.conn.take().as_deref().and_then(Option::as_ref) {
            let _ = c.execute_batch("ROLLBACK");
        }
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // A transaction dropped without commit (an early return) is rolled back before the connection is
        // handed to the next caller.
        if let Some(c) = self.conn.take().as_deref().and_then(Option::as_ref) {
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::statements;

    #[tokio::test]
    async fn every_statement_prepares_on_the_sqlite_schema() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let dir = dir.as_ref().ok();
        let path = dir
            .map(|d| d.path().join("t.db").to_string_lossy().to_string())
            .unwrap_or_default();
        let backend = SqliteBackend::open(&path).ok();
        let Some(backend) = backend else {
            panic!("open")
        };
        assert!(backend.upgrade_schema(false).await.is_ok());
        assert!(backend.upgrade_schema(false).await.is_ok(), "idempotent");
        assert!(
            backend.begin().await.is_ok(),
            "attached once the file exists"
        );
        let guard = backend.conn.lock().await;
        let Some(conn) = guard.as_ref() else {
            panic!("attached")
        };
        for s in statements::ALL {
            if let Err(e) = conn.prepare(s.sql) {
                panic!("{} does not prepare on SQLite: {e}\n{}", s.name, s.sql);
            }
        }
    }

    #[tokio::test]
    async fn a_missing_file_is_not_created_and_reads_as_not_initialised() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let path = dir.path().join("missing.db");
        let path_text = path.to_string_lossy().to_string();
        let Ok(backend) = SqliteBackend::open(&path_text) else {
            panic!("open")
        };
        let first = backend.begin().await.map(drop);
        assert!(
            matches!(&first, Err(StoreError::NotInitialised(m)) if m.contains("does not exist")),
            "{first:?}"
        );
        assert!(
            !path.exists(),
            "opening and using the store did not create the file"
        );
        assert!(backend.upgrade_schema(false).await.is_ok());
        assert!(path.exists(), "db init creates it");
        assert!(backend.begin().await.is_ok(), "usable without reopening");
    }

    #[test]
    fn missing_tables_and_columns_are_numbered_as_on_sql_server() {
        let Ok(conn) = Connection::open_in_memory() else {
            panic!("sqlite")
        };
        let table = conn.prepare("SELECT 1 FROM NoSuchTable").map(drop);
        assert!(matches!(
            table.map_err(db_error),
            Err(StoreError::Database { number: 208, .. })
        ));
        assert!(conn.execute_batch("CREATE TABLE T (A INT)").is_ok());
        let column = conn.prepare("SELECT B FROM T").map(drop);
        assert!(matches!(
            column.map_err(db_error),
            Err(StoreError::Database { number: 207, .. })
        ));
    }

    #[tokio::test]
    async fn an_older_file_is_upgraded_in_place_and_a_dry_run_changes_nothing() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let path = dir.path().join("old.db").to_string_lossy().to_string();
        let Ok(backend) = SqliteBackend::open(&path) else {
            panic!("open")
        };
        assert!(backend.upgrade_schema(false).await.is_ok());
        // Make it a version-2 file: no claim columns, no lease intents, no run links, no version 3 to 5,
        // one row of history.
        {
            let Ok(conn) = Connection::open(&path) else {
                panic!("open file")
            };
            let made = conn.execute_batch(
                "ALTER TABLE CurrentExecution DROP COLUMN ClaimToken; \
                 ALTER TABLE CurrentExecution DROP COLUMN ClaimedDateTime; \
                 ALTER TABLE CurrentExecution DROP COLUMN RunLink; \
                 ALTER TABLE ExecutionLog DROP COLUMN RunLink; \
                 DROP TABLE VmLeaseIntents; \
                 DELETE FROM SchemaVersion WHERE Version >= 3; \
                 INSERT INTO ExecutionLog (LocalExecutionId, StageId, PipelineId, PipelineName) VALUES ('e', 1, 1, 'Wait 1');",
            );
            assert!(made.is_ok(), "{made:?}");
        }
        let plan = backend.upgrade_schema(true).await.unwrap_or_default();
        assert_eq!(plan.found_version, Some(2));
        let changes: Vec<&str> = plan.changes.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(
            changes,
            [
                "ALTER TABLE CurrentExecution ADD ClaimToken",
                "ALTER TABLE CurrentExecution ADD ClaimedDateTime",
                "ALTER TABLE CurrentExecution ADD RunLink",
                "ALTER TABLE ExecutionLog ADD RunLink",
                "CREATE TABLE VmLeaseIntents",
                "ALTER TABLE VmLeaseIntents ADD PoolKey",
                "ALTER TABLE VmLeaseIntents ADD Holder",
                "ALTER TABLE VmLeaseIntents ADD Intent",
                "ALTER TABLE VmLeaseIntents ADD IntentDateTime",
                "ALTER TABLE VmLeaseIntents ADD LeaseSeconds",
                "record schema version 3",
                "record schema version 4",
                "record schema version 5"
            ]
        );
        let again = backend.upgrade_schema(true).await.unwrap_or_default();
        assert_eq!(again.changes, plan.changes, "the dry run changed nothing");
        let done = backend.upgrade_schema(false).await.unwrap_or_default();
        assert_eq!(done.changes, plan.changes);
        let noop = backend.upgrade_schema(false).await.unwrap_or_default();
        assert_eq!((noop.found_version, noop.changes.len()), (Some(5), 0));
        let Ok(conn) = Connection::open(&path) else {
            panic!("open file")
        };
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM ExecutionLog", [], |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(kept, 1, "rows kept");
        // A file of a newer version is refused, unchanged.
        let newer = conn.execute_batch(
            "INSERT INTO SchemaVersion (Version, Description, AppliedDateTime) VALUES (9, 'future', '2030-01-01')",
        );
        assert!(newer.is_ok());
        let refused = backend.upgrade_schema(false).await;
        assert!(
            matches!(
                refused,
                Err(StoreError::TooNew {
                    found: 9,
                    supported: SCHEMA_VERSION
                })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn decryptbypassphrase_is_sql_servers_in_sqlite() {
        let Ok(conn) = Connection::open_in_memory() else {
            panic!("sqlite")
        };
        assert!(register_functions(&conn).is_ok());
        let secret = passphrase::utf16le("sim-secret-A-7f3c9e1b");
        let data = passphrase::encrypt("FrameworkFactoryADF", &secret, [3; 16]).unwrap_or_default();
        let clear: Option<Vec<u8>> = conn
            .query_row(
                "SELECT DECRYPTBYPASSPHRASE(CONCAT('FrameworkFactory', 'ADF'), ?1)",
                [&data],
                |r| r.get(0),
            )
            .unwrap_or_default();
        assert_eq!(clear.as_deref(), Some(&secret[..]));
        for wrong in [
            "SELECT DECRYPTBYPASSPHRASE('other', ?1)",
            "SELECT DECRYPTBYPASSPHRASE(NULL, ?1)",
        ] {
            let none: Option<Vec<u8>> = conn
                .query_row(wrong, [&data], |r| r.get(0))
                .unwrap_or(Some(vec![1]));
            assert_eq!(none, None, "{wrong}");
        }
    }

    #[test]
    fn schema_splits_into_statements() {
        let stmts = schema_statements();
        assert!(stmts.len() >= 20);
        assert!(stmts.iter().all(|s| !s.starts_with("--")));
    }
}

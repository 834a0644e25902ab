//! Executes requests on one SQLite connection and encodes the TDS response.
//!
//! An [`Executor`] belongs to exactly one TDS connection and lives on that
//! connection's worker thread (SQLite calls block; `BEGIN IMMEDIATE` may wait
//! up to the busy timeout for another connection's transaction). It keeps
//! the session state: `@@TRANCOUNT`, `SET NOCOUNT`, `SET XACT_ABORT`,
//! `@@ROWCOUNT`, the current database name and the transaction descriptor.
//!
//! Error handling follows SQL Server's rules closely enough for retry and
//! transaction tests: compile errors (translation errors, SQLite prepare
//! errors) abort the rest of the batch; constraint violations end only the
//! statement; `THROW` and deadlock/busy (1205) abort the batch, and 1205
//! also rolls the transaction back; with `XACT_ABORT ON` any error rolls
//! back and aborts.

use crate::error::SqlError;
use crate::functions::parse_function_error;
use crate::rpc::{BoundParam, ExecuteSql};
use crate::split::split_batch;
use crate::tokens::{cur_cmd, done_status, Column, DoneKind, TokenWriter};
use crate::translate::{translate, SetOption, SqlKind, SqlStmt, Stmt, TranslateCtx};
use crate::types::{infer, to_cell, widen, Cell, ColType};
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode};
use std::path::Path;
use std::time::Duration;

/// Server name reported in ERROR/INFO tokens and `@@SERVERNAME`.
pub const SERVER_NAME: &str = "tds-test-server";

/// How long a statement waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a SQLite connection configured like every server connection.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    crate::functions::register(&conn)?;
    Ok(conn)
}

/// The `@@VERSION` text.
pub fn version_string() -> String {
    format!(
        "Microsoft SQL Server (tds-test-server on SQLite {})",
        rusqlite::version()
    )
}

/// What to do after a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Abort,
}

/// Per-connection SQLite session.
pub struct Executor {
    conn: Connection,
    spid: u16,
    trancount: u32,
    nocount: bool,
    xact_abort: bool,
    rowcount: i64,
    database: String,
    tx_seq: u32,
    tx_desc: [u8; 8],
    version: String,
}

impl Executor {
    /// Opens the database for a new TDS connection.
    pub fn open(path: &Path, spid: u16, database: &str) -> rusqlite::Result<Self> {
        Ok(Executor {
            conn: open_connection(path)?,
            spid,
            trancount: 0,
            nocount: false,
            xact_abort: false,
            rowcount: 0,
            database: database.to_string(),
            tx_seq: 0,
            tx_desc: [0; 8],
            version: version_string(),
        })
    }

    /// `sp_reset_connection`: roll back, restore default options.
    fn reset(&mut self, w: &mut TokenWriter) {
        if self.trancount > 0 {
            self.rollback_silently(w);
        }
        self.nocount = false;
        self.xact_abort = false;
        self.rowcount = 0;
        w.env_reset_connection();
    }

    /// Runs a SQL batch and returns the encoded response tokens.
    pub fn run_batch(&mut self, text: &str, reset: bool) -> Vec<u8> {
        let mut w = TokenWriter::new();
        if reset {
            self.reset(&mut w);
        }
        let aborted = self.run_statements(text, &[], DoneKind::Done, &mut w);
        w.finish_batch(aborted);
        w.into_bytes()
    }

    /// Runs `sp_executesql` calls and returns the encoded response tokens.
    pub fn run_rpc(&mut self, calls: &[Result<ExecuteSql, SqlError>], reset: bool) -> Vec<u8> {
        let mut w = TokenWriter::new();
        if reset {
            self.reset(&mut w);
        }
        for (i, call) in calls.iter().enumerate() {
            let more = if i + 1 < calls.len() {
                done_status::MORE
            } else {
                0
            };
            let failed = match call {
                Err(e) => {
                    w.error(e, SERVER_NAME, 1);
                    true
                }
                Ok(exec) => {
                    // SET options changed inside sp_executesql revert on exit.
                    let (nocount, xact_abort) = (self.nocount, self.xact_abort);
                    let failed =
                        self.run_statements(&exec.stmt, &exec.params, DoneKind::DoneInProc, &mut w);
                    self.nocount = nocount;
                    self.xact_abort = xact_abort;
                    w.return_status(if failed { -6 } else { 0 });
                    failed
                }
            };
            let status = more | if failed { done_status::ERROR } else { 0 };
            w.done(DoneKind::DoneProc, status, cur_cmd::OTHER, 0);
        }
        w.into_bytes()
    }

    fn ctx<'a>(&'a self, params: &'a [BoundParam]) -> TranslateCtx<'a> {
        TranslateCtx {
            params,
            trancount: self.trancount,
            rowcount: self.rowcount,
            spid: self.spid,
            version: &self.version,
            server_name: SERVER_NAME,
        }
    }

    /// Runs every statement of `text`; returns true when an error occurred.
    fn run_statements(
        &mut self,
        text: &str,
        params: &[BoundParam],
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> bool {
        let statements = match split_batch(text) {
            Ok(s) => s,
            Err(e) => {
                self.statement_error(w, kind, &e);
                return true;
            }
        };
        // Compile the whole batch first: a syntax error anywhere means
        // nothing runs, as in SQL Server. (Name resolution is deferred to
        // execution, since earlier statements may create the objects.)
        for stmt in &statements {
            let compiled = translate(stmt, &self.ctx(params)).and_then(|t| match t {
                Stmt::Sql(sql) => match self.conn.prepare(&sql.sql) {
                    Err(e) if is_syntax_error(&e) => Err(map_sqlite_error(&e)),
                    _ => Ok(()),
                },
                _ => Ok(()),
            });
            if let Err(e) = compiled {
                self.statement_error(w, kind, &e);
                return true;
            }
        }
        let mut any_error = false;
        for stmt in &statements {
            let (flow, failed) = self.run_statement(stmt, params, kind, w);
            any_error |= failed;
            if flow == Flow::Abort {
                break;
            }
        }
        any_error
    }

    fn statement_error(&mut self, w: &mut TokenWriter, kind: DoneKind, e: &SqlError) {
        w.error(e, SERVER_NAME, 1);
        w.done(
            kind,
            done_status::MORE | done_status::ERROR,
            cur_cmd::OTHER,
            0,
        );
    }

    fn done(&self, w: &mut TokenWriter, kind: DoneKind, cmd: u16, rows: Option<u64>) {
        match rows {
            Some(n) if !self.nocount => {
                w.done(kind, done_status::MORE | done_status::COUNT, cmd, n)
            }
            _ => w.done(kind, done_status::MORE, cmd, 0),
        }
    }

    /// Returns (flow, failed).
    fn run_statement(
        &mut self,
        text: &str,
        params: &[BoundParam],
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> (Flow, bool) {
        let stmt = match translate(text, &self.ctx(params)) {
            Ok(s) => s,
            Err(e) => {
                self.statement_error(w, kind, &e);
                return (Flow::Abort, true);
            }
        };
        match stmt {
            Stmt::NoOp => {}
            Stmt::Set { option, on } => match option {
                SetOption::NoCount => self.nocount = on,
                SetOption::XactAbort => self.xact_abort = on,
            },
            Stmt::BeginTran => return self.begin_tran(w, kind),
            Stmt::Commit => return self.commit(w, kind),
            Stmt::Rollback => return self.rollback(w, kind),
            Stmt::Throw {
                number,
                message,
                state,
            } => {
                let err = SqlError {
                    number,
                    state,
                    class: 16,
                    message,
                };
                self.statement_error(w, kind, &err);
                if self.xact_abort && self.trancount > 0 {
                    self.rollback_silently(w);
                }
                return (Flow::Abort, true);
            }
            Stmt::RaisError {
                message,
                severity,
                state,
            } => {
                if severity <= 10 {
                    w.info(50000, &message, SERVER_NAME);
                } else {
                    let err = SqlError {
                        number: 50000,
                        state,
                        class: severity.min(25),
                        message,
                    };
                    self.statement_error(w, kind, &err);
                    return self.after_runtime_error(w);
                }
            }
            Stmt::Print(text) => w.info(0, &text, SERVER_NAME),
            Stmt::Use(db) => {
                w.env_database(&db, &self.database);
                w.info(
                    5701,
                    &format!("Changed database context to '{db}'."),
                    SERVER_NAME,
                );
                self.database = db;
            }
            Stmt::Sql(sql) => return self.run_sql(&sql, params, kind, w),
        }
        (Flow::Continue, false)
    }

    /// After a statement-level runtime error: XACT_ABORT rolls back and aborts.
    fn after_runtime_error(&mut self, w: &mut TokenWriter) -> (Flow, bool) {
        self.sync_autocommit(w);
        if self.xact_abort {
            if self.trancount > 0 {
                self.rollback_silently(w);
            }
            return (Flow::Abort, true);
        }
        (Flow::Continue, true)
    }

    /// SQLite may have rolled back on its own (e.g. after some I/O errors).
    fn sync_autocommit(&mut self, w: &mut TokenWriter) {
        if self.trancount > 0 && self.conn.is_autocommit() {
            self.trancount = 0;
            w.env_rollback_tran(self.tx_desc);
            self.tx_desc = [0; 8];
        }
    }

    fn rollback_silently(&mut self, w: &mut TokenWriter) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.trancount = 0;
        w.env_rollback_tran(self.tx_desc);
        self.tx_desc = [0; 8];
    }

    fn begin_tran(&mut self, w: &mut TokenWriter, kind: DoneKind) -> (Flow, bool) {
        if self.trancount == 0 {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                let err = map_sqlite_error(&e);
                self.statement_error(w, kind, &err);
                return (Flow::Abort, true);
            }
            self.tx_seq = self.tx_seq.wrapping_add(1);
            let mut desc = [0u8; 8];
            desc[..4].copy_from_slice(&self.tx_seq.to_le_bytes());
            desc[4..6].copy_from_slice(&self.spid.to_le_bytes());
            self.tx_desc = desc;
            w.env_begin_tran(desc);
        }
        self.trancount = self.trancount.saturating_add(1);
        self.done(w, kind, cur_cmd::OTHER, None);
        (Flow::Continue, false)
    }

    fn commit(&mut self, w: &mut TokenWriter, kind: DoneKind) -> (Flow, bool) {
        match self.trancount {
            0 => {
                let err = SqlError::new(
                    3902,
                    "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                );
                self.statement_error(w, kind, &err);
                return self.after_runtime_error(w);
            }
            1 => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let err = map_sqlite_error(&e);
                    self.statement_error(w, kind, &err);
                    return self.after_runtime_error(w);
                }
                self.trancount = 0;
                w.env_commit_tran(self.tx_desc);
                self.tx_desc = [0; 8];
            }
            _ => self.trancount -= 1,
        }
        self.done(w, kind, cur_cmd::OTHER, None);
        (Flow::Continue, false)
    }

    fn rollback(&mut self, w: &mut TokenWriter, kind: DoneKind) -> (Flow, bool) {
        if self.trancount == 0 {
            let err = SqlError::new(
                3903,
                "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            );
            self.statement_error(w, kind, &err);
            return self.after_runtime_error(w);
        }
        self.rollback_silently(w);
        self.done(w, kind, cur_cmd::OTHER, None);
        (Flow::Continue, false)
    }

    fn run_sql(
        &mut self,
        stmt: &SqlStmt,
        params: &[BoundParam],
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> (Flow, bool) {
        let cmd = match stmt.kind {
            SqlKind::Query => cur_cmd::SELECT,
            SqlKind::Insert => cur_cmd::INSERT,
            SqlKind::Update => cur_cmd::UPDATE,
            SqlKind::Delete => cur_cmd::DELETE,
            SqlKind::Other => cur_cmd::OTHER,
        };
        let outcome = self.query(stmt, params);
        match outcome {
            Err(StmtError::Compile(e)) => {
                self.statement_error(w, kind, &e);
                self.sync_autocommit(w);
                (Flow::Abort, true)
            }
            Err(StmtError::Runtime(e)) => {
                self.statement_error(w, kind, &e);
                if e.number == 1205 {
                    // Deadlock victim: SQL Server rolls back and ends the batch.
                    if self.trancount > 0 {
                        self.rollback_silently(w);
                    }
                    return (Flow::Abort, true);
                }
                self.after_runtime_error(w)
            }
            Ok(QueryOutput::Rows { columns, rows }) => {
                w.col_metadata(&columns);
                for row in &rows {
                    w.row(&columns, row);
                }
                let n = rows.len() as u64;
                self.rowcount = n as i64;
                self.done(w, kind, cmd, Some(n));
                (Flow::Continue, false)
            }
            Ok(QueryOutput::Changes(n)) => {
                let counted = matches!(
                    stmt.kind,
                    SqlKind::Insert | SqlKind::Update | SqlKind::Delete
                );
                self.rowcount = if counted { n as i64 } else { 0 };
                self.done(w, kind, cmd, counted.then_some(n as u64));
                (Flow::Continue, false)
            }
        }
    }

    /// Prepares, binds and runs one SQLite statement.
    fn query(&self, stmt: &SqlStmt, params: &[BoundParam]) -> Result<QueryOutput, StmtError> {
        let mut prepared = self
            .conn
            .prepare(&stmt.sql)
            .map_err(|e| StmtError::Compile(map_sqlite_error(&e)))?;
        let count = prepared.parameter_count();
        for i in 1..=count {
            let value = params.get(i - 1).map_or(&Value::Null, |p| &p.value);
            prepared
                .raw_bind_parameter(i, value)
                .map_err(|e| StmtError::Compile(map_sqlite_error(&e)))?;
        }
        let ncols = prepared.column_count();
        if ncols == 0 {
            let changes = prepared
                .raw_execute()
                .map_err(|e| StmtError::Runtime(map_sqlite_error(&e)))?;
            return Ok(QueryOutput::Changes(changes));
        }
        let names: Vec<String> = prepared
            .column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let decls: Vec<Option<String>> = prepared
            .columns()
            .iter()
            .map(|c| c.decl_type().map(str::to_string))
            .collect();
        let mut data: Vec<Vec<Value>> = Vec::new();
        {
            let mut rows = prepared.raw_query();
            loop {
                match rows.next() {
                    Ok(Some(row)) => {
                        let mut values = Vec::with_capacity(ncols);
                        for i in 0..ncols {
                            let v = row
                                .get_ref(i)
                                .map_err(|e| StmtError::Runtime(map_sqlite_error(&e)))?;
                            values.push(Value::from(v));
                        }
                        data.push(values);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(StmtError::Runtime(map_sqlite_error(&e))),
                }
            }
        }
        drop(prepared);
        let mut decls = decls;
        if let Some(probe) = &stmt.probe_sql {
            if decls.iter().any(Option::is_none) {
                if let Ok(p) = self.conn.prepare(probe) {
                    for (decl, col) in decls.iter_mut().zip(p.columns()) {
                        if decl.is_none() {
                            *decl = col.decl_type().map(str::to_string);
                        }
                    }
                }
            }
        }
        let table_types = match (&stmt.target_table, decls.iter().any(Option::is_none)) {
            (Some(table), true) => self.table_types(table),
            _ => Vec::new(),
        };
        let mut columns = Vec::with_capacity(ncols);
        for (i, name) in names.iter().enumerate() {
            let hint = stmt.hints.get(i).copied().flatten();
            let decl = decls[i]
                .as_deref()
                .and_then(ColType::from_decl)
                .or_else(|| {
                    table_types
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .and_then(|(_, t)| *t)
                });
            let ty = hint
                .or(decl)
                .unwrap_or_else(|| infer(data.iter().map(|r| &r[i])));
            columns.push(Column {
                name: name.clone(),
                ty,
            });
        }
        let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(data.len());
        for values in &data {
            let mut cells = Vec::with_capacity(ncols);
            for (col, v) in columns.iter().zip(values) {
                cells.push(to_cell(col.ty, v).map_err(StmtError::Runtime)?);
            }
            rows.push(cells);
        }
        for (i, col) in columns.iter_mut().enumerate() {
            col.ty = widen(col.ty, rows.iter().map(|r| r[i].clone()));
        }
        Ok(QueryOutput::Rows { columns, rows })
    }

    /// Declared column types of `table` (for RETURNING columns).
    fn table_types(&self, table: &str) -> Vec<(String, Option<ColType>)> {
        let sql = format!("PRAGMA table_info(\"{}\")", table.replace('"', "\"\""));
        let Ok(mut stmt) = self.conn.prepare(&sql) else {
            return Vec::new();
        };
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)));
        match rows {
            Ok(rows) => rows
                .filter_map(Result::ok)
                .map(|(name, decl)| (name, ColType::from_decl(&decl)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

enum QueryOutput {
    Rows {
        columns: Vec<Column>,
        rows: Vec<Vec<Cell>>,
    },
    Changes(usize),
}

enum StmtError {
    /// Failed before running: aborts the batch.
    Compile(SqlError),
    /// Failed while running: ends the statement.
    Runtime(SqlError),
}

/// True for SQLite parse errors (as opposed to name-resolution errors).
fn is_syntax_error(e: &rusqlite::Error) -> bool {
    let m = match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m,
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        _ => return false,
    };
    m.contains("syntax error") || m.contains("incomplete input") || m.contains("unrecognized token")
}

fn after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.find(prefix).map(|i| &msg[i + prefix.len()..])
}

/// Maps a SQLite error to the closest SQL Server error, keeping the SQLite
/// message in parentheses.
pub fn map_sqlite_error(e: &rusqlite::Error) -> SqlError {
    let (code, ext, msg) = match e {
        rusqlite::Error::SqliteFailure(f, m) => (
            Some(f.code),
            f.extended_code,
            m.clone().unwrap_or_else(|| f.to_string()),
        ),
        rusqlite::Error::SqlInputError { error, msg, .. } => {
            (Some(error.code), error.extended_code, msg.clone())
        }
        other => (None, 0, other.to_string()),
    };
    if let Some((number, message)) = parse_function_error(&msg) {
        return SqlError::new(number, message);
    }
    let table_of = |m: &str| -> String {
        after(m, "failed: ")
            .and_then(|rest| rest.split('.').next())
            .unwrap_or("?")
            .to_string()
    };
    let (number, text) = match (code, ext) {
        (_, 1555) => (
            2627,
            format!(
                "Violation of PRIMARY KEY constraint 'PK_{0}'. Cannot insert duplicate key in object 'dbo.{0}'.",
                table_of(&msg)
            ),
        ),
        (_, 2067) => (
            2627,
            format!(
                "Violation of UNIQUE KEY constraint 'UQ_{0}'. Cannot insert duplicate key in object 'dbo.{0}'.",
                table_of(&msg)
            ),
        ),
        (_, 787) => (
            547,
            "The statement conflicted with a FOREIGN KEY constraint.".to_string(),
        ),
        (_, 1299) => {
            let target = after(&msg, "failed: ").unwrap_or("?");
            let (table, column) = target.split_once('.').unwrap_or(("?", target));
            (
                515,
                format!(
                    "Cannot insert the value NULL into column '{column}', table 'dbo.{table}'; column does not allow nulls."
                ),
            )
        }
        (_, 275) => (547, "The statement conflicted with a CHECK constraint.".to_string()),
        (Some(ErrorCode::ConstraintViolation), _) => (547, "The statement conflicted with a constraint.".to_string()),
        (Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked), _) => (
            1205,
            "Transaction was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.".to_string(),
        ),
        _ => {
            if let Some(rest) = after(&msg, "near \"") {
                let near = rest.split('"').next().unwrap_or("");
                (102, format!("Incorrect syntax near '{near}'."))
            } else if msg.contains("incomplete input") {
                (102, "Incorrect syntax near the end of the statement.".to_string())
            } else if let Some(name) = after(&msg, "no such table: ") {
                (208, format!("Invalid object name '{name}'."))
            } else if let Some(name) = after(&msg, "no such column: ") {
                (207, format!("Invalid column name '{name}'."))
            } else if let Some(name) = after(&msg, "no such function: ") {
                (195, format!("'{name}' is not a recognized built-in function name."))
            } else if msg.contains("already exists") {
                let name = msg.split_whitespace().nth(1).unwrap_or("?");
                (2714, format!("There is already an object named '{name}' in the database."))
            } else if msg.contains("wrong number of arguments") {
                (174, "A function was called with the wrong number of arguments.".to_string())
            } else {
                (50000, "The statement failed on the SQLite backend.".to_string())
            }
        }
    };
    SqlError::new(number, format!("{text} (SQLite: {msg})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let mut p = std::env::temp_dir();
        p.push(format!(
            "tds-exec-{name}-{}-{}.db",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        p
    }

    #[test]
    fn sqlite_errors_map_to_sql_server_numbers() {
        let path = temp_db("map");
        let conn = open_connection(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE p (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n TEXT NOT NULL);
             CREATE TABLE c (pid INTEGER REFERENCES p(id));
             INSERT INTO p VALUES (1, 'a', 'x');",
        )
        .unwrap();
        let num = |sql: &str| map_sqlite_error(&conn.execute_batch(sql).unwrap_err()).number;
        assert_eq!(num("INSERT INTO p VALUES (1, 'b', 'x')"), 2627);
        assert_eq!(num("INSERT INTO p VALUES (2, 'a', 'x')"), 2627);
        assert_eq!(num("INSERT INTO p VALUES (3, 'c', NULL)"), 515);
        assert_eq!(num("INSERT INTO c VALUES (99)"), 547);
        assert_eq!(num("SELEC 1"), 102);
        assert_eq!(num("SELECT * FROM nope"), 208);
        assert_eq!(num("SELECT nope FROM p"), 207);
        assert_eq!(num("SELECT nope(1)"), 195);
        assert_eq!(num("CREATE TABLE p (x)"), 2714);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn returning_columns_get_declared_types() {
        let path = temp_db("ret");
        let conn = open_connection(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (id UNIQUEIDENTIFIER, n BIGINT)")
            .unwrap();
        drop(conn);
        let mut ex = Executor::open(&path, 51, "procfwk").unwrap();
        let stmt = match translate(
            "INSERT INTO t (id, n) OUTPUT INSERTED.id, INSERTED.n VALUES (NEWID(), 5)",
            &ex.ctx(&[]),
        )
        .unwrap()
        {
            Stmt::Sql(s) => s,
            other => panic!("{other:?}"),
        };
        match ex.query(&stmt, &[]) {
            Ok(QueryOutput::Rows { columns, rows }) => {
                assert_eq!(columns[0].ty, ColType::Guid);
                assert_eq!(columns[1].ty, ColType::BigInt);
                assert_eq!(rows.len(), 1);
            }
            _ => panic!("expected rows"),
        }
        let bytes = ex.run_batch("SELECT COUNT(*) FROM t; BEGIN TRAN; COMMIT", false);
        assert!(!bytes.is_empty());
        drop(ex);
        let _ = std::fs::remove_file(&path);
    }
}

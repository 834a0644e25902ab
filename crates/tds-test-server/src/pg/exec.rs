//! Executes requests on one PostgreSQL connection and encodes the TDS
//! response: the PostgreSQL counterpart of [`crate::exec::Executor`].
//!
//! Each TDS connection owns one PostgreSQL session at `READ COMMITTED`,
//! which behaves like Azure SQL's default (`READ_COMMITTED_SNAPSHOT ON`):
//! every statement reads the last committed versions without waiting, writes
//! take row locks that other writers wait for, and a write that waited is
//! re-checked against the row as committed by the other transaction.
//!
//! Error handling follows SQL Server's rules: translation errors and
//! PostgreSQL errors of class 42 (syntax, unknown object or column) abort the
//! batch; other errors end the statement, which is undone on its own (a
//! savepoint around every statement inside a transaction when `XACT_ABORT`
//! is off); `THROW` aborts the batch; a deadlock victim (1205) is rolled back
//! and the batch ends; with `XACT_ABORT ON` any error rolls back and aborts.

use super::translate::{create_procedure, translate_pg, Isolation, PgSql, PgStmt};
use crate::error::SqlError;
use crate::exec::SERVER_NAME;
use crate::lexer::lex;
use crate::rpc::{BoundParam, ExecuteSql};
use crate::split::split_batch;
use crate::tokens::{cur_cmd, done_status, Column, DoneKind, TokenWriter};
use crate::translate::{SetOption, SqlKind, Stmt, TranslateCtx};
use crate::types::{format_datetime2, format_datetimeoffset, infer, to_cell, widen, Cell, ColType};
use postgres::types::{FromSql, Type};
use postgres::{Client, NoTls};
use rusqlite::types::Value;
use std::collections::HashMap;

/// What to do after a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Abort,
}

/// How an error affects the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrClass {
    /// Compile-time (syntax, unknown names): the batch ends.
    Compile,
    /// Run-time: the statement ends.
    Runtime,
    /// Deadlock victim: the transaction is rolled back and the batch ends.
    Deadlock,
}

/// The `@@VERSION` text of the PostgreSQL backend.
pub fn version_string(server_version: &str) -> String {
    format!("Microsoft SQL Server (tds-test-server on PostgreSQL {server_version})")
}

/// Per-connection PostgreSQL session.
pub struct PgExecutor {
    client: Client,
    spid: u16,
    trancount: u32,
    nocount: bool,
    xact_abort: bool,
    rowcount: i64,
    /// `SET LOCK_TIMEOUT` in milliseconds (-1: wait for ever).
    lock_timeout_ms: i64,
    /// `SET TRANSACTION ISOLATION LEVEL`.
    isolation: Isolation,
    database: String,
    tx_seq: u32,
    tx_desc: [u8; 8],
    version: String,
    /// Declared types of table columns whose wire type is ambiguous
    /// (`smallint` may be `tds.bit` or `tds.tinyint`).
    column_types: HashMap<(u32, i16), ColType>,
    /// `tds.names`: lower-case name → spelling as declared.
    names: Option<HashMap<String, String>>,
    /// The first error of the current script (see [`PgExecutor::run_script`]).
    first_error: Option<SqlError>,
}

/// The statements every session starts with.
const SESSION_SETUP: &str = "SET TimeZone = 'UTC'; SET search_path = dbo, public; \
    SET default_transaction_isolation = 'read committed'; SET lock_timeout = 0; \
    SET standard_conforming_strings = on";

impl PgExecutor {
    /// Connects for a new TDS connection.
    pub fn open(config: &postgres::Config, spid: u16, database: &str) -> Result<Self, String> {
        let mut config = config.clone();
        config.application_name(&format!("tds-test-server spid {spid}"));
        let mut client = config
            .connect(NoTls)
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
        client
            .batch_execute(SESSION_SETUP)
            .map_err(|e| format!("cannot set up the PostgreSQL session: {e}"))?;
        // A short deadlock check, so that deadlock tests are quick (only a
        // superuser may change it; the default is 1 s).
        let _ = client.batch_execute("SET deadlock_timeout = '200ms'");
        let server_version = client
            .query_one("SHOW server_version", &[])
            .ok()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_default();
        Ok(PgExecutor {
            client,
            spid,
            trancount: 0,
            nocount: false,
            xact_abort: false,
            rowcount: 0,
            lock_timeout_ms: -1,
            isolation: Isolation::ReadCommitted,
            database: database.to_string(),
            tx_seq: 0,
            tx_desc: [0; 8],
            version: version_string(&server_version),
            column_types: HashMap::new(),
            names: None,
            first_error: None,
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
        if self.lock_timeout_ms != -1 {
            self.lock_timeout_ms = -1;
            let _ = self.client.batch_execute("SET lock_timeout = 0");
        }
        if self.isolation != Isolation::ReadCommitted {
            self.set_isolation(Isolation::ReadCommitted);
        }
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
                    let (nocount, xact_abort, lock_timeout) =
                        (self.nocount, self.xact_abort, self.lock_timeout_ms);
                    let failed =
                        self.run_statements(&exec.stmt, &exec.params, DoneKind::DoneInProc, &mut w);
                    self.nocount = nocount;
                    self.xact_abort = xact_abort;
                    if self.lock_timeout_ms != lock_timeout {
                        self.set_lock_timeout(lock_timeout);
                    }
                    w.return_status(if failed { -6 } else { 0 });
                    failed
                }
            };
            let status = more | if failed { done_status::ERROR } else { 0 };
            w.done(DoneKind::DoneProc, status, cur_cmd::OTHER, 0);
        }
        w.into_bytes()
    }

    /// Runs a T-SQL batch (with `GO`-free text) and returns its first error.
    pub fn run_script(&mut self, text: &str) -> Result<(), SqlError> {
        self.first_error = None;
        let mut w = TokenWriter::new();
        self.run_statements(text, &[], DoneKind::Done, &mut w);
        match self.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn statement_error(&mut self, w: &mut TokenWriter, kind: DoneKind, e: &SqlError) {
        if self.first_error.is_none() {
            self.first_error = Some(e.clone());
        }
        statement_error_token(w, kind, e);
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
        if let Some(created) = create_procedure(text) {
            return match created {
                Ok((schema, name, or_alter)) => {
                    self.create_procedure(text, &schema, &name, or_alter, kind, w)
                }
                Err(e) => {
                    self.statement_error(w, kind, &e);
                    true
                }
            };
        }
        let statements = match split_batch(text) {
            Ok(s) => s,
            Err(e) => {
                self.statement_error(w, kind, &e);
                return true;
            }
        };
        // Translate the whole batch first: an error anywhere means nothing
        // runs, as with a syntax error on SQL Server.
        let mut sql = Vec::new();
        for stmt in &statements {
            match translate_pg(stmt, &self.ctx(params)) {
                Err(e) => {
                    self.statement_error(w, kind, &e);
                    return true;
                }
                Ok(PgStmt::Sql(s)) => sql.push(s.sql),
                Ok(_) => {}
            }
        }
        if sql.len() > 1 {
            if let Err(e) = self.syntax_check(&sql) {
                let (err, _) = self.map_error(&e);
                self.statement_error(w, kind, &err);
                return true;
            }
        }
        let mut any_error = false;
        let mut i = 0;
        while i < statements.len() {
            let stmt = &statements[i];
            i += 1;
            let (flow, failed, skip_next) = match translate_pg(stmt, &self.ctx(params)) {
                Ok(PgStmt::If {
                    condition,
                    body: None,
                }) => match self.condition(&condition, kind, w) {
                    Err(flow) => (flow, true, false),
                    Ok(true) => (Flow::Continue, false, false),
                    Ok(false) => (Flow::Continue, false, true),
                },
                _ => {
                    let (flow, failed) = self.run_statement(stmt, params, kind, w);
                    (flow, failed, false)
                }
            };
            if skip_next {
                i += 1;
            }
            any_error |= failed;
            if flow == Flow::Abort {
                break;
            }
        }
        any_error
    }

    /// Parses every statement of a batch before any runs: a syntax error
    /// (42601) anywhere means nothing runs. (Unknown names are not errors
    /// yet: earlier statements may create them.)
    fn syntax_check(&mut self, sql: &[String]) -> Result<(), postgres::Error> {
        let in_tx = self.trancount > 0;
        if in_tx {
            self.client.batch_execute("SAVEPOINT tds_syntax")?;
        }
        let mut failed = None;
        for s in sql {
            if let Err(e) = self.client.prepare(s) {
                if e.code().map(|c| c.code()) == Some("42601") {
                    failed = Some(e);
                    break;
                }
                if in_tx {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT tds_syntax")?;
                }
            }
        }
        if in_tx {
            self.client
                .batch_execute("ROLLBACK TO SAVEPOINT tds_syntax; RELEASE SAVEPOINT tds_syntax")?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Evaluates an IF condition; `Err` when it failed (the error is written).
    fn condition(
        &mut self,
        cond: &PgSql,
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> Result<bool, Flow> {
        let sql = cond.sql.clone();
        match self.guarded(false, |c| c.query(sql.as_str(), &[])) {
            Ok(rows) => Ok(rows
                .first()
                .and_then(|r| r.try_get::<_, i32>(0).ok())
                .is_some_and(|v| v == 1)),
            Err(e) => {
                let (err, class) = self.map_error(&e);
                self.statement_error(w, kind, &err);
                let (flow, _) = self.after_error(w, class);
                Err(flow)
            }
        }
    }

    fn done(&self, w: &mut TokenWriter, kind: DoneKind, cmd: u16, rows: Option<u64>) {
        match rows {
            Some(n) if !self.nocount => {
                w.done(kind, done_status::MORE | done_status::COUNT, cmd, n)
            }
            _ => w.done(kind, done_status::MORE, cmd, 0),
        }
    }

    /// Runs one statement; returns (flow, failed).
    fn run_statement(
        &mut self,
        text: &str,
        params: &[BoundParam],
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> (Flow, bool) {
        let stmt = match translate_pg(text, &self.ctx(params)) {
            Ok(s) => s,
            Err(e) => {
                self.statement_error(w, kind, &e);
                return (Flow::Abort, true);
            }
        };
        match stmt {
            PgStmt::Control(c) => self.control(c, kind, w),
            PgStmt::LockTimeout(ms) => {
                self.set_lock_timeout(ms);
                (Flow::Continue, false)
            }
            PgStmt::Isolation(level) => {
                self.set_isolation(level);
                (Flow::Continue, false)
            }
            PgStmt::WaitFor(delay) => {
                std::thread::sleep(delay);
                (Flow::Continue, false)
            }
            PgStmt::If { condition, body } => match self.condition(&condition, kind, w) {
                Err(flow) => (flow, true),
                Ok(false) => (Flow::Continue, false),
                Ok(true) => match body {
                    Some(body) => self.run_statement(&body, params, kind, w),
                    None => (Flow::Continue, false),
                },
            },
            PgStmt::Exec(inner) => {
                // A batch of its own: it does not see the caller's variables,
                // and its errors end only itself.
                let failed = self.run_statements(&inner, &[], kind, w);
                (Flow::Continue, failed)
            }
            PgStmt::CreateSynonym {
                schema,
                name,
                target,
                target_sql,
            } => {
                let view = format!("{}.{}", quote(&schema), quote(&name));
                // A synonym of a procedure is a procedure that does nothing; of anything else, a view.
                let of_procedure = self
                    .client
                    .query("SELECT tds.object_id($1, 'P') IS NOT NULL", &[&target])
                    .ok()
                    .and_then(|r| r.first().map(|r| r.get::<_, bool>(0)))
                    .unwrap_or(false);
                let (create, oid) = if of_procedure {
                    (
                        format!("CREATE PROCEDURE {view}() LANGUAGE plpgsql AS $tds$ BEGIN NULL; END $tds$"),
                        format!("'{}()'::regprocedure::oid", view.replace('\'', "''")),
                    )
                } else {
                    (
                        format!("CREATE VIEW {view} AS SELECT * FROM {target_sql}"),
                        format!("'{}'::regclass::oid", view.replace('\'', "''")),
                    )
                };
                let sql = vec![
                    create,
                    format!(
                        "INSERT INTO tds.synonyms (schema_name, name, target, view_oid) VALUES ({}, {}, {}, {oid})",
                        literal(&schema),
                        literal(&name),
                        literal(&target),
                    ),
                ];
                let spellings = spellings(text);
                self.run_plain(sql, spellings, kind, w)
            }
            PgStmt::DropSynonym {
                schema,
                name,
                if_exists,
            } => {
                let exists = self
                    .client
                    .query(
                        "SELECT 1 FROM tds.synonyms WHERE schema_name = $1 AND name = $2",
                        &[&schema, &name],
                    )
                    .map(|r| !r.is_empty())
                    .unwrap_or(false);
                if !exists {
                    if if_exists {
                        self.done(w, kind, cur_cmd::OTHER, None);
                        return (Flow::Continue, false);
                    }
                    let err = SqlError::new(
                        3701,
                        format!("Cannot drop the synonym '{schema}.{name}', because it does not exist or you do not have permission."),
                    );
                    self.statement_error(w, kind, &err);
                    return self.after_error(w, ErrClass::Runtime);
                }
                let sql = vec![
                    format!(
                        "DO $tds$ BEGIN IF to_regclass({0}) IS NOT NULL THEN DROP VIEW {1}; ELSE DROP PROCEDURE {1}(); END IF; END $tds$",
                        literal(&format!("{}.{}", quote(&schema), quote(&name))),
                        format_args!("{}.{}", quote(&schema), quote(&name))
                    ),
                    format!(
                        "DELETE FROM tds.synonyms WHERE schema_name = {} AND name = {}",
                        literal(&schema),
                        literal(&name)
                    ),
                ];
                self.run_plain(sql, Vec::new(), kind, w)
            }
            PgStmt::Sql(sql) => {
                let spellings = spellings(text);
                self.run_sql(&sql, &spellings, kind, w)
            }
        }
    }

    fn control(&mut self, stmt: Stmt, kind: DoneKind, w: &mut TokenWriter) -> (Flow, bool) {
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
                    return self.after_error(w, ErrClass::Runtime);
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
            Stmt::Sql(_) => {
                let err = SqlError::unsupported("this statement on the PostgreSQL backend");
                self.statement_error(w, kind, &err);
                return (Flow::Abort, true);
            }
        }
        (Flow::Continue, false)
    }

    fn set_lock_timeout(&mut self, ms: i64) {
        self.lock_timeout_ms = ms;
        let pg = match ms {
            n if n < 0 => 0,
            // SQL Server's 0 means "do not wait"; PostgreSQL's 0 waits for ever.
            0 => 1,
            n => n,
        };
        let _ = self
            .client
            .batch_execute(&format!("SET lock_timeout = {pg}"));
    }

    fn set_isolation(&mut self, level: Isolation) {
        self.isolation = level;
        let _ = self.client.batch_execute(&format!(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {}",
            level.pg()
        ));
    }

    /// After an error (already written): roll back / abort as SQL Server does.
    fn after_error(&mut self, w: &mut TokenWriter, class: ErrClass) -> (Flow, bool) {
        match class {
            ErrClass::Deadlock => {
                if self.trancount > 0 {
                    self.rollback_silently(w);
                }
                (Flow::Abort, true)
            }
            _ if self.xact_abort => {
                if self.trancount > 0 {
                    self.rollback_silently(w);
                }
                (Flow::Abort, true)
            }
            ErrClass::Compile => (Flow::Abort, true),
            ErrClass::Runtime => (Flow::Continue, true),
        }
    }

    fn rollback_silently(&mut self, w: &mut TokenWriter) {
        let _ = self.client.batch_execute("ROLLBACK");
        self.trancount = 0;
        w.env_rollback_tran(self.tx_desc);
        self.tx_desc = [0; 8];
        // A SET inside the transaction was undone with it; SQL Server keeps it.
        if self.lock_timeout_ms != -1 {
            self.set_lock_timeout(self.lock_timeout_ms);
        }
    }

    fn begin_tran(&mut self, w: &mut TokenWriter, kind: DoneKind) -> (Flow, bool) {
        if self.trancount == 0 {
            if let Err(e) = self.client.batch_execute("BEGIN") {
                let (err, _) = self.map_error(&e);
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
                return self.after_error(w, ErrClass::Runtime);
            }
            1 => {
                if let Err(e) = self.client.batch_execute("COMMIT") {
                    let (err, class) = self.map_error(&e);
                    self.statement_error(w, kind, &err);
                    // A failed COMMIT ends the transaction on PostgreSQL.
                    let _ = self.client.batch_execute("ROLLBACK");
                    self.trancount = 0;
                    w.env_rollback_tran(self.tx_desc);
                    self.tx_desc = [0; 8];
                    return self.after_error(w, class);
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
            return self.after_error(w, ErrClass::Runtime);
        }
        self.rollback_silently(w);
        self.done(w, kind, cur_cmd::OTHER, None);
        (Flow::Continue, false)
    }

    /// Runs `f` as one statement: inside a transaction with XACT_ABORT off
    /// under a savepoint (an error undoes only the statement); outside a
    /// transaction, when `atomic`, inside a transaction of its own.
    fn guarded<T>(
        &mut self,
        atomic: bool,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        if self.trancount > 0 && !self.xact_abort {
            self.client.batch_execute("SAVEPOINT tds_statement")?;
            match f(&mut self.client) {
                Ok(v) => {
                    self.client
                        .batch_execute("RELEASE SAVEPOINT tds_statement")?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = self
                        .client
                        .batch_execute("ROLLBACK TO SAVEPOINT tds_statement");
                    Err(e)
                }
            }
        } else if self.trancount == 0 && atomic {
            self.client.batch_execute("BEGIN")?;
            match f(&mut self.client) {
                Ok(v) => {
                    self.client.batch_execute("COMMIT")?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = self.client.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        } else {
            f(&mut self.client)
        }
    }

    /// `CREATE [OR ALTER] PROCEDURE`: a PostgreSQL procedure of that name (so `OBJECT_ID(…, 'P')` and
    /// `sys.objects` see type `P`) whose body does nothing; the T-SQL text is kept in
    /// `tds.procedures`. Another object of that name in the schema (of any type) is 2714, as on SQL
    /// Server. Returns true when it failed.
    fn create_procedure(
        &mut self,
        text: &str,
        schema: &str,
        name: &str,
        or_alter: bool,
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> bool {
        let qualified = format!("{schema}.{name}");
        let existing = self
            .client
            .query(
                "SELECT tds.object_id($1) IS NOT NULL, tds.object_id($1, 'P') IS NOT NULL",
                &[&qualified],
            )
            .ok()
            .and_then(|r| {
                r.first()
                    .map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1)))
            });
        if let Some((true, is_procedure)) = existing {
            if !(or_alter && is_procedure) {
                let err = SqlError::new(
                    2714,
                    format!("There is already an object named '{name}' in the database."),
                );
                self.statement_error(w, kind, &err);
                return true;
            }
        }
        let proc = format!("{}.{}", quote(schema), quote(name));
        let sql = vec![
            format!("CREATE OR REPLACE PROCEDURE {proc}() LANGUAGE plpgsql AS $tds$ BEGIN NULL; END $tds$"),
            format!(
                "INSERT INTO tds.procedures (schema_name, name, definition) VALUES ({}, {}, {}) \
                 ON CONFLICT (schema_name, name) DO UPDATE SET definition = EXCLUDED.definition",
                literal(schema),
                literal(name),
                literal(text)
            ),
        ];
        // Only the procedure's own name: its body's identifiers are not declared by it.
        let spellings = spellings(text)
            .into_iter()
            .filter(|(l, _)| l == name)
            .collect();
        let (_, failed) = self.run_plain(sql, spellings, kind, w);
        failed
    }

    /// Runs statements without results (synonyms) as one statement.
    fn run_plain(
        &mut self,
        sql: Vec<String>,
        spellings: Vec<(String, String)>,
        kind: DoneKind,
        w: &mut TokenWriter,
    ) -> (Flow, bool) {
        let names = names_insert(&spellings);
        let result = self.guarded(true, |c| {
            for s in &sql {
                c.batch_execute(s)?;
            }
            if let Some(n) = &names {
                c.batch_execute(n)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.names = None;
                self.done(w, kind, cur_cmd::OTHER, None);
                (Flow::Continue, false)
            }
            Err(e) => {
                let (err, class) = self.map_error(&e);
                self.statement_error(w, kind, &err);
                self.after_error(w, class)
            }
        }
    }

    fn run_sql(
        &mut self,
        stmt: &PgSql,
        spellings: &[(String, String)],
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
        let declared: Vec<(String, String)> = stmt
            .declared_names
            .iter()
            .map(|n| (n.to_lowercase(), n.clone()))
            .collect();
        let names = names_insert(&declared);
        let atomic = !stmt.after.is_empty() || names.is_some();
        let result = self.guarded(atomic, |c| {
            let prepared = c.prepare(&stmt.sql)?;
            let out = if prepared.columns().is_empty() {
                Output::Changes(c.execute(&prepared, &[])?)
            } else {
                let rows = c.query(&prepared, &[])?;
                Output::Rows(prepared, rows)
            };
            for a in &stmt.after {
                c.batch_execute(a)?;
            }
            if let Some(n) = &names {
                c.batch_execute(n)?;
            }
            Ok(out)
        });
        if names.is_some() {
            self.names = None;
        }
        match result {
            Err(e) => {
                let (err, class) = self.map_error(&e);
                self.statement_error(w, kind, &err);
                self.after_error(w, class)
            }
            Ok(Output::Changes(n)) => {
                let counted = matches!(
                    stmt.kind,
                    SqlKind::Insert | SqlKind::Update | SqlKind::Delete
                );
                self.rowcount = if counted { n as i64 } else { 0 };
                self.done(w, kind, cmd, counted.then_some(n));
                (Flow::Continue, false)
            }
            Ok(Output::Rows(prepared, rows)) => {
                match self.encode_rows(stmt, spellings, &prepared, &rows) {
                    Ok((columns, cells)) => {
                        w.col_metadata(&columns);
                        for row in &cells {
                            w.row(&columns, row);
                        }
                        let n = cells.len() as u64;
                        self.rowcount = n as i64;
                        self.done(w, kind, cmd, Some(n));
                        (Flow::Continue, false)
                    }
                    Err(e) => {
                        self.statement_error(w, kind, &e);
                        self.after_error(w, ErrClass::Runtime)
                    }
                }
            }
        }
    }

    fn encode_rows(
        &mut self,
        stmt: &PgSql,
        spellings: &[(String, String)],
        prepared: &postgres::Statement,
        rows: &[postgres::Row],
    ) -> Result<(Vec<Column>, Vec<Vec<Cell>>), SqlError> {
        let cols = prepared.columns();
        let mut values: Vec<Vec<Value>> = Vec::with_capacity(rows.len());
        for row in rows {
            let mut v = Vec::with_capacity(cols.len());
            for (i, col) in cols.iter().enumerate() {
                v.push(decode(row, i, col.type_())?);
            }
            values.push(v);
        }
        let mut columns = Vec::with_capacity(cols.len());
        for (i, col) in cols.iter().enumerate() {
            let hint = stmt.hints.get(i).copied().flatten();
            let natural = self.natural_type(col);
            let ty = hint
                .or(natural)
                .unwrap_or_else(|| infer(values.iter().map(|r| &r[i])));
            columns.push(Column {
                name: self.spelling(col.name(), spellings),
                ty,
            });
        }
        let mut cells: Vec<Vec<Cell>> = Vec::with_capacity(values.len());
        for row in &values {
            let mut out = Vec::with_capacity(row.len());
            for (col, v) in columns.iter().zip(row) {
                out.push(to_cell(col.ty, v)?);
            }
            cells.push(out);
        }
        for (i, col) in columns.iter_mut().enumerate() {
            col.ty = widen(col.ty, cells.iter().map(|r| r[i].clone()));
        }
        Ok((columns, cells))
    }

    /// A result column's name as the statement or the DDL spelled it.
    fn spelling(&mut self, name: &str, spellings: &[(String, String)]) -> String {
        if let Some((_, s)) = spellings.iter().find(|(l, _)| l == name) {
            return s.clone();
        }
        if self.names.is_none() {
            let loaded = self
                .client
                .query("SELECT lname, name FROM tds.names", &[])
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
                        .collect::<HashMap<String, String>>()
                })
                .unwrap_or_default();
            self.names = Some(loaded);
        }
        self.names
            .as_ref()
            .and_then(|m| m.get(name).cloned())
            .unwrap_or_else(|| name.to_string())
    }

    fn natural_type(&mut self, col: &postgres::Column) -> Option<ColType> {
        let ty = col.type_();
        Some(if *ty == Type::INT2 {
            match (col.table_oid(), col.column_id()) {
                (Some(oid), Some(attnum)) if oid != 0 => {
                    if let Some(t) = self.column_types.get(&(oid, attnum)) {
                        return Some(*t);
                    }
                    let declared = self
                        .client
                        .query_opt(
                            "SELECT t.typname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                             JOIN pg_namespace n ON n.oid = t.typnamespace \
                             WHERE a.attrelid = $1 AND a.attnum = $2 AND n.nspname = 'tds'",
                            &[&oid, &attnum],
                        )
                        .ok()
                        .flatten()
                        .and_then(|r| r.try_get::<_, String>(0).ok());
                    let t = match declared.as_deref() {
                        Some("bit") => ColType::Bit,
                        Some("tinyint") => ColType::TinyInt,
                        _ => ColType::SmallInt,
                    };
                    self.column_types.insert((oid, attnum), t);
                    t
                }
                _ => ColType::SmallInt,
            }
        } else if *ty == Type::INT4 {
            ColType::Int
        } else if *ty == Type::INT8 || *ty == Type::OID {
            ColType::BigInt
        } else if *ty == Type::FLOAT4 || *ty == Type::FLOAT8 || *ty == Type::NUMERIC {
            ColType::Float
        } else if *ty == Type::BOOL {
            ColType::Bit
        } else if *ty == Type::UUID {
            ColType::Guid
        } else if *ty == Type::TIMESTAMP {
            ColType::DateTime2
        } else if *ty == Type::TIMESTAMPTZ {
            ColType::DateTimeOffset
        } else if *ty == Type::DATE {
            ColType::Date
        } else if *ty == Type::TIME {
            ColType::Time
        } else if *ty == Type::BYTEA {
            ColType::VarBinary
        } else if *ty == Type::TEXT
            || *ty == Type::VARCHAR
            || *ty == Type::BPCHAR
            || *ty == Type::NAME
            || *ty == Type::UNKNOWN
        {
            ColType::NVarChar
        } else {
            return None;
        })
    }

    /// Maps a PostgreSQL error to SQL Server's number and message.
    fn map_error(&mut self, e: &postgres::Error) -> (SqlError, ErrClass) {
        let Some(db) = e.as_db_error() else {
            return (
                SqlError::new(50000, format!("The PostgreSQL backend failed: {e}")),
                ErrClass::Runtime,
            );
        };
        let code = db.code().code();
        let msg = db.message();
        if let Some(rest) = msg.strip_prefix("tds:") {
            if let Some((n, text)) = rest.split_once(':') {
                if let Ok(number) = n.parse::<u32>() {
                    return (SqlError::new(number, text), ErrClass::Runtime);
                }
            }
        }
        let object = || {
            let table = db.table().unwrap_or("?");
            match db.schema() {
                Some(s) => format!("{s}.{table}"),
                None => table.to_string(),
            }
        };
        let quoted = || msg.split('"').nth(1).unwrap_or("?").to_string();
        let detail = db
            .detail()
            .and_then(|d| d.split_once(")=("))
            .map(|(_, v)| v.split(')').next().unwrap_or(v).to_string());
        let (number, text, class) = match code {
            "23505" => {
                let constraint = db.constraint().unwrap_or("?").to_string();
                // PostgreSQL names PRIMARY KEY / UNIQUE constraints `t_pkey` /
                // `t_a_key`, ours are PK_… / UQ_… / UK_…; other names are looked
                // up (which fails inside an aborted transaction: an index).
                let lower = constraint.to_ascii_lowercase();
                let contype = if lower.ends_with("_pkey") || lower.starts_with("pk_") {
                    Some("p".to_string())
                } else if lower.ends_with("_key") || lower.starts_with("uq") || lower.starts_with("uk") {
                    Some("u".to_string())
                } else {
                    self.client
                        .query_opt(
                            "SELECT contype::text FROM pg_constraint WHERE conname = $1 LIMIT 1",
                            &[&constraint],
                        )
                        .ok()
                        .flatten()
                        .and_then(|r| r.try_get::<_, String>(0).ok())
                };
                let dup = detail
                    .map(|d| format!(" The duplicate key value is ({d})."))
                    .unwrap_or_default();
                match contype.as_deref() {
                    Some("p") => (2627, format!("Violation of PRIMARY KEY constraint '{constraint}'. Cannot insert duplicate key in object '{}'.{dup}", object()), ErrClass::Runtime),
                    Some(_) => (2627, format!("Violation of UNIQUE KEY constraint '{constraint}'. Cannot insert duplicate key in object '{}'.{dup}", object()), ErrClass::Runtime),
                    None => (2601, format!("Cannot insert duplicate key row in object '{}' with unique index '{constraint}'.{dup}", object()), ErrClass::Runtime),
                }
            }
            "23503" => (
                547,
                format!(
                    "The statement conflicted with the FOREIGN KEY constraint \"{}\". The conflict occurred in database \"{}\", table \"{}\".",
                    db.constraint().unwrap_or("?"),
                    self.database,
                    object()
                ),
                ErrClass::Runtime,
            ),
            "23514" | "23P01" => {
                let c = db.constraint().unwrap_or("?");
                if c.starts_with("tds1946") {
                    (1946, format!("Operation failed. The index entry of length more than 900 bytes for the index '{c}' exceeds the maximum length of 900 bytes."), ErrClass::Runtime)
                } else {
                    (547, format!("The statement conflicted with the CHECK constraint \"{c}\". The conflict occurred in database \"{}\", table \"{}\".", self.database, object()), ErrClass::Runtime)
                }
            }
            "23502" => (
                515,
                format!(
                    "Cannot insert the value NULL into column '{}', table '{}.{}'; column does not allow nulls.",
                    db.column().unwrap_or("?"),
                    self.database,
                    object()
                ),
                ErrClass::Runtime,
            ),
            "22001" => (
                2628,
                "String or binary data would be truncated.".to_string(),
                ErrClass::Runtime,
            ),
            "22012" => (8134, "Divide by zero error encountered.".to_string(), ErrClass::Runtime),
            "55P03" => (1222, "Lock request time out period exceeded.".to_string(), ErrClass::Runtime),
            "40001" if self.isolation == Isolation::Snapshot => (
                3960,
                format!(
                    "Snapshot isolation transaction aborted due to update conflict. You cannot use snapshot isolation to access table '{}' directly or indirectly in database '{}' to update, delete, or insert the row that has been modified or deleted by another transaction. Retry the transaction or change the isolation level for the update/delete statement.",
                    object(),
                    self.database
                ),
                ErrClass::Deadlock,
            ),
            "40P01" | "40001" => (
                1205,
                "Transaction was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.".to_string(),
                ErrClass::Deadlock,
            ),
            "42P01" => (208, format!("Invalid object name '{}'.", quoted()), ErrClass::Compile),
            "42703" => (207, format!("Invalid column name '{}'.", quoted()), ErrClass::Compile),
            "42601" => (102, "Incorrect syntax.".to_string(), ErrClass::Compile),
            "42883" => (195, "A function or operator is not recognized for these argument types.".to_string(), ErrClass::Compile),
            "42P07" | "42710" | "42723" | "42P06" => (
                2714,
                format!("There is already an object named '{}' in the database.", quoted()),
                ErrClass::Compile,
            ),
            "3F000" => (
                2760,
                format!("The specified schema name \"{}\" either does not exist or you do not have permission to use it.", quoted()),
                ErrClass::Compile,
            ),
            "22P02" if msg.contains("uuid") => (
                8169,
                "Conversion failed when converting from a character string to uniqueidentifier.".to_string(),
                ErrClass::Runtime,
            ),
            "22P02" => (245, "Conversion failed.".to_string(), ErrClass::Runtime),
            "22003" => (8115, "Arithmetic overflow error.".to_string(), ErrClass::Runtime),
            "22007" => (241, "Conversion failed when converting date and/or time from character string.".to_string(), ErrClass::Runtime),
            "22008" => (242, "The conversion resulted in an out-of-range value.".to_string(), ErrClass::Runtime),
            "42804" | "42846" => (206, "Operand type clash.".to_string(), ErrClass::Compile),
            "42702" => (209, format!("Ambiguous column name '{}'.", quoted()), ErrClass::Compile),
            "42803" => (8120, "Column is invalid in the select list because it is not contained in either an aggregate function or the GROUP BY clause.".to_string(), ErrClass::Compile),
            "0A000" => (40517, "Keyword or statement option is not supported.".to_string(), ErrClass::Compile),
            "2BP01" => (3729, "Cannot drop an object because other objects depend on it.".to_string(), ErrClass::Runtime),
            c if c.starts_with("42") => (102, "The statement could not be compiled.".to_string(), ErrClass::Compile),
            _ => (50000, "The statement failed on the PostgreSQL backend.".to_string(), ErrClass::Runtime),
        };
        (
            SqlError::new(number, format!("{text} (PostgreSQL {code}: {msg})")),
            class,
        )
    }
}

enum Output {
    Changes(u64),
    Rows(postgres::Statement, Vec<postgres::Row>),
}

fn statement_error_token(w: &mut TokenWriter, kind: DoneKind, e: &SqlError) {
    w.error(e, SERVER_NAME, 1);
    w.done(
        kind,
        done_status::MORE | done_status::ERROR,
        cur_cmd::OTHER,
        0,
    );
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every identifier of a T-SQL statement: (lower case, as written).
fn spellings(text: &str) -> Vec<(String, String)> {
    let toks: Vec<_> = lex(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.is_trivia())
        .collect();
    let mut out: Vec<(String, String)> = Vec::new();
    // Column aliases (`AS name`, `name = expr`) first: they name result columns.
    for (i, t) in toks.iter().enumerate() {
        // (Not the type of `CAST(x AS type)`, which a `(` or `)` follows.)
        let in_cast = toks
            .get(i + 1)
            .is_some_and(|n| n.is_op(")") || n.is_op("("));
        let alias = (i > 0 && toks[i - 1].is_kw("AS") && !in_cast)
            || (toks.get(i + 1).is_some_and(|n| n.is_op("="))
                && i > 0
                && (toks[i - 1].is_kw("SELECT") || toks[i - 1].is_op(",")));
        if let (true, Some(n)) = (alias, t.ident_name()) {
            let l = n.to_lowercase();
            if !out.iter().any(|(x, _)| *x == l) {
                out.push((l, n.to_string()));
            }
        }
    }
    for t in &toks {
        if let Some(n) = t.ident_name() {
            let l = n.to_lowercase();
            if !out.iter().any(|(x, _)| *x == l) {
                out.push((l, n.to_string()));
            }
        }
    }
    out
}

/// `INSERT INTO tds.names …` for declared spellings (None when there are none).
fn names_insert(spellings: &[(String, String)]) -> Option<String> {
    let rows: Vec<String> = spellings
        .iter()
        .filter(|(l, n)| l != n)
        .map(|(l, n)| format!("({}, {})", literal(l), literal(n)))
        .collect();
    (!rows.is_empty()).then(|| {
        format!(
            "INSERT INTO tds.names (lname, name) VALUES {} ON CONFLICT (lname) DO NOTHING",
            rows.join(", ")
        )
    })
}

/// NUMERIC in PostgreSQL's binary format, as a float.
struct Numeric(f64);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric".into())
        };
        let ndigits = word(0)? as usize;
        let weight = word(2)? as i16;
        let sign = word(4)?;
        if sign == 0xC000 {
            return Ok(Numeric(f64::NAN));
        }
        let mut v = 0f64;
        for k in 0..ndigits {
            let d = f64::from(word(8 + 2 * k)?);
            v += d * 10000f64.powi(i32::from(weight) - k as i32);
        }
        Ok(Numeric(if sign == 0x4000 { -v } else { v }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// One result value as the common value type.
fn decode(row: &postgres::Row, i: usize, ty: &Type) -> Result<Value, SqlError> {
    let fail =
        |e: postgres::Error| SqlError::new(50000, format!("Cannot read a {ty} result column: {e}"));
    let v = if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)
            .map_err(fail)?
            .map(|v| Value::Integer(v.into()))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map_err(fail)?
            .map(|v| Value::Integer(v.into()))
    } else if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)
            .map_err(fail)?
            .map(Value::Integer)
    } else if *ty == Type::OID {
        row.try_get::<_, Option<u32>>(i)
            .map_err(fail)?
            .map(|v| Value::Integer(v.into()))
    } else if *ty == Type::FLOAT4 {
        row.try_get::<_, Option<f32>>(i)
            .map_err(fail)?
            .map(|v| Value::Real(v.into()))
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i)
            .map_err(fail)?
            .map(Value::Real)
    } else if *ty == Type::NUMERIC {
        row.try_get::<_, Option<Numeric>>(i)
            .map_err(fail)?
            .map(|v| Value::Real(v.0))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)
            .map_err(fail)?
            .map(|v| Value::Integer(v.into()))
    } else if *ty == Type::UUID {
        row.try_get::<_, Option<uuid::Uuid>>(i)
            .map_err(fail)?
            .map(|v| Value::Text(v.hyphenated().to_string()))
    } else if *ty == Type::TIMESTAMP {
        row.try_get::<_, Option<chrono::NaiveDateTime>>(i)
            .map_err(fail)?
            .map(|v| Value::Text(format_datetime2(&v)))
    } else if *ty == Type::TIMESTAMPTZ {
        row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
            .map_err(fail)?
            .map(|v| Value::Text(format_datetimeoffset(&v.fixed_offset())))
    } else if *ty == Type::DATE {
        row.try_get::<_, Option<chrono::NaiveDate>>(i)
            .map_err(fail)?
            .map(|v| Value::Text(crate::types::format_date(&v)))
    } else if *ty == Type::TIME {
        row.try_get::<_, Option<chrono::NaiveTime>>(i)
            .map_err(fail)?
            .map(|v| Value::Text(crate::types::format_time(&v)))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)
            .map_err(fail)?
            .map(Value::Blob)
    } else if *ty == Type::CHAR {
        row.try_get::<_, Option<i8>>(i)
            .map_err(fail)?
            .map(|v| Value::Text(char::from(v as u8).to_string()))
    } else {
        row.try_get::<_, Option<String>>(i)
            .map_err(|_| {
                SqlError::new(
                    40517,
                    format!("Result columns of PostgreSQL type {ty} are not supported by the TDS test server."),
                )
            })?
            .map(Value::Text)
    };
    Ok(v.unwrap_or(Value::Null))
}

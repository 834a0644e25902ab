//! A loopback TDS (SQL Server wire protocol) test server that **executes**
//! the T-SQL it receives on SQLite.
//!
//! It exists so that code written against Azure SQL with the `tiberius`
//! crate can be tested without a SQL Server: each TDS connection gets its
//! own SQLite connection on a shared database file, statements are
//! translated from T-SQL to SQLite and run for real, and results come back
//! as genuine TDS tokens that tiberius decodes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tds_test_server::{ServerOptions, TdsTestServer};
//! let server = TdsTestServer::start(ServerOptions {
//!     database_path: std::env::temp_dir().join("my-test.db"),
//!     init_sql: vec!["CREATE TABLE t (id INT PRIMARY KEY, name NVARCHAR(50))".into()],
//!     ..Default::default()
//! })
//! .await?;
//! let conn = format!(
//!     "server=tcp:127.0.0.1,{};user=sa;password=pw;database=procfwk;encrypt=DANGER_PLAINTEXT;TrustServerCertificate=true",
//!     server.port()
//! );
//! // tiberius::Config::from_ado_string(&conn) ... Client::connect(...)
//! # let _ = conn;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Protocol
//!
//! TDS 7.3/7.4 as tiberius 0.12 speaks it, **without TLS**: PRELOGIN answers
//! `ENCRYPT_NOT_SUP`, so clients must connect with `encrypt=DANGER_PLAINTEXT`
//! (`EncryptionLevel::NotSupported`). LOGIN7 with SQL authentication
//! (checked against [`ServerOptions::users`]) or the FEDAUTH security-token
//! extension (`AuthMethod::AADToken`, checked against
//! [`ServerOptions::accept_fedauth_tokens`]); failures answer error 18456.
//! Requests: SQL_BATCH and RPC `sp_executesql` (how tiberius sends every
//! parameterised query). Results: COLMETADATA/ROW/DONE(IN)PROC with row
//! counts, ERROR tokens (class 16, SQL Server numbers), RETURNSTATUS +
//! DONEPROC after RPCs, ENVCHANGE for database, packet size, collation and
//! begin/commit/rollback transaction.
//!
//! # Supported T-SQL subset
//!
//! Batches are split at `;` and at line starts that begin a new statement
//! (see [`split`]); `GO` is rejected. Each statement is translated by
//! [`translate`]:
//!
//! * `[ident]` → `"ident"`; `procfwk.` / `dbo.` schema prefixes are dropped;
//!   `N'…'` → `'…'`; `0x…` → blob literal.
//! * `@P1`…`@Pn` and any parameter named in the `sp_executesql` declaration
//!   → bound SQLite parameters. GUIDs bind as lowercase hyphenated text,
//!   `DATETIME2` as `YYYY-MM-DD HH:MM:SS.fffffff`, `DATETIMEOFFSET` as that
//!   plus ` +HH:MM`, BIT as 0/1.
//! * `@@TRANCOUNT`, `@@ROWCOUNT`, `@@VERSION`, `@@SPID`, `@@IDENTITY`,
//!   `@@ERROR` (always 0), `@@SERVERNAME`; `SCOPE_IDENTITY()`.
//! * `SELECT TOP (n)` / `TOP n` → `LIMIT n`; `OFFSET x ROWS FETCH NEXT y ROWS
//!   ONLY` → `LIMIT y OFFSET x`; `UPDATE TOP (n)` / `DELETE TOP (n)` → a
//!   `rowid IN (SELECT … LIMIT n)` subquery.
//! * Table hints `WITH (UPDLOCK, HOLDLOCK, ROWLOCK, READPAST, NOLOCK, …)`,
//!   `(NOLOCK)` and `OPTION (…)` are removed (locking is SQLite's: one writer
//!   at a time).
//! * `OUTPUT INSERTED.a, …` in INSERT/UPDATE and `OUTPUT DELETED.a, …` in
//!   DELETE → `RETURNING a, …` (not `OUTPUT … INTO`, not `DELETED` in UPDATE).
//! * `alias = expr` select items → `expr AS alias`.
//! * Functions: `GETUTCDATE()`, `GETDATE()`, `SYSUTCDATETIME()`,
//!   `SYSDATETIME()`, `SYSDATETIMEOFFSET()`, `NEWID()`, `ISNULL`, `LEN`,
//!   `DATEADD`/`DATEDIFF`/`DATEPART`/`DATENAME` (all common date parts, SQL
//!   Server boundary semantics), `CONCAT`, `CHARINDEX`, `LEFT`, `RIGHT`,
//!   `COUNT_BIG`, `STRING_AGG`, plus SQLite's own (`LOWER`, `UPPER`,
//!   `COALESCE`, `REPLACE`, `SUBSTRING`, `IIF`, …).
//! * `CAST`/`CONVERT`/`TRY_CAST`/`TRY_CONVERT` to `UNIQUEIDENTIFIER`,
//!   `[N]VARCHAR(n)`, `INT`/`BIGINT`/`SMALLINT`/`TINYINT`, `BIT`, `FLOAT`,
//!   `DECIMAL(p,s)`, `DATETIME2`/`DATETIME`, `DATETIMEOFFSET`, `DATE`,
//!   `TIME`, `VARBINARY`; a cast select item also fixes the result type.
//! * `BEGIN TRAN[SACTION]` (→ `BEGIN IMMEDIATE`, so writers serialise and
//!   wait up to 5 s instead of deadlocking; nesting counts `@@TRANCOUNT`),
//!   `COMMIT`/`ROLLBACK [TRAN[SACTION]|WORK]`.
//! * `SET NOCOUNT ON|OFF`, `SET XACT_ABORT ON|OFF` (honoured: XACT_ABORT
//!   rolls back and aborts on error), other `SET` options ignored.
//! * `THROW n, 'msg', s` (error n, aborts the batch), `RAISERROR('msg %s',
//!   sev, state, args…)` (error 50000, or an INFO below severity 11),
//!   `PRINT`, `USE db`, `TRUNCATE TABLE t`.
//! * DDL over the wire: `INT IDENTITY(1,1)` → `INTEGER` (rowid alias),
//!   `(MAX)` → `(-1)`, `DEFAULT fn()` → `DEFAULT (fn())`,
//!   `[NON]CLUSTERED`, `ON [PRIMARY]`, `INCLUDE (…)` dropped.
//! * Anything else passes through to SQLite unchanged (so SQLite syntax such
//!   as `INSERT … ON CONFLICT` works). Recognised but unsupported constructs
//!   (`DECLARE`, `IF`, `WHILE`, `EXEC`, `MERGE`, `TRY…CATCH`, `SELECT …
//!   INTO`, savepoints, `TOP … PERCENT`) answer error 40517 with a message.
//!
//! # Result types
//!
//! See [`types`]: hint from the T-SQL (`CAST`, bare parameter, `NEWID()`,
//! `COUNT(*)`, string literal) → SQLite declared type (`INT`/`INTEGER` →
//! `int`, `BIGINT`, `SMALLINT`, `TINYINT`, `BIT`, `UNIQUEIDENTIFIER`,
//! `DATETIME2`/`DATETIME`, `DATETIMEOFFSET`, `DATE`, `TIME`,
//! `FLOAT`/`REAL`/`DECIMAL`, character types → `nvarchar`, `VARBINARY`/`BLOB`)
//! → inference from the values. Strings over 4000 UTF-16 units are sent as
//! `nvarchar(max)` (PLP); integer columns widen when a value does not fit.
//!
//! # Errors
//!
//! SQLite errors map to SQL Server numbers: PRIMARY KEY/UNIQUE → 2627,
//! FOREIGN KEY/CHECK → 547, NOT NULL → 515, syntax → 102, no such table →
//! 208, no such column → 207, busy/locked → 1205; the SQLite message is
//! appended in parentheses. Value conversion failures → 245/241/8169.
//!
//! # Known limitations
//!
//! * No TLS (clients must use `encrypt=DANGER_PLAINTEXT`), no MARS, no
//!   Windows/Kerberos authentication; ATTENTION is acknowledged but cannot
//!   interrupt a statement that is already running.
//! * `INT`/`INTEGER` columns — including SQLite's `INTEGER PRIMARY KEY`
//!   and translated `INT/BIGINT IDENTITY` — are sent as `int` (`i32`) unless
//!   a value does not fit; SQLite has no `BIGINT` auto-increment. Select
//!   `CAST(id AS BIGINT)` where the client reads `i64`.
//! * Comparisons follow SQLite: `=` on text is case-sensitive (SQL Server's
//!   default collation is not), so GUIDs must be stored in the lowercase form
//!   parameters and `NEWID()` produce. `DATETIMEOFFSET` values compare as
//!   text. `DECIMAL`/`NUMERIC`/`MONEY` are stored and returned as `FLOAT`.
//! * Only `sp_executesql` RPCs; OUTPUT parameters are not returned. No
//!   `DECLARE`/`IF`/`WHILE`/`TRY`/`MERGE`/cursors/`SELECT … INTO`; `#temp`
//!   names are ordinary tables; `+` is treated as string concatenation only
//!   next to a string literal (use `CONCAT`); T-SQL `UPDATE … FROM` joins and
//!   `OUTPUT DELETED` in UPDATE are not translated.
//! * Locking is SQLite's: one writer at a time for the whole database
//!   (row-level hints such as `READPAST` are simply removed); readers on
//!   other connections never block and see the last committed data.
//! * With `SET NOCOUNT ON` statements still produce DONE tokens, with a zero
//!   count and no `DONE_COUNT` bit.
//! * `fail_next` and `drop_connection_after` count requests (a batch or an
//!   RPC call), server-wide, not individual statements in a batch.
//!
//! # Fault injection
//!
//! [`ServerHandle::fail_next`], [`ServerHandle::drop_connection_after`] and
//! [`ServerHandle::kill_connections`]; every received T-SQL text is kept in
//! [`ServerHandle::statements`] and every login in [`ServerHandle::logins`].

pub mod error;
pub mod exec;
pub mod functions;
pub mod lexer;
pub mod login;
pub mod packet;
pub mod pg;
pub mod prelogin;
pub mod rpc;
pub mod server;
mod session;
pub mod split;
pub mod tokens;
pub mod translate;
pub mod types;
pub mod wire;

pub use error::{ServerError, SqlError};
pub use pg::PgTarget;
pub use server::{Backend, LoginRecord, ServerHandle, ServerOptions, TdsTestServer};

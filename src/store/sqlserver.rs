//! The metadata store on Azure SQL / SQL Server, through `tiberius` (TDS 7.3+, rustls).
//!
//! # Connection string
//! `PROCFWK_METADATA_DB` holds an ADO.NET-style string, e.g.
//! `Server=tcp:myserver.database.windows.net,1433;Database=procfwk;User ID=u;Password=p;Encrypt=true`.
//! Keys (case-insensitive) understood here, on top of what `tiberius::Config::from_ado_string` reads
//! (`Server`/`Data Source`, `Database`/`Initial Catalog`, `User ID`/`UID`/`User`/`Username`,
//! `Password`/`PWD`, `TrustServerCertificate`, `TrustServerCertificateCA`, `Application Name`,
//! `ApplicationIntent`):
//! - `Authentication`: `Sql Password` (the default: `User ID` + `Password`), `Active Directory Managed
//!   Identity` / `Active Directory MSI` (a token from the Function App's system-assigned managed identity),
//!   or `Active Directory Service Principal` (`User ID` = client id, `Password` = client secret, tenant from
//!   `Tenant Id` or the `AZURE_TENANT_ID` environment variable). Spaces, hyphens and case are ignored.
//! - `Tenant Id` (or `TenantId`): the service principal's tenant.
//! - `Encrypt`: TLS is **required** unless the string says `Encrypt=false` (`no`, `optional`: TLS for the
//!   login only, as tiberius does it) or `Encrypt=DANGER_PLAINTEXT` (no TLS at all, accepted only when the
//!   server is a loopback address — the project's TDS test server). `true`/`yes`/`mandatory` = required.
//! - `Connect Timeout` / `Connection Timeout` (seconds, default 15): one TCP connect + TLS + login.
//!
//! These keys (and, for Entra authentication, `User ID`/`Password`) are removed before the rest is handed
//! to tiberius. The string, the password and every token stay out of logs and errors: log lines and
//! [`Backend::describe`] name only the server, the database, the kind of authentication and the TLS mode.
//!
//! # Pool
//! A bb8 pool shared by every invocation, `PROCFWK_SQL_POOL_SIZE` connections at most (default 10),
//! opened lazily (the first transaction opens the first connection, so a database that is briefly
//! unavailable at start-up does not stop the Function App). Each *new* connection fetches its Entra
//! token from the credential object at that moment (the credential caches and refreshes tokens), so a
//! connection opened hours after start-up never logs in with an expired token. Opening a connection is
//! retried up to three times on transient login errors (40613, 4060, 40501, …); an Azure SQL gateway
//! redirect (TDS routing) is followed. A connection is checked with `SELECT 1` when it is checked out,
//! and is discarded instead of reused once an I/O or protocol error happened on it, when a request on it
//! was interrupted, or when it may still hold an open transaction (a [`Tx`] dropped without commit or
//! rollback, a failed `COMMIT`).
//!
//! # Transactions
//! `begin` runs `SET XACT_ABORT ON; BEGIN TRANSACTION` in one batch, so any error inside the transaction
//! makes SQL Server roll all of it back. After the first failed statement the [`Tx`] refuses further
//! statements (they would otherwise run outside any transaction) and `commit` reports that error again,
//! keeping its number, so [`super::Store::run`] retries the whole transition when it is transient.
//! Nothing is retried inside a transaction.
//!
//! # Values
//! Parameters bind in order as `@P1`…`@Pn`: `Null` → `NVARCHAR NULL`, `Int` → `BIGINT`, `Float` → `FLOAT`,
//! `Bool` → `BIT`, `Text` → `NVARCHAR`, `Guid` → `UNIQUEIDENTIFIER`, `DateTime` → `DATETIME2`. Columns come
//! back as: `TINYINT`/`SMALLINT`/`INT`/`BIGINT` → `Int`; `REAL`/`FLOAT`/`DECIMAL`/`NUMERIC`/`MONEY` →
//! `Float`; `BIT` → `Bool`; character types → `Text`; `UNIQUEIDENTIFIER` → `Guid`;
//! `DATETIME`/`DATETIME2`/`SMALLDATETIME` → `DateTime`; `DATETIMEOFFSET` → `DateTime` in UTC; `DATE` →
//! `DateTime` at midnight; `TIME` → `Text` (`HH:MM:SS.fffffff`); `XML` → `Text`; binary types → `Text` in
//! lower-case hex (as the SQLite backend returns blobs).
//!
//! # Schema
//! [`Backend::init_schema`] runs the scripts of `deploy/sql` ([`SCHEMA_SCRIPTS`], in file-name order),
//! split into batches at lines that hold only `GO`, each batch on its own (no enclosing transaction; the
//! scripts are idempotent).

use super::schema::{self, Batch, SchemaReport, Script};
use super::{Backend, Row, SqlValue, Statement, StoreError, Tx, TRANSIENT_ERRORS};
use crate::adapters::upstream::{FromAzure, Service, UpstreamError};
use crate::adapters::Identity;
use crate::secret::Secret;
use azure_core::auth::TokenCredential;
use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, FromSql, Query};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// The Entra scope of Azure SQL tokens.
pub const SQL_TOKEN_SCOPE: &str = "https://database.windows.net/.default";

/// The setting that sizes the pool.
pub const POOL_SIZE_SETTING: &str = "PROCFWK_SQL_POOL_SIZE";

const DEFAULT_POOL_SIZE: u32 = 10;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// TCP keepalive on every connection: first probe after 30 s idle, then every 10 s, so the kernel
/// notices a peer that is gone and Azure's NAT keeps the flow.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// The setting for the statement timeout.
pub const STATEMENT_TIMEOUT_SETTING: &str = "PROCFWK_SQL_STATEMENT_TIMEOUT_SECS";
/// Attempts at opening one connection when the login fails with a transient error.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_BACKOFF: Duration = Duration::from_millis(150);
/// Gateway redirects followed while opening one connection.
const MAX_REDIRECTS: u32 = 2;
/// SQL Server: "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION."
const NO_TRANSACTION: u32 = 3903;

/// The schema scripts of `deploy/sql`, in file-name order (the order they run in).
pub const SCHEMA_SCRIPTS: &[(&str, &str)] = &[
    (
        "001_procfwk_schema.sql",
        include_str!("../../deploy/sql/001_procfwk_schema.sql"),
    ),
    (
        "002_vm_power.sql",
        include_str!("../../deploy/sql/002_vm_power.sql"),
    ),
    (
        "003_claims.sql",
        include_str!("../../deploy/sql/003_claims.sql"),
    ),
];

/// Split a T-SQL script into batches at lines consisting only of `GO` (any case, surrounding blanks
/// allowed). Batches that hold nothing but blank lines and `--` comments are left out.
pub fn script_batches(script: &str) -> Vec<String> {
    let mut batches = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |lines: &mut Vec<&str>| {
        let has_code = lines.iter().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with("--")
        });
        if has_code {
            batches.push(lines.join("\n").trim().to_string());
        }
        lines.clear();
    };
    for line in script.lines() {
        if line.trim().eq_ignore_ascii_case("GO") {
            flush(&mut current);
        } else {
            current.push(line);
        }
    }
    flush(&mut current);
    batches
}

// ------------------------------------------------------------------------------------------------ options

/// Pool settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlServerOptions {
    /// Most connections open at once (`PROCFWK_SQL_POOL_SIZE`, default 10).
    pub pool_size: u32,
    /// How long `begin` waits for a free connection when all are in use (default 30 s).
    pub checkout_timeout: Duration,
    /// How long one statement may take (`PROCFWK_SQL_STATEMENT_TIMEOUT_SECS`, default 30 s). A statement
    /// that runs past it marks its connection broken and fails as a connection error (transient: the
    /// transition runs again on a fresh connection), so a connection that died without a FIN or RST is
    /// noticed instead of waited on forever.
    pub statement_timeout: Duration,
    /// Idle connections are closed after this long (default 180 s), before Azure's load balancers drop
    /// outbound connections idle for about 4 minutes.
    pub idle_timeout: Duration,
}

impl Default for SqlServerOptions {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl SqlServerOptions {
    /// Defaults, with `PROCFWK_SQL_POOL_SIZE` from the environment.
    pub fn from_env() -> Result<Self, StoreError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults, with `PROCFWK_SQL_POOL_SIZE` read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StoreError> {
        let mut options = Self::default();
        if let Some(v) = lookup(POOL_SIZE_SETTING).filter(|v| !v.trim().is_empty()) {
            options.pool_size = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    StoreError::Config(format!(
                        "{POOL_SIZE_SETTING} = {v:?} must be a whole number from 1 to 1000"
                    ))
                })?;
        }
        if let Some(v) = lookup(STATEMENT_TIMEOUT_SETTING).filter(|v| !v.trim().is_empty()) {
            let secs = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| (0.1..=3600.0).contains(n))
                .ok_or_else(|| {
                    StoreError::Config(format!(
                        "{STATEMENT_TIMEOUT_SETTING} = {v:?} must be a number of seconds from 0.1 to 3600"
                    ))
                })?;
            options.statement_timeout = Duration::from_secs_f64(secs);
        }
        Ok(options)
    }
}

/// How the backend logs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// SQL authentication (`User ID` + `Password`).
    SqlPassword,
    /// An Entra token of the Function App's system-assigned managed identity.
    ManagedIdentity,
    /// An Entra token of a service principal (client credentials).
    ServicePrincipal,
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SqlPassword => "SQL login",
            Self::ManagedIdentity => "Entra ID, managed identity",
            Self::ServicePrincipal => "Entra ID, service principal",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Required,
    LoginOnly,
    Plaintext,
}

impl TlsMode {
    fn level(self) -> EncryptionLevel {
        match self {
            Self::Required => EncryptionLevel::Required,
            Self::LoginOnly => EncryptionLevel::Off,
            Self::Plaintext => EncryptionLevel::NotSupported,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Required => "TLS required",
            Self::LoginOnly => "TLS for the login only",
            Self::Plaintext => "no TLS (loopback test server)",
        }
    }
}

// ------------------------------------------------------------------------------------------------ parsing

/// One `key=value` part of a connection string.
struct Part {
    /// Lower-case, inner blanks collapsed.
    key: String,
    /// Unquoted value.
    value: String,
    /// Where the part is in the original string (without its `;`).
    span: std::ops::Range<usize>,
}

fn unclosed(what: &str) -> StoreError {
    StoreError::Config(format!("the connection string has an unclosed {what}"))
}

/// Index just past the quoted or braced token starting at `i`.
fn skip_token(bytes: &[u8], i: usize) -> Result<usize, StoreError> {
    match bytes[i] {
        q @ (b'"' | b'\'') => {
            let mut j = i + 1;
            loop {
                match bytes.get(j) {
                    None => return Err(unclosed("quote")),
                    Some(&c) if c == q => {
                        if bytes.get(j + 1) == Some(&q) {
                            j += 2;
                        } else {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => j += 1,
                }
            }
        }
        b'{' => match bytes[i..].iter().position(|&c| c == b'}') {
            Some(p) => Ok(i + p + 1),
            None => Err(unclosed("brace")),
        },
        // A plain character: step over all of it, so tokens always end on a character boundary
        // (`Password=pässword` has a two-byte `ä`).
        _ => {
            let mut j = i + 1;
            while bytes.get(j).is_some_and(|b| b & 0xC0 == 0x80) {
                j += 1;
            }
            Ok(j)
        }
    }
}

/// Split an ADO.NET connection string into its parts, honouring `"…"`, `'…'` (doubled quotes inside)
/// and `{…}`. The same tokens as the `connection-string` crate tiberius parses with, so stripping parts
/// from the original text leaves a string tiberius reads the same way.
fn parse_parts(s: &str) -> Result<Vec<Part>, StoreError> {
    let bytes = s.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b';' {
            spans.push(start..i);
            i += 1;
            start = i;
        } else {
            i = skip_token(bytes, i)?;
        }
    }
    spans.push(start..bytes.len());
    let mut parts = Vec::new();
    for span in spans {
        let text = &s[span.clone()];
        if text.trim().is_empty() {
            continue;
        }
        let tb = text.as_bytes();
        let mut j = 0;
        let mut eq = None;
        while j < tb.len() {
            if tb[j] == b'=' {
                eq = Some(j);
                break;
            }
            j = skip_token(tb, j)?;
        }
        let Some(eq) = eq else {
            // Never echo the part: it could be a fragment of a password.
            return Err(StoreError::Config(
                "the connection string has a part that is not key=value".into(),
            ));
        };
        let key = text[..eq]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        if key.is_empty() {
            return Err(StoreError::Config(
                "the connection string has a part with an empty key".into(),
            ));
        }
        parts.push(Part {
            key,
            value: unquote(text[eq + 1..].trim())?,
            span,
        });
    }
    Ok(parts)
}

/// The value of a part: quoted and braced tokens lose their delimiters, doubled quotes become one.
fn unquote(raw: &str) -> Result<String, StoreError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let end = skip_token(bytes, i)?;
        match bytes[i] {
            q @ (b'"' | b'\'') => {
                let quote = char::from(q);
                let doubled = format!("{quote}{quote}");
                out.push_str(&raw[i + 1..end - 1].replace(&doubled, &quote.to_string()));
            }
            b'{' => out.push_str(&raw[i + 1..end - 1]),
            _ => out.push_str(&raw[i..end]),
        }
        i = end;
    }
    Ok(out)
}

/// A connection string taken apart.
struct Setting {
    /// What tiberius gets: the original minus our keys.
    tiberius: String,
    auth: AuthKind,
    tls: TlsMode,
    user: Option<String>,
    password: Option<Secret>,
    tenant: Option<String>,
    database: Option<String>,
    connect_timeout: Duration,
}

fn parse_bool(key: &str, value: &str) -> Result<bool, StoreError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(StoreError::Config(format!(
            "connection string key {key} must be true or false"
        ))),
    }
}

/// Check a connection string without connecting (start-up validation of `PROCFWK_METADATA_DB`).
pub fn check_setting(setting: &str) -> Result<(), StoreError> {
    parse_setting(setting).map(drop)
}

fn parse_setting(setting: &str) -> Result<Setting, StoreError> {
    let parts = parse_parts(setting)?;
    let get = |names: &[&str]| {
        parts
            .iter()
            .rev()
            .find(|p| names.contains(&p.key.as_str()))
            .map(|p| p.value.clone())
    };
    const USER_KEYS: &[&str] = &["uid", "username", "user", "user id"];
    const PASSWORD_KEYS: &[&str] = &["password", "pwd"];
    const TENANT_KEYS: &[&str] = &["tenant id", "tenantid"];
    const TIMEOUT_KEYS: &[&str] = &["connect timeout", "connection timeout", "timeout"];

    let auth = match get(&["authentication"]) {
        None => AuthKind::SqlPassword,
        Some(v) => {
            let norm: String = v
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
                .collect::<String>()
                .to_ascii_lowercase();
            match norm.as_str() {
                "" | "sqlpassword" => AuthKind::SqlPassword,
                "activedirectorymanagedidentity" | "activedirectorymsi" => AuthKind::ManagedIdentity,
                "activedirectoryserviceprincipal" => AuthKind::ServicePrincipal,
                _ => {
                    return Err(StoreError::Config(format!(
                        "Authentication={v} is not supported; use Sql Password, Active Directory Managed \
                         Identity (or Active Directory MSI) or Active Directory Service Principal"
                    )))
                }
            }
        }
    };
    if let Some(v) = get(&[
        "integrated security",
        "integratedsecurity",
        "trusted_connection",
    ]) {
        if v.eq_ignore_ascii_case("sspi") || parse_bool("Integrated Security", &v)? {
            return Err(StoreError::Config(
                "Windows authentication (Integrated Security) is not supported; use a SQL login or \
                 Authentication=Active Directory Managed Identity"
                    .into(),
            ));
        }
    }
    let tls = match get(&["encrypt"]) {
        None => TlsMode::Required,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "mandatory" => TlsMode::Required,
            "false" | "no" | "optional" => TlsMode::LoginOnly,
            "danger_plaintext" => TlsMode::Plaintext,
            "strict" => {
                return Err(StoreError::Config(
                    "Encrypt=strict (TDS 8) is not supported by this client; use Encrypt=true"
                        .into(),
                ))
            }
            _ => {
                return Err(StoreError::Config(
                    "connection string key Encrypt must be true, false or DANGER_PLAINTEXT".into(),
                ))
            }
        },
    };
    let connect_timeout = match get(TIMEOUT_KEYS) {
        None => DEFAULT_CONNECT_TIMEOUT,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) | Err(_) => {
                return Err(StoreError::Config(
                    "Connect Timeout must be a positive number of seconds".into(),
                ))
            }
            Ok(secs) => Duration::from_secs(secs.min(600)),
        },
    };
    let user = get(USER_KEYS).filter(|u| !u.is_empty());
    let password = get(PASSWORD_KEYS).map(Secret::new);
    let tenant = get(TENANT_KEYS).filter(|t| !t.trim().is_empty());
    let database = get(&["database", "initial catalog", "databasename"]).filter(|d| !d.is_empty());

    match auth {
        AuthKind::SqlPassword => {
            if user.is_none() {
                return Err(StoreError::Config(
                    "the connection string has no User ID; give User ID and Password, or \
                     Authentication=Active Directory Managed Identity"
                        .into(),
                ));
            }
        }
        AuthKind::ManagedIdentity => {
            if user.is_some() {
                return Err(StoreError::Config(
                    "user-assigned managed identities (User ID with Authentication=Active Directory \
                     Managed Identity) are not supported; remove User ID to use the Function App's \
                     system-assigned identity"
                        .into(),
                ));
            }
        }
        AuthKind::ServicePrincipal => {
            if user.is_none() || password.as_ref().is_none_or(Secret::is_empty) {
                return Err(StoreError::Config(
                    "Authentication=Active Directory Service Principal needs User ID (the client id) \
                     and Password (the client secret)"
                        .into(),
                ));
            }
        }
    }

    // Our keys are not tiberius' business; user and password are set on its Config directly (its parser
    // keeps both quotes of a doubled `""` inside a quoted password).
    let strip = |key: &str| {
        ["authentication", "encrypt"].contains(&key)
            || TENANT_KEYS.contains(&key)
            || TIMEOUT_KEYS.contains(&key)
            || USER_KEYS.contains(&key)
            || PASSWORD_KEYS.contains(&key)
    };
    let tiberius = parts
        .iter()
        .filter(|p| !strip(&p.key))
        .map(|p| &setting[p.span.clone()])
        .collect::<Vec<_>>()
        .join(";");
    Ok(Setting {
        tiberius,
        auth,
        tls,
        user,
        password,
        tenant,
        database,
        connect_timeout,
    })
}

/// `host` and `port` out of tiberius' `host:port`.
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.parse().unwrap_or(1433),
        ),
        None => (addr.to_string(), 1433),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

// ------------------------------------------------------------------------------------------------ errors

fn map_error(e: tiberius::error::Error) -> StoreError {
    use tiberius::error::Error as E;
    match e {
        E::Server(token) => StoreError::Database {
            number: token.code(),
            message: token.message().to_string(),
        },
        E::Io { message, .. } => StoreError::Connection(message),
        E::Tls(message) => StoreError::Connection(format!("TLS: {message}")),
        E::Protocol(message) => StoreError::Connection(format!("protocol error: {message}")),
        E::Routing { host, port } => StoreError::Connection(format!(
            "the server redirected the connection too many times (last to {host}:{port})"
        )),
        other => StoreError::Data {
            column: String::new(),
            problem: other.to_string(),
        },
    }
}

/// `StoreError` is not `Clone`; the failure signal hands the same error to several waiters.
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database { number, message } => StoreError::Database {
            number: *number,
            message: message.clone(),
        },
        StoreError::Connection(m) => StoreError::Connection(m.clone()),
        StoreError::Data { column, problem } => StoreError::Data {
            column: column.clone(),
            problem: problem.clone(),
        },
        StoreError::Config(m) => StoreError::Config(m.clone()),
        StoreError::NotInitialised(m) => StoreError::NotInitialised(m.clone()),
        StoreError::TooOld { found, needed } => StoreError::TooOld {
            found: *found,
            needed: *needed,
        },
        StoreError::TooNew { found, supported } => StoreError::TooNew {
            found: *found,
            supported: *supported,
        },
        StoreError::UnusableObject { object, problem } => StoreError::UnusableObject {
            object: object.clone(),
            problem: problem.clone(),
        },
    }
}

/// A token request failed: a definite "no" from Entra or the identity endpoint is a setting problem,
/// anything else (unreachable, 5xx, throttled) may pass.
fn token_error(service: Service, e: &azure_core::Error) -> StoreError {
    let upstream = UpstreamError::from_azure(service, e);
    let message = format!("could not get an Entra ID token for Azure SQL: {upstream}");
    match &upstream {
        UpstreamError::Http { status, .. }
            if (400..500).contains(status) && *status != 408 && *status != 429 =>
        {
            StoreError::Config(message)
        }
        UpstreamError::Authentication { message: said, .. } if said.contains("AADSTS") => {
            StoreError::Config(message)
        }
        _ => StoreError::Connection(message),
    }
}

// ------------------------------------------------------------------------------------------------ pool

/// The most recent failure to open a connection, so that callers waiting in the pool learn why instead of
/// waiting for the checkout timeout (bb8 opens connections in background tasks).
#[derive(Default)]
struct ConnectFailures {
    generation: AtomicU64,
    last: Mutex<Option<StoreError>>,
    notify: Notify,
}

impl ConnectFailures {
    fn record(&self, e: &StoreError) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(duplicate(e));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The last failure, if one happened after generation `seen`.
    fn since(&self, seen: u64) -> Option<StoreError> {
        if self.generation() == seen {
            return None;
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(duplicate)
    }
}

/// bb8's error sink: failures it meets on its own (a pooled connection failing its check) are logged.
#[derive(Clone, Debug)]
struct LogSink;

impl bb8::ErrorSink<StoreError> for LogSink {
    fn sink(&self, error: StoreError) {
        tracing::warn!(error = %error, "metadata store connection discarded");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<StoreError>> {
        Box::new(self.clone())
    }
}

/// One pooled connection.
struct SqlConnection {
    client: Client<Compat<TcpStream>>,
    /// Set while a request is in flight and after any failure that leaves the connection unusable; bb8
    /// drops a broken connection instead of putting it back.
    broken: bool,
    /// How long one round trip may take (`PROCFWK_SQL_STATEMENT_TIMEOUT_SECS`): past it the request is
    /// abandoned and, being still in flight, leaves the connection broken — a peer that went silent
    /// without a FIN or RST is noticed instead of waited on.
    round_trip_limit: Duration,
}

/// A round trip ran past the statement timeout: its connection's state is unknown.
fn round_trip_timed_out(sql: &str, limit: Duration) -> StoreError {
    let head: String = sql.chars().take(60).collect();
    StoreError::Connection(format!(
        "{head:?} did not finish within {:.1} s",
        limit.as_secs_f64()
    ))
}

impl SqlConnection {
    /// Record the outcome of a request: only a clean answer (rows, or an error the server reported)
    /// leaves the connection usable.
    fn settle<T>(&mut self, result: Result<T, tiberius::error::Error>) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                self.broken = false;
                Ok(v)
            }
            Err(e @ tiberius::error::Error::Server(_)) => {
                self.broken = false;
                Err(map_error(e))
            }
            Err(e) => {
                self.broken = true;
                Err(map_error(e))
            }
        }
    }

    async fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.broken = true;
        let limit = self.round_trip_limit;
        let client = &mut self.client;
        let request = async { client.simple_query(sql).await?.into_results().await };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => self.settle(result).map(|_| ()),
            // Dropped in flight: `broken` stays set.
            Err(_) => Err(round_trip_timed_out(sql, limit)),
        }
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<tiberius::Row>, StoreError> {
        self.broken = true;
        let limit = self.round_trip_limit;
        let client = &mut self.client;
        let request = async {
            bind(sql, params)
                .query(client)
                .await?
                .into_first_result()
                .await
        };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => self.settle(result),
            Err(_) => Err(round_trip_timed_out(sql, limit)),
        }
    }

    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        self.broken = true;
        let limit = self.round_trip_limit;
        let client = &mut self.client;
        let request = async { bind(sql, params).execute(client).await.map(|r| r.total()) };
        match tokio::time::timeout(limit, request).await {
            Ok(result) => self.settle(result),
            Err(_) => Err(round_trip_timed_out(sql, limit)),
        }
    }
}

fn bind<'a>(sql: &'a str, params: &'a [SqlValue]) -> Query<'a> {
    let mut query = Query::new(sql);
    for p in params {
        match p {
            SqlValue::Null => query.bind(Option::<&str>::None),
            SqlValue::Int(i) => query.bind(*i),
            SqlValue::Float(f) => query.bind(*f),
            SqlValue::Bool(b) => query.bind(*b),
            SqlValue::Text(t) => query.bind(t.as_str()),
            SqlValue::Guid(g) => query.bind(*g),
            SqlValue::DateTime(d) => query.bind(*d),
        }
    }
    query
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One column value of a result row.
fn to_value(column: &str, data: &ColumnData<'static>) -> Result<SqlValue, StoreError> {
    let conversion = |e: tiberius::error::Error| StoreError::Data {
        column: column.to_string(),
        problem: e.to_string(),
    };
    let value = match data {
        ColumnData::U8(v) => v.map(|v| SqlValue::Int(v.into())),
        ColumnData::I16(v) => v.map(|v| SqlValue::Int(v.into())),
        ColumnData::I32(v) => v.map(|v| SqlValue::Int(v.into())),
        ColumnData::I64(v) => v.map(SqlValue::Int),
        ColumnData::F32(v) => v.map(|v| SqlValue::Float(v.into())),
        ColumnData::F64(v) => v.map(SqlValue::Float),
        ColumnData::Numeric(v) => v.map(|n| SqlValue::Float(f64::from(n))),
        ColumnData::Bit(v) => v.map(SqlValue::Bool),
        ColumnData::String(v) => v.as_ref().map(|s| SqlValue::Text(s.to_string())),
        ColumnData::Guid(v) => v.map(SqlValue::Guid),
        ColumnData::Binary(v) => v.as_ref().map(|b| SqlValue::Text(hex(b))),
        ColumnData::Xml(v) => v.as_ref().map(|x| SqlValue::Text(x.to_string())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            NaiveDateTime::from_sql(data)
                .map_err(conversion)?
                .map(SqlValue::DateTime)
        }
        // Through `DateTime<FixedOffset>`: on the wire the date and time are UTC (MS-TDS), which that
        // conversion honours; tiberius 0.12's `DateTime<Utc>` conversion subtracts the offset again.
        ColumnData::DateTimeOffset(_) => chrono::DateTime::<chrono::FixedOffset>::from_sql(data)
            .map_err(conversion)?
            .map(|d| SqlValue::DateTime(d.naive_utc())),
        ColumnData::Date(_) => NaiveDate::from_sql(data)
            .map_err(conversion)?
            .map(|d| SqlValue::DateTime(d.and_time(NaiveTime::MIN))),
        ColumnData::Time(_) => NaiveTime::from_sql(data)
            .map_err(conversion)?
            .map(|t| SqlValue::Text(t.format("%H:%M:%S%.f").to_string())),
    };
    Ok(value.unwrap_or(SqlValue::Null))
}

fn to_row(row: &tiberius::Row) -> Result<Row, StoreError> {
    let mut columns = Vec::with_capacity(row.len());
    for (column, data) in row.cells() {
        columns.push((column.name().to_string(), to_value(column.name(), data)?));
    }
    Ok(Row::new(columns))
}

/// Opens connections for the pool.
struct SqlServerManager {
    /// Everything but the Entra token (tiberius' `Config` holds a SQL password; it is never logged).
    config: Config,
    credential: Option<(Service, Arc<dyn TokenCredential>)>,
    connect_timeout: Duration,
    round_trip_limit: Duration,
    target: String,
    failures: Arc<ConnectFailures>,
}

impl SqlServerManager {
    async fn open(&self) -> Result<SqlConnection, StoreError> {
        let mut config = self.config.clone();
        if let Some((service, credential)) = &self.credential {
            let token = credential
                .get_token(&[SQL_TOKEN_SCOPE])
                .await
                .map_err(|e| token_error(*service, &e))?;
            config.authentication(AuthMethod::aad_token(token.token.secret()));
        }
        let mut redirects = 0;
        loop {
            let (host, port) = split_addr(&config.get_addr());
            let attempt = tokio::time::timeout(self.connect_timeout, async {
                let tcp = match host.parse::<IpAddr>() {
                    Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await?,
                    Err(_) => TcpStream::connect((host.as_str(), port)).await?,
                };
                tcp.set_nodelay(true)?;
                socket2::SockRef::from(&tcp).set_tcp_keepalive(
                    &socket2::TcpKeepalive::new()
                        .with_time(KEEPALIVE_IDLE)
                        .with_interval(KEEPALIVE_INTERVAL),
                )?;
                Client::connect(config.clone(), tcp.compat_write()).await
            })
            .await;
            match attempt {
                Err(_) => {
                    return Err(StoreError::Connection(format!(
                        "connecting to {host}:{port} did not finish within {} s",
                        self.connect_timeout.as_secs()
                    )))
                }
                Ok(Ok(client)) => {
                    return Ok(SqlConnection {
                        client,
                        broken: false,
                        round_trip_limit: self.round_trip_limit,
                    })
                }
                Ok(Err(tiberius::error::Error::Routing { host, port }))
                    if redirects < MAX_REDIRECTS =>
                {
                    redirects += 1;
                    tracing::debug!(%host, port, "metadata store: following the gateway's redirect");
                    config.host(&host);
                    config.port(port);
                }
                Ok(Err(e)) => return Err(map_error(e)),
            }
        }
    }
}

#[async_trait::async_trait]
impl ManageConnection for SqlServerManager {
    type Connection = SqlConnection;
    type Error = StoreError;

    async fn connect(&self) -> Result<SqlConnection, StoreError> {
        let mut attempt = 1;
        loop {
            match self.open().await {
                Ok(conn) => {
                    tracing::debug!(target_db = %self.target, "metadata store connection opened");
                    return Ok(conn);
                }
                Err(e @ StoreError::Database { number, .. })
                    if attempt < CONNECT_ATTEMPTS && TRANSIENT_ERRORS.contains(&number) =>
                {
                    tracing::warn!(target_db = %self.target, attempt, error = %e, "metadata store login failed transiently; trying again");
                    tokio::time::sleep(CONNECT_BACKOFF * attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(target_db = %self.target, error = %e, "could not open a metadata store connection");
                    self.failures.record(&e);
                    return Err(e);
                }
            }
        }
    }

    async fn is_valid(&self, conn: &mut SqlConnection) -> Result<(), StoreError> {
        conn.batch("SELECT 1").await
    }

    fn has_broken(&self, conn: &mut SqlConnection) -> bool {
        conn.broken
    }
}

// ------------------------------------------------------------------------------------------------ backend

/// Open and idle connections of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    pub connections: u32,
    pub idle: u32,
}

/// Azure SQL / SQL Server behind a connection pool.
pub struct SqlServerBackend {
    pool: Pool<SqlServerManager>,
    pool_size: u32,
    failures: Arc<ConnectFailures>,
    checkout_timeout: Duration,
    description: String,
}

impl SqlServerBackend {
    /// `setting` is an ADO.NET-style connection string (see the module documentation for the keys),
    /// e.g. `Server=tcp:myserver.database.windows.net,1433;Database=procfwk;User ID=u;Password=p`, or
    /// with `Authentication=Active Directory Managed Identity` (token from `identity`'s managed
    /// identity) or `Authentication=Active Directory Service Principal` with `User ID=<clientId>;
    /// Password=<secret>` and `Tenant Id=` (or `AZURE_TENANT_ID`). The pool size comes from
    /// `PROCFWK_SQL_POOL_SIZE`. No connection is opened yet.
    pub async fn connect(
        setting: &str,
        identity: Option<Arc<Identity>>,
    ) -> Result<Self, StoreError> {
        Self::connect_with(setting, identity, SqlServerOptions::from_env()?).await
    }

    /// [`SqlServerBackend::connect`] with explicit pool options.
    pub async fn connect_with(
        setting: &str,
        identity: Option<Arc<Identity>>,
        options: SqlServerOptions,
    ) -> Result<Self, StoreError> {
        let parsed = parse_setting(setting)?;
        let mut config = Config::from_ado_string(&parsed.tiberius).map_err(|e| {
            StoreError::Config(format!(
                "the SQL Server connection string is not valid: {e}"
            ))
        })?;
        config.encryption(parsed.tls.level());
        // tiberius 0.13 times the login handshake and every response itself (15 s / 30 s by default).
        // Ours are set deliberately instead: the handshake gets the connection string's Connect Timeout
        // (the same bound `open` puts around TCP connect + login), and no per-response timeout of
        // tiberius's own, because each round trip is already bounded by the store's statement timeout
        // (`SqlConnection::round_trip_limit`), which also marks the connection broken for the pool.
        config.handshake_timeout(Some(parsed.connect_timeout));
        config.command_timeout(None);
        if parsed.auth == AuthKind::SqlPassword {
            config.authentication(AuthMethod::sql_server(
                parsed.user.as_deref().unwrap_or_default(),
                parsed
                    .password
                    .as_ref()
                    .map(Secret::expose)
                    .unwrap_or_default(),
            ));
        }
        let (host, port) = split_addr(&config.get_addr());
        if parsed.tls == TlsMode::Plaintext && !is_loopback(&host) {
            return Err(StoreError::Config(format!(
                "Encrypt=DANGER_PLAINTEXT is only allowed for a loopback test server, not for {host}"
            )));
        }
        let credential = match parsed.auth {
            AuthKind::SqlPassword => None,
            AuthKind::ManagedIdentity => {
                Some((Service::ManagedIdentity, managed_identity(identity)?))
            }
            AuthKind::ServicePrincipal => Some((
                Service::EntraId,
                service_principal(&parsed, identity).await?,
            )),
        };
        let database = parsed
            .database
            .clone()
            .unwrap_or_else(|| "(default database)".into());
        let target = format!("{host},{port}/{database}");
        let description = format!(
            "SQL Server {host},{port}, database {database} ({}, {}, pool of {})",
            parsed.auth,
            parsed.tls.describe(),
            options.pool_size
        );
        if parsed.tls == TlsMode::LoginOnly {
            tracing::warn!(store = %description, "metadata store traffic is not encrypted after the login (Encrypt=false)");
        }
        let failures = Arc::new(ConnectFailures::default());
        let manager = SqlServerManager {
            config,
            credential,
            connect_timeout: parsed.connect_timeout,
            round_trip_limit: options.statement_timeout,
            target,
            failures: Arc::clone(&failures),
        };
        let pool = Pool::builder()
            .max_size(options.pool_size)
            .min_idle(None)
            // No `SELECT 1` before every transaction (a round trip each): a connection that died while
            // idle fails its first statement, is marked broken, and `Store::run` runs the transition
            // again on a fresh one.
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(options.checkout_timeout)
            .idle_timeout(Some(options.idle_timeout))
            // The reaper runs often enough that no connection idles much past the timeout.
            .reaper_rate(Duration::from_secs(15).min(options.idle_timeout))
            .max_lifetime(Some(Duration::from_secs(30 * 60)))
            .error_sink(Box::new(LogSink))
            .build_unchecked(manager);
        tracing::info!(store = %description, "metadata store: SQL Server connection pool ready");
        Ok(Self {
            pool,
            pool_size: options.pool_size,
            failures,
            checkout_timeout: options.checkout_timeout,
            description,
        })
    }

    /// How many connections are open, and how many of them idle.
    pub fn pool_status(&self) -> PoolStatus {
        let state = self.pool.state();
        PoolStatus {
            connections: state.connections,
            idle: state.idle_connections,
        }
    }

    /// A connection from the pool; a failure to open one is reported as soon as it happens.
    async fn checkout(&self) -> Result<PooledConnection<'static, SqlServerManager>, StoreError> {
        let failed = self.failures.notify.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        let seen = self.failures.generation();
        let timed_out = || {
            StoreError::Connection(format!(
                "no metadata store connection became available within {} s",
                self.checkout_timeout.as_secs()
            ))
        };
        tokio::select! {
            biased;
            got = self.pool.get_owned() => match got {
                Ok(conn) => Ok(conn),
                Err(RunError::User(e)) => Err(e),
                Err(RunError::TimedOut) => Err(self.failures.since(seen).unwrap_or_else(timed_out)),
            },
            () = &mut failed => Err(self.failures.since(seen).unwrap_or_else(timed_out)),
        }
    }
}

fn managed_identity(
    identity: Option<Arc<Identity>>,
) -> Result<Arc<dyn TokenCredential>, StoreError> {
    let identity = match identity {
        Some(identity) => identity,
        None => Arc::new(own_identity()?),
    };
    identity
        .managed_identity()
        .map_err(|e| StoreError::Config(format!("Azure SQL login with the managed identity: {e}")))
}

/// An identity of our own when the caller has none (`procfwk db …` commands).
fn own_identity() -> Result<Identity, StoreError> {
    let settings =
        crate::config::Settings::from_env().map_err(|e| StoreError::Config(e.to_string()))?;
    let http = crate::adapters::http::shared_client(&settings)
        .map_err(|e| StoreError::Config(e.to_string()))?;
    Ok(Identity::new(http, &settings))
}

async fn service_principal(
    parsed: &Setting,
    identity: Option<Arc<Identity>>,
) -> Result<Arc<dyn TokenCredential>, StoreError> {
    let tenant = parsed
        .tenant
        .clone()
        .or_else(|| std::env::var("AZURE_TENANT_ID").ok().filter(|t| !t.trim().is_empty()))
        .ok_or_else(|| {
            StoreError::Config(
                "Authentication=Active Directory Service Principal needs a tenant: add Tenant Id=… to the \
                 connection string or set AZURE_TENANT_ID"
                    .into(),
            )
        })?;
    let (Some(client_id), Some(secret)) = (parsed.user.clone(), parsed.password.clone()) else {
        return Err(StoreError::Config(
            "Authentication=Active Directory Service Principal needs User ID and Password".into(),
        ));
    };
    match (identity, crate::domain::Guid::parse(&tenant)) {
        // The process' identity registry: one credential (and token cache) per principal, the process'
        // HTTP client and authority.
        (Some(identity), Some(tenant)) => identity
            .credential(&crate::domain::Credentials::ServicePrincipal {
                tenant,
                client_id: crate::domain::SecretSource::Value(Secret::new(client_id)),
                client_secret: crate::domain::SecretSource::Value(secret),
            })
            .await
            .map_err(|e| {
                StoreError::Config(format!("Azure SQL login with the service principal: {e}"))
            }),
        _ => {
            let settings = crate::config::Settings::from_env()
                .map_err(|e| StoreError::Config(e.to_string()))?;
            let http = crate::adapters::http::shared_client(&settings)
                .map_err(|e| StoreError::Config(e.to_string()))?;
            Ok(Arc::new(azure_identity::ClientSecretCredential::new(
                http,
                settings.authority_host.clone(),
                tenant.trim().to_string(),
                client_id,
                secret.expose().to_string(),
            )))
        }
    }
}

#[async_trait::async_trait]
impl Backend for SqlServerBackend {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        // Pooled connections are not pinged before use; one that died while idle fails here, before any
        // work was done, so it is discarded and the next one tried (the pool holds at most `pool_size`).
        let mut last = None;
        for _ in 0..=self.pool_size {
            let mut conn = self.checkout().await?;
            match conn
                .batch("SET LOCK_TIMEOUT -1; SET XACT_ABORT ON; BEGIN TRANSACTION")
                .await
            {
                Ok(()) => {
                    return Ok(Box::new(SqlServerTx {
                        conn: Some(conn),
                        aborted: None,
                    }))
                }
                Err(e) => {
                    // Whether the transaction started is unknown: never hand this connection out again.
                    conn.broken = true;
                    if !matches!(e, StoreError::Connection(_)) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Connection("no usable connection".into())))
    }

    async fn upgrade_schema(&self, dry_run: bool) -> Result<SchemaReport, StoreError> {
        let mut conn = self.checkout().await?;
        let found = recorded_version(&mut conn).await?;
        let mut report = SchemaReport {
            found_version: found,
            version: found.unwrap_or(0).max(super::SCHEMA_VERSION),
            changes: Vec::new(),
            dry_run,
        };
        if let Some(v) = found {
            if v > super::SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    found: v,
                    supported: super::SCHEMA_VERSION,
                });
            }
        }
        // Scripts whose version is recorded already are done; the rest run in order.
        let pending: Vec<Script> = schema::scripts()
            .into_iter()
            .filter(|s| s.version > found.unwrap_or(0))
            .collect();
        if pending.is_empty() {
            return Ok(report);
        }
        // Before anything is changed: every object the scripts would leave alone must be usable.
        check_shapes(&mut conn, &pending).await?;
        for script in &pending {
            for (index, batch) in script.batches.iter().enumerate() {
                let context = |e: StoreError| match e {
                    StoreError::Database { number, message } => StoreError::Database {
                        number,
                        message: format!("{}, batch {}: {message}", script.file, index + 1),
                    },
                    other => other,
                };
                // A dry run changes nothing, so a later guard still sees a name an earlier change
                // would create (ServicePrincipals: the view over dbo's table, else the table): a name
                // is created once.
                let created_before = batch.creates().is_some_and(|name| {
                    report.changes.iter().any(|(_, c)| {
                        schema::Batch::creates_in(c).is_some_and(|n| n.eq_ignore_ascii_case(&name))
                    })
                });
                if !created_before && guard_holds(&mut conn, batch).await.map_err(context)? {
                    report
                        .changes
                        .push((script.file.to_string(), batch.change.clone()));
                    if !dry_run {
                        conn.batch(&batch.text).await.map_err(context)?;
                    }
                }
            }
            if !dry_run {
                tracing::info!(store = %self.description, script = script.file, "metadata store schema script applied");
            }
        }
        Ok(report)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

// ------------------------------------------------------------------------------------------------ schema

/// The newest schema version recorded in `procfwk.SchemaVersion` (`None`: no such table, or no row).
async fn recorded_version(conn: &mut SqlConnection) -> Result<Option<i64>, StoreError> {
    let exists = conn
        .query(
            "SELECT CASE WHEN OBJECT_ID(N'procfwk.SchemaVersion') IS NULL THEN 0 ELSE 1 END AS Present",
            &[],
        )
        .await?;
    if !first_flag(&exists, "Present")? {
        return Ok(None);
    }
    let rows = conn
        .query(
            "SELECT MAX(Version) AS Version FROM procfwk.SchemaVersion",
            &[],
        )
        .await?;
    match rows.first().map(to_row).transpose()? {
        Some(row) => row.opt_i64("Version"),
        None => Ok(None),
    }
}

/// The first row's integer `column` is not 0.
fn first_flag(rows: &[tiberius::Row], column: &str) -> Result<bool, StoreError> {
    Ok(match rows.first().map(to_row).transpose()? {
        Some(row) => row.i64(column)? != 0,
        None => false,
    })
}

/// Whether a batch's guard holds now. A guard that names an object an earlier change of this run
/// creates (the SchemaVersion row of a database that has no SchemaVersion table yet) holds.
async fn guard_holds(conn: &mut SqlConnection, batch: &Batch) -> Result<bool, StoreError> {
    let Some(condition) = &batch.condition else {
        return Ok(true);
    };
    let sql = format!("SELECT CASE WHEN {condition} THEN 1 ELSE 0 END AS WouldRun");
    match conn.query(&sql, &[]).await {
        Ok(rows) => first_flag(&rows, "WouldRun"),
        Err(e) if e.is_missing_object() => Ok(true),
        Err(e) => Err(e),
    }
}

/// `sys.objects.type` of the object `name` resolves to (`None`: no object of that name).
async fn object_type(conn: &mut SqlConnection, name: &str) -> Result<Option<String>, StoreError> {
    let rows = conn
        .query(
            // (OBJECT_ID in a sub-select: evaluated once, not once per catalogue row, on any engine.)
            "SELECT type AS ObjectType FROM sys.objects WHERE object_id = (SELECT OBJECT_ID(@P1))",
            &[name.into()],
        )
        .await?;
    match rows.first().map(to_row).transpose()? {
        Some(row) => Ok(row.opt_text("ObjectType")?.map(|t| t.trim().to_string())),
        None => Ok(None),
    }
}

/// Every declared object that exists already (and so is left as it is) must be usable: a table, view
/// or synonym (of a table or view), a table with every column the scripts declare for it except those
/// they add. The first that is not is refused by name, before anything is changed.
async fn check_shapes(conn: &mut SqlConnection, pending: &[Script]) -> Result<(), StoreError> {
    let added: Vec<(String, String)> = pending.iter().flat_map(Script::added_columns).collect();
    for declared in pending.iter().flat_map(Script::declared) {
        let mut target = declared.name.clone();
        let mut kind = object_type(conn, &target).await?;
        if kind.is_none()
            && declared
                .name
                .eq_ignore_ascii_case("procfwk.ServicePrincipals")
        {
            // 001 makes procfwk.ServicePrincipals a view over procfwk's own dbo.ServicePrincipals.
            target = "dbo.ServicePrincipals".into();
            kind = object_type(conn, &target).await?;
        }
        let Some(mut code) = kind else { continue };
        let wanted = if declared.columns.is_some() {
            "a table"
        } else {
            "a view"
        };
        let mut described = format!("{target} ({})", schema::type_name(&code));
        if code == "SN" {
            let rows = conn
                .query(
                    "SELECT base_object_name AS BaseObject FROM sys.synonyms WHERE object_id = (SELECT OBJECT_ID(@P1))",
                    &[target.as_str().into()],
                )
                .await?;
            let base = match rows.first().map(to_row).transpose()? {
                Some(row) => row.opt_text("BaseObject")?,
                None => None,
            }
            .unwrap_or_default();
            code = object_type(conn, &base).await?.unwrap_or_default();
            described = format!(
                "{target} (a synonym of {base}, {})",
                if code.is_empty() {
                    "which does not exist"
                } else {
                    schema::type_name(&code)
                }
            );
            target = base;
        }
        if !matches!(code.as_str(), "U" | "V") {
            return Err(StoreError::UnusableObject {
                object: described,
                problem: format!(
                    "procfwk needs {wanted} (or a synonym of one) of this name; rename or drop that object"
                ),
            });
        }
        for column in declared.columns.iter().flatten() {
            if added.iter().any(|(t, c)| {
                t.eq_ignore_ascii_case(&declared.name) && c.eq_ignore_ascii_case(column)
            }) {
                continue;
            }
            let rows = conn
                .query(
                    "SELECT CASE WHEN COL_LENGTH(@P1, @P2) IS NULL THEN 0 ELSE 1 END AS Present",
                    &[target.as_str().into(), column.as_str().into()],
                )
                .await?;
            if !first_flag(&rows, "Present")? {
                return Err(StoreError::UnusableObject {
                    object: described,
                    problem: format!(
                        "it has no column {column}, which procfwk reads and db init does not add \
                         (procfwk master 1.8.4+ has it); add the column or upgrade procfwk's database first"
                    ),
                });
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------ transaction

struct SqlServerTx {
    /// `None` once committed or rolled back.
    conn: Option<PooledConnection<'static, SqlServerManager>>,
    /// The error that ended the transaction on the server (XACT_ABORT): later statements would run
    /// outside any transaction, so they are refused.
    aborted: Option<StoreError>,
}

impl SqlServerTx {
    fn live(&mut self) -> Result<&mut SqlConnection, StoreError> {
        if let Some(e) = &self.aborted {
            return Err(match e {
                StoreError::Database { number, message } => StoreError::Database {
                    number: *number,
                    message: format!(
                        "the transaction was rolled back by an earlier error: {message}"
                    ),
                },
                other => duplicate(other),
            });
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(StoreError::Connection(
                "the transaction is already finished".into(),
            )),
        }
    }

    fn note<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.aborted = Some(duplicate(e));
        }
        result
    }
}

/// Roll back whatever is open; a connection whose state is then unknown is not reused.
async fn roll_back(conn: &mut SqlConnection) -> Result<(), StoreError> {
    match conn.batch("ROLLBACK TRANSACTION").await {
        Ok(()) => Ok(()),
        // Nothing open: XACT_ABORT (or a lost connection) already rolled it back.
        Err(StoreError::Database {
            number: NO_TRANSACTION,
            ..
        }) => Ok(()),
        Err(e) => {
            conn.broken = true;
            Err(e)
        }
    }
}

#[async_trait::async_trait]
impl Tx for SqlServerTx {
    async fn query(
        &mut self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.live()?;
        let rows = conn.query(statement.sql, params).await;
        let rows = self.note(rows)?;
        rows.iter().map(to_row).collect()
    }

    async fn execute(
        &mut self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<u64, StoreError> {
        let conn = self.live()?;
        let changed = conn.execute(statement.sql, params).await;
        self.note(changed)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Err(StoreError::Connection(
                "the transaction is already finished".into(),
            ));
        };
        if let Some(e) = self.aborted.take() {
            let _ = roll_back(&mut conn).await;
            return Err(e);
        }
        match conn.batch("COMMIT TRANSACTION").await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The transaction may still be open: the connection goes, and the server rolls back.
                conn.broken = true;
                Err(e)
            }
        }
    }

    async fn set_lock_timeout(&mut self, limit: Duration) -> Result<(), StoreError> {
        // Every transaction starts with `SET LOCK_TIMEOUT -1` (wait for ever), so this lasts only until
        // the connection's next transaction.
        let ms = limit.as_millis().clamp(1, i32::MAX as u128);
        let conn = self.live()?;
        let set = conn.batch(&format!("SET LOCK_TIMEOUT {ms}")).await;
        self.note(set)
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), StoreError> {
        match self.conn.take() {
            Some(mut conn) => roll_back(&mut conn).await,
            None => Ok(()),
        }
    }
}

impl Drop for SqlServerTx {
    fn drop(&mut self) {
        // Dropped without commit or rollback (an early `?`, a panic, a cancelled future): the connection
        // may hold an open transaction, so the pool closes it instead of handing it out again; closing
        // the session makes the server roll back.
        if let Some(mut conn) = self.conn.take() {
            conn.broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_ascii_values_parse() {
        let parsed = super::parse_setting(
            "Server=tcp:db.example,1433;User ID=usér;Password=pässword€;Database=prøcfwk",
        );
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        if let Ok(p) = parsed {
            assert_eq!(
                p.password
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .as_deref(),
                Some("pässword€")
            );
            assert_eq!(p.database.as_deref(), Some("prøcfwk"));
        }
    }

    /// The parser is total: no input makes it panic (random strings over a connection-string-shaped
    /// alphabet with multi-byte characters; the seed is printed so a failure can be replayed).
    #[test]
    fn the_connection_string_parser_never_panics() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("PROCFWK_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().gen());
        println!("PROCFWK_FUZZ_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let alphabet: Vec<char> = "=;\"'{} aZ09:,.-_äß€😀\u{0}\t"
            .chars()
            .chain("Server=tcp:x,1;Authentication=ActiveDirectoryDefault;Encrypt=true;".chars())
            .collect();
        for _ in 0..20_000 {
            let len = rng.gen_range(0..48);
            let text: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let outcome = std::panic::catch_unwind(|| super::parse_setting(&text).is_ok());
            assert!(outcome.is_ok(), "panicked on {text:?} (seed {seed})");
        }
    }

    use super::*;

    fn parsed(s: &str) -> Setting {
        match parse_setting(s) {
            Ok(p) => p,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn strips_our_keys_and_defaults_to_tls() {
        let p = parsed(
            "Server=tcp:srv.database.windows.net,1433;Database=procfwk;Authentication=Active Directory Service Principal;\
             User ID=app;Password=\"se;cr\"\"et\";Tenant Id=contoso.onmicrosoft.com;Connect Timeout=20",
        );
        assert_eq!(p.auth, AuthKind::ServicePrincipal);
        assert_eq!(p.tls, TlsMode::Required);
        assert_eq!(p.user.as_deref(), Some("app"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("se;cr\"et"));
        assert_eq!(p.tenant.as_deref(), Some("contoso.onmicrosoft.com"));
        assert_eq!(p.database.as_deref(), Some("procfwk"));
        assert_eq!(p.connect_timeout, Duration::from_secs(20));
        assert_eq!(
            p.tiberius,
            "Server=tcp:srv.database.windows.net,1433;Database=procfwk"
        );
    }

    #[test]
    fn sql_login_user_and_password_are_decoded_here() {
        let p = parsed(
            "server=tcp:127.0.0.1,1433;user=sa;password={a;b};encrypt=DANGER_PLAINTEXT;app=x",
        );
        assert_eq!(p.auth, AuthKind::SqlPassword);
        assert_eq!(p.tls, TlsMode::Plaintext);
        assert_eq!(p.user.as_deref(), Some("sa"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("a;b"));
        assert_eq!(p.tiberius, "server=tcp:127.0.0.1,1433;app=x");
        let p = parsed("server=x;uid=sa;pwd='it''s'");
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("it's"));
    }

    #[test]
    fn authentication_spellings() {
        for (value, kind) in [
            ("ActiveDirectoryMsi", AuthKind::ManagedIdentity),
            ("Active Directory MSI", AuthKind::ManagedIdentity),
            (
                "active directory managed identity",
                AuthKind::ManagedIdentity,
            ),
            (
                "Active-Directory-Managed-Identity",
                AuthKind::ManagedIdentity,
            ),
        ] {
            assert_eq!(
                parsed(&format!("Server=x;Authentication={value}")).auth,
                kind
            );
        }
        assert!(matches!(
            parse_setting("Server=x;Authentication=Active Directory Interactive"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse_setting("Server=x;Integrated Security=SSPI"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse_setting("Server=x;Password=p"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse_setting("Server=x;Authentication=ActiveDirectoryServicePrincipal;User ID=a"),
            Err(StoreError::Config(_))
        ));
    }

    #[test]
    fn encrypt_values() {
        assert_eq!(
            parsed("Server=x;uid=a;Encrypt=false").tls,
            TlsMode::LoginOnly
        );
        assert_eq!(parsed("Server=x;uid=a;Encrypt=Yes").tls, TlsMode::Required);
        assert_eq!(
            parsed("Server=x;uid=a;encrypt=danger_plaintext").tls,
            TlsMode::Plaintext
        );
        assert!(parse_setting("Server=x;uid=a;Encrypt=maybe").is_err());
    }

    #[test]
    fn malformed_strings_do_not_echo_secrets() {
        for s in [
            "Server=x;uid=a;Password=\"unclosed-s3cret",
            "Server=x;uid=a;s3cret-without-key",
        ] {
            match parse_setting(s) {
                Err(StoreError::Config(m)) => assert!(!m.contains("s3cret"), "{m}"),
                _ => panic!("{s} should be refused"),
            }
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "localhost", "LOCALHOST", "::1", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "myserver.database.windows.net",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(split_addr("::1:1433"), ("::1".to_string(), 1433));
        assert_eq!(split_addr("srv:4200"), ("srv".to_string(), 4200));
    }

    #[test]
    fn scripts_split_on_go_lines() {
        let batches = script_batches("-- header\nCREATE TABLE a (x INT);\ngo\n\n  GO  \nSELECT 'GO';\nGO\n-- only a comment\nGO");
        assert_eq!(
            batches,
            vec![
                "-- header\nCREATE TABLE a (x INT);".to_string(),
                "SELECT 'GO';".to_string()
            ]
        );
        let schema = script_batches(SCHEMA_SCRIPTS[0].1);
        assert!(schema.len() > 20);
        assert!(schema
            .iter()
            .all(|b| !b.lines().any(|l| l.trim().eq_ignore_ascii_case("go"))));
    }

    #[test]
    fn every_deploy_script_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".sql"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let embedded: Vec<String> = SCHEMA_SCRIPTS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            embedded, files,
            "add new deploy/sql scripts to SCHEMA_SCRIPTS"
        );
    }

    #[test]
    fn pool_size_setting() {
        let with = |v: &str| SqlServerOptions::from_lookup(|_| Some(v.to_string()));
        assert_eq!(with("4").map(|o| o.pool_size).ok(), Some(4));
        assert_eq!(with(" ").map(|o| o.pool_size).ok(), Some(DEFAULT_POOL_SIZE));
        assert!(with("0").is_err());
        assert!(with("ten").is_err());
    }

    #[test]
    fn column_values() {
        let d = NaiveDate::from_ymd_opt(2024, 5, 6).and_then(|d| d.and_hms_milli_opt(7, 8, 9, 123));
        let Some(d) = d else { panic!("date") };
        assert_eq!(
            to_value("a", &ColumnData::I32(Some(5))).ok(),
            Some(SqlValue::Int(5))
        );
        assert_eq!(
            to_value("a", &ColumnData::U8(None)).ok(),
            Some(SqlValue::Null)
        );
        assert_eq!(
            to_value("a", &ColumnData::Bit(Some(true))).ok(),
            Some(SqlValue::Bool(true))
        );
        assert_eq!(
            to_value("a", &ColumnData::Binary(Some(vec![0xde, 0xad].into()))).ok(),
            Some(SqlValue::Text("dead".into()))
        );
        let dt2 = tiberius::IntoSql::into_sql(d);
        assert_eq!(to_value("a", &dt2).ok(), Some(SqlValue::DateTime(d)));
        let offset =
            chrono::FixedOffset::east_opt(2 * 3600).map(|o| d.and_local_timezone(o).single());
        let Some(Some(local)) = offset else {
            panic!("offset")
        };
        let dto = tiberius::IntoSql::into_sql(local);
        let utc = d - chrono::Duration::hours(2);
        assert_eq!(to_value("a", &dto).ok(), Some(SqlValue::DateTime(utc)));
    }
}

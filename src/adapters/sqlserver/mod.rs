//! The metadata store on Azure SQL / SQL Server, through `tiberius` (TDS 7.3+, rustls): the backend
//! ([`SqlServerBackend`]) and its parts — the login ([`auth`]), the pool (`pool`, over the round trips of
//! `connection`), transactions (`transaction`), values (`values`), errors (`errors`) and `db init`
//! (`schema`). The wiring hands it the parsed settings ([`SqlServerOptions`]) and an Entra token source
//! ([`EntraTokenSource`]); it reads no settings and builds no HTTP client of its own.
//!
//! # Connection string
//! `PROCFWK_METADATA_DB` holds an ADO.NET-style string (taken apart by
//! [`crate::store::connection_string`]), e.g.
//! `Server=tcp:myserver.database.windows.net,1433;Database=procfwk;User ID=u;Password=p;Encrypt=true`.
//! Keys (case-insensitive) understood here, on top of what `tiberius::Config::from_ado_string` reads
//! (`Server`/`Data Source`, `Database`/`Initial Catalog`, `User ID`/`UID`/`User`/`Username`,
//! `Password`/`PWD`, `TrustServerCertificate`, `TrustServerCertificateCA`, `Application Name`,
//! `ApplicationIntent`):
//! - `Authentication`: `Sql Password` (the default: `User ID` + `Password`), `Active Directory Managed
//!   Identity` / `Active Directory MSI` (a token from the Function App's system-assigned managed identity),
//!   or `Active Directory Service Principal` (`User ID` = client id, `Password` = client secret, tenant from
//!   `Tenant Id` or the `AZURE_TENANT_ID` environment variable, [`SqlServerOptions::default_tenant`]). Spaces, hyphens and case are ignored.
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
//! keeping its number, so [`crate::store::Store::run`] retries the whole transition when it is transient.
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
//! [`Backend::upgrade_schema`] runs the scripts of `deploy/sql` ([`SCHEMA_SCRIPTS`](crate::store::schema::SCHEMA_SCRIPTS), in
//! file-name order),
//! split into batches at lines that hold only `GO`, each batch on its own (no enclosing transaction; the
//! scripts are idempotent).

pub mod auth;
mod connection;
mod errors;
mod pool;
mod schema;
mod transaction;
mod values;

pub use auth::{EntraTokenSource, SQL_TOKEN_SCOPE};

use crate::secret::Secret;
use crate::store::connection_string::{self, AuthKind, ConnectionString, TlsMode};
use crate::store::schema::SchemaReport;
use crate::store::{Backend, StoreError, Tx};
use bb8::{Pool, PooledConnection, RunError};
use pool::{is_loopback, split_addr, ConnectFailures, SqlServerManager};
use std::sync::Arc;
use std::time::Duration;
use tiberius::{AuthMethod, Config, EncryptionLevel};
use transaction::SqlServerTx;

/// The setting that sizes the pool.
pub const POOL_SIZE_SETTING: &str = "PROCFWK_SQL_POOL_SIZE";
/// The setting for the statement timeout.
pub const STATEMENT_TIMEOUT_SETTING: &str = "PROCFWK_SQL_STATEMENT_TIMEOUT_SECS";
/// The setting for a service principal's tenant when the connection string names none.
pub const DEFAULT_TENANT_SETTING: &str = "AZURE_TENANT_ID";

const DEFAULT_POOL_SIZE: u32 = 10;
const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

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
    /// The tenant of a service principal login whose connection string names none (`AZURE_TENANT_ID`).
    pub default_tenant: Option<String>,
}

impl Default for SqlServerOptions {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            default_tenant: None,
        }
    }
}

impl SqlServerOptions {
    /// Defaults, with `PROCFWK_SQL_POOL_SIZE`, `PROCFWK_SQL_STATEMENT_TIMEOUT_SECS` and `AZURE_TENANT_ID`
    /// from the environment (the wiring calls this; the backend reads no environment itself).
    pub fn from_env() -> Result<Self, StoreError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults, with the settings of [`SqlServerOptions::from_env`] read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StoreError> {
        let mut options = Self {
            default_tenant: lookup(DEFAULT_TENANT_SETTING).filter(|t| !t.trim().is_empty()),
            ..Self::default()
        };
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
    /// with `Authentication=Active Directory Managed Identity` (a token of `tokens`' managed identity) or
    /// `Authentication=Active Directory Service Principal` with `User ID=<clientId>;Password=<secret>`
    /// and `Tenant Id=` (or [`SqlServerOptions::default_tenant`]). An Entra login needs `tokens`; a SQL
    /// login does not. No connection is opened yet.
    pub async fn connect_with(
        setting: &str,
        tokens: Option<Arc<dyn EntraTokenSource>>,
        options: SqlServerOptions,
    ) -> Result<Self, StoreError> {
        let parsed = connection_string::parse(setting)?;
        let config = driver_config(&parsed)?;
        let (host, port) = split_addr(&config.get_addr());
        if parsed.tls == TlsMode::Plaintext && !is_loopback(&host) {
            return Err(StoreError::Config(format!(
                "Encrypt=DANGER_PLAINTEXT is only allowed for a loopback test server, not for {host}"
            )));
        }
        let credential = auth::login_credential(
            &parsed,
            tokens.as_deref(),
            options.default_tenant.as_deref(),
        )
        .await?;
        let database = parsed
            .database
            .clone()
            .unwrap_or_else(|| "(default database)".into());
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
            target: format!("{host},{port}/{database}"),
            failures: Arc::clone(&failures),
        };
        let pool = pool::build(manager, &options);
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

/// tiberius' configuration for a parsed connection string: everything but the Entra token (its `Config`
/// holds a SQL password; it is never logged).
fn driver_config(parsed: &ConnectionString) -> Result<Config, StoreError> {
    let mut config = Config::from_ado_string(&parsed.driver_string).map_err(|e| {
        StoreError::Config(format!(
            "the SQL Server connection string is not valid: {e}"
        ))
    })?;
    config.encryption(encryption_level(parsed.tls));
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
    Ok(config)
}

/// tiberius' encryption level for a TLS mode.
fn encryption_level(tls: TlsMode) -> EncryptionLevel {
    match tls {
        TlsMode::Required => EncryptionLevel::Required,
        TlsMode::LoginOnly => EncryptionLevel::Off,
        TlsMode::Plaintext => EncryptionLevel::NotSupported,
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
            match conn.batch(transaction::BEGIN).await {
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
        schema::upgrade(&mut conn, dry_run, &self.description).await
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pool_size_setting() {
        let with = |v: &str| SqlServerOptions::from_lookup(|_| Some(v.to_string()));
        assert_eq!(with("4").map(|o| o.pool_size).ok(), Some(4));
        assert_eq!(with(" ").map(|o| o.pool_size).ok(), Some(DEFAULT_POOL_SIZE));
        assert!(with("0").is_err());
        assert!(with("ten").is_err());
    }
}

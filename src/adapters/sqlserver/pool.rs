//! The connection pool: bb8 over [`SqlConnection`]s, opened lazily. Opening a connection fetches a
//! fresh Entra token (when the login needs one), connects with TCP keepalive, follows an Azure SQL
//! gateway redirect and retries transient login errors; a failure to open one is handed to the callers
//! waiting for a connection at once ([`ConnectFailures`]) instead of after the checkout timeout.

use super::auth::{token_error, SQL_TOKEN_SCOPE};
use super::connection::SqlConnection;
use super::errors::{duplicate, map_error};
use super::SqlServerOptions;
use crate::adapters::upstream::Service;
use crate::store::{StoreError, TRANSIENT_ERRORS};
use azure_core::auth::TokenCredential;
use bb8::{ManageConnection, Pool};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiberius::{AuthMethod, Client, Config};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::compat::TokioAsyncWriteCompatExt;

/// TCP keepalive on every connection: first probe after 30 s idle, then every 10 s, so the kernel
/// notices a peer that is gone and Azure's NAT keeps the flow.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Attempts at opening one connection when the login fails with a transient error.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_BACKOFF: Duration = Duration::from_millis(150);
/// Gateway redirects followed while opening one connection.
const MAX_REDIRECTS: u32 = 2;
/// How often the reaper closes idle connections, at most.
const REAPER_RATE: Duration = Duration::from_secs(15);
/// No connection lives longer than this.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The pool over `manager`, sized and timed by `options`; no connection is opened yet.
pub(super) fn build(
    manager: SqlServerManager,
    options: &SqlServerOptions,
) -> Pool<SqlServerManager> {
    Pool::builder()
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
        .reaper_rate(REAPER_RATE.min(options.idle_timeout))
        .max_lifetime(Some(MAX_LIFETIME))
        .error_sink(Box::new(LogSink))
        .build_unchecked(manager)
}

/// The most recent failure to open a connection, so that callers waiting in the pool learn why instead of
/// waiting for the checkout timeout (bb8 opens connections in background tasks).
#[derive(Default)]
pub(super) struct ConnectFailures {
    generation: AtomicU64,
    last: Mutex<Option<StoreError>>,
    pub(super) notify: Notify,
}

impl ConnectFailures {
    fn record(&self, e: &StoreError) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(duplicate(e));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The last failure, if one happened after generation `seen`.
    pub(super) fn since(&self, seen: u64) -> Option<StoreError> {
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

/// Opens connections for the pool.
pub(super) struct SqlServerManager {
    /// Everything but the Entra token (tiberius' `Config` holds a SQL password; it is never logged).
    pub(super) config: Config,
    pub(super) credential: Option<(Service, Arc<dyn TokenCredential>)>,
    pub(super) connect_timeout: Duration,
    pub(super) round_trip_limit: Duration,
    pub(super) target: String,
    pub(super) failures: Arc<ConnectFailures>,
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

/// `host` and `port` out of tiberius' `host:port`.
pub(super) fn split_addr(addr: &str) -> (String, u16) {
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

pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

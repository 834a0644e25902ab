//! The listener, the shared server state and the public handle.
//!
//! [`TdsTestServer::start`] prepares the SQLite file (WAL mode, `init_sql`),
//! binds `127.0.0.1:0` and spawns an accept loop on the current tokio
//! runtime. Each accepted socket becomes a `Session` task; the
//! [`ServerHandle`] observes and steers them (recorded statements and logins,
//! fault injection, killing connections, shutdown).

use crate::error::ServerError;
use crate::exec::open_connection;
use crate::pg::PgTarget;
use crate::session::Session;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where statements run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, on [`ServerOptions::database_path`]: one writer at a time.
    #[default]
    Sqlite,
    /// PostgreSQL at `READ COMMITTED`: Azure SQL's default concurrency
    /// semantics (see [`crate::pg`]).
    Postgres(PgTarget),
}

impl Backend {
    /// A fresh database on the test PostgreSQL server ([`crate::pg::test_postgres`]).
    pub fn postgres_for_tests() -> Result<Backend, String> {
        Ok(Backend::Postgres(PgTarget {
            conninfo: crate::pg::test_postgres()?,
            fresh_database: true,
        }))
    }
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Where statements run (default: SQLite on `database_path`).
    pub backend: Backend,
    /// The SQLite database file (use a fresh temporary file per test);
    /// unused by the PostgreSQL backend.
    pub database_path: PathBuf,
    /// The address to listen on (default `127.0.0.1:0`).
    pub listen: Option<SocketAddr>,
    /// Accepted SQL logins `(user, password)`; empty accepts any login.
    /// User names compare case-insensitively, passwords exactly.
    pub users: Vec<(String, String)>,
    /// Accepted Entra access tokens (FEDAUTH); empty accepts any token.
    pub accept_fedauth_tokens: Vec<String>,
    /// Statements run once at start, e.g. the schema: SQLite dialect (not
    /// translated) on SQLite, T-SQL batches (translated like client
    /// requests) on PostgreSQL.
    pub init_sql: Vec<String>,
}

/// A successful login as recorded by the server. Never holds a password or
/// token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The SQL login name, or `"fedauth"` for token authentication.
    pub user: String,
    /// The database named in LOGIN7 (`master` when none).
    pub database: String,
}

/// Decision for the next request, from the fault-injection controls.
pub(crate) enum Gate {
    /// Run it.
    Proceed,
    /// Answer with this error number without running it.
    Fail(u32),
    /// Close the socket without answering.
    Drop,
}

#[derive(Debug, Default)]
struct Control {
    fail_remaining: usize,
    fail_number: u32,
    drop_after: Option<usize>,
}

/// How sessions reach their backend.
pub(crate) enum BackendState {
    Sqlite(PathBuf),
    Postgres(Box<postgres::Config>),
}

/// State shared by the accept loop, the sessions and the handle.
pub(crate) struct Shared {
    pub(crate) backend: BackendState,
    users: Vec<(String, String)>,
    tokens: Vec<String>,
    statements: Mutex<Vec<String>>,
    logins: Mutex<Vec<LoginRecord>>,
    control: Mutex<Control>,
    sessions: Mutex<HashMap<u64, JoinHandle<()>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Locks a mutex, recovering the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn accepts_user(&self, user: &str, password: &str) -> bool {
        self.users.is_empty()
            || self
                .users
                .iter()
                .any(|(u, p)| u.eq_ignore_ascii_case(user) && p == password)
    }

    pub(crate) fn accepts_token(&self, token: &str) -> bool {
        self.tokens.is_empty() || self.tokens.iter().any(|t| t == token)
    }

    pub(crate) fn record_statement(&self, text: &str) {
        lock(&self.statements).push(text.to_string());
    }

    pub(crate) fn record_login(&self, record: LoginRecord) {
        lock(&self.logins).push(record);
    }

    pub(crate) fn add_worker(&self, handle: std::thread::JoinHandle<()>) {
        let mut workers = lock(&self.workers);
        workers.retain(|h| !h.is_finished());
        workers.push(handle);
    }

    /// Consumes one unit of the fault-injection controls for a request.
    pub(crate) fn gate(&self) -> Gate {
        let mut c = lock(&self.control);
        if c.drop_after == Some(0) {
            c.drop_after = None;
            return Gate::Drop;
        }
        if c.fail_remaining > 0 {
            c.fail_remaining -= 1;
            return Gate::Fail(c.fail_number);
        }
        if let Some(n) = c.drop_after.as_mut() {
            *n -= 1;
        }
        Gate::Proceed
    }

    fn abort_sessions(&self) -> Vec<JoinHandle<()>> {
        let handles: Vec<JoinHandle<()>> = lock(&self.sessions).drain().map(|(_, h)| h).collect();
        for h in &handles {
            h.abort();
        }
        handles
    }
}

/// Entry point.
#[derive(Debug, Clone, Copy)]
pub struct TdsTestServer;

impl TdsTestServer {
    /// Prepares the database, binds `127.0.0.1:0` and starts accepting TDS
    /// connections on the current tokio runtime.
    pub async fn start(opts: ServerOptions) -> Result<ServerHandle, ServerError> {
        let path = opts.database_path.clone();
        let init = opts.init_sql.clone();
        let backend = opts.backend.clone();
        let prepared = tokio::task::spawn_blocking(move || match backend {
            Backend::Sqlite => {
                prepare_database(&path, &init).map(|()| (BackendState::Sqlite(path), None))
            }
            Backend::Postgres(target) => crate::pg::prepare(&target, &init).map(|db| {
                (
                    BackendState::Postgres(Box::new(db.config)),
                    db.drop_on_shutdown,
                )
            }),
        })
        .await;
        let (backend, drop_on_shutdown) = match prepared {
            Ok(result) => result?,
            Err(join) => {
                return Err(ServerError::Bind(std::io::Error::other(format!(
                    "database preparation task failed: {join}"
                ))))
            }
        };
        let listen = opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(listen).await.map_err(ServerError::Bind)?;
        let addr = listener.local_addr().map_err(ServerError::Bind)?;
        let shared = Arc::new(Shared {
            backend,
            users: opts.users,
            tokens: opts.accept_fedauth_tokens,
            statements: Mutex::new(Vec::new()),
            logins: Mutex::new(Vec::new()),
            control: Mutex::new(Control::default()),
            sessions: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::info!(%addr, "tds-test-server listening");
        Ok(ServerHandle {
            addr,
            shared,
            accept: Some(accept),
            drop_on_shutdown,
        })
    }
}

fn prepare_database(path: &std::path::Path, init_sql: &[String]) -> Result<(), ServerError> {
    let db_err = |source| ServerError::Database {
        path: path.display().to_string(),
        source,
    };
    let conn = open_connection(path).map_err(db_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    for (index, sql) in init_sql.iter().enumerate() {
        conn.execute_batch(sql)
            .map_err(|source| ServerError::InitSql { index, source })?;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let next_id = AtomicU64::new(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        // SPIDs start at 51 like SQL Server user sessions.
        let spid = (50 + id % 30_000) as u16;
        tracing::debug!(%peer, spid, "TDS connection accepted");
        let session_shared = Arc::clone(&shared);
        let mut sessions = lock(&shared.sessions);
        sessions.retain(|_, h| !h.is_finished());
        let handle = tokio::spawn(async move {
            Session::new(stream, Arc::clone(&session_shared), spid)
                .run()
                .await;
            lock(&session_shared.sessions).remove(&id);
        });
        sessions.insert(id, handle);
    }
}

/// Handle to a running server. Dropping it stops the server (without
/// waiting); prefer [`ServerHandle::shutdown`].
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// A PostgreSQL database made for this server.
    drop_on_shutdown: Option<(postgres::Config, String)>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ServerHandle {
    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// An ADO connection string for tiberius' `Config::from_ado_string`
    /// (plain TCP: `encrypt=DANGER_PLAINTEXT`).
    pub fn connection_string(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "server=tcp:127.0.0.1,{};user={user};password={password};database={database};encrypt=DANGER_PLAINTEXT;TrustServerCertificate=true",
            self.port()
        )
    }

    /// Every T-SQL text received (a whole SQL batch, or the `@stmt` of an
    /// `sp_executesql` call), in arrival order, including requests that were
    /// answered by `fail_next` or dropped by `drop_connection_after`.
    pub fn statements(&self) -> Vec<String> {
        lock(&self.shared.statements).clone()
    }

    /// The PostgreSQL connection string of the served database (PostgreSQL
    /// backend only), e.g. to inspect it directly in a test.
    pub fn postgres_conninfo(&self) -> Option<String> {
        match &self.shared.backend {
            BackendState::Postgres(config) => {
                let mut parts = Vec::new();
                if let Some(postgres::config::Host::Tcp(h)) = config.get_hosts().first() {
                    parts.push(format!("host={h}"));
                }
                if let Some(p) = config.get_ports().first() {
                    parts.push(format!("port={p}"));
                }
                if let Some(u) = config.get_user() {
                    parts.push(format!("user={u}"));
                }
                if let Some(d) = config.get_dbname() {
                    parts.push(format!("dbname={d}"));
                }
                Some(parts.join(" "))
            }
            BackendState::Sqlite(_) => None,
        }
    }

    /// Forgets the recorded statements.
    pub fn clear_statements(&self) {
        lock(&self.shared.statements).clear();
    }

    /// Abruptly closes every live client connection (as if the network
    /// dropped mid-conversation). Their open transactions roll back.
    pub fn kill_connections(&self) {
        let killed = self.shared.abort_sessions();
        tracing::info!(count = killed.len(), "kill_connections");
    }

    /// The next `count` requests (batches or RPC calls, server-wide) are
    /// answered with an ERROR token of `error_number` without executing.
    pub fn fail_next(&self, count: usize, error_number: u32) {
        let mut c = lock(&self.shared.control);
        c.fail_remaining = count;
        c.fail_number = error_number;
    }

    /// After `statements` more requests have executed (server-wide), the
    /// connection that sends the next one is closed before it is answered
    /// (and it is not executed). One-shot.
    pub fn drop_connection_after(&self, statements: usize) {
        lock(&self.shared.control).drop_after = Some(statements);
    }

    /// Successful logins, in order (user name or `"fedauth"`, database).
    pub fn logins(&self) -> Vec<LoginRecord> {
        lock(&self.shared.logins).clone()
    }

    /// Stops accepting, closes every connection and waits for their backend
    /// connections to close; a PostgreSQL database made for this server is
    /// dropped.
    pub async fn shutdown(mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        for handle in self.shared.abort_sessions() {
            let _ = handle.await;
        }
        let workers: Vec<_> = lock(&self.shared.workers).drain(..).collect();
        let drop_db = self.drop_on_shutdown.take();
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
            if let Some((admin, name)) = drop_db {
                crate::pg::drop_database(&admin, &name);
            }
        })
        .await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.shared.abort_sessions();
    }
}

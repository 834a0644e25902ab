//! The per-connection state machine: PRELOGIN → LOGIN7 → requests.
//!
//! The async session task owns the socket. After a successful login it
//! starts a dedicated worker thread that owns this connection's SQLite
//! [`Executor`]; requests go to it over a channel and the encoded response
//! comes back on a oneshot. When the session ends for any reason (client
//! closed, protocol error, `kill_connections`, task aborted) the channel
//! closes, the worker returns and drops its SQLite connection, which rolls
//! back any open transaction.
//!
//! Fault injection happens here, before a request reaches SQLite:
//! `drop_connection_after` closes the socket without answering and
//! `fail_next` answers with an injected ERROR token.

use crate::error::{ProtocolError, SqlError};
use crate::exec::{Executor, SERVER_NAME};
use crate::login;
use crate::packet::{frame_message, packet_type, read_message, Message};
use crate::pg::exec::PgExecutor;
use crate::prelogin;
use crate::rpc::{self, ExecuteSql};
use crate::server::{BackendState, Gate, LoginRecord, Shared};
use crate::tokens::{cur_cmd, done_status, DoneKind, TokenWriter};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Default packet size until LOGIN7 negotiates one.
const DEFAULT_PACKET_SIZE: usize = 4096;
/// TDS 7.4, the version tiberius requests.
const TDS_74: u32 = 0x7400_0004;

/// Work for the SQLite worker thread.
enum Job {
    Batch {
        text: String,
        reset: bool,
    },
    Rpc {
        calls: Vec<Result<ExecuteSql, SqlError>>,
        reset: bool,
    },
}

struct Envelope {
    job: Job,
    reply: oneshot::Sender<Vec<u8>>,
}

/// A connection's executor, on either backend.
enum AnyExecutor {
    Sqlite(Executor),
    Postgres(Box<PgExecutor>),
}

impl AnyExecutor {
    fn run(&mut self, job: Job) -> Vec<u8> {
        match (self, job) {
            (AnyExecutor::Sqlite(e), Job::Batch { text, reset }) => e.run_batch(&text, reset),
            (AnyExecutor::Sqlite(e), Job::Rpc { calls, reset }) => e.run_rpc(&calls, reset),
            (AnyExecutor::Postgres(e), Job::Batch { text, reset }) => e.run_batch(&text, reset),
            (AnyExecutor::Postgres(e), Job::Rpc { calls, reset }) => e.run_rpc(&calls, reset),
        }
    }
}

/// Handle to a connection's backend worker thread.
struct Worker {
    tx: mpsc::Sender<Envelope>,
}

impl Worker {
    /// Starts the worker thread and waits until its SQLite connection is open.
    async fn start(shared: &Arc<Shared>, spid: u16, database: &str) -> Result<Worker, String> {
        let (tx, rx) = mpsc::channel::<Envelope>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let backend = match &shared.backend {
            BackendState::Sqlite(path) => BackendState::Sqlite(path.clone()),
            BackendState::Postgres(config) => BackendState::Postgres(config.clone()),
        };
        let db = database.to_string();
        let handle = std::thread::Builder::new()
            .name(format!("tds-worker-{spid}"))
            .spawn(move || {
                let opened = match backend {
                    BackendState::Sqlite(path) => Executor::open(&path, spid, &db)
                        .map(AnyExecutor::Sqlite)
                        .map_err(|e| e.to_string()),
                    BackendState::Postgres(config) => PgExecutor::open(&config, spid, &db)
                        .map(|e| AnyExecutor::Postgres(Box::new(e))),
                };
                let mut exec = match opened {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(env) = rx.recv() {
                    let bytes = exec.run(env.job);
                    let _ = env.reply.send(bytes);
                }
                // `exec` (and its SQLite connection) is dropped here: an open
                // transaction is rolled back.
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        shared.add_worker(handle);
        match ready_rx.await {
            Ok(Ok(())) => Ok(Worker { tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("worker thread exited during start".into()),
        }
    }

    async fn run(&self, job: Job) -> Result<Vec<u8>, ProtocolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Envelope { job, reply })
            .map_err(|_| ProtocolError::Unexpected("SQLite worker is gone".into()))?;
        rx.await
            .map_err(|_| ProtocolError::Unexpected("SQLite worker dropped the request".into()))
    }
}

/// One TDS connection.
pub(crate) struct Session {
    stream: TcpStream,
    shared: Arc<Shared>,
    spid: u16,
    packet_size: usize,
    database: String,
}

impl Session {
    pub(crate) fn new(stream: TcpStream, shared: Arc<Shared>, spid: u16) -> Self {
        Session {
            stream,
            shared,
            spid,
            packet_size: DEFAULT_PACKET_SIZE,
            database: String::new(),
        }
    }

    /// Runs the connection to completion; errors are logged, never panics.
    pub(crate) async fn run(mut self) {
        let spid = self.spid;
        match self.serve().await {
            Ok(()) => tracing::debug!(spid, "TDS connection closed"),
            Err(e) => tracing::warn!(spid, error = %e, "TDS connection closed after an error"),
        }
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let bytes = frame_message(
            packet_type::TABULAR_RESULT,
            payload,
            self.packet_size,
            self.spid,
        );
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn read_expected(
        &mut self,
        ty: u8,
        what: &str,
    ) -> Result<Option<Message>, ProtocolError> {
        match read_message(&mut self.stream).await? {
            None => Ok(None),
            Some(m) if m.ty == ty => Ok(Some(m)),
            Some(m) => Err(ProtocolError::Unexpected(format!(
                "expected {what}, got packet type {:#04x} (is the client using encrypt=DANGER_PLAINTEXT?)",
                m.ty
            ))),
        }
    }

    async fn serve(&mut self) -> Result<(), ProtocolError> {
        let _ = self.stream.set_nodelay(true);
        let Some(msg) = self
            .read_expected(packet_type::PRELOGIN, "PRELOGIN")
            .await?
        else {
            return Ok(());
        };
        let pre = prelogin::parse(&msg.payload)?;
        self.send(&prelogin::response(&pre)).await?;

        let Some(msg) = self.read_expected(packet_type::LOGIN7, "LOGIN7").await? else {
            return Ok(());
        };
        let login = login::parse(&msg.payload)?;
        tracing::debug!(spid = self.spid, ?login, "LOGIN7");
        let Some(worker) = self.login(&login).await? else {
            return Ok(());
        };

        while let Some(msg) = read_message(&mut self.stream).await? {
            let reset = msg.reset_connection();
            let (job, rpc) = match msg.ty {
                packet_type::SQL_BATCH => {
                    let text = rpc::batch_text(rpc::strip_all_headers(&msg.payload)?);
                    self.shared.record_statement(&text);
                    (Job::Batch { text, reset }, false)
                }
                packet_type::RPC => {
                    let body = rpc::strip_all_headers(&msg.payload)?;
                    let calls: Vec<Result<ExecuteSql, SqlError>> = match rpc::parse_rpc(body) {
                        Ok(calls) => calls.into_iter().map(rpc::as_execute_sql).collect(),
                        Err(e) => vec![Err(e)],
                    };
                    for call in calls.iter().flatten() {
                        self.shared.record_statement(&call.stmt);
                    }
                    (Job::Rpc { calls, reset }, true)
                }
                packet_type::ATTENTION => {
                    let mut w = TokenWriter::new();
                    w.done(DoneKind::Done, done_status::ATTN, cur_cmd::OTHER, 0);
                    self.send(&w.into_bytes()).await?;
                    continue;
                }
                other => {
                    return Err(ProtocolError::Unexpected(format!(
                        "packet type {other:#04x} after login"
                    )))
                }
            };
            match self.shared.gate() {
                Gate::Drop => {
                    tracing::info!(
                        spid = self.spid,
                        "drop_connection_after: closing the socket"
                    );
                    return Ok(());
                }
                Gate::Fail(number) => {
                    let bytes = injected_failure(number, &self.database, rpc);
                    self.send(&bytes).await?;
                }
                Gate::Proceed => {
                    let bytes = worker.run(job).await?;
                    self.send(&bytes).await?;
                }
            }
        }
        Ok(())
    }

    /// Authenticates; on success answers LOGINACK and returns the worker.
    async fn login(&mut self, login: &login::Login7) -> Result<Option<Worker>, ProtocolError> {
        let mut w = TokenWriter::new();
        let (ok, user) = match &login.fedauth {
            Some(fa) => (self.shared.accepts_token(&fa.token), "fedauth".to_string()),
            None => (
                self.shared.accepts_user(&login.user, &login.password),
                login.user.clone(),
            ),
        };
        if !ok {
            let shown = if login.fedauth.is_some() {
                "<token-identified principal>"
            } else {
                login.user.as_str()
            };
            let err = SqlError {
                number: 18456,
                state: 1,
                class: 14,
                message: format!("Login failed for user '{shown}'."),
            };
            w.error(&err, SERVER_NAME, 1);
            w.done(DoneKind::Done, done_status::ERROR, cur_cmd::OTHER, 0);
            self.send(&w.into_bytes()).await?;
            return Ok(None);
        }
        self.database = if login.database.is_empty() {
            "master".to_string()
        } else {
            login.database.clone()
        };
        let worker = match Worker::start(&self.shared, self.spid, &self.database).await {
            Ok(worker) => worker,
            Err(e) => {
                let err = SqlError {
                    number: 4060,
                    state: 1,
                    class: 11,
                    message: format!(
                        "Cannot open database \"{}\" requested by the login. The login failed. ({e})",
                        self.database
                    ),
                };
                w.error(&err, SERVER_NAME, 1);
                w.done(DoneKind::Done, done_status::ERROR, cur_cmd::OTHER, 0);
                self.send(&w.into_bytes()).await?;
                return Ok(None);
            }
        };
        self.shared.record_login(LoginRecord {
            user,
            database: self.database.clone(),
        });
        let requested = match login.packet_size {
            0 => DEFAULT_PACKET_SIZE,
            n => n as usize,
        };
        let packet_size = requested.clamp(
            crate::packet::MIN_PACKET_SIZE,
            crate::packet::MAX_PACKET_SIZE,
        );
        let tds_version = match login.tds_version {
            v @ (0x7300_0A03 | 0x730B_0003 | TDS_74) => v,
            _ => TDS_74,
        };
        w.env_database(&self.database, "master");
        w.info(
            5701,
            &format!("Changed database context to '{}'.", self.database),
            SERVER_NAME,
        );
        w.env_collation();
        w.login_ack(tds_version, "Microsoft SQL Server");
        if login.fedauth.is_some() {
            w.feature_ext_ack_fedauth();
        }
        w.env_packet_size(packet_size as u32, DEFAULT_PACKET_SIZE as u32);
        w.done(DoneKind::Done, 0, cur_cmd::OTHER, 0);
        self.send(&w.into_bytes()).await?;
        self.packet_size = packet_size;
        Ok(Some(worker))
    }
}

/// The response for a `fail_next` injected error.
fn injected_failure(number: u32, database: &str, rpc: bool) -> Vec<u8> {
    let message = match number {
        40613 => format!(
            "Database '{database}' on server '{SERVER_NAME}' is not currently available. Please retry the connection later. If the problem persists, contact customer support, and provide them the session tracing ID of '{}'.",
            uuid::Uuid::new_v4()
        ),
        40197 => "The service has encountered an error processing your request. Please try again. Error code 4815.".to_string(),
        40501 => "The service is currently busy. Retry the request after 10 seconds.".to_string(),
        49918..=49920 => "Cannot process request. Not enough resources to process request.".to_string(),
        10928 | 10929 => "Resource ID : 1. The request limit for the database has been reached.".to_string(),
        1205 => "Transaction was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.".to_string(),
        4060 => format!("Cannot open database \"{database}\" requested by the login. The login failed."),
        n => format!("Injected failure (error {n})."),
    };
    let mut w = TokenWriter::new();
    w.error(&SqlError::new(number, message), SERVER_NAME, 1);
    if rpc {
        w.done(DoneKind::DoneProc, done_status::ERROR, cur_cmd::OTHER, 0);
    } else {
        w.done(DoneKind::Done, done_status::ERROR, cur_cmd::OTHER, 0);
    }
    w.into_bytes()
}

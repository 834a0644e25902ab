//! The metadata store: procfwk's tables (stages, workers, parameters, current execution, logs, batches,
//! VM leases) behind one small interface with two implementations — Azure SQL through tiberius, and an
//! embedded SQLite file — that run the *same* statements ([`statements`]).
//!
//! Every lifecycle transition runs as one [`Transition`] inside one transaction: it commits whole or not at
//! all, and a transition interrupted by a transient failure (Azure SQL 40613, a dropped connection, ...) is
//! rolled back and run again from the start. Transitions are written so that running one twice (an ADF
//! activity retry, or a commit whose acknowledgement was lost) changes nothing the second time.

pub mod sqlite;
pub mod sqlserver;
pub mod statements;
mod value;

pub use statements::Statement;
pub use value::{Row, SqlValue};

use std::sync::Arc;
use std::time::Duration;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error (number as SQL Server numbers them).
    #[error("database error {number}: {message}")]
    Database { number: u32, message: String },
    /// The connection failed or was lost.
    #[error("database connection failed: {0}")]
    Connection(String),
    /// A value in a row is missing or has an unexpected type.
    #[error("unexpected data in column {column}: {problem}")]
    Data { column: String, problem: String },
    /// The connection string or setting is unusable.
    #[error("invalid metadata store setting: {0}")]
    Config(String),
}

/// Azure SQL / SQL Server error numbers that mean "try again": the database is moving, throttled or
/// briefly unavailable. Deadlock victims (1205) are retried too.
pub const TRANSIENT_ERRORS: &[u32] = &[
    4060, 40197, 40501, 40613, 49918, 49919, 49920, 10928, 10929, 1205, 233, 64,
];

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database { number, .. } => TRANSIENT_ERRORS.contains(number),
            Self::Connection(_) => true,
            _ => false,
        }
    }

    /// A primary-key or unique-index violation (SQL Server 2627 / 2601): two callers inserted the same
    /// row at once; running the transition again sees the other's row.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Database {
                number: 2627 | 2601,
                ..
            }
        )
    }
}

/// One open transaction.
#[async_trait::async_trait]
pub trait Tx: Send {
    /// Run a statement that returns rows.
    async fn query(
        &mut self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<Vec<Row>, StoreError>;
    /// Run a statement that changes rows; returns how many.
    async fn execute(
        &mut self,
        statement: &Statement,
        params: &[SqlValue],
    ) -> Result<u64, StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// A database that can open transactions.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
    /// Create or upgrade the schema.
    async fn init_schema(&self) -> Result<(), StoreError>;
    /// A short description for logs (never the connection string).
    fn describe(&self) -> String;
}

/// A unit of work that must happen completely or not at all.
#[async_trait::async_trait]
pub trait Transition: Send + Sync {
    type Output: Send;
    type Error: From<StoreError> + Send;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<Self::Output, Self::Error>;
}

/// The store the functions use: a backend plus the retry policy for transient failures.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    attempts: u32,
    backoff: Duration,
}

/// Statistics a caller can read to count round trips (benchmarks, tests).
pub trait TransientCheck {
    fn transient(&self) -> bool;
}

impl TransientCheck for StoreError {
    fn transient(&self) -> bool {
        self.is_transient()
    }
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            attempts: 4,
            backoff: Duration::from_millis(200),
        }
    }

    /// Open the store named by a `PROCFWK_METADATA_DB` value: `sqlite:<path>` or a SQL Server / Azure SQL
    /// ADO connection string.
    pub async fn open(
        setting: &str,
        identity: Option<Arc<crate::adapters::Identity>>,
    ) -> Result<Self, StoreError> {
        let setting = setting.trim();
        if let Some(path) = setting.strip_prefix("sqlite:") {
            Ok(Self::new(Arc::new(sqlite::SqliteBackend::open(path)?)))
        } else {
            Ok(Self::new(Arc::new(
                sqlserver::SqlServerBackend::connect(setting, identity).await?,
            )))
        }
    }

    /// The same store with another number of attempts per transition (1 = no retries).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    pub async fn init_schema(&self) -> Result<(), StoreError> {
        self.backend.init_schema().await
    }

    /// Run `transition` in one transaction, retrying the whole of it on transient failures.
    pub async fn run<T>(&self, transition: &T) -> Result<T::Output, T::Error>
    where
        T: Transition,
        T::Error: TransientCheck,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(transition).await;
            match outcome {
                Err(e) if attempt < self.attempts && e.transient() => {
                    tracing::warn!(
                        attempt,
                        "transient metadata store failure; running the transition again"
                    );
                    tokio::time::sleep(self.backoff * attempt).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt<T: Transition>(&self, transition: &T) -> Result<T::Output, T::Error> {
        let mut tx = self.backend.begin().await?;
        match transition.apply(tx.as_mut()).await {
            Ok(out) => {
                tx.commit().await?;
                Ok(out)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

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
    /// The store has no procfwk schema: never initialised, or (SQLite) the file does not exist.
    #[error(
        "the metadata store is not initialised ({0}): run `procfwk db init` with the same \
         PROCFWK_METADATA_DB"
    )]
    NotInitialised(String),
    /// The store's schema is older than this version of procfwk needs.
    #[error(
        "the metadata store's schema is version {found}, older than the version {needed} this \
         procfwk needs: run `procfwk db upgrade` (the same as `db init`: it adds what is missing)"
    )]
    TooOld { found: i64, needed: i64 },
}

/// The schema version this build needs (`procfwk.SchemaVersion`; `db init` records each version it
/// applies).
pub const SCHEMA_VERSION: i64 = 2;

/// Error numbers (as SQL Server numbers them; the SQLite backend maps its messages to them) for a table,
/// view or column that does not exist: 208 "Invalid object name", 207 "Invalid column name".
pub const MISSING_OBJECT_ERRORS: &[u32] = &[208, 207];

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

    /// A table, view or column the statement names does not exist: the schema is missing or old.
    pub fn is_missing_object(&self) -> bool {
        matches!(self, Self::Database { number, .. } if MISSING_OBJECT_ERRORS.contains(number))
    }

    /// The store must be initialised or upgraded before it can be used.
    pub fn is_schema_problem(&self) -> bool {
        matches!(self, Self::NotInitialised(_) | Self::TooOld { .. })
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

/// What [`Store::run`] needs to know about a transition's error.
pub trait TransientCheck {
    /// Worth running the transition again.
    fn transient(&self) -> bool;
    /// A store error saying a table or column does not exist ([`StoreError::is_missing_object`]):
    /// [`Store::run`] then finds out whether the schema is missing or old.
    fn missing_object(&self) -> bool {
        false
    }
}

impl TransientCheck for StoreError {
    fn transient(&self) -> bool {
        self.is_transient()
    }
    fn missing_object(&self) -> bool {
        self.is_missing_object()
    }
}

/// Reads the schema version (a transition of its own, after another failed on a missing object).
struct ReadSchemaVersion;

#[async_trait::async_trait]
impl Transition for ReadSchemaVersion {
    type Output = Option<i64>;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<Option<i64>, StoreError> {
        let rows = tx.query(&statements::SCHEMA_VERSION, &[]).await?;
        Ok(rows
            .first()
            .and_then(|r| r.opt_i64("Version").ok().flatten()))
    }
}

/// Check a `PROCFWK_METADATA_DB` value without connecting: `sqlite:<path>`, or a SQL Server / Azure
/// SQL connection string that parses. The error never repeats the value (it may hold a password).
pub fn check_setting(setting: &str) -> Result<(), StoreError> {
    let setting = setting.trim();
    if let Some(path) = setting.strip_prefix("sqlite:") {
        if path.trim().is_empty() {
            return Err(StoreError::Config(
                "sqlite: needs a file path, e.g. sqlite:procfwk.db".into(),
            ));
        }
        return Ok(());
    }
    if let Some((scheme, _)) = setting.split_once("://") {
        if !scheme.is_empty() && !scheme.contains(['=', ';']) {
            return Err(StoreError::Config(format!(
                "{scheme}:// is not a metadata store; use sqlite:<path> (e.g. sqlite:procfwk.db) or an \
                 Azure SQL connection string (Server=tcp:…;Database=…;…)"
            )));
        }
    }
    sqlserver::check_setting(setting)
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
                Err(e) if e.missing_object() => {
                    return Err(match self.schema_problem().await {
                        Some(problem) => problem.into(),
                        None => e,
                    })
                }
                other => return other,
            }
        }
    }

    /// After a statement named a table or column that does not exist: whether the store was never
    /// initialised, or is older than [`SCHEMA_VERSION`] (`None`: neither, the error stands as it is).
    async fn schema_problem(&self) -> Option<StoreError> {
        match self.attempt(&ReadSchemaVersion).await {
            Ok(None) => Some(StoreError::NotInitialised(
                "it records no schema version".into(),
            )),
            Ok(Some(found)) if found < SCHEMA_VERSION => Some(StoreError::TooOld {
                found,
                needed: SCHEMA_VERSION,
            }),
            Ok(Some(_)) => None,
            Err(e) if e.is_missing_object() => Some(StoreError::NotInitialised(
                "it has no procfwk tables".into(),
            )),
            Err(e) if e.is_schema_problem() => Some(e),
            Err(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the leases of a pool (a table of schema version 2).
    struct ReadLeases;

    #[async_trait::async_trait]
    impl Transition for ReadLeases {
        type Output = usize;
        type Error = StoreError;
        async fn apply(&self, tx: &mut dyn Tx) -> Result<usize, StoreError> {
            let rows = tx
                .query(
                    &statements::VM_LEASES_OF_POOL,
                    &[SqlValue::Text("pool".into())],
                )
                .await?;
            Ok(rows.len())
        }
    }

    async fn store_at(path: &std::path::Path) -> Store {
        let Ok(store) = Store::open(&format!("sqlite:{}", path.display()), None).await else {
            panic!("open")
        };
        store
    }

    #[tokio::test]
    async fn a_missing_schema_is_not_initialised_and_an_old_one_too_old() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let path = dir.path().join("s.db");
        // No file at all.
        let outcome = store_at(&path).await.run(&ReadLeases).await;
        assert!(
            matches!(&outcome, Err(StoreError::NotInitialised(_))),
            "{outcome:?}"
        );
        // A file without procfwk's tables.
        std::fs::write(&path, b"").ok();
        let outcome = store_at(&path).await.run(&ReadLeases).await;
        assert!(
            matches!(&outcome, Err(StoreError::NotInitialised(m)) if m.contains("no procfwk tables")),
            "{outcome:?}"
        );
        // Initialised: fine.
        let store = store_at(&path).await;
        assert!(store.init_schema().await.is_ok());
        assert!(matches!(store.run(&ReadLeases).await, Ok(0)));
        // A version-1 store (before VmPower): too old, and `db init` (upgrade) mends it.
        let Ok(conn) = rusqlite::Connection::open(&path) else {
            panic!("sqlite")
        };
        assert!(conn
            .execute_batch("DROP TABLE VmLeases; DELETE FROM SchemaVersion WHERE Version = 2;")
            .is_ok());
        drop(conn);
        let store = store_at(&path).await;
        let outcome = store.run(&ReadLeases).await;
        assert!(
            matches!(
                &outcome,
                Err(StoreError::TooOld {
                    found: 1,
                    needed: SCHEMA_VERSION
                })
            ),
            "{outcome:?}"
        );
        let message = outcome.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("procfwk db upgrade"), "{message}");
        assert!(store.init_schema().await.is_ok());
        assert!(matches!(store.run(&ReadLeases).await, Ok(0)));
    }

    #[test]
    fn a_metadata_db_setting_is_checked_without_connecting() {
        assert!(check_setting("sqlite:procfwk.db").is_ok());
        assert!(matches!(
            check_setting("sqlite3://x.db"),
            Err(StoreError::Config(_))
        ));
        assert!(check_setting("sqlite:").is_err());
        assert!(check_setting("just words").is_err());
    }
}

//! The metadata store: procfwk's tables (stages, workers, parameters, current execution, logs, batches,
//! VM leases) behind one small interface with two implementations — Azure SQL through tiberius, and an
//! embedded SQLite file — that run the *same* statements ([`statements`]).
//!
//! Every lifecycle transition runs as one [`Transition`] inside one transaction: it commits whole or not at
//! all, and a transition interrupted by a transient failure (Azure SQL 40613, a dropped connection, ...) is
//! rolled back and run again from the start. Transitions are written so that running one twice (an ADF
//! activity retry, or a commit whose acknowledgement was lost) changes nothing the second time.

pub mod connection_string;
pub mod passphrase;
pub mod schema;
pub mod statements;
mod value;

pub use statements::Statement;
pub use value::{Row, SqlValue, DATETIME_FORMAT};

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
    /// The store's schema is newer than this version of procfwk knows: `db init` changes nothing.
    #[error(
        "the metadata store's schema is version {found}, newer than the version {supported} this \
         procfwk knows: use a procfwk at least as new as the one that upgraded it (nothing was changed)"
    )]
    TooNew { found: i64, supported: i64 },
    /// An object exists under a name the schema needs, in a shape procfwk cannot use; found before
    /// anything was changed.
    #[error("{object}: {problem}. Nothing was changed")]
    UnusableObject { object: String, problem: String },
}

/// The schema version this build needs (`procfwk.SchemaVersion`; `db init` records each version it
/// applies).
pub const SCHEMA_VERSION: i64 = 5;

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

    /// A lock was not granted within the transaction's lock timeout (1222).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(
            self,
            Self::Database {
                number: LOCK_TIMEOUT,
                ..
            }
        )
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
    /// Wait at most `limit` for a row lock in the rest of this transaction; past it a statement fails
    /// with SQL Server's 1222 ([`LOCK_TIMEOUT`]). SQLite has one writer at a time and its own busy
    /// timeout, so there this does nothing.
    async fn set_lock_timeout(&mut self, _limit: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

/// SQL Server's "Lock request time out period exceeded."
pub const LOCK_TIMEOUT: u32 = 1222;

/// A database that can open transactions.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
    /// Create or upgrade the schema (`dry_run`: only find out what that would change).
    async fn upgrade_schema(&self, dry_run: bool) -> Result<schema::SchemaReport, StoreError>;
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
    retry: RetryPolicy,
}

/// Whether a transition's error is worth running the transition again for, and how long to wait first.
pub trait TransientCheck {
    /// Worth running the transition again.
    fn transient(&self) -> bool;
    /// The least wait before the next attempt that the error asks for (Azure SQL's 40501, "the service
    /// is currently busy", says to retry after 10 seconds).
    fn minimum_wait(&self) -> Duration {
        Duration::ZERO
    }

    /// A store error saying a table or column does not exist ([`StoreError::is_missing_object`]):
    /// [`Store::run`] then finds out whether the schema is missing or old.
    fn missing_object(&self) -> bool {
        false
    }
}

/// SQL Server's "The service is currently busy. Retry the request after 10 seconds."
pub const SERVICE_BUSY: u32 = 40501;

impl TransientCheck for StoreError {
    fn transient(&self) -> bool {
        self.is_transient()
    }
    fn minimum_wait(&self) -> Duration {
        match self {
            Self::Database {
                number: SERVICE_BUSY,
                ..
            } => Duration::from_secs(10),
            _ => Duration::ZERO,
        }
    }
    fn missing_object(&self) -> bool {
        self.is_missing_object()
    }
}

/// How a transition is retried after transient failures: exponential back-off with jitter (each wait
/// drawn from the upper half of `first_wait · 2^n`, capped at `max_wait`), for as long as the next
/// attempt would still start within `budget` of the first — long enough to ride out an Azure SQL
/// failover or a serverless database resuming (10–60 s), short of ADF's 230 s activity limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub budget: Duration,
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// At most this many attempts in all (1 = no retries).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(60),
            first_wait: Duration::from_millis(250),
            max_wait: Duration::from_secs(8),
            max_attempts: 30,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), `jitter` in [0, 1).
    pub fn wait(&self, attempt: u32, jitter: f64, minimum: Duration) -> Duration {
        let exp = self
            .first_wait
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_wait);
        exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0)).max(minimum)
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
    connection_string::check(setting)
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            retry: RetryPolicy::default(),
        }
    }

    /// The same store with another number of attempts per transition (1 = no retries).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts.max(1);
        self
    }

    /// The same store with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    pub async fn init_schema(&self) -> Result<(), StoreError> {
        self.backend.upgrade_schema(false).await.map(|_| ())
    }

    /// `db init` / `db upgrade`: create or upgrade the schema in place, or (`dry_run`) list what that
    /// would change and change nothing.
    pub async fn upgrade_schema(&self, dry_run: bool) -> Result<schema::SchemaReport, StoreError> {
        self.backend.upgrade_schema(dry_run).await
    }

    /// Run `transition` in one transaction, retrying the whole of it on transient failures.
    pub async fn run<T>(&self, transition: &T) -> Result<T::Output, T::Error>
    where
        T: Transition,
        T::Error: TransientCheck,
    {
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(transition).await;
            match outcome {
                Err(e) if attempt < self.retry.max_attempts && e.transient() => {
                    let wait = self
                        .retry
                        .wait(attempt, rand::random::<f64>(), e.minimum_wait());
                    if started.elapsed() + wait > self.retry.budget {
                        tracing::warn!(
                            attempt,
                            "transient metadata store failure; retry budget spent"
                        );
                        return Err(e);
                    }
                    tracing::warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "transient metadata store failure; running the transition again"
                    );
                    tokio::time::sleep(wait).await;
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
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A backend whose transactions fail to begin with `error` the first `failures` times.
    struct Flaky {
        failures: u32,
        number: u32,
        begun: AtomicU32,
    }

    struct NoopTx;

    #[async_trait::async_trait]
    impl Tx for NoopTx {
        async fn query(&mut self, _: &Statement, _: &[SqlValue]) -> Result<Vec<Row>, StoreError> {
            Ok(Vec::new())
        }
        async fn execute(&mut self, _: &Statement, _: &[SqlValue]) -> Result<u64, StoreError> {
            Ok(1)
        }
        async fn commit(self: Box<Self>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Backend for Flaky {
        async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
            if self.begun.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(StoreError::Database {
                    number: self.number,
                    message: "injected".into(),
                });
            }
            Ok(Box::new(NoopTx))
        }
        async fn upgrade_schema(&self, _: bool) -> Result<schema::SchemaReport, StoreError> {
            Ok(schema::SchemaReport::default())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    struct Nothing;

    #[async_trait::async_trait]
    impl Transition for Nothing {
        type Output = ();
        type Error = StoreError;
        async fn apply(&self, _: &mut dyn Tx) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn store(failures: u32, number: u32) -> (Store, Arc<Flaky>) {
        let backend = Arc::new(Flaky {
            failures,
            number,
            begun: AtomicU32::new(0),
        });
        (Store::new(backend.clone()), backend)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_of_half_a_minute_is_ridden_out() {
        // 40613 "database not available" for ~30 s: back-off grows to 8 s and keeps going.
        let (store, backend) = store(7, 40613);
        let t0 = tokio::time::Instant::now();
        assert!(store.run(&Nothing).await.is_ok());
        assert_eq!(backend.begun.load(Ordering::SeqCst), 8);
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        assert!(waited <= Duration::from_secs(60), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn service_busy_waits_ten_seconds() {
        let (store, backend) = store(1, SERVICE_BUSY);
        let t0 = tokio::time::Instant::now();
        assert!(store.run(&Nothing).await.is_ok());
        assert_eq!(backend.begun.load(Ordering::SeqCst), 2);
        assert!(t0.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_the_retries() {
        let (store, backend) = store(u32::MAX, 40613);
        let t0 = tokio::time::Instant::now();
        assert!(store.run(&Nothing).await.is_err());
        assert!(
            t0.elapsed() <= Duration::from_secs(60),
            "{:?}",
            t0.elapsed()
        );
        assert!(backend.begun.load(Ordering::SeqCst) >= 5);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let (store, backend) = store(1, 2627);
        assert!(store.run(&Nothing).await.is_err());
        assert_eq!(backend.begun.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn waits_grow_with_jitter_and_a_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.wait(1, 1.0, Duration::ZERO), Duration::from_millis(250));
        assert_eq!(p.wait(1, 0.0, Duration::ZERO), Duration::from_millis(125));
        assert_eq!(p.wait(3, 1.0, Duration::ZERO), Duration::from_secs(1));
        assert_eq!(p.wait(30, 1.0, Duration::ZERO), Duration::from_secs(8));
        assert_eq!(
            p.wait(1, 0.5, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }

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
        let path = path.display().to_string();
        let Ok(backend) = crate::adapters::sqlite::SqliteBackend::open(&path) else {
            panic!("open")
        };
        Store::new(Arc::new(backend))
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
            .execute_batch("DROP TABLE VmLeases; DELETE FROM SchemaVersion WHERE Version >= 2;")
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

//! Transactions: `begin` runs `SET LOCK_TIMEOUT -1; SET XACT_ABORT ON; BEGIN TRANSACTION` in one batch
//! (so any error inside makes SQL Server roll all of it back); after the first failed statement the
//! [`Tx`] refuses further statements and `commit` reports that error again, keeping its number. A
//! transaction dropped without commit or rollback leaves its connection broken: the pool closes it and the
//! server rolls back.

use super::connection::SqlConnection;
use super::errors::duplicate;
use super::pool::SqlServerManager;
use super::values::to_row;
use crate::store::{Row, SqlValue, Statement, StoreError, Tx};
use bb8::PooledConnection;
use std::time::Duration;

/// The batch that opens every transaction (`SET LOCK_TIMEOUT -1`: wait for ever unless the transition
/// asks for less).
pub(super) const BEGIN: &str = "SET LOCK_TIMEOUT -1; SET XACT_ABORT ON; BEGIN TRANSACTION";
/// SQL Server: "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION."
const NO_TRANSACTION: u32 = 3903;

/// One open transaction on a pooled connection.
pub(super) struct SqlServerTx {
    /// `None` once committed or rolled back.
    pub(super) conn: Option<PooledConnection<'static, SqlServerManager>>,
    /// The error that ended the transaction on the server (XACT_ABORT): later statements would run
    /// outside any transaction, so they are refused.
    pub(super) aborted: Option<StoreError>,
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

//! Read-outs for operators and tests: the current execution summary, the last execution's log, and the
//! raw rows of CurrentExecution, ExecutionLog and ErrorLog.

use super::LifecycleError;
use crate::store::{statements, Row, Transition, Tx};

/// Read the rows of one statement (no parameters).
pub struct ReadRows(pub &'static crate::store::Statement);

#[async_trait::async_trait]
impl Transition for ReadRows {
    type Output = Vec<Row>;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<Row>, LifecycleError> {
        Ok(tx.query(self.0, &[]).await?)
    }
}

/// The log rows of the last completed execution (procfwk's `LastExecution` view).
pub struct LastExecution;

#[async_trait::async_trait]
impl Transition for LastExecution {
    type Output = Vec<Row>;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<Row>, LifecycleError> {
        let last = tx.query(&statements::LAST_EXECUTION_ID, &[]).await?;
        match last
            .first()
            .map(|r| r.guid("LocalExecutionId"))
            .transpose()?
        {
            Some(id) => Ok(tx
                .query(&statements::EXECUTION_LOG_FOR, &[id.into()])
                .await?),
            None => Ok(Vec::new()),
        }
    }
}

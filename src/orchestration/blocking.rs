//! What a failed (or, by property, cancelled/unknown) worker does to the rest of the execution.

use super::{FailureHandling, LifecycleError, Properties, WorkerKey};
use crate::store::{statements, Tx};

/// Apply the failure-handling mode after the worker `key` failed. Returns how many workers were blocked.
pub async fn after_failure(
    tx: &mut dyn Tx,
    props: &Properties,
    key: &WorkerKey,
) -> Result<u64, LifecycleError> {
    match props.failure_handling {
        FailureHandling::None => Ok(0),
        FailureHandling::Simple => {
            let blocked = tx
                .execute(
                    &statements::BLOCK_LATER_STAGES,
                    &[key.execution_id.into(), key.stage_id.into()],
                )
                .await?;
            tx.execute(
                &statements::BATCH_EXECUTION_STOPPING,
                &[key.execution_id.into()],
            )
            .await?;
            Ok(blocked)
        }
        FailureHandling::DependencyChain => Ok(tx
            .execute(
                &statements::BLOCK_DEPENDANTS,
                &[key.execution_id.into(), key.pipeline_id.into()],
            )
            .await?),
    }
}

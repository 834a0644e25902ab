//! Preparing a stage (procfwk's `CheckForBlockedPipelines`, `SetLogStagePreparing`, `GetPipelinesInStage`).

use super::{blocking, FailureHandling, KeyParams, LifecycleError, Properties, WorkerKey};
use crate::domain::{ScopeStatus, WorkerStatus};
use crate::store::{statements, StoreError, Transition, Tx};
use chrono::NaiveDateTime;
use uuid::Uuid;

/// A worker the Child must start.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerToRun {
    #[serde(rename = "pipelineId")]
    pub pipeline_id: i32,
    #[serde(rename = "PipelineName")]
    pub pipeline_name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Prepared {
    /// Run these workers in parallel.
    Workers(Vec<WorkerToRun>),
    /// Simple failure handling and blocked workers in this stage: the execution stops here
    /// (`All pipelines are blocked. Stopping processing.`).
    AllBlocked { blocked: usize },
}

pub struct PrepareStage {
    pub execution_id: Uuid,
    pub stage_id: i32,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for PrepareStage {
    type Output = Prepared;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<Prepared, LifecycleError> {
        let (id, stage) = (self.execution_id, self.stage_id);
        if tx
            .query(&statements::EXECUTION_STATUS_COUNTS, &[id.into()])
            .await?
            .is_empty()
        {
            return Err(LifecycleError::ExecutionNotFound(id));
        }
        let props = Properties::read(tx).await?;
        self.fail_stale_running(tx, &props).await?;
        if let Some(stopped) = self.handle_blocked(tx, &props).await? {
            return Ok(stopped);
        }
        tx.execute(&statements::STAGE_PREPARING, &[id.into(), stage.into()])
            .await?;
        let workers = tx
            .query(&statements::WORKERS_IN_STAGE, &[id.into(), stage.into()])
            .await?
            .iter()
            .map(|r| {
                Ok(WorkerToRun {
                    pipeline_id: r.i32("PipelineId")?,
                    pipeline_name: r.text("PipelineName")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.execute(&statements::CONTROL_TOUCH, &[id.into(), self.now.into()])
            .await?;
        Ok(Prepared::Workers(workers))
    }
}

impl PrepareStage {
    /// A worker of an earlier stage still Running means its Infant died before setting the result
    /// (procfwk PR #100): it failed, as far as the framework can tell. Each is set Failed, logged with
    /// a framework error, and the failure-handling rules applied.
    async fn fail_stale_running(
        &self,
        tx: &mut dyn Tx,
        props: &Properties,
    ) -> Result<(), LifecycleError> {
        let (id, stage) = (self.execution_id, self.stage_id);
        let stale = tx
            .query(
                &statements::STALE_RUNNING_BEFORE_STAGE,
                &[id.into(), stage.into()],
            )
            .await?;
        for row in stale {
            let key = WorkerKey {
                execution_id: id,
                stage_id: row.i32("StageId")?,
                pipeline_id: row.i32("PipelineId")?,
            };
            let run_id = row.opt_guid("PipelineRunId")?.unwrap_or_else(Uuid::nil);
            let updated = tx
                .execute(
                    &statements::SET_ACTIVITY_FAILED,
                    &key.with([WorkerStatus::Failed.as_str().into(), self.now.into()]),
                )
                .await?;
            if updated > 0 {
                tx.execute(&statements::LOG_WORKER, &key.params()).await?;
                tx.execute(
                    &statements::INSERT_ERROR,
                    &[
                        id.into(),
                        run_id.into(),
                        Uuid::new_v4().into(),
                        "Set Pipeline Result".into(),
                        "Framework".into(),
                        "FrameworkError".into(),
                        "Framework Error".into(),
                        format!(
                            "Worker {} of stage {} was still Running when stage {stage} started: its Infant did not set the result.",
                            key.pipeline_id, key.stage_id
                        )
                        .into(),
                    ],
                )
                .await?;
                blocking::after_failure(tx, props, &key).await?;
            }
        }
        Ok(())
    }

    /// The blocked workers of this stage under the failure-handling rule: with `Simple`, any stops
    /// the execution here (the answer to give); with `DependencyChain`, their dependants are blocked.
    async fn handle_blocked(
        &self,
        tx: &mut dyn Tx,
        props: &Properties,
    ) -> Result<Option<Prepared>, LifecycleError> {
        let (id, stage) = (self.execution_id, self.stage_id);
        let blocked: Vec<i32> = tx
            .query(&statements::BLOCKED_IN_STAGE, &[id.into(), stage.into()])
            .await?
            .iter()
            .map(|r| r.i32("PipelineId"))
            .collect::<Result<_, StoreError>>()?;
        match props.failure_handling {
            FailureHandling::None => {}
            FailureHandling::Simple if !blocked.is_empty() => {
                tx.execute(
                    &statements::CONTROL_SET_STATUS,
                    &[
                        id.into(),
                        ScopeStatus::Stopped.as_str().into(),
                        self.now.into(),
                    ],
                )
                .await?;
                tx.execute(
                    &statements::BATCH_EXECUTION_STATUS,
                    &[id.into(), ScopeStatus::Stopped.as_str().into()],
                )
                .await?;
                return Ok(Some(Prepared::AllBlocked {
                    blocked: blocked.len(),
                }));
            }
            FailureHandling::Simple => {}
            FailureHandling::DependencyChain => {
                // Carry the chain one stage further: dependants of blocked workers are blocked too.
                for pipeline_id in &blocked {
                    tx.execute(
                        &statements::BLOCK_DEPENDANTS,
                        &[id.into(), (*pipeline_id).into()],
                    )
                    .await?;
                }
            }
        }
        Ok(None)
    }
}

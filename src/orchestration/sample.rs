//! `procfwk db seed-sample`: procfwk master's sample metadata (`procfwk-sample-metadata.md` §1) — tenant,
//! subscription, orchestrators, the five stages (Speed disabled), the workers with their parameters and
//! dependencies, the properties and the Daily/Hourly batches. Ids follow insertion order, as procfwk's
//! reseeded `SetDefault*` procedures produce them.
//!
//! One deviation: the four Synapse workers (ids 16–19) are seeded *disabled*, because this Function App
//! does not run Synapse workers yet; everything else is verbatim.

use super::LifecycleError;
use crate::store::{statements, SqlValue, StoreError, Transition, Tx};
use chrono::NaiveDateTime;
use std::collections::HashMap;
use uuid::Uuid;

pub const SAMPLE_TENANT: &str = "12345678-1234-1234-1234-012345678910";

const ORCHESTRATORS: &[(&str, &str, bool, &str)] = &[
    (
        "FrameworkFactory",
        "ADF",
        true,
        "Example Data Factory used for development.",
    ),
    (
        "FrameworkFactoryDev",
        "ADF",
        false,
        "Example Data Factory used for development deployments.",
    ),
    (
        "FrameworkFactoryTest",
        "ADF",
        false,
        "Example Data Factory used for testing.",
    ),
    (
        "WorkersFactory",
        "ADF",
        false,
        "Example Data Factory used to house worker pipelines.",
    ),
    (
        "procfwkforsynapse",
        "SYN",
        false,
        "Example Synapse instance used to house all pipelines.",
    ),
];

const STAGES: &[(&str, &str, bool)] = &[
    ("Extract", "Ingest all data from source systems.", true),
    (
        "Transform",
        "Transform ingested data and apply business logic.",
        true,
    ),
    (
        "Load",
        "Load transformed data into data warehouse layer.",
        true,
    ),
    ("Serve", "Load transformed data into semantic layer.", true),
    ("Speed", "Regular loading of frequently used data.", false),
];

/// (OrchestratorId, StageId, PipelineName, LogicalPredecessorId, Enabled)
const PIPELINES: &[(i32, i32, &str, Option<i32>, bool)] = &[
    (1, 1, "Wait 1", None, true),
    (1, 1, "Wait 2", None, true),
    (1, 1, "Intentional Error", None, true),
    (1, 1, "Wait 3", None, true),
    (1, 2, "Wait 4", None, true),
    (1, 2, "Wait 5", Some(1), true),
    (1, 2, "Wait 6", Some(1), true),
    (1, 2, "Wait 7", None, true),
    (1, 3, "Wait 8", Some(1), true),
    (1, 3, "Wait 9", Some(6), true),
    (1, 4, "Wait 10", Some(9), true),
    (1, 5, "Wait 1", None, false),
    (1, 5, "Wait 2", None, false),
    (1, 5, "Wait 3", None, false),
    (1, 5, "Wait 4", None, false),
    (5, 1, "Wait 1", None, false),
    (5, 1, "Wait 2", None, false),
    (5, 1, "Wait 3", None, false),
    (5, 1, "Wait 4", None, false),
];

/// (PipelineId, ParameterName, ParameterValue), in procfwk's source order.
const PARAMETERS: &[(i32, &str, &str)] = &[
    (1, "WaitTime", "3"),
    (2, "WaitTime", "6"),
    (6, "WaitTime", "9"),
    (4, "WaitTime", "5"),
    (5, "WaitTime", "2"),
    (3, "RaiseErrors", "false"),
    (3, "WaitTime", "10"),
    (7, "WaitTime", "3"),
    (8, "WaitTime", "5"),
    (9, "WaitTime", "7"),
    (11, "WaitTime", "10"),
];

/// (Predecessor, Dependant)
const DEPENDENCIES: &[(i32, i32)] = &[(3, 6), (3, 7), (7, 10), (10, 11)];

const EMAIL_TEMPLATE: &str = "<hr/><strong>Pipeline Name: </strong>##PipelineName###<br/>\n\t<strong>Status: </strong>##Status###<br/><br/>\n\t<strong>Execution ID: </strong>##ExecId###<br/>\n\t<strong>Run ID: </strong>##RunId###<br/><br/>\n\t<strong>Start Date Time: </strong>##StartDateTime###<br/>\n\t<strong>End Date Time: </strong>##EndDateTime###<br/>\n\t<strong>Duration (Minutes): </strong>##Duration###<br/><br/>\n\t<strong>Called by Orchestrator: </strong>##CalledByOrc###<br/>\n\t<strong>Executed by Orchestrator Type: </strong>##ExecutedByOrcType###<br/>\n\t<strong>Executed by Orchestrator: </strong>##ExecutedByOrc###<br/><hr/>";

pub const PROPERTIES: &[(&str, &str, &str)] = &[
    ("OverideRestart", "0", "Should processing not be restarted from the point of failure or should a new execution will be created regardless. 1 = Start New, 0 = Restart."),
    ("PipelineStatusCheckDuration", "30", "Duration applied to the Wait activity within the Infant pipeline Until iterations."),
    ("UnknownWorkerResultBlocks", "1", "If a worker pipeline returns an unknown status. Should this block and fail downstream pipeline? 1 = Yes, 0 = No."),
    ("CancelledWorkerResultBlocks", "1", "If a worker pipeline returns an cancelled status. Should this block and fail downstream pipeline? 1 = Yes, 0 = No."),
    ("UseFrameworkEmailAlerting", "0", "Do you want the framework to handle pipeline email alerts via the database metadata? 1 = Yes, 0 = No."),
    ("EmailAlertBodyTemplate", EMAIL_TEMPLATE, "Basic HTML template of execution information used as the eventual body in email alerts sent."),
    ("FailureHandling", "Simple", "Accepted values: None, Simple, DependencyChain. Controls processing bahaviour in the event of Worker failures. See v1.8 release notes for full details."),
    ("SPNHandlingMethod", "StoreInDatabase", "Accepted values: StoreInDatabase, StoreInKeyVault. See v1.8.2 release notes for full details."),
    ("ExecutionPrecursorProc", "[dbo].[ExampleCustomExecutionPrecursor]", "This procedure will be called first in the parent pipeline and can be used to perform/update any required custom behaviour in the framework execution. For example, enable/disable Worker pipelines given a certain run time/day. Invalid proc name values will be ignored."),
    ("UseExecutionBatches", "0", "Establishes if execution batches are used as a level above execution stages within the framework. 1 = True, 0 = False."),
    ("FrameworkFactoryResourceGroup", "ADF.procfwk", "Supports various queries where the framework factory is inspecting itself and the resource group cant be inferred."),
    ("PreviousPipelineRunsQueryRange", "-1", "Used as a date range, today +- this value, when checking for if an execution for a given pipeline is already running. Must include +- symbol in value."),
    // Ours: the sample workers have no service principal (PipelineAuthLink is empty), so they run as the
    // Function App's managed identity; without this property they would be refused.
    (super::UNLINKED_WORKERS_PROPERTY, "1", "Function App in Rust: should a worker with no credential in PipelineAuthLink run as the Function App's managed identity? 1 = Yes, 0 = No (the worker is refused)."),
];

/// Set a property the way `AddProperty` does: close the current version, insert a new one.
pub struct SetProperty {
    pub name: String,
    pub value: String,
    pub description: Option<String>,
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for SetProperty {
    type Output = ();
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<(), LifecycleError> {
        tx.execute(
            &statements::CLOSE_PROPERTY,
            &[self.name.as_str().into(), self.now.into()],
        )
        .await?;
        tx.execute(
            &statements::INSERT_PROPERTY,
            &[
                self.name.as_str().into(),
                self.value.as_str().into(),
                SqlValue::from(self.description.clone()),
                self.now.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// Load the sample metadata into an empty database.
pub struct SeedSample {
    pub now: NaiveDateTime,
}

#[async_trait::async_trait]
impl Transition for SeedSample {
    type Output = usize;
    type Error = LifecycleError;

    async fn apply(&self, tx: &mut dyn Tx) -> Result<usize, LifecycleError> {
        refuse_unless_empty(tx).await?;
        let tenant =
            Uuid::parse_str(SAMPLE_TENANT).map_err(|e| LifecycleError::Metadata(e.to_string()))?;
        insert_tenant(tx, tenant).await?;
        insert_orchestrators_and_stages(tx, tenant).await?;
        // Identity values are whatever the database hands out; map the sample's ids onto them.
        let orchestrator_ids = ids(
            tx,
            &statements::ORCHESTRATOR_IDS,
            "OrchestratorId",
            "OrchestratorName",
        )
        .await?;
        let stage_ids = ids(tx, &statements::STAGE_IDS, "StageId", "StageName").await?;
        let pipelines = insert_pipelines(tx, &orchestrator_ids, &stage_ids).await?;
        insert_parameters_and_dependencies(tx, &pipelines).await?;
        insert_properties(tx, self.now).await?;
        insert_batches(tx, &stage_ids).await?;
        Ok(PIPELINES.len())
    }
}

async fn refuse_unless_empty(tx: &mut dyn Tx) -> Result<(), LifecycleError> {
    let stages = tx.query(&statements::COUNT_STAGES, &[]).await?;
    if stages
        .first()
        .map(|r| r.i64("Stages"))
        .transpose()?
        .unwrap_or(0)
        > 0
    {
        return Err(LifecycleError::Metadata(
            "the database already has stages; seed-sample only fills an empty metadata database"
                .into(),
        ));
    }
    Ok(())
}

/// The sample tenant and its one subscription (both the same GUID, as procfwk's sample has it).
async fn insert_tenant(tx: &mut dyn Tx, tenant: Uuid) -> Result<(), LifecycleError> {
    let example = "Example value for development environment.";
    tx.execute(
        &statements::INSERT_TENANT,
        &[tenant.into(), "Default".into(), example.into()],
    )
    .await?;
    tx.execute(
        &statements::INSERT_SUBSCRIPTION,
        &[
            tenant.into(),
            "Default".into(),
            example.into(),
            tenant.into(),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_orchestrators_and_stages(
    tx: &mut dyn Tx,
    tenant: Uuid,
) -> Result<(), LifecycleError> {
    for (name, kind, framework, description) in ORCHESTRATORS {
        tx.execute(
            &statements::INSERT_ORCHESTRATOR,
            &[
                (*name).into(),
                (*kind).into(),
                (*framework).into(),
                (*description).into(),
                "ADF.procfwk".into(),
                tenant.into(),
            ],
        )
        .await?;
    }
    for (name, description, enabled) in STAGES {
        tx.execute(
            &statements::INSERT_STAGE,
            &[(*name).into(), (*description).into(), (*enabled).into()],
        )
        .await?;
    }
    Ok(())
}

/// The store's PipelineId of each sample pipeline, by the sample's id (its 1-based place in
/// [`PIPELINES`]).
struct PipelineIds(Vec<i32>);

impl PipelineIds {
    fn get(&self, sample_id: i32) -> Option<i32> {
        self.0.get((sample_id - 1) as usize).copied()
    }

    fn of(&self, sample_id: i32) -> Result<i32, LifecycleError> {
        self.get(sample_id)
            .ok_or_else(|| LifecycleError::Metadata(format!("sample pipeline {sample_id} missing")))
    }
}

async fn insert_pipelines(
    tx: &mut dyn Tx,
    orchestrator_ids: &HashMap<String, i32>,
    stage_ids: &HashMap<String, i32>,
) -> Result<PipelineIds, LifecycleError> {
    let mut pipelines = PipelineIds(Vec::new());
    for (orch, stage, name, predecessor, enabled) in PIPELINES {
        let orchestrator = lookup(orchestrator_ids, ORCHESTRATORS[(*orch - 1) as usize].0)?;
        let stage = lookup(stage_ids, STAGES[(*stage - 1) as usize].0)?;
        let predecessor = predecessor.and_then(|p| pipelines.get(p));
        tx.execute(
            &statements::INSERT_PIPELINE,
            &[
                orchestrator.into(),
                stage.into(),
                (*name).into(),
                predecessor.into(),
                (*enabled).into(),
            ],
        )
        .await?;
        let all = tx.query(&statements::PIPELINE_IDS, &[]).await?;
        let newest = all
            .last()
            .map(|r| r.i32("PipelineId"))
            .transpose()?
            .ok_or_else(|| {
                LifecycleError::Metadata("a pipeline row vanished while seeding".into())
            })?;
        pipelines.0.push(newest);
    }
    Ok(pipelines)
}

async fn insert_parameters_and_dependencies(
    tx: &mut dyn Tx,
    pipelines: &PipelineIds,
) -> Result<(), LifecycleError> {
    for (id, name, value) in PARAMETERS {
        tx.execute(
            &statements::INSERT_PARAMETER,
            &[pipelines.of(*id)?.into(), (*name).into(), (*value).into()],
        )
        .await?;
    }
    for (from, to) in DEPENDENCIES {
        tx.execute(
            &statements::INSERT_DEPENDENCY,
            &[pipelines.of(*from)?.into(), pipelines.of(*to)?.into()],
        )
        .await?;
    }
    Ok(())
}

async fn insert_properties(tx: &mut dyn Tx, now: NaiveDateTime) -> Result<(), LifecycleError> {
    for (name, value, description) in PROPERTIES {
        tx.execute(
            &statements::INSERT_PROPERTY,
            &[
                (*name).into(),
                (*value).into(),
                (*description).into(),
                now.into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The Daily batch (the four enabled stages) and the Hourly one (Speed).
async fn insert_batches(
    tx: &mut dyn Tx,
    stage_ids: &HashMap<String, i32>,
) -> Result<(), LifecycleError> {
    for (name, description, stages) in [
        (
            "Daily",
            "Daily Worker Pipelines.",
            &["Extract", "Transform", "Load", "Serve"][..],
        ),
        ("Hourly", "Hourly Worker Pipelines.", &["Speed"][..]),
    ] {
        let batch = Uuid::new_v4();
        tx.execute(
            &statements::INSERT_BATCH,
            &[batch.into(), name.into(), description.into(), true.into()],
        )
        .await?;
        for stage in stages {
            tx.execute(
                &statements::INSERT_BATCH_STAGE,
                &[batch.into(), lookup(stage_ids, stage)?.into()],
            )
            .await?;
        }
    }
    Ok(())
}

async fn ids(
    tx: &mut dyn Tx,
    statement: &crate::store::Statement,
    id: &str,
    name: &str,
) -> Result<HashMap<String, i32>, LifecycleError> {
    tx.query(statement, &[])
        .await?
        .iter()
        .map(|r| Ok((r.text(name)?, r.i32(id)?)))
        .collect::<Result<_, StoreError>>()
        .map_err(Into::into)
}

fn lookup(map: &HashMap<String, i32>, name: &str) -> Result<i32, LifecycleError> {
    map.get(name)
        .copied()
        .ok_or_else(|| LifecycleError::Metadata(format!("{name} missing after insert")))
}

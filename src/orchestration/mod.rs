//! The procfwk lifecycle, in Rust, with procfwk master's semantics (the ~40 stored procedures the ADF
//! pipelines used to call one activity at a time): start or restart an execution, prepare each stage,
//! start, check and settle each worker, and finish the execution. Every step is one [`Transition`] run in
//! one transaction by [`crate::store::Store::run`]; each is written so that running it twice (an ADF
//! activity retry, a lost commit acknowledgement) changes nothing the second time.
//!
//! [`Transition`]: crate::store::Transition

pub mod blocking;
pub mod execution;
pub mod properties;
pub mod readouts;
pub mod sample;
pub mod stage;
pub mod worker;

pub use execution::{
    control_key, FinishExecution, Finished, OrchestratorRef, ParentState, PreviousParent,
    ReadOrchestrator, ReadScopeHolder, ScopeHolder, StartExecution, StartMode, Started,
};
pub use properties::{FailureHandling, Properties, SpnHandling, UNLINKED_WORKERS_PROPERTY};
pub use stage::{PrepareStage, Prepared};
pub(crate) use worker::KeyParams;
pub use worker::{
    AbandonClaim, AdoptRun, Applied, ApplyResult, Claim, ClaimWorker, InFlight, InFlightWorkers,
    ReadWorker, RecordCheck, RecordRunId, RunIdKnown, TakeOverClaim, UnrecordedClaim,
    WorkerActivityFailed, WorkerKey, WorkerOutcome, WorkerPlan,
};

use crate::store::{StoreError, TransientCheck};
use chrono::{NaiveDateTime, Utc};

/// Why a lifecycle step cannot go ahead.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// procfwk's wording, so operators recognise it.
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("Requested execution run does not contain any enabled stages/pipelines.")]
    NoWork,
    #[error("batch {0:?} does not exist")]
    BatchNotFound(String),
    #[error("batch {0:?} is not enabled")]
    BatchDisabled(String),
    #[error("{0}")]
    BatchMode(String),
    #[error("execution {0} is not in the current execution table")]
    ExecutionNotFound(uuid::Uuid),
    #[error("worker {0} is not part of execution {1}")]
    WorkerNotFound(String, uuid::Uuid),
    #[error("property {name} has the invalid value {value:?}: {problem}")]
    InvalidProperty {
        name: String,
        value: String,
        problem: String,
    },
    #[error("the metadata is inconsistent: {0}")]
    Metadata(String),
    /// A first start of a scope met another start's new scope row: the transition runs again and then
    /// sees whose it is (its own Parent's: that execution; another's: already running).
    #[error("{}", execution::ALREADY_RUNNING)]
    ScopeStartedMeanwhile,
}

impl TransientCheck for LifecycleError {
    fn transient(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_transient())
            || matches!(self, Self::ScopeStartedMeanwhile)
    }
    fn minimum_wait(&self) -> std::time::Duration {
        match self {
            Self::Store(e) => e.minimum_wait(),
            _ => std::time::Duration::ZERO,
        }
    }

    fn missing_object(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_missing_object())
    }
}

/// Now, UTC, to the millisecond (what a `DATETIME` column keeps).
pub fn now() -> NaiveDateTime {
    let t = Utc::now().naive_utc();
    let ms = t.and_utc().timestamp_subsec_millis();
    t.with_nanosecond(ms * 1_000_000).unwrap_or(t)
}

use chrono::Timelike;

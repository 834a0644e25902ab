//! Pipeline-run statuses as ADF reports them, the `SimpleStatus` the Infant pipeline loops on, and
//! procfwk's own statuses: a worker's (`CurrentExecution.PipelineStatus`) and a scope's
//! (`ExecutionControl.ControlStatus`, `BatchExecution.BatchStatus`). The procfwk texts are load-bearing
//! (the shipped SQL, reports and pipelines compare them), so each variant's `as_str` is exactly it.

use super::request::Dialect;
use std::fmt;

/// The status of a worker pipeline run. ADF types the field as a free string, so unknown values are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    /// ADF spells it `Canceling`; procfwk (and its SQL) spell it `Cancelling`.
    Canceling,
    Cancelled,
    Other(String),
}

impl RunStatus {
    pub fn parse(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "queued" => Self::Queued,
            "inprogress" => Self::InProgress,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceling" | "cancelling" => Self::Canceling,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => Self::Other(text.to_string()),
        }
    }

    /// The status exactly as ADF spells it.
    pub fn adf_name(&self) -> &str {
        match self {
            Self::Queued => "Queued",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceling => "Canceling",
            Self::Cancelled => "Cancelled",
            Self::Other(s) => s,
        }
    }

    /// The status as procfwk reports it from CheckPipelineStatus and CancelPipeline: ADF's `Canceling`
    /// rewritten to `Cancelling`.
    pub fn procfwk_name(&self) -> &str {
        match self {
            Self::Canceling => "Cancelling",
            other => other.adf_name(),
        }
    }

    /// Still going: the worker has not reached a final state. An unknown status counts as finished so
    /// that the Infant's loop ends and the result switch reports it as Unknown.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Queued | Self::InProgress | Self::Canceling)
    }

    pub fn is_cancellable(&self) -> bool {
        matches!(self, Self::Queued | Self::InProgress)
    }

    pub fn simple(&self, dialect: Dialect) -> SimpleStatus {
        if self.is_running() {
            SimpleStatus::Running
        } else {
            match dialect {
                Dialect::V1 => SimpleStatus::Done,
                Dialect::V2 => SimpleStatus::Complete,
            }
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.adf_name())
    }
}

/// What the Infant's `Until` loop reads: keep polling (`Running`) or stop (`Done` in v1.x, `Complete` in 2.x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleStatus {
    Running,
    Done,
    Complete,
}

impl SimpleStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Done => "Done",
            Self::Complete => "Complete",
        }
    }
}

/// A worker's status in procfwk's metadata (`CurrentExecution.PipelineStatus`, `ExecutionLog`). The
/// column is free text, so a value procfwk never writes is kept as it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerStatus {
    /// `NULL` in the column; reported as `Not Started`.
    NotStarted,
    Preparing,
    Validating,
    Running,
    /// Being checked by the clean-up before a start.
    Checking,
    Success,
    Failed,
    Blocked,
    Unknown,
    Cancelled,
    /// `<CallingActivity>Error`, written when a framework activity around the worker failed
    /// (`ExecuteWorkerPipelineError`, `GetWorkerPipelineStatusError`, ...): the whole text.
    ActivityError(String),
    /// Anything else found in the column.
    Other(String),
}

impl WorkerStatus {
    /// The status `SetLogActivityFailed` writes for a failed framework activity.
    pub fn activity_error(activity: &str) -> Self {
        Self::ActivityError(format!("{activity}Error"))
    }

    /// A status as the column holds it (`None`: `NULL`, not started). Total: unknown text is kept.
    pub fn from_column(text: Option<&str>) -> Self {
        match text {
            None => Self::NotStarted,
            Some(t) => Self::parse(t),
        }
    }

    /// A status as procfwk spells it (exactly; `Not Started` for the summary's `NULL`). Total.
    pub fn parse(text: &str) -> Self {
        match text {
            "Not Started" => Self::NotStarted,
            "Preparing" => Self::Preparing,
            "Validating" => Self::Validating,
            "Running" => Self::Running,
            "Checking" => Self::Checking,
            "Success" => Self::Success,
            "Failed" => Self::Failed,
            "Blocked" => Self::Blocked,
            "Unknown" => Self::Unknown,
            "Cancelled" => Self::Cancelled,
            t if t.len() > "Error".len() && t.ends_with("Error") => Self::ActivityError(t.into()),
            t => Self::Other(t.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::NotStarted => "Not Started",
            Self::Preparing => "Preparing",
            Self::Validating => "Validating",
            Self::Running => "Running",
            Self::Checking => "Checking",
            Self::Success => "Success",
            Self::Failed => "Failed",
            Self::Blocked => "Blocked",
            Self::Unknown => "Unknown",
            Self::Cancelled => "Cancelled",
            Self::ActivityError(t) | Self::Other(t) => t,
        }
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a scope (`ExecutionControl.ControlStatus`) or of a batch's execution
/// (`BatchExecution.BatchStatus`). Free text in the store, so unknown values are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeStatus {
    Running,
    Stopping,
    Stopped,
    Success,
    /// A batch execution given up for a new one (`OverideRestart`).
    Abandoned,
    Other(String),
}

impl ScopeStatus {
    /// Total: unknown text is kept.
    pub fn parse(text: &str) -> Self {
        match text {
            "Running" => Self::Running,
            "Stopping" => Self::Stopping,
            "Stopped" => Self::Stopped,
            "Success" => Self::Success,
            "Abandoned" => Self::Abandoned,
            t => Self::Other(t.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Success => "Success",
            Self::Abandoned => "Abandoned",
            Self::Other(t) => t,
        }
    }
}

impl fmt::Display for ScopeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_statuses_round_trip_procfwk_texts() {
        for text in [
            "Not Started",
            "Preparing",
            "Validating",
            "Running",
            "Checking",
            "Success",
            "Failed",
            "Blocked",
            "Unknown",
            "Cancelled",
            "ExecuteWorkerPipelineError",
            "Whatever",
        ] {
            assert_eq!(WorkerStatus::parse(text).as_str(), text);
        }
        assert_eq!(WorkerStatus::from_column(None), WorkerStatus::NotStarted);
        assert_eq!(
            WorkerStatus::activity_error("GetWorkerPipelineStatus").as_str(),
            "GetWorkerPipelineStatusError"
        );
        assert!(matches!(
            WorkerStatus::parse("InvalidPipelineNameError"),
            WorkerStatus::ActivityError(_)
        ));
        assert_eq!(
            WorkerStatus::parse("running"),
            WorkerStatus::Other("running".into())
        );
        for text in [
            "Running",
            "Stopping",
            "Stopped",
            "Success",
            "Abandoned",
            "Odd",
        ] {
            assert_eq!(ScopeStatus::parse(text).as_str(), text);
        }
    }

    #[test]
    fn running_states_in_both_dialects() {
        for s in ["Queued", "InProgress", "Canceling", "Cancelling"] {
            let st = RunStatus::parse(s);
            assert_eq!(st.simple(Dialect::V1), SimpleStatus::Running, "{s}");
            assert_eq!(st.simple(Dialect::V2), SimpleStatus::Running, "{s}");
        }
        for s in ["Succeeded", "Failed", "Cancelled", "Whatever"] {
            let st = RunStatus::parse(s);
            assert_eq!(st.simple(Dialect::V1), SimpleStatus::Done, "{s}");
            assert_eq!(st.simple(Dialect::V2), SimpleStatus::Complete, "{s}");
        }
    }

    #[test]
    fn canceling_rewrite() {
        assert_eq!(RunStatus::parse("Canceling").procfwk_name(), "Cancelling");
        assert_eq!(RunStatus::parse("Canceling").adf_name(), "Canceling");
        assert_eq!(RunStatus::parse("Mystery").procfwk_name(), "Mystery");
    }
}

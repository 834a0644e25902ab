//! Pipeline-run statuses as ADF reports them, and the `SimpleStatus` the Infant pipeline loops on.

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

#[cfg(test)]
mod tests {
    use super::*;

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

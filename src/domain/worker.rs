//! Which worker of which execution: the key every worker transition, lease holder and log row names.

use std::fmt;
use uuid::Uuid;

/// Which worker of which execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerKey {
    pub execution_id: Uuid,
    pub stage_id: i32,
    pub pipeline_id: i32,
}

impl fmt::Display for WorkerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {} pipeline {}", self.stage_id, self.pipeline_id)
    }
}

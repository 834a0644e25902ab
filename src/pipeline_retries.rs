//! How the shipped ADF pipelines (`deploy/adf/pipeline/`) retry each Azure Function activity — the
//! `retry` and `retryIntervalInSeconds` of its policy — in one table. `procfwk run` reads it to retry the
//! same calls the same way, and `tests/adf_pipelines.rs` checks every Azure Function activity of the
//! shipped pipelines against it, so the two cannot drift apart.
//!
//! **The rule.** A call that is safe to repeat gets [`RESTART_SAFE`]: 3 retries, 30 s apart. A Function
//! App instance that restarts (a deployment, scale-in, the host restarting a handler that died, an
//! out-of-memory kill) refuses or drops the calls in flight for as long as it takes to come back: the
//! host restarts a handler within seconds; a new Flex Consumption instance starts cold in seconds to
//! tens of seconds *(inference: no published bound)*. 30 s is ADF's smallest retry interval (the
//! 2018-06-01 `ActivityPolicy` schema: 30 to 86 400 s), and three of them keep retrying for at least
//! 90 s — longer than a restart — while a call that really fails still fails its activity within about
//! two minutes plus the attempts themselves. ADF retries every failed attempt, whatever the status, so
//! a definite refusal (a 409) is asked three more times too: harmless for these calls, only slower.
//!
//! **Which calls are safe to repeat** (each checked in its function):
//! - `ExecutePipelineV2`: the worker is claimed once (a compare-and-set on its row); a retry after the
//!   run id was recorded answers that run (`AlreadyStarted`) instead of starting a second one, and a
//!   retry refused before the claim changes nothing. (A retry that meets the claim of an attempt that
//!   died between claim and run id answers 409 "another call is starting this worker".)
//! - `CheckPipelineStatus`: reads the run and applies its result; applying the same result twice is a
//!   no-op.
//! - `PrepareStage`: one transaction; it marks only workers not started yet and lists the same workers
//!   again.
//! - `FinishExecution`: one transaction; a retry after the execution was archived answers success.
//! - `VmPower` `start` / `status` / `stop`: take-or-renew, renew-only and release of the worker's own
//!   lease, each one store transaction; starting a VM already starting joins that operation. A start
//!   whose VM ARM refused records the worker as failed; should a retry then succeed, the Infant's
//!   `ExecutePipelineV2` is refused (the worker is not startable) and the worker stays failed, VM
//!   released.
//!
//! **Not retried**: `StartExecution` ([`NOT_REPEATABLE`]). A retry after an attempt that created the
//! execution finds that execution in progress and is refused (409), which would fail the Parent with a
//! misleading error instead of the real one.

/// The retry part of an ADF activity policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `retry`: attempts after the first.
    pub retries: u32,
    /// `retryIntervalInSeconds`: the wait before each retry.
    pub interval_secs: u32,
}

impl RetryPolicy {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.interval_secs))
    }
}

/// Calls that are safe to repeat: ride out an instance restart.
pub const RESTART_SAFE: RetryPolicy = RetryPolicy {
    retries: 3,
    interval_secs: 30,
};

/// Calls that are not: one attempt (the interval is ADF's default, unused).
pub const NOT_REPEATABLE: RetryPolicy = RetryPolicy {
    retries: 0,
    interval_secs: 30,
};

/// One Azure Function activity of the shipped pipelines and its retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityRetry {
    pub pipeline: &'static str,
    pub activity: &'static str,
    pub function: &'static str,
    /// VmPower's `action` in the activity's body.
    pub action: Option<&'static str>,
    pub policy: RetryPolicy,
}

const fn activity(
    pipeline: &'static str,
    activity: &'static str,
    function: &'static str,
    action: Option<&'static str>,
    policy: RetryPolicy,
) -> ActivityRetry {
    ActivityRetry {
        pipeline,
        activity,
        function,
        action,
        policy,
    }
}

/// Every Azure Function activity of `deploy/adf/pipeline/`.
pub const ACTIVITIES: &[ActivityRetry] = &[
    activity(
        "02-Parent",
        "Start Execution",
        "StartExecution",
        None,
        NOT_REPEATABLE,
    ),
    activity(
        "02-Parent",
        "Finish Execution",
        "FinishExecution",
        None,
        RESTART_SAFE,
    ),
    activity(
        "03-Child",
        "Prepare Stage",
        "PrepareStage",
        None,
        RESTART_SAFE,
    ),
    activity(
        "04-Infant",
        "Execute Worker",
        "ExecutePipelineV2",
        None,
        RESTART_SAFE,
    ),
    activity(
        "04-Infant",
        "Check Worker",
        "CheckPipelineStatus",
        None,
        RESTART_SAFE,
    ),
    activity(
        "04-Infant-VmPower",
        "Start VM",
        "VmPower",
        Some("start"),
        RESTART_SAFE,
    ),
    activity(
        "04-Infant-VmPower",
        "Get VM Status",
        "VmPower",
        Some("status"),
        RESTART_SAFE,
    ),
    activity(
        "04-Infant-VmPower",
        "Execute Worker",
        "ExecutePipelineV2",
        None,
        RESTART_SAFE,
    ),
    activity(
        "04-Infant-VmPower",
        "Check Worker",
        "CheckPipelineStatus",
        None,
        RESTART_SAFE,
    ),
    activity(
        "04-Infant-VmPower",
        "Stop VM",
        "VmPower",
        Some("stop"),
        RESTART_SAFE,
    ),
];

/// The policy the pipelines give a call of `function` (with VmPower's `action`); a call no pipeline
/// makes is not retried.
pub fn for_call(function: &str, action: Option<&str>) -> RetryPolicy {
    ACTIVITIES
        .iter()
        .find(|a| {
            a.function == function
                && a.action.map(str::to_ascii_lowercase) == action.map(str::to_ascii_lowercase)
        })
        .map_or(NOT_REPEATABLE, |a| a.policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_call_has_the_same_policy_in_every_pipeline() {
        for a in ACTIVITIES {
            assert_eq!(for_call(a.function, a.action), a.policy, "{a:?}");
        }
    }

    #[test]
    fn intervals_are_ones_adf_accepts() {
        // ActivityPolicy (Data Factory 2018-06-01): retryIntervalInSeconds 30..=86400.
        assert!(ACTIVITIES
            .iter()
            .all(|a| (30..=86_400).contains(&a.policy.interval_secs)));
    }

    #[test]
    fn the_worker_calls_ride_out_a_restart_and_start_execution_is_not_repeated() {
        assert_eq!(for_call("ExecutePipelineV2", None), RESTART_SAFE);
        assert_eq!(for_call("CheckPipelineStatus", None), RESTART_SAFE);
        assert_eq!(for_call("VmPower", Some("Start")), RESTART_SAFE);
        assert_eq!(for_call("StartExecution", None), NOT_REPEATABLE);
        assert_eq!(for_call("NoSuchFunction", None), NOT_REPEATABLE);
    }
}

//! Test hook: deterministic crash points. `PROCFWK_FAULT_POINT=<name>` (or `<name>@<n>`, the n-th time
//! the point is reached, counting from 1) makes the process `abort()` at that named point, the way an
//! instance dies on scale-in or out-of-memory: no destructor runs, no reply is sent, no transaction
//! still open commits. Compiled in always; a no-op unless the variable is set (read once per process).
//! Never set it in production. The crash test (`tests/crash.rs`) drives the handler through every point.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The named points, in the order a worker's life reaches them.
pub const POINTS: &[&str] = &[
    AFTER_CLAIM,
    AFTER_CREATE_RUN,
    CHECK_APPLY,
    PREPARE_STAGE,
    FINISH_EXECUTION,
];

/// `ExecutePipelineV2`: the worker is claimed, createRun not yet sent.
pub const AFTER_CLAIM: &str = "after-claim";
/// `ExecutePipelineV2`: ADF accepted the run, its run id not yet recorded.
pub const AFTER_CREATE_RUN: &str = "after-create-run";
/// `CheckPipelineStatus`: the run is over, its result not yet applied.
pub const CHECK_APPLY: &str = "check-apply";
/// `PrepareStage`: the stage is prepared (committed), the answer not yet sent.
pub const PREPARE_STAGE: &str = "prepare-stage";
/// `FinishExecution`: the execution is finished (committed), the answer not yet sent.
pub const FINISH_EXECUTION: &str = "finish-execution";

/// The environment variable naming the point.
pub const ENV: &str = "PROCFWK_FAULT_POINT";

struct Armed {
    name: String,
    nth: u32,
    seen: AtomicU32,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| parse(&std::env::var(ENV).ok()?))
        .as_ref()
}

fn parse(setting: &str) -> Option<Armed> {
    let setting = setting.trim();
    if setting.is_empty() {
        return None;
    }
    let (name, nth) = match setting.split_once('@') {
        Some((name, n)) => (name, n.trim().parse().ok().filter(|n| *n > 0)?),
        None => (setting, 1),
    };
    Some(Armed {
        name: name.trim().to_string(),
        nth,
        seen: AtomicU32::new(0),
    })
}

impl Armed {
    /// Whether reaching `point` now is the armed hit.
    fn hit(&self, point: &str) -> bool {
        point == self.name && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
    }
}

/// Reached `point`: abort the process if it is the armed one.
pub fn point(point: &'static str) {
    if let Some(armed) = armed() {
        if armed.hit(point) {
            eprintln!("{ENV}: aborting at {point}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_fires_on_its_nth_hit_only() {
        let armed = parse("after-claim@2").expect("armed");
        assert!(!armed.hit(CHECK_APPLY));
        assert!(!armed.hit(AFTER_CLAIM));
        assert!(armed.hit(AFTER_CLAIM));
        assert!(!armed.hit(AFTER_CLAIM));
        assert!(parse("check-apply").is_some_and(|a| a.hit(CHECK_APPLY)));
        assert!(parse("").is_none());
        assert!(parse("after-claim@0").is_none());
        assert!(parse("after-claim@x").is_none());
    }
}

//! The pipeline-run engine. A run's whole life is planned when it is created ([`RunPlan`]: when it
//! leaves `Queued`, when each activity starts and ends, how it ends); its state at any moment is then
//! *computed* from the time elapsed, so there are no background tasks and a status read takes no lock
//! beyond finding the run. The only thing that changes after creation is a cancel request (an atomic
//! offset) and the `isLatest` flag of a recovered run.
//!
//! Lifecycle: `Queued` (queued_secs) → `InProgress` (the activities) → `Succeeded` | `Failed`; a cancel
//! while `Queued` or `InProgress` → `Canceling` (canceling_secs) → `Cancelled`. All durations are scaled.

use super::clock::{format_timestamp, millis, scaled, SimClock};
use super::config::{ActivityDef, PipelineDef};
use super::parameters::ResolvedParameters;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// ADF pipeline-run states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Canceling,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceling => "Canceling",
            Self::Cancelled => "Cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// The error an activity ends with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActivityFailure {
    pub code: String,
    pub message: String,
    pub failure_type: String,
}

/// When one activity runs (offsets from the run's creation) and how it ends.
#[derive(Debug, Clone)]
pub(crate) struct PlannedActivity {
    pub name: String,
    pub activity_type: String,
    pub activity_run_id: String,
    pub start: Duration,
    pub end: Duration,
    pub failure: Option<ActivityFailure>,
}

/// A run's whole timeline, decided at creation.
#[derive(Debug, Clone)]
pub(crate) struct RunPlan {
    /// When the run leaves `Queued`.
    pub queued: Duration,
    /// When the run ends on its own.
    pub end: Duration,
    /// How long `Canceling` lasts.
    pub canceling: Duration,
    /// Containers come before the activities inside them, as ADF lists them.
    pub activities: Vec<PlannedActivity>,
    /// `Some(message)` when the run ends `Failed`.
    pub failure: Option<String>,
}

impl RunPlan {
    /// Plans a run of `pipeline` with `params`.
    pub fn new(
        pipeline: &PipelineDef,
        params: &ResolvedParameters,
        time_scale: f64,
        canceling_secs: f64,
    ) -> Self {
        let work_secs = pipeline
            .wait_parameter
            .as_deref()
            .and_then(|wait| pipeline.parameter(wait))
            .and_then(|(declared, _)| params.number(declared))
            .unwrap_or(pipeline.default_duration_secs);
        let run_fails = match &pipeline.fail_when {
            None => true,
            Some(rule) => pipeline
                .parameter(&rule.parameter)
                .and_then(|(declared, _)| params.value(declared))
                .is_some_and(|value| value.eq_ignore_ascii_case(&rule.equals)),
        };
        let queued = scaled(pipeline.queued_secs, time_scale);
        let duration_of =
            |a: &ActivityDef| scaled(a.duration_secs.unwrap_or(work_secs), time_scale);
        let takes_part = |a: &ActivityDef| run_fails || !a.only_when_failing;
        let planned = |a: &ActivityDef, start: Duration, end: Duration, failure| PlannedActivity {
            name: a.name.clone(),
            activity_type: a.activity_type.clone(),
            activity_run_id: Uuid::new_v4().to_string(),
            start,
            end,
            failure,
        };
        let declared_failure = |a: &ActivityDef| ActivityFailure {
            code: a.error_code.clone(),
            message: a.message.clone(),
            failure_type: a.failure_type.clone(),
        };

        let mut activities = Vec::new();
        let mut cursor = queued;
        let mut failure = None;
        for container in pipeline
            .activities
            .iter()
            .filter(|a| a.parent.is_none() && takes_part(a))
        {
            let start = cursor;
            let mut inner = Vec::new();
            let mut inner_cursor = start;
            let mut inner_failed = false;
            for child in pipeline
                .activities
                .iter()
                .filter(|a| a.parent.as_deref() == Some(container.name.as_str()) && takes_part(a))
            {
                let child_end = inner_cursor.saturating_add(duration_of(child));
                let child_fails = run_fails && child.fails;
                inner.push(planned(
                    child,
                    inner_cursor,
                    child_end,
                    child_fails.then(|| declared_failure(child)),
                ));
                inner_cursor = child_end;
                if child_fails {
                    inner_failed = true;
                    break;
                }
            }
            let end = start
                .saturating_add(duration_of(container))
                .max(inner_cursor);
            let container_failure = if run_fails && container.fails {
                Some(declared_failure(container))
            } else if inner_failed {
                Some(ActivityFailure {
                    code: "ActionFailed".into(),
                    message: "Activity failed because an inner activity failed".into(),
                    failure_type: "UserError".into(),
                })
            } else {
                None
            };
            if let Some(f) = &container_failure {
                failure = Some(format!(
                    "Operation on target {} failed: {}",
                    container.name, f.message
                ));
            }
            activities.push(planned(container, start, end, container_failure));
            activities.extend(inner);
            cursor = end;
            if failure.is_some() {
                break;
            }
        }
        if pipeline.activities.is_empty() {
            cursor = queued.saturating_add(scaled(work_secs, time_scale));
        }
        Self {
            queued,
            end: cursor,
            canceling: scaled(canceling_secs, time_scale),
            activities,
            failure,
        }
    }
}

/// Where a run stands at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunSnapshot {
    pub status: RunStatus,
    /// Offset of the end, once terminal.
    pub end: Option<Duration>,
    /// Offset of the last state change.
    pub last_updated: Duration,
}

/// Why a cancel request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlreadyFinished(pub RunStatus);

/// One pipeline run.
#[derive(Debug)]
pub(crate) struct PipelineRun {
    pub run_id: String,
    pub run_group_id: String,
    /// Lower-cased `subscription/resourceGroup/factory` the run belongs to.
    pub factory_key: String,
    pub pipeline_name: String,
    pub parameters: BTreeMap<String, String>,
    invoked_by_id: String,
    created: Instant,
    /// Creation order, for stable listings.
    pub seq: u64,
    pub plan: RunPlan,
    /// Offset (ns) of the cancel request plus one; 0 = not cancelled.
    cancel_offset: AtomicU64,
    /// Set when a recovery run of this run was created (`isLatest` false).
    superseded: AtomicBool,
}

impl PipelineRun {
    pub fn new(
        factory_key: String,
        pipeline_name: String,
        parameters: BTreeMap<String, String>,
        plan: RunPlan,
        run_group_id: Option<String>,
        created: Instant,
    ) -> Self {
        let run_id = Uuid::new_v4().to_string();
        Self {
            run_group_id: run_group_id.unwrap_or_else(|| run_id.clone()),
            run_id,
            factory_key,
            pipeline_name,
            parameters,
            invoked_by_id: Uuid::new_v4().simple().to_string(),
            created,
            seq: 0,
            plan,
            cancel_offset: AtomicU64::new(0),
            superseded: AtomicBool::new(false),
        }
    }

    fn cancel_requested_at(&self) -> Option<Duration> {
        match self.cancel_offset.load(Ordering::Acquire) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    pub fn is_latest(&self) -> bool {
        !self.superseded.load(Ordering::Relaxed)
    }

    pub fn mark_superseded(&self) {
        self.superseded.store(true, Ordering::Relaxed);
    }

    /// The run's state at `now`.
    pub fn snapshot(&self, now: Instant) -> RunSnapshot {
        let elapsed = now.saturating_duration_since(self.created);
        let plan = &self.plan;
        if let Some(cancel) = self.cancel_requested_at().filter(|c| *c <= elapsed) {
            let done = cancel.saturating_add(plan.canceling);
            return if elapsed >= done {
                RunSnapshot {
                    status: RunStatus::Cancelled,
                    end: Some(done),
                    last_updated: done,
                }
            } else {
                RunSnapshot {
                    status: RunStatus::Canceling,
                    end: None,
                    last_updated: cancel,
                }
            };
        }
        if elapsed < plan.queued {
            RunSnapshot {
                status: RunStatus::Queued,
                end: None,
                last_updated: Duration::ZERO,
            }
        } else if elapsed < plan.end {
            RunSnapshot {
                status: RunStatus::InProgress,
                end: None,
                last_updated: plan.queued,
            }
        } else {
            let status = if plan.failure.is_some() {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            };
            RunSnapshot {
                status,
                end: Some(plan.end),
                last_updated: plan.end,
            }
        }
    }

    /// Asks the run to stop. Accepted while `Queued`, `InProgress` or already `Canceling`.
    pub fn request_cancel(&self, now: Instant) -> Result<(), AlreadyFinished> {
        let status = self.snapshot(now).status;
        if status.is_terminal() {
            return Err(AlreadyFinished(status));
        }
        let elapsed = now.saturating_duration_since(self.created);
        let encoded = u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        // Only the first request counts; a second one while Canceling changes nothing.
        let _ =
            self.cancel_offset
                .compare_exchange(0, encoded, Ordering::AcqRel, Ordering::Acquire);
        Ok(())
    }

    /// The wall time of the run's last state change as of `now`.
    pub fn last_updated(&self, clock: &SimClock, now: Instant) -> chrono::DateTime<chrono::Utc> {
        clock.wall_after(self.created, self.snapshot(now).last_updated)
    }

    /// The PipelineRun resource as `GET .../pipelineruns/{runId}` answers it.
    pub fn view(&self, clock: &SimClock, now: Instant) -> PipelineRunView<'_> {
        let snapshot = self.snapshot(now);
        PipelineRunView {
            run_id: &self.run_id,
            run_group_id: &self.run_group_id,
            is_latest: self.is_latest(),
            pipeline_name: &self.pipeline_name,
            parameters: &self.parameters,
            invoked_by: InvokedBy {
                name: "Manual",
                id: &self.invoked_by_id,
                invoked_by_type: "Manual",
            },
            run_start: format_timestamp(clock.wall(self.created)),
            run_end: snapshot
                .end
                .map(|end| format_timestamp(clock.wall_after(self.created, end))),
            duration_in_ms: snapshot.end.map(millis),
            status: snapshot.status.as_str(),
            message: match snapshot.status {
                RunStatus::Failed => self.plan.failure.as_deref().unwrap_or(""),
                _ => "",
            },
            last_updated: format_timestamp(clock.wall_after(self.created, snapshot.last_updated)),
            annotations: [],
            run_dimensions: EmptyObject {},
        }
    }

    /// The activity runs that have started by `now`, each with the wall time it was last updated.
    pub fn activity_views(
        &self,
        clock: &SimClock,
        now: Instant,
    ) -> Vec<(ActivityRunView<'_>, chrono::DateTime<chrono::Utc>)> {
        let elapsed = now.saturating_duration_since(self.created);
        let cancel = self.cancel_requested_at().filter(|c| *c <= elapsed);
        let mut views = Vec::with_capacity(self.plan.activities.len());
        for activity in &self.plan.activities {
            if activity.start > elapsed {
                continue;
            }
            let (status, end, failure) = match cancel {
                Some(c) if activity.start >= c => continue,
                Some(c) if activity.end > c => {
                    let done = c.saturating_add(self.plan.canceling);
                    if elapsed >= done {
                        ("Cancelled", Some(done), None)
                    } else {
                        ("InProgress", None, None)
                    }
                }
                _ if elapsed < activity.end => ("InProgress", None, None),
                _ => match &activity.failure {
                    Some(f) => ("Failed", Some(activity.end), Some(f)),
                    None => ("Succeeded", Some(activity.end), None),
                },
            };
            let last_updated = clock.wall_after(self.created, end.unwrap_or(activity.start));
            let view = ActivityRunView {
                activity_name: &activity.name,
                activity_type: &activity.activity_type,
                activity_run_id: &activity.activity_run_id,
                pipeline_name: &self.pipeline_name,
                pipeline_run_id: &self.run_id,
                status,
                activity_run_start: format_timestamp(
                    clock.wall_after(self.created, activity.start),
                ),
                activity_run_end: end.map(|e| format_timestamp(clock.wall_after(self.created, e))),
                duration_in_ms: end.map(|e| millis(e.saturating_sub(activity.start))),
                input: EmptyObject {},
                output: EmptyObject {},
                error: ActivityErrorView {
                    error_code: failure.map_or("", |f| f.code.as_str()),
                    message: failure.map_or("", |f| f.message.as_str()),
                    failure_type: failure.map_or("", |f| f.failure_type.as_str()),
                    target: &activity.name,
                },
                linked_service_name: "",
                retry_attempt: None,
                user_properties: EmptyObject {},
            };
            views.push((view, last_updated));
        }
        views
    }
}

/// Serialises as `{}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct EmptyObject {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvokedBy<'a> {
    name: &'static str,
    id: &'a str,
    invoked_by_type: &'static str,
}

/// A PipelineRun as ADF answers it (`runEnd` and `durationInMs` absent until the run is terminal).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PipelineRunView<'a> {
    pub run_id: &'a str,
    pub run_group_id: &'a str,
    pub is_latest: bool,
    pub pipeline_name: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
    pub invoked_by: InvokedBy<'a>,
    pub run_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_in_ms: Option<i64>,
    pub status: &'static str,
    pub message: &'a str,
    pub last_updated: String,
    pub annotations: [&'static str; 0],
    pub run_dimensions: EmptyObject,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivityErrorView<'a> {
    pub error_code: &'a str,
    pub message: &'a str,
    pub failure_type: &'a str,
    pub target: &'a str,
}

/// An ActivityRun as `queryActivityruns` answers it; succeeded activities carry an `error` object with
/// empty strings, exactly like ADF.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivityRunView<'a> {
    pub activity_name: &'a str,
    pub activity_type: &'a str,
    pub activity_run_id: &'a str,
    pub pipeline_name: &'a str,
    pub pipeline_run_id: &'a str,
    pub status: &'static str,
    pub activity_run_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_run_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_in_ms: Option<i64>,
    pub input: EmptyObject,
    pub output: EmptyObject,
    pub error: ActivityErrorView<'a>,
    pub linked_service_name: &'static str,
    pub retry_attempt: Option<u32>,
    pub user_properties: EmptyObject,
}

/// All runs, by run id. Readers hold the lock only long enough to clone an `Arc`.
#[derive(Debug, Default)]
pub(crate) struct RunStore {
    runs: RwLock<HashMap<Uuid, Arc<PipelineRun>>>,
    next_seq: AtomicU64,
}

impl RunStore {
    pub fn insert(&self, mut run: PipelineRun) -> Arc<PipelineRun> {
        run.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let key = Uuid::parse_str(&run.run_id).unwrap_or_else(|_| Uuid::new_v4());
        let run = Arc::new(run);
        self.runs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&run));
        run
    }

    /// The run with this id (any GUID spelling), if any.
    pub fn get(&self, run_id: &str) -> Option<Arc<PipelineRun>> {
        let key = Uuid::parse_str(run_id.trim()).ok()?;
        self.runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// Every run of one factory, in creation order.
    pub fn in_factory(&self, factory_key: &str) -> Vec<Arc<PipelineRun>> {
        let mut runs: Vec<Arc<PipelineRun>> = self
            .runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.factory_key == factory_key)
            .cloned()
            .collect();
        runs.sort_by_key(|r| r.seq);
        runs
    }

    pub fn len(&self) -> usize {
        self.runs.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::parameters::resolve;
    use serde_json::{json, Map, Value};

    const SCALE: f64 = 0.01;

    fn run_of(name: &str, body: Value) -> PipelineRun {
        let pipeline = SimConfig::sample()
            .pipelines
            .into_iter()
            .find(|p| p.name == name)
            .expect("sample pipeline");
        let body: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
        let params = resolve(&pipeline, Some(&body)).expect("valid parameters");
        let plan = RunPlan::new(&pipeline, &params, SCALE, 0.5);
        PipelineRun::new(
            "f".into(),
            pipeline.name.clone(),
            params.display,
            plan,
            None,
            Instant::now(),
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn wait_worker_goes_queued_in_progress_succeeded() {
        // Wait 1 with WaitTime 1 at scale 0.01: queued 10 ms, then 10 ms of work.
        let run = run_of("Wait 1", json!({"WaitTime": "1"}));
        let t0 = run.created;
        assert_eq!(run.snapshot(t0).status, RunStatus::Queued);
        assert_eq!(run.snapshot(t0 + ms(9)).status, RunStatus::Queued);
        assert_eq!(run.snapshot(t0 + ms(10)).status, RunStatus::InProgress);
        assert_eq!(run.snapshot(t0 + ms(19)).status, RunStatus::InProgress);
        let done = run.snapshot(t0 + ms(20));
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(done.end, Some(ms(20)));
    }

    #[test]
    fn views_show_end_and_duration_only_when_terminal() {
        let run = run_of("Wait 1", json!({"WaitTime": 1}));
        let clock = SimClock::new();
        let t0 = run.created;
        let running = serde_json::to_value(run.view(&clock, t0 + ms(15))).expect("json");
        assert_eq!(running["status"], "InProgress");
        assert!(running.get("runEnd").is_none() && running.get("durationInMs").is_none());
        assert_eq!(running["parameters"]["WaitTime"], "1");
        assert_eq!(running["invokedBy"]["invokedByType"], "Manual");
        let done = serde_json::to_value(run.view(&clock, t0 + ms(50))).expect("json");
        assert_eq!(done["status"], "Succeeded");
        assert_eq!(done["durationInMs"], 20);
        assert_eq!(done["message"], "");
        assert_eq!(done["annotations"], json!([]));
        assert_eq!(done["runDimensions"], json!({}));
        assert_eq!(done["isLatest"], true);
    }

    #[test]
    fn intentional_error_fails_with_the_two_documented_errors() {
        let run = run_of(
            "Intentional Error",
            json!({"RaiseErrors": "true", "WaitTime": 1}),
        );
        let clock = SimClock::new();
        let later = run.created + Duration::from_secs(1);
        let view = serde_json::to_value(run.view(&clock, later)).expect("json");
        assert_eq!(view["status"], "Failed");
        assert_eq!(
            view["message"],
            "Operation on target Raise Errors or Not failed: Activity failed because an inner activity failed"
        );
        let activities = run.activity_views(&clock, later);
        assert_eq!(activities.len(), 3);
        let errors: Vec<(&str, &str, &str, &str, &str)> = activities
            .iter()
            .map(|(a, _)| &a.error)
            .filter(|e| !e.error_code.is_empty())
            .map(|e| (e.target, e.error_code, e.failure_type, e.message, ""))
            .collect();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].0, "Raise Errors or Not");
        assert_eq!(errors[0].1, "ActionFailed");
        assert_eq!(
            errors[0].3,
            "Activity failed because an inner activity failed"
        );
        assert_eq!(errors[1].0, "Call Fail Procedure");
        assert_eq!(errors[1].1, "2402");
        assert_eq!(errors[1].2, "UserError");
        assert!(errors[1]
            .3
            .ends_with("The Stored Procedure intentionally failed."));
        let types: Vec<&str> = activities.iter().map(|(a, _)| a.activity_type).collect();
        assert_eq!(types, ["Wait", "IfCondition", "SqlServerStoredProcedure"]);
    }

    #[test]
    fn intentional_error_without_raise_errors_succeeds_with_empty_errors() {
        let run = run_of("Intentional Error", json!({"WaitTime": 1}));
        let clock = SimClock::new();
        let later = run.created + Duration::from_secs(1);
        assert_eq!(run.snapshot(later).status, RunStatus::Succeeded);
        let activities = run.activity_views(&clock, later);
        assert_eq!(activities.len(), 2);
        for (activity, _) in &activities {
            assert_eq!(activity.status, "Succeeded");
            assert_eq!(activity.error.error_code, "");
            assert_eq!(activity.error.target, activity.activity_name);
        }
    }

    #[test]
    fn only_started_activities_are_listed() {
        let run = run_of(
            "Intentional Error",
            json!({"RaiseErrors": "true", "WaitTime": 1}),
        );
        let clock = SimClock::new();
        assert!(run.activity_views(&clock, run.created).is_empty());
        let one = run.activity_views(&clock, run.created + ms(12));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0.status, "InProgress");
        assert!(one[0].0.activity_run_end.is_none());
    }

    #[test]
    fn cancel_goes_canceling_then_cancelled_and_terminal_runs_refuse() {
        let run = run_of("Wait 1", json!({"WaitTime": 10}));
        let t0 = run.created;
        assert_eq!(run.request_cancel(t0 + ms(50)), Ok(()));
        assert_eq!(run.snapshot(t0 + ms(50)).status, RunStatus::Canceling);
        // A second request while Canceling is accepted and changes nothing.
        assert_eq!(run.request_cancel(t0 + ms(52)), Ok(()));
        assert_eq!(run.snapshot(t0 + ms(54)).status, RunStatus::Canceling);
        let cancelled = run.snapshot(t0 + ms(55));
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        assert_eq!(cancelled.end, Some(ms(55)));
        assert_eq!(
            run.request_cancel(t0 + ms(60)),
            Err(AlreadyFinished(RunStatus::Cancelled))
        );
        let clock = SimClock::new();
        let activities = run.activity_views(&clock, t0 + ms(60));
        assert_eq!(activities.len(), 1);
        assert_eq!(activities[0].0.status, "Cancelled");

        let finished = run_of("Wait 1", json!({"WaitTime": 1}));
        let after = finished.created + Duration::from_secs(1);
        assert_eq!(
            finished.request_cancel(after),
            Err(AlreadyFinished(RunStatus::Succeeded))
        );
    }

    #[test]
    fn cancel_while_queued_never_starts_activities() {
        let run = run_of("Queued Forever", json!({}));
        let t0 = run.created;
        assert_eq!(
            run.snapshot(t0 + Duration::from_secs(3600)).status,
            RunStatus::Queued
        );
        assert_eq!(run.request_cancel(t0 + ms(1)), Ok(()));
        assert_eq!(run.snapshot(t0 + ms(10)).status, RunStatus::Cancelled);
        assert!(run.activity_views(&SimClock::new(), t0 + ms(10)).is_empty());
    }

    #[test]
    fn store_finds_runs_by_any_guid_spelling() {
        let store = RunStore::default();
        let run = store.insert(run_of("Wait 2", json!({})));
        assert!(store.get(&run.run_id.to_uppercase()).is_some());
        assert!(store.get("not-a-guid").is_none());
        assert_eq!(store.in_factory("f").len(), 1);
        assert_eq!(store.len(), 1);
    }
}

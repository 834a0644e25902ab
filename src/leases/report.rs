//! The cost report (`procfwk vm report`): from the power log, per pool, the hours its VMs were
//! allocated against the lower bound — the union of the intervals when some lease was live — and the
//! number of starts. A VM counts as allocated from its `StartRequested` (or an observation of it
//! allocated) to its `DeallocateRequested` (or an observation of it deallocated).

use crate::domain::PowerState;
use crate::store::statements as sql;
use crate::store::{Store, StoreError, Transition, Tx};
use chrono::NaiveDateTime;
use serde::Serialize;
use std::collections::BTreeMap;

/// One row of the power log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEvent {
    pub pool_key: String,
    pub vm_name: Option<String>,
    pub at: NaiveDateTime,
    pub event: String,
    pub holder: Option<String>,
    pub power_state: Option<PowerState>,
}

/// The report of one pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolCost {
    pub pool_key: String,
    /// VM-hours allocated, all nodes added up.
    pub allocated_hours: f64,
    /// Hours some lease was live (the least a pool of one VM could have been allocated).
    pub leased_hours: f64,
    pub starts: usize,
    pub deallocations: usize,
    pub leases: usize,
}

/// Reads the whole power log.
pub async fn read_log(store: &Store) -> Result<Vec<LogEvent>, StoreError> {
    struct ReadLog;
    #[async_trait::async_trait]
    impl Transition for ReadLog {
        type Output = Vec<LogEvent>;
        type Error = StoreError;
        async fn apply(&self, tx: &mut dyn Tx) -> Result<Vec<LogEvent>, StoreError> {
            let rows = tx.query(&sql::VM_POWER_LOG_ALL, &[]).await?;
            rows.iter()
                .map(|r| {
                    Ok(LogEvent {
                        pool_key: r.text("PoolKey")?,
                        vm_name: r.opt_text("VmName")?,
                        at: r.opt_datetime("EventDateTime")?.unwrap_or_default(),
                        event: r.text("Event")?,
                        holder: r.opt_text("Holder")?,
                        power_state: r
                            .opt_text("PowerState")?
                            .as_deref()
                            .and_then(PowerState::parse),
                    })
                })
                .collect()
        }
    }
    store.run(&ReadLog).await
}

fn hours(secs: i64) -> f64 {
    secs as f64 / 3600.0
}

/// Computes the report of every pool in `log`, with intervals still open closed at `now`.
pub fn costs(log: &[LogEvent], now: NaiveDateTime) -> Vec<PoolCost> {
    let mut by_pool: BTreeMap<&str, Vec<&LogEvent>> = BTreeMap::new();
    for event in log {
        by_pool.entry(&event.pool_key).or_default().push(event);
    }
    by_pool
        .into_iter()
        .map(|(pool, mut events)| {
            events.sort_by_key(|e| e.at);
            // Leases: union of [taken, released/expired).
            let mut live: BTreeMap<&str, NaiveDateTime> = BTreeMap::new();
            let mut union_start: Option<NaiveDateTime> = None;
            let mut leased = 0i64;
            let mut leases = 0;
            // VMs: allocated since.
            let mut allocated_since: BTreeMap<&str, NaiveDateTime> = BTreeMap::new();
            let mut allocated = 0i64;
            let (mut starts, mut deallocations) = (0, 0);
            for e in &events {
                match (e.event.as_str(), e.holder.as_deref(), e.vm_name.as_deref()) {
                    ("LeaseTaken", Some(holder), _) => {
                        leases += 1;
                        if live.is_empty() {
                            union_start = Some(e.at);
                        }
                        live.insert(holder, e.at);
                    }
                    ("LeaseReleased" | "LeaseExpired", Some(holder), _)
                        if live.remove(holder).is_some() && live.is_empty() =>
                    {
                        if let Some(start) = union_start.take() {
                            leased += (e.at - start).num_seconds().max(0);
                        }
                    }
                    ("StartRequested", _, Some(vm)) => {
                        starts += 1;
                        allocated_since.entry(vm).or_insert(e.at);
                    }
                    ("DeallocateRequested", _, Some(vm)) => {
                        deallocations += 1;
                        if let Some(since) = allocated_since.remove(vm) {
                            allocated += (e.at - since).num_seconds().max(0);
                        }
                    }
                    ("Observed", _, Some(vm)) => match e.power_state {
                        Some(PowerState::Deallocated) => {
                            if let Some(since) = allocated_since.remove(vm) {
                                allocated += (e.at - since).num_seconds().max(0);
                            }
                        }
                        Some(PowerState::Deallocating) | None => {}
                        Some(_) => {
                            allocated_since.entry(vm).or_insert(e.at);
                        }
                    },
                    _ => {}
                }
            }
            if let Some(start) = union_start {
                leased += (now - start).num_seconds().max(0);
            }
            for since in allocated_since.values() {
                allocated += (now - *since).num_seconds().max(0);
            }
            PoolCost {
                pool_key: pool.to_string(),
                allocated_hours: hours(allocated),
                leased_hours: hours(leased),
                starts,
                deallocations,
                leases,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .map(|d| d.naive_utc())
            .unwrap_or_default()
    }

    fn ev(secs: i64, event: &str, holder: Option<&str>, vm: Option<&str>) -> LogEvent {
        LogEvent {
            pool_key: "p".into(),
            vm_name: vm.map(String::from),
            at: at(secs),
            event: event.into(),
            holder: holder.map(String::from),
            power_state: None,
        }
    }

    #[test]
    fn overlapping_leases_count_once_and_allocation_runs_from_start_to_deallocate() {
        let log = vec![
            ev(0, "LeaseTaken", Some("a"), None),
            ev(0, "StartRequested", Some("a"), Some("vm")),
            ev(1800, "LeaseTaken", Some("b"), None),
            ev(3600, "LeaseReleased", Some("a"), None),
            ev(5400, "LeaseExpired", Some("b"), None),
            ev(7200, "DeallocateRequested", None, Some("vm")),
            ev(9000, "LeaseTaken", Some("c"), None),
            ev(9000, "StartRequested", Some("c"), Some("vm")),
        ];
        let report = costs(&log, at(10800));
        assert_eq!(report.len(), 1);
        let p = &report[0];
        // Leases: [0, 5400) and [9000, 10800) = 1.5 h + 0.5 h.
        assert!((p.leased_hours - 2.0).abs() < 1e-9, "{p:?}");
        // Allocated: [0, 7200) and [9000, 10800) = 2 h + 0.5 h.
        assert!((p.allocated_hours - 2.5).abs() < 1e-9, "{p:?}");
        assert_eq!((p.starts, p.deallocations, p.leases), (2, 1, 3));
    }
}

//! `VmIdleSweep`: the timer-triggered function (schedule in `functions/VmIdleSweep/function.json`) that
//! reconciles every VM pool the store knows: leases past their expiry are dropped, pools idle past
//! their grace are deallocated, and pools with live leases whose VM went away are started again. So a
//! holder that never released costs at most its lease length plus the grace.
//!
//! It acts with the Function App's managed identity (no request body carries a principal), which
//! therefore needs the VM start/deallocate role on the runtime VMs.

use super::vm_power::utc_now;
use super::{AppState, FunctionError};
use crate::domain::Credentials;
use crate::leases::{decide, Decision, PowerControl};
use serde_json::{json, Value};
use std::sync::Arc;

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    pub pools: usize,
    pub started: Vec<String>,
    pub deallocated: Vec<String>,
    pub expired_leases: usize,
    /// Pools that could not be reconciled this time, with the reason (the next sweep tries again).
    pub failed: Vec<(String, String)>,
}

impl SweepReport {
    pub fn to_json(&self) -> Value {
        json!({
            "Pools": self.pools,
            "Started": self.started,
            "Deallocated": self.deallocated,
            "ExpiredLeases": self.expired_leases,
            "Failed": self.failed.iter().map(|(pool, why)| json!({"Pool": pool, "Error": why})).collect::<Vec<_>>(),
        })
    }
}

/// Reconcile every pool, one decision (one transaction) each; a failing pool does not stop the others.
pub async fn sweep(
    store: &crate::store::Store,
    power: Arc<dyn PowerControl>,
    now: chrono::NaiveDateTime,
) -> Result<SweepReport, FunctionError> {
    let keys = decide::pool_keys(store).await?;
    let mut report = SweepReport {
        pools: keys.len(),
        ..SweepReport::default()
    };
    for key in keys {
        match Decision::observe(key.clone(), now, power.clone())
            .run(store)
            .await
        {
            Ok(pool) => {
                report.expired_leases += pool.expired_leases;
                if pool.started {
                    report.started.push(key);
                } else if pool.deallocated {
                    report.deallocated.push(key);
                }
            }
            Err(e) => {
                tracing::warn!(pool = %key, error = %e, "VM pool not reconciled this sweep");
                report.failed.push((key, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// One timer invocation with the Function App's own identity; answers its [`SweepReport`] as JSON.
pub async fn handle(state: &AppState) -> Result<Value, FunctionError> {
    let credential = state
        .azure
        .identity
        .credential(&Credentials::ManagedIdentity)
        .await?;
    let store = state.store().await?;
    let power = state.arm_power(credential);
    let report = sweep(store, power, utc_now()).await?;
    tracing::info!(
        pools = report.pools,
        started = report.started.len(),
        deallocated = report.deallocated.len(),
        expired_leases = report.expired_leases,
        failed = report.failed.len(),
        "VM idle sweep"
    );
    Ok(report.to_json())
}

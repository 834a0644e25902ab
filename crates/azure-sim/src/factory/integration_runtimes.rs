//! `POST .../integrationRuntimes/{name}/getStatus`: a self-hosted integration runtime's state and its
//! nodes, derived from the VMs hosting them (see `sim::runtimes`).

use super::FactoryScope;
use crate::reply::{ArmError, SimReply};
use crate::state::SimState;
use tokio::time::Instant;
use warp::http::StatusCode;

pub(super) fn get_status(
    state: &SimState,
    scope: &FactoryScope,
    name: &str,
    now: Instant,
) -> Result<SimReply, ArmError> {
    let runtime = state.runtimes.get(scope.key(), name).ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "The integration runtime '{name}' under data factory '{}' does not exist.",
                scope.factory
            ),
        )
    })?;
    Ok(SimReply::json(
        StatusCode::OK,
        &runtime.status(&state.vms, &state.clock, now),
    ))
}

//! The pure part of a power decision: given the live leases, what each node's VM is doing and since
//! when it has been surplus, which nodes to start, which to deallocate, and whether the pool is ready.
//! No I/O here, so every rule is unit-tested on its own.

use crate::domain::PowerState;
use chrono::{Duration, NaiveDateTime};

/// How a pool is sized and how long it idles before it is deallocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Concurrent jobs one node takes (a runtime node's `concurrentJobsLimit`).
    pub jobs_per_node: u32,
    /// Nodes kept running while any lease is live (high availability), at least 1.
    pub min_nodes: u32,
    /// Seconds a node stays allocated after it stopped being needed.
    pub grace_secs: u32,
}

/// Nodes the live leases need: one per `jobs_per_node` leases, at least `min_nodes` while any lease is
/// live, none when no lease is; never more than the pool has.
pub fn nodes_needed(live_leases: usize, sizing: Sizing, pool_size: usize) -> usize {
    if live_leases == 0 || pool_size == 0 {
        return 0;
    }
    let per_node = sizing.jobs_per_node.max(1) as usize;
    let by_load = live_leases.div_ceil(per_node);
    by_load.max(sizing.min_nodes.max(1) as usize).min(pool_size)
}

/// What is known about one node when deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// The power state to act on (see [`effective_state`]).
    pub state: PowerState,
    /// Since when the node has not been needed (`None`: it is needed, or nobody noticed yet).
    pub idle_since: Option<NaiveDateTime>,
}

/// What to do with one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAction {
    Start,
    Deallocate,
    Nothing,
}

/// The decision for one node, plus its new idle mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub needed: bool,
    pub action: NodeAction,
    pub idle_since: Option<NaiveDateTime>,
    /// When the node will be deallocated if nothing changes (surplus, still in its grace period).
    pub deallocate_after: Option<NaiveDateTime>,
}

/// The state to decide on: a deallocation we asked for recently but that the instance view does not
/// show yet (ARM answers 202 before the VM leaves `running`) counts as `deallocating`, so nobody is
/// told the VM is ready while it is about to go away.
pub fn effective_state(
    observed: PowerState,
    pending_deallocate_since: Option<NaiveDateTime>,
    now: NaiveDateTime,
    pending_trust: Duration,
) -> PowerState {
    match pending_deallocate_since {
        Some(since)
            if now - since < pending_trust
                && matches!(
                    observed,
                    PowerState::Running | PowerState::Starting | PowerState::Stopped
                ) =>
        {
            PowerState::Deallocating
        }
        _ => observed,
    }
}

/// Plans every node of a pool. Nodes are used in pool order: the first `needed` are wanted running.
/// `pool_idle_since` is when the last lease of the pool ended (release or expiry): a node that became
/// surplus because the pool went idle counts its grace from then, not from when someone noticed.
pub fn plan_nodes(
    nodes: &[NodeState],
    live_leases: usize,
    sizing: Sizing,
    pool_idle_since: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> Vec<NodePlan> {
    let needed = nodes_needed(live_leases, sizing, nodes.len());
    let grace = Duration::seconds(i64::from(sizing.grace_secs));
    nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            if index < needed {
                let action = match node.state {
                    PowerState::Deallocated | PowerState::Stopped | PowerState::Deallocating => {
                        NodeAction::Start
                    }
                    PowerState::Running | PowerState::Starting | PowerState::Stopping => {
                        NodeAction::Nothing
                    }
                };
                return NodePlan {
                    needed: true,
                    action,
                    idle_since: None,
                    deallocate_after: None,
                };
            }
            let idle_since = node
                .idle_since
                .unwrap_or(match (live_leases, pool_idle_since) {
                    (0, Some(ended)) if ended <= now => ended,
                    _ => now,
                });
            let allocated = !matches!(
                node.state,
                PowerState::Deallocated | PowerState::Deallocating
            );
            let due = idle_since + grace;
            let (action, deallocate_after) = if !allocated {
                (NodeAction::Nothing, None)
            } else if now >= due {
                (NodeAction::Deallocate, None)
            } else {
                (NodeAction::Nothing, Some(due))
            };
            NodePlan {
                needed: false,
                action,
                idle_since: Some(idle_since),
                deallocate_after,
            }
        })
        .collect()
}

/// The one power state that stands for a pool: its most available node's.
pub fn pool_state(states: &[PowerState]) -> PowerState {
    const ORDER: [PowerState; 6] = [
        PowerState::Running,
        PowerState::Starting,
        PowerState::Stopping,
        PowerState::Deallocating,
        PowerState::Stopped,
        PowerState::Deallocated,
    ];
    ORDER
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or(PowerState::Deallocated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .map(|d| d.naive_utc())
            .unwrap_or_default()
    }

    const ONE: Sizing = Sizing {
        jobs_per_node: 4,
        min_nodes: 1,
        grace_secs: 300,
    };

    fn node(state: PowerState, idle_since: Option<NaiveDateTime>) -> NodeState {
        NodeState { state, idle_since }
    }

    #[test]
    fn nodes_follow_the_load_with_a_minimum_and_a_ceiling() {
        assert_eq!(nodes_needed(0, ONE, 4), 0);
        assert_eq!(nodes_needed(1, ONE, 4), 1);
        assert_eq!(nodes_needed(4, ONE, 4), 1);
        assert_eq!(nodes_needed(5, ONE, 4), 2);
        assert_eq!(nodes_needed(100, ONE, 4), 4);
        let ha = Sizing {
            min_nodes: 2,
            ..ONE
        };
        assert_eq!(nodes_needed(1, ha, 4), 2);
        assert_eq!(nodes_needed(1, ha, 1), 1);
        assert_eq!(nodes_needed(0, ha, 4), 0);
        let zero = Sizing {
            jobs_per_node: 0,
            min_nodes: 0,
            grace_secs: 0,
        };
        assert_eq!(nodes_needed(3, zero, 4), 3);
    }

    #[test]
    fn a_needed_node_that_is_off_or_going_off_is_started() {
        for (state, action) in [
            (PowerState::Deallocated, NodeAction::Start),
            (PowerState::Stopped, NodeAction::Start),
            (PowerState::Deallocating, NodeAction::Start),
            (PowerState::Running, NodeAction::Nothing),
            (PowerState::Starting, NodeAction::Nothing),
        ] {
            let plan = plan_nodes(&[node(state, Some(t(0)))], 1, ONE, None, t(10));
            assert_eq!(plan[0].action, action, "{state:?}");
            assert!(plan[0].needed);
            assert_eq!(plan[0].idle_since, None);
        }
    }

    #[test]
    fn an_idle_node_waits_out_its_grace_from_the_last_lease_end() {
        let nodes = [node(PowerState::Running, None)];
        // The last lease ended at t(0); at t(100) the grace of 300 s has not passed.
        let plan = plan_nodes(&nodes, 0, ONE, Some(t(0)), t(100));
        assert_eq!(plan[0].action, NodeAction::Nothing);
        assert_eq!(plan[0].idle_since, Some(t(0)));
        assert_eq!(plan[0].deallocate_after, Some(t(300)));
        let plan = plan_nodes(
            &[node(PowerState::Running, Some(t(0)))],
            0,
            ONE,
            None,
            t(300),
        );
        assert_eq!(plan[0].action, NodeAction::Deallocate);
        let no_grace = Sizing {
            grace_secs: 0,
            ..ONE
        };
        let plan = plan_nodes(&nodes, 0, no_grace, Some(t(5)), t(5));
        assert_eq!(plan[0].action, NodeAction::Deallocate);
        // Already going or gone: nothing to do.
        for state in [PowerState::Deallocating, PowerState::Deallocated] {
            let plan = plan_nodes(&[node(state, Some(t(0)))], 0, no_grace, None, t(500));
            assert_eq!(plan[0].action, NodeAction::Nothing);
        }
    }

    #[test]
    fn surplus_nodes_scale_down_after_grace_while_the_rest_keep_running() {
        let nodes = [
            node(PowerState::Running, None),
            node(PowerState::Running, None),
            node(PowerState::Running, Some(t(0))),
        ];
        // Two leases need one node: node 1 becomes surplus now, node 2 has been since t(0).
        let plan = plan_nodes(&nodes, 2, ONE, None, t(400));
        assert_eq!(plan[0].action, NodeAction::Nothing);
        assert!(plan[0].needed);
        assert_eq!(plan[1].action, NodeAction::Nothing);
        assert_eq!(plan[1].idle_since, Some(t(400)));
        assert_eq!(plan[2].action, NodeAction::Deallocate);
    }

    #[test]
    fn a_pending_deallocation_counts_as_deallocating_until_it_shows() {
        let trust = Duration::minutes(10);
        assert_eq!(
            effective_state(PowerState::Running, Some(t(0)), t(5), trust),
            PowerState::Deallocating
        );
        assert_eq!(
            effective_state(PowerState::Running, Some(t(0)), t(900), trust),
            PowerState::Running
        );
        assert_eq!(
            effective_state(PowerState::Deallocated, Some(t(0)), t(5), trust),
            PowerState::Deallocated
        );
        assert_eq!(
            effective_state(PowerState::Running, None, t(5), trust),
            PowerState::Running
        );
    }

    #[test]
    fn the_pool_shows_its_most_available_node() {
        use PowerState::*;
        assert_eq!(pool_state(&[Deallocated, Running]), Running);
        assert_eq!(pool_state(&[Deallocating, Starting]), Starting);
        assert_eq!(pool_state(&[Deallocated]), Deallocated);
        assert_eq!(pool_state(&[]), Deallocated);
    }
}

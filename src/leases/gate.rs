//! One decision per pool at a time in this process, waited for without a database connection.
//!
//! A decision holds its pool's row lock through its ARM calls. Without this gate, fifty Infants of one
//! instance asking about one pool would each check out a pooled SQL connection and queue on that row
//! lock, leaving none for unrelated transitions. With it, they queue here instead, for at most the
//! decision's lock wait, and only the one at the head holds a connection; those that give up are
//! answered from the pool's last report in this process, without reading the store. Decisions of
//! other instances still meet at the row lock, bounded there by `SET LOCK_TIMEOUT`.

use super::PoolReport;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A pool's turn, and the last report made in a turn (readable while someone holds the turn).
#[derive(Default)]
struct PoolGate {
    turn: Arc<tokio::sync::Mutex<()>>,
    last: Mutex<Option<PoolReport>>,
}

type Gates = Mutex<HashMap<String, Arc<PoolGate>>>;

fn gates() -> &'static Gates {
    static GATES: OnceLock<Gates> = OnceLock::new();
    GATES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The right to decide about a pool in this process; released when dropped.
pub struct Turn {
    gate: Arc<PoolGate>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Turn {
    /// Remember the report of the decision made in this turn.
    pub fn remember(&mut self, report: &PoolReport) {
        if let Ok(mut last) = self.gate.last.lock() {
            *last = Some(report.clone());
        }
    }
}

/// Waiting for the pool's turn ran out: the last report this process made of the pool, if any.
pub struct Busy {
    pub last: Option<PoolReport>,
}

/// Wait at most `limit` for the pool's turn; [`Busy`] when another decision of this process still holds
/// it then.
pub async fn turn(pool_key: &str, limit: Duration) -> Result<Turn, Busy> {
    let gate = {
        let mut map = gates().lock().unwrap_or_else(|e| e.into_inner());
        // Past this many pools, forget the ones nobody is deciding about (and their last report).
        if map.len() > 1024 {
            map.retain(|_, gate| Arc::strong_count(gate) > 1);
        }
        map.entry(pool_key.to_string()).or_default().clone()
    };
    match tokio::time::timeout(limit, gate.turn.clone().lock_owned()).await {
        Ok(guard) => Ok(Turn {
            gate,
            _guard: guard,
        }),
        Err(_) => Err(Busy {
            last: gate.last.lock().ok().and_then(|l| l.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_turn_per_pool_and_a_bounded_wait() {
        let first = turn("pool-a", Duration::from_secs(1)).await;
        assert!(first.is_ok());
        assert!(
            turn("pool-a", Duration::from_secs(2)).await.is_err(),
            "the second waits its bound, then gives up"
        );
        assert!(
            turn("pool-b", Duration::from_secs(1)).await.is_ok(),
            "other pools are not held up"
        );
        drop(first);
        assert!(turn("pool-a", Duration::from_secs(1)).await.is_ok());
    }
}

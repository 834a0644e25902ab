//! Fault injection for the Data Factory routes: added latency, throttling (429 with `Retry-After`) and
//! server errors (500/503). Decisions come from one seeded generator, so a given seed and request order
//! reproduce the same faults; the generator is not even touched while every ratio is zero, which keeps
//! the fault-free hot path free of the lock.

use super::config::Faults;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultPlan {
    /// Sleep this long before answering.
    pub delay: Option<Duration>,
    pub outcome: FaultOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultOutcome {
    /// Serve the request normally.
    Serve,
    /// 429 with `Retry-After: retry_after_secs`.
    Throttle { retry_after_secs: u64 },
    /// 500 (`unavailable == false`) or 503.
    ServerError { unavailable: bool },
}

/// The current fault settings and the seeded generator that applies them.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    faults: RwLock<Faults>,
    rng: Mutex<StdRng>,
}

impl FaultInjector {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults: RwLock::new(faults),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    pub fn current(&self) -> Faults {
        *self.faults.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the settings (already validated); the generator keeps its position.
    pub fn set(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Decides the fate of one request.
    pub fn plan(&self) -> FaultPlan {
        let faults = self.current();
        let fixed_delay = (faults.latency_ms > 0).then(|| Duration::from_millis(faults.latency_ms));
        let needs_dice = (fixed_delay.is_some() && faults.latency_ratio < 1.0)
            || faults.throttle_ratio > 0.0
            || faults.server_error_ratio > 0.0;
        if !needs_dice {
            return FaultPlan {
                delay: fixed_delay.filter(|_| faults.latency_ratio >= 1.0),
                outcome: FaultOutcome::Serve,
            };
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let delay = fixed_delay
            .filter(|_| faults.latency_ratio >= 1.0 || rng.gen::<f64>() < faults.latency_ratio);
        let outcome = if faults.throttle_ratio > 0.0 && rng.gen::<f64>() < faults.throttle_ratio {
            FaultOutcome::Throttle {
                retry_after_secs: faults.retry_after_secs,
            }
        } else if faults.server_error_ratio > 0.0 && rng.gen::<f64>() < faults.server_error_ratio {
            FaultOutcome::ServerError {
                unavailable: rng.gen(),
            }
        } else {
            FaultOutcome::Serve
        };
        FaultPlan { delay, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(throttle: f64, server: f64) -> Faults {
        Faults {
            throttle_ratio: throttle,
            retry_after_secs: 7,
            server_error_ratio: server,
            ..Faults::default()
        }
    }

    fn outcomes(injector: &FaultInjector, n: usize) -> Vec<FaultOutcome> {
        (0..n).map(|_| injector.plan().outcome).collect()
    }

    #[test]
    fn no_faults_by_default() {
        let injector = FaultInjector::new(Faults::default(), 1);
        assert!(outcomes(&injector, 1000)
            .iter()
            .all(|o| *o == FaultOutcome::Serve));
        assert_eq!(injector.plan().delay, None);
    }

    #[test]
    fn ratios_are_respected_and_seeded() {
        let injector = FaultInjector::new(faults(0.3, 0.1), 42);
        let seen = outcomes(&injector, 10_000);
        let throttled = seen
            .iter()
            .filter(|o| matches!(o, FaultOutcome::Throttle { .. }))
            .count();
        let failed = seen
            .iter()
            .filter(|o| matches!(o, FaultOutcome::ServerError { .. }))
            .count();
        assert!((2700..=3300).contains(&throttled), "throttled {throttled}");
        // Server errors are drawn from the 70 % that were not throttled.
        assert!((500..=900).contains(&failed), "failed {failed}");
        let again = FaultInjector::new(faults(0.3, 0.1), 42);
        assert_eq!(outcomes(&again, 10_000), seen);
        let other = FaultInjector::new(faults(0.3, 0.1), 43);
        assert_ne!(outcomes(&other, 10_000), seen);
    }

    #[test]
    fn ratio_one_always_throttles_with_retry_after() {
        let injector = FaultInjector::new(faults(1.0, 0.0), 0);
        assert!(outcomes(&injector, 100).iter().all(|o| *o
            == FaultOutcome::Throttle {
                retry_after_secs: 7
            }));
    }

    #[test]
    fn latency_applies_to_the_configured_share() {
        let all = FaultInjector::new(
            Faults {
                latency_ms: 5,
                ..Faults::default()
            },
            0,
        );
        assert_eq!(all.plan().delay, Some(Duration::from_millis(5)));
        let half = FaultInjector::new(
            Faults {
                latency_ms: 5,
                latency_ratio: 0.5,
                ..Faults::default()
            },
            3,
        );
        let delayed = (0..2000).filter(|_| half.plan().delay.is_some()).count();
        assert!((850..=1150).contains(&delayed), "delayed {delayed}");
    }

    #[test]
    fn settings_can_change_at_run_time() {
        let injector = FaultInjector::new(Faults::default(), 0);
        injector.set(faults(1.0, 0.0));
        assert!(matches!(
            injector.plan().outcome,
            FaultOutcome::Throttle { .. }
        ));
        assert_eq!(injector.current().retry_after_secs, 7);
    }
}

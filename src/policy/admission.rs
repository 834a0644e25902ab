//! How many invocations do work at once. Upstream calls are bounded anyway (`PROCFWK_UPSTREAM_CONCURRENCY`),
//! so an invocation past that bound would only wait, and waiting inside the full request future costs
//! ~10 KiB each (the future is sized for every function's deepest state). Admission makes the wait cheap:
//! a request waits for a slot holding little more than its parsed head and its body, and its work is
//! allocated only once admitted. The body is read *before* admission (`host::body`: within a time bound
//! and a process-wide buffer budget), so a client that trickles its body never holds a slot.
//!
//! A slot is given back while the invocation sleeps between status polls (ExecutePipelineV2 waiting for
//! `Queued` to end, CancelPipeline waiting for `Cancelled`), so those long waits never starve quick calls.
//! The slot travels as a task-local, like the time budget, to reach the polling loop without threading it
//! through every call.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

tokio::task_local! {
    static SLOT: RefCell<Option<OwnedSemaphorePermit>>;
}

/// The admission gate of a process.
pub struct Admission {
    slots: Arc<Semaphore>,
}

impl Admission {
    /// A gate letting `slots` invocations work at once (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// Wait for a slot, then run the future `work` makes, holding the slot. `work` is a closure so that
    /// the future (and its memory) comes into being only once admitted; it runs boxed so that the
    /// waiting future stays small.
    pub async fn admit<W, F>(&self, work: W) -> F::Output
    where
        W: FnOnce() -> F,
        F: Future,
    {
        // The gate is never closed; should it be, run unbounded rather than refuse.
        let permit = self.slots.clone().acquire_owned().await.ok();
        SLOT.scope(RefCell::new(permit), Box::pin(work())).await
    }

    /// Slots free right now (tests).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// Sleep for `duration` without holding the current invocation's slot; take a slot again afterwards.
/// Outside an admitted invocation it is a plain sleep.
pub async fn sleep(duration: Duration) {
    let gate = SLOT
        .try_with(|slot| {
            slot.borrow_mut().take().map(|permit| {
                let gate = permit.semaphore().clone();
                drop(permit);
                gate
            })
        })
        .ok()
        .flatten();
    tokio::time::sleep(duration).await;
    if let Some(gate) = gate {
        let permit = gate.acquire_owned().await.ok();
        let _ = SLOT.try_with(|slot| *slot.borrow_mut() = permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    // Paused time: the clock moves only when every task waits, straight to the next timer, so the
    // durations below are exact and the tests take no real time.

    #[tokio::test(start_paused = true)]
    async fn a_sleeping_invocation_gives_its_slot_back() {
        let gate = Arc::new(Admission::new(1));
        let g = gate.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sleeper = tokio::spawn(async move {
            g.admit(|| async {
                sleep(Duration::from_millis(200)).await;
                let _ = tx.send(());
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The only slot is free while the first invocation sleeps: a second one runs at once.
        let quick = tokio::time::timeout(Duration::from_millis(100), gate.admit(|| async { 7 }))
            .await
            .ok();
        assert_eq!(quick, Some(7));
        let _ = rx.await;
        let _ = sleeper.await;
        assert_eq!(gate.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_working_invocation_holds_its_slot() {
        let gate = Admission::new(1);
        let inner = gate
            .admit(|| async {
                let blocked =
                    tokio::time::timeout(Duration::from_millis(50), gate.admit(|| async {})).await;
                blocked.is_err()
            })
            .await;
        assert!(inner);
        assert_eq!(gate.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_outside_an_invocation_is_plain() {
        // No slot to give back or take again: it sleeps the whole duration, and no longer.
        let started = Instant::now();
        sleep(Duration::from_secs(5)).await;
        let slept = started.elapsed();
        assert!(
            slept >= Duration::from_secs(5)
                && slept < Duration::from_secs(5) + Duration::from_millis(5),
            "slept {slept:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_invocation_waits_for_a_slot_again() {
        // While the first invocation sleeps, a second takes the only slot and works for 1 s: the first
        // wakes at 100 ms but goes on only once the slot is back.
        let gate = Arc::new(Admission::new(1));
        let started = Instant::now();
        let g = gate.clone();
        let sleeper = tokio::spawn(async move {
            g.admit(|| async {
                sleep(Duration::from_millis(100)).await;
                started.elapsed()
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.admit(|| tokio::time::sleep(Duration::from_secs(1)))
            .await;
        let resumed = sleeper.await.unwrap_or_default();
        assert!(
            resumed >= Duration::from_millis(1010),
            "resumed after {resumed:?}"
        );
        assert_eq!(gate.available(), 1);
    }
}

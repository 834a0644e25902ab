//! The time budget of one invocation. ADF's Azure Function activity gives up after 230 s, so every
//! invocation runs under a deadline, and retries and polling loops stop before it. The deadline travels
//! as a task-local, so it reaches the retry policy inside the Azure SDK's pipeline without threading it
//! through every call.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Run `work` with `deadline` as its budget.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// The deadline of the current invocation, if any.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left before the deadline (`None` outside an invocation: no limit).
pub fn remaining() -> Option<Duration> {
    deadline().map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the clock moves only when the test sleeps, so the budget left is exact.
    #[tokio::test(start_paused = true)]
    async fn remaining_inside_and_outside() {
        assert!(remaining().is_none());
        let d = Instant::now() + Duration::from_secs(10);
        let left = within(d, async { remaining() }).await;
        assert_eq!(left, Some(Duration::from_secs(10)));
        let later = within(d, async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            remaining()
        })
        .await;
        assert_eq!(later, Some(Duration::from_secs(6)));
        tokio::time::sleep(Duration::from_secs(7)).await;
        let past = within(d, async { remaining() }).await;
        assert_eq!(
            past,
            Some(Duration::ZERO),
            "past the deadline nothing is left"
        );
    }
}

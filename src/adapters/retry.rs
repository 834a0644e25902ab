//! Retries of ARM calls: throttling (429 + `Retry-After`) and transient failures (408, 5xx, dropped
//! connections), with exponential back-off and jitter, never past the invocation's time budget.
//!
//! It sits in the Azure SDK pipeline *after* the SDK's own (disabled) retry policy, so it sees raw
//! responses and headers; whatever it finally returns, the SDK turns into a typed error as usual.
//! Calls that are not safe to repeat (`createRun` has no idempotency key: two calls make two runs) use
//! [`RetryMode::ThrottledOnly`]: a 429 means ARM refused the request before doing anything.

use crate::policy::budget;
use azure_core::headers::{HeaderName, Headers};
use azure_core::{Context, Request, StatusCode};
use azure_core::{Policy, PolicyResult};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryMode {
    /// Reads and idempotent writes: retry 408, 429, 500, 502, 503, 504 and connection failures.
    Idempotent,
    /// Non-idempotent writes: retry only 429.
    ThrottledOnly,
}

#[derive(Debug, Clone)]
pub struct ArmRetryPolicy {
    pub mode: RetryMode,
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl ArmRetryPolicy {
    pub fn new(mode: RetryMode, max_retries: u32) -> Self {
        Self {
            mode,
            max_retries,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }

    fn retries_status(&self, status: StatusCode) -> bool {
        let code = u16::from(status);
        match self.mode {
            RetryMode::ThrottledOnly => code == 429,
            RetryMode::Idempotent => matches!(code, 408 | 429 | 500 | 502 | 503 | 504),
        }
    }

    /// Exponential back-off with full jitter: a random delay in `[d/2, d]`, `d = base · 2^(attempt-1)`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }
}

/// The server's requested delay: `retry-after-ms`, `x-ms-retry-after-ms`, or `Retry-After` in seconds.
pub fn retry_after(headers: &Headers) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&HeaderName::from_static(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    headers
        .get_optional_str(&HeaderName::from_static("retry-after"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

#[async_trait::async_trait]
impl Policy for ArmRetryPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let mut attempt = 0u32;
        loop {
            let result = next[0].send(ctx, request, &next[1..]).await;
            let (server_delay, what) = match &result {
                Ok(response) if response.status().is_success() => return result,
                Ok(response) if self.retries_status(response.status()) => (
                    retry_after(response.headers()),
                    format!("HTTP {}", u16::from(response.status())),
                ),
                Ok(_) => return result,
                Err(e)
                    if self.mode == RetryMode::Idempotent
                        && e.kind() == &azure_core::error::ErrorKind::Io =>
                {
                    (None, "connection failure".to_string())
                }
                Err(_) => return result,
            };
            attempt += 1;
            if attempt > self.max_retries {
                return result;
            }
            let delay = server_delay.unwrap_or_else(|| self.backoff(attempt));
            if let Some(left) = budget::remaining() {
                if delay >= left {
                    tracing::warn!(%what, delay_ms = delay.as_millis() as u64, "not retrying: the wait would exceed the call's time budget");
                    return result;
                }
            }
            tracing::info!(
                method = %request.method(),
                path = request.url().path(),
                %what,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying upstream call"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = ArmRetryPolicy::new(RetryMode::Idempotent, 5);
        for attempt in 1..20 {
            let d = p.backoff(attempt);
            assert!(d <= p.max_delay, "{attempt}: {d:?}");
        }
        assert!(p.backoff(1) <= Duration::from_millis(200));
        assert!(p.backoff(4) >= Duration::from_millis(800));
    }

    #[test]
    fn modes() {
        let p = ArmRetryPolicy::new(RetryMode::ThrottledOnly, 5);
        assert!(p.retries_status(StatusCode::TooManyRequests));
        assert!(!p.retries_status(StatusCode::InternalServerError));
        let p = ArmRetryPolicy::new(RetryMode::Idempotent, 5);
        assert!(p.retries_status(StatusCode::ServiceUnavailable));
        assert!(!p.retries_status(StatusCode::NotFound));
    }

    #[test]
    fn parses_retry_after() {
        let mut h = Headers::new();
        h.insert(HeaderName::from_static("retry-after"), "2");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(HeaderName::from_static("retry-after-ms"), "150");
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
    }
}

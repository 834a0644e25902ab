//! Graceful shutdown of `procfwk serve`: which requests are in flight, refusing new ones once shutdown
//! has begun, and waiting (within a bound) for the in-flight ones to be answered.
//!
//! The Functions host itself stops a custom handler with SIGKILL (no signal to catch, no grace period:
//! see docs/configuration.md, `PROCFWK_SHUTDOWN_GRACE_SECS`); SIGTERM and SIGINT come from whatever else
//! stops the process (a container runtime, systemd, a terminal). On either, in order:
//!
//! 1. [`Drain::begin`]: from now on every request the listener still sees — on a new connection or on a
//!    kept-alive one — is answered at once with a retryable 503 JSON (`ShuttingDown`, `Retry-After`,
//!    `Connection: close`). Nothing is left unanswered while the process lives, so a caller never gets a
//!    reset connection for a request it sent before the listener closes.
//! 2. [`Drain::drained`]: wait until every request admitted before step 1 has had its response body
//!    handed to the connection. Each request's store transitions are single transactions, so an
//!    invocation that finishes has recorded all it did; one cut at the bound had its open transaction
//!    rolled back with its connection (nothing half-written either way).
//! 3. The caller (`host::Application`) then closes the listener and every connection and exits: 0 when
//!    all in-flight requests were answered, non-zero past the bound, naming the requests that were cut.
//!
//! Requests are tracked at the protocol edge (the hyper service), so no function or store code knows
//! about shutdown.

use serde_json::json;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a caller refused during shutdown should wait before calling again (the next instance, or
/// this one restarted, is usually up by then).
pub const RETRY_AFTER_SECS: u64 = 5;

/// The in-flight requests of one process and whether shutdown has begun.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    begun: AtomicBool,
    next_id: AtomicU64,
    in_flight: Mutex<BTreeMap<u64, InFlight>>,
    changed: Notify,
}

/// One request that was admitted and is not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The request's method and path (`POST /api/ExecutePipelineV2`): never its query, which may hold
    /// a function key.
    pub request: String,
    pub started: Instant,
}

impl InFlight {
    fn describe(&self) -> String {
        format!(
            "{} (running {:.1} s)",
            self.request,
            self.started.elapsed().as_secs_f64()
        )
    }
}

/// Held by an admitted request until its response body has been handed over (or dropped).
pub struct Ticket {
    inner: Arc<Inner>,
    id: u64,
    status: Option<u16>,
}

impl Ticket {
    /// The status the request is answered with (logged when it is answered during shutdown).
    pub fn answered(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let finished = lock(&self.inner.in_flight).remove(&self.id);
        if self.inner.begun.load(Ordering::SeqCst) {
            if let Some(done) = finished {
                tracing::info!(
                    request = %done.request,
                    status = self.status,
                    duration_ms = done.started.elapsed().as_secs_f64() * 1000.0,
                    "in-flight request answered during shutdown"
                );
            }
        }
        self.inner.changed.notify_waiters();
    }
}

/// What the drain ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every request admitted before shutdown began was answered.
    All { answered: usize },
    /// The bound passed with these requests still running (described for the log).
    CutShort { cut: Vec<String> },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Admit a request (`method path`), or `None` once shutdown has begun. The check and the
    /// registration happen under one lock with [`Self::begin`], so a request is either counted by the
    /// drain or refused, never neither.
    pub fn admit(&self, request: String) -> Option<Ticket> {
        let mut in_flight = lock(&self.inner.in_flight);
        if self.inner.begun.load(Ordering::SeqCst) {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        in_flight.insert(
            id,
            InFlight {
                request,
                started: Instant::now(),
            },
        );
        Some(Ticket {
            inner: self.inner.clone(),
            id,
            status: None,
        })
    }

    /// Begin shutdown: refuse every request from now on. Returns the requests in flight at this moment.
    pub fn begin(&self) -> Vec<InFlight> {
        let in_flight = lock(&self.inner.in_flight);
        self.inner.begun.store(true, Ordering::SeqCst);
        in_flight.values().cloned().collect()
    }

    pub fn has_begun(&self) -> bool {
        self.inner.begun.load(Ordering::SeqCst)
    }

    /// Requests admitted and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.in_flight).len()
    }

    /// Wait until no admitted request is left, or until `bound` has passed.
    pub async fn drained(&self, bound: Duration) -> Drained {
        let at_start = self.in_flight();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Registered before the check, so a ticket dropped in between still wakes us.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let left: Vec<String> = lock(&self.inner.in_flight)
                .values()
                .map(InFlight::describe)
                .collect();
            if left.is_empty() {
                return Drained::All { answered: at_start };
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let cut = lock(&self.inner.in_flight)
                    .values()
                    .map(InFlight::describe)
                    .collect::<Vec<_>>();
                if cut.is_empty() {
                    return Drained::All { answered: at_start };
                }
                return Drained::CutShort { cut };
            }
        }
    }
}

/// The answer to a request that arrived after shutdown began: 503 JSON, retryable, and the connection
/// is closed after it.
pub fn refusal() -> warp::http::Response<bytes::Bytes> {
    let body = json!({"error": {
        "code": "ShuttingDown",
        "message": "this instance is shutting down and takes no new calls; call again (another instance, or this one restarted, answers)",
        "retryable": true,
        "retryAfterSeconds": RETRY_AFTER_SECS,
    }});
    let mut response = warp::http::Response::new(bytes::Bytes::from(body.to_string().into_bytes()));
    *response.status_mut() = warp::http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        warp::http::header::RETRY_AFTER,
        warp::http::HeaderValue::from(RETRY_AFTER_SECS),
    );
    headers.insert(
        warp::http::header::CONNECTION,
        warp::http::HeaderValue::from_static("close"),
    );
    response
}

/// Wait for SIGTERM or SIGINT (Ctrl-C); the name of the one that came. Should a handler not be
/// installable, that signal is simply not waited for.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            (Ok(mut term), Err(_)) => {
                term.recv().await;
                "SIGTERM"
            }
            (Err(_), Ok(mut int)) => {
                int.recv().await;
                "SIGINT"
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// A response body that holds its request's [`Ticket`] until the last frame has been handed to the
/// connection (or the body is dropped, e.g. when the caller hangs up).
pub struct TicketBody<B> {
    body: B,
    ticket: Option<Ticket>,
}

impl<B> TicketBody<B> {
    pub fn new(body: B, ticket: Option<Ticket>) -> Self {
        Self { body, ticket }
    }
}

impl<B> http_body::Body for TicketBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ticket = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_the_last_ticket() {
        let drain = Drain::new();
        let first = drain.admit("POST /api/A".into());
        let second = drain.admit("POST /api/B".into());
        assert!(first.is_some() && second.is_some());
        assert_eq!(drain.begin().len(), 2);
        assert!(
            drain.admit("POST /api/C".into()).is_none(),
            "refused once begun"
        );
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.drained(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "one request still in flight");
        drop(second);
        let outcome = waiter.await.ok();
        assert_eq!(outcome, Some(Drained::All { answered: 2 }));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_the_drain_names_what_it_cut() {
        let drain = Drain::new();
        let _held = drain.admit("POST /api/ExecutePipelineV2".into());
        drain.begin();
        let started = tokio::time::Instant::now();
        let outcome = drain.drained(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let Drained::CutShort { cut } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(cut.len(), 1);
        assert!(cut[0].starts_with("POST /api/ExecutePipelineV2"), "{cut:?}");
    }

    #[tokio::test]
    async fn nothing_in_flight_drains_at_once() {
        let drain = Drain::new();
        drain.begin();
        assert_eq!(
            drain.drained(Duration::ZERO).await,
            Drained::All { answered: 0 }
        );
    }

    #[test]
    fn the_refusal_is_a_retryable_503_that_closes_the_connection() {
        let r = refusal();
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.headers().get("connection").and_then(|v| v.to_str().ok()),
            Some("close")
        );
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("5")
        );
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap_or_default();
        assert_eq!(body["error"]["code"], "ShuttingDown");
        assert_eq!(body["error"]["retryable"], true);
    }
}

//! Reading request bodies: within a size limit, within a time bound, and within a bound on the bytes
//! buffered at once across all calls.
//!
//! - **Time**: the whole body must have arrived [`BodyReader`]'s timeout after its head
//!   (`PROCFWK_BODY_TIMEOUT_SECS`), or the call is answered 408. Bodies are read *before* a call is
//!   admitted to work (`policy::admission`), so a client trickling its body never holds a work slot.
//! - **Size**: a declared length over the limit is refused before a byte is read; an undeclared
//!   (chunked) body as soon as it passes it.
//! - **Memory**: every buffered byte is reserved from one budget (`PROCFWK_BODY_BUFFER_BYTES`) *as it
//!   arrives* — the buffer grows by doubling, capped at the declared length, and each growth reserves
//!   its new capacity first — so a client holds only what it actually sent, never what it merely
//!   declared. A growth the budget cannot cover is answered 503 `ServerBusy` at once rather than
//!   waiting: a partly read body waiting for budget held by other partly read bodies could wait on them
//!   forever. The reservation lives until the call has been answered (the parsed request is about the
//!   size of its body). When the last large body in flight is released, freed heap is handed back to
//!   the system ([`crate::process::give_back_memory`]).

use crate::functions::FunctionError;
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units: KiB, so that a `u32` permit count covers any body.
const UNIT: u64 = 1024;
/// A body from this size up is "large": releasing the last one gives memory back.
const LARGE: u64 = 256 * 1024;
/// The smallest buffer growth (avoids a reservation per byte for a trickled body).
const MIN_GROWTH: usize = 1024;

/// The reader shared by every call of a process.
pub struct BodyReader {
    budget: Arc<Semaphore>,
    timeout: Duration,
    large_in_flight: Arc<AtomicUsize>,
}

/// A body read in full, with its share of the buffer budget. The share is given back on drop.
pub struct Body {
    pub bytes: Bytes,
    pub held: Held,
}

/// A share of the buffer budget; released on drop.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    large: Option<Arc<AtomicUsize>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.permit.take());
        if let Some(large) = self.large.take() {
            if large.fetch_sub(1, Ordering::AcqRel) == 1 {
                crate::process::give_back_memory();
            }
        }
    }
}

impl BodyReader {
    /// A reader with a budget of `budget_bytes` buffered at once and `timeout` per body.
    pub fn new(budget_bytes: u64, timeout: Duration) -> Self {
        let units = (budget_bytes / UNIT).clamp(1, u64::from(u32::MAX)) as usize;
        Self {
            budget: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            timeout,
            large_in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Budget bytes free right now.
    #[cfg(test)]
    pub fn available_bytes(&self) -> u64 {
        self.budget.available_permits() as u64 * UNIT
    }

    /// Read `stream` (whose head declared `declared` bytes, if it did) into memory, refusing it when it
    /// is over `limit` (400), has not arrived within the timeout (408), or would pass the buffer budget
    /// (503).
    pub async fn read<S, B>(
        &self,
        declared: Option<u64>,
        limit: u64,
        stream: S,
    ) -> Result<Body, FunctionError>
    where
        S: Stream<Item = Result<B, warp::Error>>,
        B: Buf,
    {
        if declared.is_some_and(|len| len > limit) {
            return Err(FunctionError::TooLarge { limit });
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut held = Held {
            permit: None,
            large: None,
        };
        let mut out: Vec<u8> = Vec::new();
        futures::pin_mut!(stream);
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| FunctionError::BodyTimeout {
                    secs: self.timeout.as_secs_f64(),
                })?;
            let Some(chunk) = next else { break };
            let mut chunk = chunk.map_err(|e| {
                FunctionError::BadRequest(crate::domain::RequestError::new(
                    "body",
                    format!("could not be read: {e}"),
                ))
            })?;
            let needed = out.len() + chunk.remaining();
            if needed as u64 > limit {
                return Err(FunctionError::TooLarge { limit });
            }
            if needed > out.capacity() {
                let cap = declared.map_or(limit, |d| d.max(needed as u64)) as usize;
                let target = needed
                    .max(out.capacity().saturating_mul(2))
                    .max(MIN_GROWTH)
                    .min(cap.max(needed));
                self.reserve(&mut held, target as u64)?;
                out.reserve_exact(target - out.len());
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                let n = part.len();
                out.extend_from_slice(part);
                chunk.advance(n);
            }
        }
        Ok(Body {
            bytes: Bytes::from(out),
            held,
        })
    }

    /// Make `held` cover `bytes` of buffer, or refuse with 503 when the budget has no room now.
    fn reserve(&self, held: &mut Held, bytes: u64) -> Result<(), FunctionError> {
        let want = bytes.div_ceil(UNIT);
        let have = held.permit.as_ref().map_or(0, |p| p.num_permits() as u64);
        if want > have {
            let more = u32::try_from(want - have).map_err(|_| FunctionError::Busy)?;
            let permit = self
                .budget
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| FunctionError::Busy)?;
            match held.permit.as_mut() {
                Some(p) => p.merge(permit),
                None => held.permit = Some(permit),
            }
        }
        if held.large.is_none() && bytes >= LARGE {
            self.large_in_flight.fetch_add(1, Ordering::AcqRel);
            held.large = Some(self.large_in_flight.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, warp::Error>> {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    fn reader(budget: u64) -> BodyReader {
        BodyReader::new(budget, Duration::from_secs(10))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_and_its_budget_given_back() {
        let r = reader(64 * 1024);
        let body = r
            .read(Some(11), 1024, chunks(vec![b"hello", b" world"]))
            .await
            .map_err(|e| e.to_string());
        let body = body.as_ref().ok();
        assert_eq!(body.map(|b| b.bytes.as_ref()), Some(&b"hello world"[..]));
        assert!(r.available_bytes() < 64 * 1024, "held while the body lives");
    }

    #[tokio::test]
    async fn the_budget_comes_back_when_the_body_is_dropped() {
        let r = reader(64 * 1024);
        let body = r.read(None, 1024, chunks(vec![b"abc"])).await;
        assert!(body.is_ok());
        drop(body);
        assert_eq!(r.available_bytes(), 64 * 1024);
    }

    #[tokio::test]
    async fn too_large_declared_or_streamed() {
        let r = reader(64 * 1024);
        let declared = r.read(Some(2000), 1000, chunks(vec![])).await;
        assert!(matches!(
            declared,
            Err(FunctionError::TooLarge { limit: 1000 })
        ));
        let streamed = r
            .read(None, 4, chunks(vec![b"abc", b"def"]))
            .await
            .map(|_| ());
        assert!(matches!(
            streamed,
            Err(FunctionError::TooLarge { limit: 4 })
        ));
        assert_eq!(
            r.available_bytes(),
            64 * 1024,
            "refusals give the budget back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_a_408() {
        let r = BodyReader::new(64 * 1024, Duration::from_secs(10));
        // One byte, then nothing: the client trickles and stops.
        let stream = futures::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"{"))])
            .chain(futures::stream::pending());
        let started = tokio::time::Instant::now();
        let outcome = r.read(Some(100), 1024, stream).await.map(|_| ());
        assert!(
            matches!(outcome, Err(FunctionError::BodyTimeout { secs }) if secs == 10.0),
            "{outcome:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(r.available_bytes(), 64 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_length_is_not_reserved_before_it_arrives() {
        // 1 KiB of budget: a head declaring 1 000 000 bytes reserves only what was sent.
        let r = reader(4 * 1024);
        let stream = futures::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"{"))])
            .chain(futures::stream::pending());
        let mut reading = std::pin::pin!(r.read(Some(1_000_000), 2_000_000, stream));
        let timed_out = tokio::time::timeout(Duration::from_millis(50), &mut reading).await;
        assert!(timed_out.is_err(), "still reading");
        // While it reads it holds one growth step, not a megabyte.
        assert_eq!(r.available_bytes(), 3 * 1024);
        let other = r.read(Some(3), 1024, chunks(vec![b"abc"])).await;
        assert!(other.is_ok());
    }

    #[tokio::test]
    async fn past_the_budget_is_a_503_at_once() {
        let r = reader(8 * 1024);
        let first = r
            .read(Some(6000), 10_000, chunks(vec![&[b'x'; 6000]]))
            .await;
        assert!(first.is_ok());
        let second = r
            .read(Some(6000), 10_000, chunks(vec![&[b'y'; 6000]]))
            .await
            .map(|_| ());
        assert!(matches!(second, Err(FunctionError::Busy)), "{second:?}");
        drop(first);
        let third = r
            .read(Some(6000), 10_000, chunks(vec![&[b'z'; 6000]]))
            .await;
        assert!(third.is_ok(), "room again once the first is answered");
    }
}

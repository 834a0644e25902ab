//! Reading request bodies with a size limit, without buffering more than the limit.

use crate::functions::FunctionError;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Collect `stream` into memory, refusing (before reading it) a body whose declared length is over
/// `limit`, and stopping as soon as an undeclared (chunked) body passes it.
pub async fn collect_limited<S, B>(
    declared: Option<u64>,
    limit: u64,
    stream: S,
) -> Result<Bytes, FunctionError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if declared.is_some_and(|len| len > limit) {
        return Err(FunctionError::TooLarge { limit });
    }
    let mut out = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    futures::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| {
            FunctionError::BadRequest(crate::domain::RequestError::new(
                "body",
                format!("could not be read: {e}"),
            ))
        })?;
        if (out.len() + chunk.remaining()) as u64 > limit {
            return Err(FunctionError::TooLarge { limit });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

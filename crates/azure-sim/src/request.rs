//! Reading requests: percent-decoding path segments, query strings, bearer tokens and bounded bodies.
//! Shared by every route family so each parses its input the same way.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::borrow::Cow;
use warp::Filter;

/// Largest request body the simulator reads (ARM's own limit is far larger; our bodies are tiny).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Decodes `%XX` escapes of a path segment (`Wait%201` → `Wait 1`). `+` stays a `+` (paths are not
/// form-encoded); invalid escapes are kept as written; invalid UTF-8 is replaced.
pub(crate) fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A parsed query string. Keys are matched case-insensitively, as ARM does.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        Self {
            pairs: url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// What the `Authorization` header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bearer<'a> {
    Missing,
    /// Present but not `Bearer <token>`.
    Malformed,
    Token(&'a str),
}

pub(crate) fn bearer(authorization: Option<&str>) -> Bearer<'_> {
    let Some(value) = authorization else {
        return Bearer::Missing;
    };
    let mut parts = value.trim().splitn(2, ' ');
    match (parts.next(), parts.next().map(str::trim)) {
        (Some(scheme), Some(token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() =>
        {
            Bearer::Token(token)
        }
        _ => Bearer::Malformed,
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    TooLarge,
    Interrupted,
}

/// Reads the whole body, refusing more than `limit` bytes (whatever `Content-Length` claims).
pub(crate) async fn read_limited<S, B>(stream: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| BodyError::Interrupted)?;
        if body.len() + chunk.remaining() > limit {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            body.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

/// Extracts the body (at most [`MAX_BODY_BYTES`]) without rejecting: the handler decides what an
/// oversized body means.
pub(crate) fn body(
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = warp::Rejection> + Clone {
    warp::body::stream().then(|stream| read_limited(stream, MAX_BODY_BYTES))
}

/// The raw query string, empty when there is none.
pub(crate) fn raw_query(
) -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_spaces_and_bad_escapes() {
        assert_eq!(percent_decode("Wait%201"), "Wait 1");
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%2"), "%zz%2");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn query_keys_are_case_insensitive() {
        let q = Query::parse("API-Version=2018-06-01&isRecursive=true&name=Wait%201");
        assert_eq!(q.get("api-version"), Some("2018-06-01"));
        assert_eq!(q.get("name"), Some("Wait 1"));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(None), Bearer::Missing);
        assert_eq!(bearer(Some("Bearer abc")), Bearer::Token("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Bearer::Token("abc"));
        assert_eq!(bearer(Some("Basic abc")), Bearer::Malformed);
        assert_eq!(bearer(Some("Bearer")), Bearer::Malformed);
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        let chunks = futures::stream::iter(vec![
            Ok::<_, warp::Error>(Bytes::from_static(b"12345")),
            Ok(Bytes::from_static(b"678")),
        ]);
        assert_eq!(
            read_limited(chunks, 8).await,
            Ok(Bytes::from_static(b"12345678"))
        );
        let chunks =
            futures::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"123456789"))]);
        assert_eq!(read_limited(chunks, 8).await, Err(BodyError::TooLarge));
    }
}

//! HTTP forwarding: `/api/<FunctionName>` exactly as the caller (ADF's Azure Function activity) sent it.

use super::{body, json_response, keys};
use crate::functions::{dispatch, AppState, Function, FunctionError, Invocation};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use warp::Filter;

pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
       + Clone
       + Send
       + Sync
       + 'static {
    warp::path!("api" / String)
        .and(warp::method())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(warp::header::optional::<String>("x-functions-key"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |name: String,
                  method: warp::http::Method,
                  query: BTreeMap<String, String>,
                  key: Option<String>,
                  length: Option<u64>,
                  stream| {
                let state = state.clone();
                async move {
                    // Wait for a slot before reading the body: a waiting request holds only its head.
                    let started = Instant::now();
                    let gate = state.clone();
                    gate.admission
                        .admit(move || {
                            answer(state, name, method, query, key, length, stream, started)
                        })
                        .await
                }
            },
        )
}

#[allow(clippy::too_many_arguments)] // the values warp extracted, handed over as they are
async fn answer<S, B>(
    state: Arc<AppState>,
    name: String,
    method: warp::http::Method,
    query: BTreeMap<String, String>,
    key: Option<String>,
    length: Option<u64>,
    stream: S,
    started: Instant,
) -> warp::reply::Response
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let reply = match handle(&state, &name, method.as_str(), query, key, length, stream).await {
        Ok(reply) => reply,
        Err(e) => e.into_reply(),
    };
    tracing::info!(function = %name, protocol = "http", status = reply.status, duration_ms = started.elapsed().as_secs_f64() * 1000.0, "invocation");
    json_response(&reply)
}

async fn handle<S, B>(
    state: &AppState,
    name: &str,
    method: &str,
    query: BTreeMap<String, String>,
    key: Option<String>,
    length: Option<u64>,
    stream: S,
) -> Result<crate::functions::Reply, FunctionError>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    keys::check(state, key.as_deref(), query.get("code").map(String::as_str))?;
    let function =
        Function::lookup(name).ok_or_else(|| FunctionError::NotFound(name.to_string()))?;
    let body = body::collect_limited(length, state.settings.max_body_bytes, stream).await?;
    let invocation = Invocation {
        method: method.to_string(),
        query,
        body,
    };
    Ok(dispatch(state, function, &invocation).await)
}

//! HTTP forwarding: `/api/<FunctionName>` exactly as the caller (ADF's Azure Function activity) sent it.

use super::body::{self, BodyReader};
use super::{json_response, keys};
use crate::functions::{dispatch, AppState, Function, FunctionError, Invocation, Reply};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use warp::Filter;

pub fn route(
    state: Arc<AppState>,
    bodies: Arc<BodyReader>,
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
                let bodies = bodies.clone();
                async move {
                    let started = Instant::now();
                    // The body is read before the call waits for a work slot, within its time bound:
                    // a slow client holds its buffered bytes, never a slot.
                    let read = receive(&state, &bodies, &name, &query, key, length, stream).await;
                    let reply = match read {
                        Err(e) => e.into_reply(),
                        Ok((function, body)) => {
                            let gate = state.clone();
                            gate.admission
                                .admit(move || answer(state, function, method, query, body))
                                .await
                        }
                    };
                    tracing::info!(function = %name, protocol = "http", status = reply.status, duration_ms = started.elapsed().as_secs_f64() * 1000.0, "invocation");
                    json_response(&reply)
                }
            },
        )
}

/// Check the key, find the function, read the body.
async fn receive<S, B>(
    state: &AppState,
    bodies: &BodyReader,
    name: &str,
    query: &BTreeMap<String, String>,
    key: Option<String>,
    length: Option<u64>,
    stream: S,
) -> Result<(&'static Function, body::Body), FunctionError>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    keys::check(state, key.as_deref(), query.get("code").map(String::as_str))?;
    // Timers are not served over HTTP.
    let function = Function::lookup(name)
        .filter(|f| f.is_http())
        .ok_or_else(|| FunctionError::NotFound(name.to_string()))?;
    let body = bodies
        .read(length, state.settings.max_body_bytes, stream)
        .await?;
    Ok((function, body))
}

async fn answer(
    state: Arc<AppState>,
    function: &'static Function,
    method: warp::http::Method,
    query: BTreeMap<String, String>,
    body: body::Body,
) -> Reply {
    let body::Body { bytes, held } = body;
    let invocation = Invocation {
        method: method.to_string(),
        query,
        body: bytes,
    };
    let reply = dispatch(&state, function, &invocation).await;
    // The budget share goes back once the request (about the size of its body) is gone.
    drop(invocation);
    drop(held);
    reply
}

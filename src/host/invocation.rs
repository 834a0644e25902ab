//! The custom-handler invocation payload: `POST /<FunctionName>` with `{"Data": {...}, "Metadata": {...}}`.
//! For an HTTP trigger, `Data.req` carries `Method`, `Query`, `Headers` and `Body` (a string, or absent);
//! the answer goes back as `Outputs.res` with `statusCode`, a string `body` and string `headers`. The
//! handler's own reply to the host is always 200 JSON: the caller's status travels inside it.

use super::body::{self, BodyReader};
use super::keys;
use crate::functions::{
    dispatch, dispatch_timer, AppState, Function, FunctionError, Invocation, Reply,
};
use serde_json::{json, Map, Value};
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
    warp::post()
        .and(warp::path!(String))
        .and(warp::query::<BTreeMap<String, String>>())
        .and(warp::header::optional::<String>("x-functions-key"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |name: String,
                  query: BTreeMap<String, String>,
                  key: Option<String>,
                  length: Option<u64>,
                  stream| {
                let state = state.clone();
                let bodies = bodies.clone();
                async move {
                    let started = Instant::now();
                    // The payload is read before the call waits for a work slot, within its time
                    // bound: a slow client holds its buffered bytes, never a slot.
                    let (reply, wrapped) =
                        match receive(&state, &bodies, &name, &query, key, length, stream).await {
                            Err(e) => (e.into_reply(), false),
                            Ok((function, body)) => {
                                let gate = state.clone();
                                gate.admission
                                    .admit(move || answer(state, function, body))
                                    .await
                            }
                        };
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    tracing::info!(function = %name, protocol = "invocation", status = reply.status, duration_ms = ms, "invocation");
                    let body = if wrapped {
                        envelope(&name, &reply, ms)
                    } else {
                        // The payload itself was unusable (or the function unknown): answer the host
                        // directly.
                        reply.body
                    };
                    let status = if wrapped { 200 } else { reply.status };
                    super::json_response(&Reply::new(status, body))
                }
            },
        )
}

/// Check the key, find the function, read the payload.
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
    let function =
        Function::lookup(name).ok_or_else(|| FunctionError::NotFound(name.to_string()))?;
    let limit = if function.is_timer() {
        // The payload (`Data.timer`: schedule status, past-due flag) carries nothing we need.
        64 * 1024
    } else {
        state.settings.largest_payload_bytes()
    };
    let body = bodies.read(length, limit, stream).await?;
    Ok((function, body))
}

/// The reply, and whether it goes inside the envelope: an HTTP-triggered function's reply travels
/// inside `Outputs.res`, a timer's answer goes to the host as it is.
async fn answer(
    state: Arc<AppState>,
    function: &'static Function,
    body: body::Body,
) -> (Reply, bool) {
    let body::Body { bytes, held } = body;
    if function.is_timer() {
        drop((bytes, held));
        return (timer_reply(&state, function).await, false);
    }
    let parsed = parse_payload(&bytes, state.settings.max_body_bytes);
    drop(bytes);
    let reply = match parsed {
        Ok(invocation) => dispatch(&state, function, &invocation).await,
        Err(e) => e.into_reply(),
    };
    // The budget share goes back once the request (about the size of its body) is gone.
    drop(held);
    (reply, true)
}

/// Turn the host's payload into an [`Invocation`].
pub fn parse_payload(raw: &[u8], max_body: u64) -> Result<Invocation, FunctionError> {
    let bad = |field: &str, problem: &str| {
        FunctionError::BadRequest(crate::domain::RequestError::new(field, problem))
    };
    let mut payload: Value = serde_json::from_slice(raw)
        .map_err(|_| bad("Data", "the invocation payload is not JSON"))?;
    let data = payload
        .get_mut("Data")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("Data", "the invocation payload has no Data object"))?;
    let req = if data.contains_key("req") {
        data.get_mut("req")
    } else {
        data.values_mut().find(|v| v.get("Method").is_some())
    }
    .and_then(Value::as_object_mut)
    .ok_or_else(|| bad("Data.req", "the invocation payload carries no HTTP request"))?;
    let method = req
        .get("Method")
        .and_then(Value::as_str)
        .unwrap_or("POST")
        .to_string();
    let query = query_map(req.get("Query"));
    // Taken out of the payload rather than copied: it may be the largest part of it.
    let body = match req.remove("Body") {
        None | Some(Value::Null) => bytes::Bytes::new(),
        Some(Value::String(s)) => bytes::Bytes::from(s.into_bytes()),
        Some(other) => bytes::Bytes::from(other.to_string().into_bytes()),
    };
    if body.len() as u64 > max_body {
        return Err(FunctionError::TooLarge { limit: max_body });
    }
    Ok(Invocation {
        method,
        query,
        body,
    })
}

/// `Query` is an object of strings (or arrays of strings), or the object encoded as a string.
fn query_map(value: Option<&Value>) -> BTreeMap<String, String> {
    let object: Map<String, Value> = match value {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        _ => Map::new(),
    };
    object
        .into_iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Array(items) => items.first().and_then(Value::as_str)?.to_string(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((k, text))
        })
        .collect()
}

/// A timer invocation's answer to the host: no outputs, the result in `Logs` and `ReturnValue`. A failed
/// sweep is a non-2xx to the host, which records the invocation as failed.
async fn timer_reply(state: &AppState, timer: &Function) -> Reply {
    match dispatch_timer(state, timer).await {
        Ok(result) => Reply::ok(json!({
            "Outputs": {},
            "Logs": [format!("procfwk: {} {}", timer.name(), result)],
            "ReturnValue": result,
        })),
        Err(e) => e.into_reply(),
    }
}

fn envelope(function: &str, reply: &Reply, ms: f64) -> Value {
    let content_type = match reply.content_type() {
        with_charset if with_charset.contains("charset=") => with_charset.to_string(),
        plain => format!("{plain}; charset=utf-8"),
    };
    json!({
        "Outputs": { "res": {
            "statusCode": reply.status,
            "body": reply.body_text(),
            "headers": { "Content-Type": content_type },
        }},
        "Logs": [format!("procfwk: {function} answered {} in {ms:.1} ms", reply.status)],
        "ReturnValue": Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_with_string_body_and_string_query() {
        let raw = json!({"Data": {"req": {"Url": "http://x/api/CheckPipelineStatus", "Method": "POST",
            "Query": "{\"code\":\"k\"}", "Headers": {"x-functions-key": ["secret"]}, "Body": "{\"a\":1}"}},
            "Metadata": {}})
        .to_string();
        let inv = parse_payload(raw.as_bytes(), 1024).map_err(|e| e.to_string());
        let inv = inv.as_ref().ok();
        assert_eq!(inv.map(|i| i.method.as_str()), Some("POST"));
        assert_eq!(inv.map(|i| i.body.as_ref()), Some(&b"{\"a\":1}"[..]));
        assert_eq!(
            inv.and_then(|i| i.query.get("code")).map(String::as_str),
            Some("k")
        );
    }

    #[test]
    fn payload_without_data_is_refused() {
        assert!(parse_payload(b"{}", 1024).is_err());
        assert!(parse_payload(b"not json", 1024).is_err());
    }
}

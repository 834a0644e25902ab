//! The request log tests read through `GET /_sim/requests` or [`SimState::requests`](super::SimState):
//! one record per request with method, decoded path, query (secret-looking values redacted), status,
//! the caller's client id (from its bearer token) and duration. Never headers, never bodies. Bounded:
//! the oldest records are dropped beyond [`LOG_CAPACITY`].

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// The most records kept.
pub const LOG_CAPACITY: usize = 100_000;

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// When the request arrived (RFC 3339).
    pub at: String,
    pub method: String,
    /// Percent-decoded path (`/.../pipelines/Wait 1/createRun`).
    pub path: String,
    /// Query string with secret-looking values replaced by `REDACTED`.
    pub query: String,
    pub status: u16,
    /// Client id of the bearer token, when the request carried one the simulator issued.
    pub client_id: Option<String>,
    pub duration_ms: f64,
}

/// The bounded log.
#[derive(Debug)]
pub(crate) struct RequestLog {
    records: Mutex<VecDeque<RequestRecord>>,
    capacity: usize,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::with_capacity(LOG_CAPACITY)
    }
}

impl RequestLog {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&self, record: RequestRecord) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Empties the log; returns how many records were dropped.
    pub fn clear(&self) -> usize {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let n = records.len();
        records.clear();
        n
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Query keys whose values are credentials (function keys, SAS signatures, client secrets, ...).
fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "code" | "sig" | "skoid" | "sktid")
        || key.ends_with("key")
        || [
            "secret",
            "password",
            "token",
            "assertion",
            "signature",
            "apikey",
            "api_key",
        ]
        .iter()
        .any(|word| key.contains(word))
}

/// The query string with every sensitive value replaced by `REDACTED` (keys and order kept).
pub(crate) fn redact_query(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    raw.split('&')
        .map(|pair| {
            let (key, _) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded: String = url::form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            if is_sensitive_key(&decoded) {
                format!("{key}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u16) -> RequestRecord {
        RequestRecord {
            at: String::new(),
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            status: n,
            client_id: None,
            duration_ms: 0.0,
        }
    }

    #[test]
    fn secrets_in_queries_are_redacted() {
        assert_eq!(
            redact_query("api-version=2018-06-01&code=abc%3D%3D&client_secret=s3cr3t&sig=xyz"),
            "api-version=2018-06-01&code=REDACTED&client_secret=REDACTED&sig=REDACTED"
        );
        assert_eq!(
            redact_query("x-functions-key=k&resource=r"),
            "x-functions-key=REDACTED&resource=r"
        );
        assert_eq!(
            redact_query("access_token=t&flag"),
            "access_token=REDACTED&flag"
        );
        assert_eq!(redact_query(""), "");
    }

    #[test]
    fn log_is_bounded_and_clearable() {
        let log = RequestLog::with_capacity(3);
        for n in 0..5 {
            log.push(record(n));
        }
        let statuses: Vec<u16> = log.snapshot().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [2, 3, 4]);
        assert_eq!(log.clear(), 3);
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn records_serialise_in_camel_case() {
        let mut r = record(200);
        r.client_id = Some("app".into());
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["clientId"], "app");
        assert!(json.get("durationMs").is_some());
    }
}

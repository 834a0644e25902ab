//! The one response type every simulator route produces, and the ARM error body. A [`SimReply`] also
//! carries the client id of the bearer token (if any) so the request log can record who called,
//! without the log ever seeing a header.

use bytes::Bytes;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;
use warp::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use warp::http::{HeaderMap, StatusCode};

const JSON: &str = "application/json; charset=utf-8";

/// A finished answer: status, JSON (or empty) body, extra headers, and who called.
#[derive(Debug)]
pub(crate) struct SimReply {
    pub status: StatusCode,
    body: Bytes,
    is_json: bool,
    headers: HeaderMap,
    pub client_id: Option<Arc<str>>,
}

impl SimReply {
    /// `value` as a JSON body.
    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                body: Bytes::from(body),
                is_json: true,
                headers: HeaderMap::new(),
                client_id: None,
            },
            Err(e) => {
                tracing::error!(error = %e, "simulator could not serialise a response");
                ArmError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "Serialisation failed.",
                )
                .into_reply()
            }
        }
    }

    /// A pre-serialised JSON body.
    pub fn raw_json(status: StatusCode, body: Vec<u8>) -> Self {
        Self {
            status,
            body: Bytes::from(body),
            is_json: true,
            headers: HeaderMap::new(),
            client_id: None,
        }
    }

    /// No body at all (e.g. the 200 of a pipeline-run cancel).
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: Bytes::new(),
            is_json: false,
            headers: HeaderMap::new(),
            client_id: None,
        }
    }

    /// Adds a header; a value that is not a valid header value is left out.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), value);
        }
        self
    }

    /// Records who called (the client id of the bearer token).
    pub fn client(mut self, client_id: Option<Arc<str>>) -> Self {
        self.client_id = client_id;
        self
    }

    pub fn into_response(self) -> warp::reply::Response {
        let mut response = warp::reply::Response::new(self.body.into());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if self.is_json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        }
        headers.extend(self.headers);
        response
    }

    #[cfg(test)]
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    #[cfg(test)]
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An ARM (and Key Vault) error: `{"error": {"code": "...", "message": "...", "target"?}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArmError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    pub target: Option<String>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
}

impl ArmError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn into_reply(self) -> SimReply {
        let envelope = ErrorEnvelope {
            error: ErrorBody {
                code: &self.code,
                message: &self.message,
                target: self.target.as_deref(),
            },
        };
        match serde_json::to_vec(&envelope) {
            Ok(body) => SimReply::raw_json(self.status, body),
            Err(_) => SimReply::empty(self.status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_errors_have_the_arm_shape() {
        let reply = ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Entity Wait 99 not found",
        )
        .into_reply();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(
            reply.body_json(),
            serde_json::json!({"error": {"code": "NotFound", "message": "Entity Wait 99 not found"}})
        );
        let response = reply.into_response();
        assert_eq!(response.headers()[CONTENT_TYPE], JSON);
    }

    #[test]
    fn invalid_header_values_are_dropped_not_panicked_on() {
        let reply = SimReply::empty(StatusCode::OK).header("x-test", "bad\nvalue");
        assert!(reply.header_value("x-test").is_none());
    }
}

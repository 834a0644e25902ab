//! The one place where failures become HTTP answers: a JSON body `{"error": {"code", "message", ...}}`
//! naming the field for bad input, and saying what the upstream service said for upstream failures.

use super::Reply;
use crate::adapters::UpstreamError;
use crate::domain::RequestError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("invalid request: {0}")]
    BadRequest(#[from] RequestError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("conflict: {message}")]
    Conflict {
        message: String,
        details: serde_json::Value,
    },
    #[error("method {method} is not allowed")]
    MethodNotAllowed { method: String, allowed: String },
    #[error("function {0} does not exist")]
    NotFound(String),
    #[error("a valid function key is required")]
    Unauthorized,
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Lifecycle(#[from] crate::orchestration::LifecycleError),
}

impl FunctionError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::TooLarge { .. } => 400,
            Self::Upstream(e) => e.caller_status(),
            Self::Conflict { .. } => 409,
            Self::MethodNotAllowed { .. } => 405,
            Self::NotFound(_) => 404,
            Self::Unauthorized => 401,
            Self::Lifecycle(e) => lifecycle_status(e),
        }
    }

    pub fn into_reply(self) -> Reply {
        let status = self.status();
        let body = match &self {
            Self::BadRequest(e) => json!({"error": {
                "code": "InvalidRequest", "field": e.field, "message": format!("{}: {}", e.field, e.problem),
            }}),
            Self::TooLarge { limit } => json!({"error": {
                "code": "InvalidRequest", "field": "body",
                "message": format!("body: is larger than the {limit} bytes this Function App accepts"),
            }}),
            Self::Upstream(e) => {
                let mut err = json!({"code": e.caller_code(), "message": e.to_string()});
                if let UpstreamError::Http {
                    service,
                    status,
                    code,
                    message,
                } = e
                {
                    err["upstream"] = json!({
                        "service": service.to_string(), "status": status, "code": code, "message": message,
                    });
                }
                json!({ "error": err })
            }
            Self::Conflict { message, details } => json!({"error": {
                "code": "Conflict", "message": message, "details": details,
            }}),
            Self::MethodNotAllowed { method, allowed } => json!({"error": {
                "code": "MethodNotAllowed", "message": format!("method {method} is not allowed; use {allowed}"),
            }}),
            Self::NotFound(name) => json!({"error": {
                "code": "FunctionNotFound", "message": format!("there is no function named {name:?}"),
            }}),
            Self::Unauthorized => json!({"error": {
                "code": "Unauthorized",
                "message": "a valid function key is required (x-functions-key header or code query parameter)",
            }}),
            Self::Lifecycle(e) => {
                json!({"error": {"code": lifecycle_code(e), "message": e.to_string()}})
            }
        };
        if status >= 500 {
            tracing::warn!(status, error = %self, "invocation failed");
        } else {
            tracing::info!(status, error = %self, "invocation refused");
        }
        Reply::new(status, body)
    }
}

fn lifecycle_status(e: &crate::orchestration::LifecycleError) -> u16 {
    use crate::orchestration::LifecycleError as L;
    match e {
        L::Store(s) if s.is_transient() => 503,
        L::Store(crate::store::StoreError::Config(_)) => 500,
        L::Store(_) => 500,
        L::AlreadyRunning(_) => 409,
        L::NoWork | L::BatchDisabled(_) | L::BatchMode(_) => 409,
        L::BatchNotFound(_) | L::ExecutionNotFound(_) | L::WorkerNotFound(..) => 404,
        L::InvalidProperty { .. } | L::Metadata(_) => 500,
    }
}

fn lifecycle_code(e: &crate::orchestration::LifecycleError) -> &'static str {
    use crate::orchestration::LifecycleError as L;
    match e {
        L::Store(s) if s.is_transient() => "MetadataStoreUnavailable",
        L::Store(_) => "MetadataStoreError",
        L::AlreadyRunning(_) => "ExecutionAlreadyRunning",
        L::NoWork => "NoEnabledWork",
        L::BatchNotFound(_) => "BatchNotFound",
        L::BatchDisabled(_) => "BatchDisabled",
        L::BatchMode(_) => "BatchMode",
        L::ExecutionNotFound(_) => "ExecutionNotFound",
        L::WorkerNotFound(..) => "WorkerNotFound",
        L::InvalidProperty { .. } => "InvalidProperty",
        L::Metadata(_) => "InvalidMetadata",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::Service;

    #[test]
    fn bad_request_names_field() {
        let r = FunctionError::from(RequestError::new("runId", "Expected Run Id to be a GUID."))
            .into_reply();
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"]["field"], "runId");
    }

    #[test]
    fn upstream_says_what_arm_said() {
        let r = FunctionError::from(UpstreamError::Http {
            service: Service::Arm,
            status: 404,
            code: "PipelineRunNotFound".into(),
            message: "not found".into(),
        })
        .into_reply();
        assert_eq!(r.status, 404);
        assert_eq!(r.body["error"]["upstream"]["code"], "PipelineRunNotFound");
        assert_eq!(r.body["error"]["upstream"]["status"], 404);
    }
}

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
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: f64 },
    #[error("too many request bytes are being received at once")]
    Busy,
    #[error(transparent)]
    Lifecycle(#[from] crate::orchestration::LifecycleError),
}

/// A metadata store failure outside a transition (opening the store: `state.store().await?`) answers as
/// a lifecycle failure does.
impl From<crate::store::StoreError> for FunctionError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Lifecycle(e.into())
    }
}

impl FunctionError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::TooLarge { .. } => 400,
            Self::Upstream(e) => e.caller_status(),
            Self::BodyTimeout { .. } => 408,
            Self::Busy => 503,
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
            Self::BodyTimeout { secs } => json!({"error": {
                "code": "RequestTimeout", "field": "body",
                "message": format!("body: did not arrive within {secs} s of the request head (PROCFWK_BODY_TIMEOUT_SECS)"),
            }}),
            Self::Busy => json!({"error": {
                "code": "ServerBusy",
                "message": "this Function App is receiving as many request bytes as it buffers at once (PROCFWK_BODY_BUFFER_BYTES); try again shortly",
            }}),
            Self::Upstream(e) => {
                let mut err = json!({"code": e.caller_code(), "message": e.to_string()});
                if status == 400 {
                    // What we passed that the service refused; `body` when its answer does not say.
                    err["field"] = json!(e.field().unwrap_or_else(|| "body".into()));
                }
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
        L::Store(s) if s.is_transient() || s.is_schema_problem() || s.is_lock_timeout() => 503,
        L::Store(crate::store::StoreError::Config(_)) => 500,
        L::Store(_) => 500,
        L::AlreadyRunning(_) | L::ScopeStartedMeanwhile => 409,
        L::NoWork | L::BatchDisabled(_) | L::BatchMode(_) => 409,
        L::BatchNotFound(_) | L::ExecutionNotFound(_) | L::WorkerNotFound(..) => 404,
        L::InvalidProperty { .. } | L::Metadata(_) => 500,
    }
}

fn lifecycle_code(e: &crate::orchestration::LifecycleError) -> &'static str {
    use crate::orchestration::LifecycleError as L;
    match e {
        L::Store(s) if s.is_transient() => "MetadataStoreUnavailable",
        L::Store(s) if s.is_lock_timeout() => "MetadataStoreBusy",
        L::Store(crate::store::StoreError::NotInitialised(_)) => "MetadataStoreNotInitialised",
        L::Store(crate::store::StoreError::TooOld { .. }) => "MetadataStoreTooOld",
        L::Store(_) => "MetadataStoreError",
        L::AlreadyRunning(_) | L::ScopeStartedMeanwhile => "ExecutionAlreadyRunning",
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

    /// Every kind of failure, one or more samples each. The match makes a new variant a compile error
    /// here until it has a sample.
    fn samples() -> Vec<FunctionError> {
        use crate::orchestration::LifecycleError as L;
        use crate::store::StoreError as S;
        let http = |status: u16, message: &str| {
            FunctionError::Upstream(UpstreamError::Http {
                service: Service::Arm,
                status,
                code: "BadRequest".into(),
                message: message.into(),
            })
        };
        let all = vec![
            FunctionError::BadRequest(RequestError::new("runId", "Expected Run Id to be a GUID.")),
            http(
                400,
                "The value of parameter 'WaitTime' of pipeline 'Wait 1' is not of type 'Int'.",
            ),
            http(
                400,
                "The parameter 'Nope' is not defined in pipeline 'Wait 1'.",
            ),
            http(400, "Something else ARM did not like."),
            http(403, "no"),
            http(404, "no"),
            http(409, "no"),
            http(429, "slow down"),
            http(500, "oops"),
            FunctionError::Upstream(UpstreamError::Authentication {
                service: Service::EntraId,
                message: "AADSTS7000215".into(),
            }),
            FunctionError::Upstream(UpstreamError::Unreachable {
                service: Service::Arm,
                message: "refused".into(),
            }),
            FunctionError::Upstream(UpstreamError::BudgetExhausted {
                service: Service::Arm,
            }),
            FunctionError::Upstream(UpstreamError::Protocol {
                service: Service::Arm,
                message: "?".into(),
            }),
            FunctionError::Upstream(UpstreamError::Unsupported {
                field: "orchestratorType",
                message: "orchestratorType: SYN is not supported".into(),
            }),
            FunctionError::Conflict {
                message: "no".into(),
                details: json!({}),
            },
            FunctionError::MethodNotAllowed {
                method: "GET".into(),
                allowed: "POST".into(),
            },
            FunctionError::NotFound("X".into()),
            FunctionError::Unauthorized,
            FunctionError::TooLarge { limit: 1 },
            FunctionError::BodyTimeout { secs: 10.0 },
            FunctionError::Busy,
            FunctionError::Lifecycle(L::Store(S::NotInitialised("no tables".into()))),
            FunctionError::Lifecycle(L::Store(S::TooOld {
                found: 1,
                needed: 2,
            })),
            FunctionError::Lifecycle(L::Store(S::Connection("gone".into()))),
            FunctionError::Lifecycle(L::Store(S::Config("bad".into()))),
            FunctionError::Lifecycle(L::NoWork),
        ];
        for e in &all {
            match e {
                FunctionError::BadRequest(_)
                | FunctionError::Upstream(_)
                | FunctionError::Conflict { .. }
                | FunctionError::MethodNotAllowed { .. }
                | FunctionError::NotFound(_)
                | FunctionError::Unauthorized
                | FunctionError::TooLarge { .. }
                | FunctionError::BodyTimeout { .. }
                | FunctionError::Busy
                | FunctionError::Lifecycle(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_400_names_a_field() {
        let mut four_hundreds = 0;
        for e in samples() {
            let shown = e.to_string();
            let r = e.into_reply();
            if r.status == 400 {
                four_hundreds += 1;
                let field = r.body["error"]["field"].as_str().unwrap_or("");
                assert!(
                    !field.is_empty(),
                    "400 without a field: {shown} -> {}",
                    r.body
                );
            }
        }
        assert!(four_hundreds >= 6);
    }

    #[test]
    fn arm_refusing_a_parameter_names_it_beside_what_arm_said() {
        let r = FunctionError::from(UpstreamError::Http {
            service: Service::Arm,
            status: 400,
            code: "BadRequest".into(),
            message: "The value of parameter 'WaitTime' of pipeline 'Wait 1' is not of type 'Int': 'x' is not a whole number.".into(),
        })
        .into_reply();
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"]["field"], "pipelineParameters.WaitTime");
        assert_eq!(r.body["error"]["upstream"]["code"], "BadRequest");
        assert!(r.body["error"]["upstream"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not of type 'Int'")));
    }

    #[test]
    fn an_uninitialised_or_old_store_is_a_503_saying_what_to_run() {
        use crate::orchestration::LifecycleError as L;
        use crate::store::StoreError as S;
        let r =
            FunctionError::Lifecycle(L::Store(S::NotInitialised("no tables".into()))).into_reply();
        assert_eq!(r.status, 503);
        assert_eq!(r.body["error"]["code"], "MetadataStoreNotInitialised");
        assert!(r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("procfwk db init")));
        let r = FunctionError::Lifecycle(L::Store(S::TooOld {
            found: 1,
            needed: 2,
        }))
        .into_reply();
        assert_eq!(r.status, 503);
        assert_eq!(r.body["error"]["code"], "MetadataStoreTooOld");
        assert!(r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("procfwk db upgrade")));
    }
}

//! Failures of the services we call (ARM, Entra ID, the managed identity endpoint, Key Vault), in a form
//! that says what the service said (status, code, message) and never carries a secret, a token or a raw
//! header dump. A core type: the adapters produce it, the lifecycle, the VM power port and the functions
//! read it.

use std::fmt;

/// Which upstream service failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Arm,
    EntraId,
    ManagedIdentity,
    KeyVault,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Arm => "Azure Resource Manager",
            Self::EntraId => "Microsoft Entra ID",
            Self::ManagedIdentity => "the managed identity endpoint",
            Self::KeyVault => "Key Vault",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The service answered with an error status.
    #[error("{service} answered HTTP {status} {code}: {message}")]
    Http {
        service: Service,
        status: u16,
        code: String,
        message: String,
    },
    /// No token could be had for the caller's principal or our managed identity.
    #[error("authentication with {service} failed: {message}")]
    Authentication { service: Service, message: String },
    /// The service could not be reached (DNS, connect, reset, timeout of one request).
    #[error("could not reach {service}: {message}")]
    Unreachable { service: Service, message: String },
    /// The invocation's time budget ran out.
    #[error("the time budget of this call ran out while waiting for {service}")]
    BudgetExhausted { service: Service },
    /// The service answered something we cannot read.
    #[error("unexpected answer from {service}: {message}")]
    Protocol { service: Service, message: String },
    /// The request needs something this Function App does not do; `field` is the request field
    /// that asks for it.
    #[error("{message}")]
    Unsupported {
        field: &'static str,
        message: String,
    },
}

impl UpstreamError {
    /// The HTTP status the caller of our function should see.
    pub fn caller_status(&self) -> u16 {
        match self {
            Self::Http { status, .. } => match *status {
                400 | 403 | 404 | 409 => *status,
                401 => 403,
                429 => 503,
                s if s >= 500 => 502,
                _ => 502,
            },
            Self::Authentication { .. } => 401,
            Self::Unreachable { .. } => 502,
            Self::BudgetExhausted { .. } => 504,
            Self::Protocol { .. } => 502,
            Self::Unsupported { .. } => 400,
        }
    }

    /// A stable code for the JSON error body.
    pub fn caller_code(&self) -> &'static str {
        match self {
            Self::Http { .. } => "UpstreamError",
            Self::Authentication { .. } => "AuthenticationFailed",
            Self::Unreachable { .. } => "UpstreamUnreachable",
            Self::BudgetExhausted { .. } => "UpstreamTimeout",
            Self::Protocol { .. } => "UpstreamProtocolError",
            Self::Unsupported { .. } => "Unsupported",
        }
    }

    /// The request field a refusal concerns, when it can be told: the field asking for something
    /// unsupported, or, for ARM's 400 about a pipeline parameter ("The value of parameter 'WaitTime' …
    /// is not of type 'Int'", "The parameter 'X' is not defined …"), `pipelineParameters.<name>`.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Unsupported { field, .. } => Some((*field).to_string()),
            Self::Http {
                service: Service::Arm,
                status: 400,
                message,
                ..
            } => parameter_named(message).map(|name| format!("pipelineParameters.{name}")),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Http { status: 404, .. })
    }

    /// An answer that asking again will not change: the resource is missing, or we may not act on it
    /// (400, 401, 403, 404).
    pub fn is_permanent_refusal(&self) -> bool {
        matches!(
            self,
            Self::Http {
                status: 400 | 401 | 403 | 404,
                ..
            } | Self::Authentication { .. }
        )
    }
}

/// The name in the first `parameter 'name'` (or `parameters 'name'`) of an ARM message.
fn parameter_named(message: &str) -> Option<&str> {
    let lower = message.to_ascii_lowercase();
    ["parameter '", "parameters '"].iter().find_map(|marker| {
        let start = lower.find(marker)? + marker.len();
        let len = message.get(start..)?.find('\'')?;
        message
            .get(start..start + len)
            .filter(|name| !name.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_statuses() {
        let http = |status| UpstreamError::Http {
            service: Service::Arm,
            status,
            code: "X".into(),
            message: "m".into(),
        };
        assert_eq!(http(404).caller_status(), 404);
        assert_eq!(http(403).caller_status(), 403);
        assert_eq!(http(429).caller_status(), 503);
        assert_eq!(http(500).caller_status(), 502);
        assert_eq!(
            UpstreamError::BudgetExhausted {
                service: Service::Arm
            }
            .caller_status(),
            504
        );
    }
}

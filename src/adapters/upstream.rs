//! Turning the Azure SDK's errors into [`UpstreamError`]s (the core type, [`crate::domain::upstream`])
//! without ever using their `Display` (which dumps response headers).

pub use crate::domain::upstream::{Service, UpstreamError};

/// Construction of an [`UpstreamError`] from an Azure SDK error (`UpstreamError::from_azure`, with this
/// trait in scope).
pub trait FromAzure {
    /// Translate an Azure SDK error without ever using its `Display` (which dumps response headers).
    fn from_azure(service: Service, error: &azure_core::Error) -> Self;
}

impl FromAzure for UpstreamError {
    fn from_azure(service: Service, error: &azure_core::Error) -> Self {
        use azure_core::error::ErrorKind;
        if let Some(http) = error.as_http_error() {
            return Self::Http {
                service,
                status: u16::from(http.status()),
                code: http.error_code().unwrap_or("Unknown").to_string(),
                message: http.error_message().unwrap_or("").to_string(),
            };
        }
        match error.kind() {
            ErrorKind::HttpResponse { status, error_code } => Self::Http {
                service,
                status: u16::from(*status),
                code: error_code.clone().unwrap_or_else(|| "Unknown".into()),
                message: String::new(),
            },
            ErrorKind::Credential => Self::Authentication {
                service: if service == Service::Arm {
                    Service::EntraId
                } else {
                    service
                },
                message: match entra_description(error) {
                    Some(said) => format!("{}: {said}", error_chain(error)),
                    None => error_chain(error),
                },
            },
            ErrorKind::Io => Self::Unreachable {
                service,
                message: error_chain(error),
            },
            _ => Self::Protocol {
                service,
                message: error_chain(error),
            },
        }
    }
}

/// What Entra ID said (`error_description`, e.g. `AADSTS7000215: Invalid client secret provided…`). The
/// token client's error does not show it in `Display`, only in `Debug`; we take that one quoted value and
/// nothing else (the token endpoint's answer never contains the client secret).
fn entra_description(error: &azure_core::Error) -> Option<String> {
    let debug = format!("{error:?}");
    let start = debug.find("error_description: Some(\"")? + "error_description: Some(\"".len();
    let rest = &debug[start..];
    let mut out = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            // An escaped line break ends the first line; Entra adds trace and correlation ids after it.
            (true, 'r' | 'n') => break,
            (true, c) => {
                out.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, '"') => break,
            (false, c) => out.push(c),
        }
        if out.len() > 500 {
            break;
        }
    }
    let first = out.trim().to_string();
    (!first.is_empty()).then_some(first)
}

/// Messages of an error and its sources, skipping the SDK's `HttpError` dump (headers and body).
fn error_chain(error: &azure_core::Error) -> String {
    let mut parts = vec![error.kind().to_string()];
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if e.downcast_ref::<azure_core::error::HttpError>().is_none() {
            let text = e.to_string();
            if !text.is_empty() && !parts.contains(&text) {
                parts.push(text);
            }
        }
        source = e.source();
    }
    parts.join(": ")
}

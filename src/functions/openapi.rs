//! `OpenApi` (GET, route `openapi.json`): the OpenAPI 3.1 document of every HTTP function, as kept in the
//! repository (`docs/openapi.json`), compiled into the executable.

use super::{AppState, FunctionError, Invocation, Reply};

/// The document, verbatim.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// The document, whatever the query string says.
pub async fn handle(_state: &AppState, _invocation: &Invocation) -> Result<Reply, FunctionError> {
    Ok(Reply::page("application/json", DOCUMENT.to_string()))
}

//! `OpenApi` (GET, route `openapi.json`): the OpenAPI 3.1 document of every HTTP function, as kept in the
//! repository (`docs/openapi.json`), compiled into the executable.

use super::Reply;

/// The document, verbatim.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub fn reply() -> Reply {
    Reply::page("application/json", DOCUMENT.to_string())
}

//! Function keys when running standalone (`procfwk serve` without the Functions host): the key from
//! `PROCFWK_FUNCTION_KEY` must arrive as the `x-functions-key` header or the `code` query parameter, as the
//! host requires in Azure. Under the host, the host checks keys itself.

use crate::functions::{AppState, FunctionError};

pub fn check(
    state: &AppState,
    header: Option<&str>,
    code: Option<&str>,
) -> Result<(), FunctionError> {
    let settings = &state.settings;
    let Some(expected) = settings
        .function_key
        .as_ref()
        .filter(|_| !settings.under_functions_host)
    else {
        return Ok(());
    };
    let given = header.or(code).unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(FunctionError::Unauthorized)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

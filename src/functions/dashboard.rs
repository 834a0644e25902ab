//! `Dashboard` (GET): the execution dashboard as one HTML page, read-only. Query parameters:
//! `executions` (executions on the timeline, 1–50, default 7) and `history` (executions in the stage
//! duration chart, 1–400, default 90); anything else is ignored.

use super::{AppState, FunctionError, Invocation, Reply};
use crate::dashboard::{self, Options};
use crate::domain::RequestError;

pub async fn handle(state: &AppState, invocation: &Invocation) -> Result<Reply, FunctionError> {
    let options = options(invocation)?;
    let store = state.store().await?;
    let snapshot = dashboard::read(store, options, crate::orchestration::now())
        .await
        .map_err(|e| FunctionError::Lifecycle(e.into()))?;
    Ok(Reply::page(
        "text/html; charset=utf-8",
        dashboard::html::render(&snapshot),
    ))
}

/// The page's options from the query string.
pub fn options(invocation: &Invocation) -> Result<Options, RequestError> {
    let mut options = Options::default();
    let count = |field: &str, max: usize| -> Result<Option<usize>, RequestError> {
        let Some((_, text)) = invocation
            .query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
        else {
            return Ok(None);
        };
        match text.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(RequestError::new(
                field,
                format!("must be a whole number from 1 to {max}"),
            )),
        }
    };
    if let Some(n) = count("executions", Options::MAX_EXECUTIONS)? {
        options.executions = n;
    }
    if let Some(n) = count("history", Options::MAX_HISTORY)? {
        options.history = n;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_query(pairs: &[(&str, &str)]) -> Invocation {
        Invocation {
            method: "GET".into(),
            query: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Default::default(),
        }
    }

    #[test]
    fn options_come_from_the_query_and_bad_ones_name_their_field() {
        assert_eq!(options(&with_query(&[])).ok(), Some(Options::default()));
        let o = options(&with_query(&[
            ("executions", "3"),
            ("History", "12"),
            ("code", "k"),
        ]));
        assert_eq!(
            o.ok(),
            Some(Options {
                executions: 3,
                history: 12
            })
        );
        for bad in ["0", "51", "-1", "x", ""] {
            let e = options(&with_query(&[("executions", bad)])).err();
            assert_eq!(e.map(|e| e.field), Some("executions".to_string()), "{bad}");
        }
        let e = options(&with_query(&[("history", "401")])).err();
        assert_eq!(e.map(|e| e.field), Some("history".to_string()));
    }
}

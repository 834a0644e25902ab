//! A Key Vault stand-in: `GET /secrets/{name}` and `GET /secrets/{name}/{version}` (`api-version` 7.x),
//! bearer token required. A request without a token gets Key Vault's 401 challenge
//! (`WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"`), which the Azure
//! SDKs use to discover the tenant before they ask for a token.

use super::reply::{ArmError, SimReply};
use super::request::{self, Query};
use super::state::SimState;
use super::tokens::{Audience, TokenCheck};
use serde_json::json;
use std::sync::Arc;
use tokio::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::path::Tail;
use warp::Filter;

/// The routes of this module.
pub(crate) fn routes(state: Arc<SimState>) -> BoxedFilter<(SimReply,)> {
    warp::path("secrets")
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::any().map(move || Arc::clone(&state)))
        .and(request::raw_query())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("host"))
        .map(
            |tail: Tail,
             state: Arc<SimState>,
             query: String,
             authorization: Option<String>,
             host: Option<String>| {
                get_secret(
                    &state,
                    tail.as_str(),
                    &Query::parse(&query),
                    authorization.as_deref(),
                    host.as_deref(),
                )
            },
        )
        .boxed()
}

fn unauthorized(state: &SimState, message: &str) -> SimReply {
    let challenge = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
        state.config.tenant_id
    );
    ArmError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        .into_reply()
        .header("www-authenticate", &challenge)
}

fn get_secret(
    state: &SimState,
    tail: &str,
    query: &Query,
    authorization: Option<&str>,
    host: Option<&str>,
) -> SimReply {
    let check = state.tokens.check(authorization, Instant::now());
    let caller = check.client_id();
    let reply = match check {
        TokenCheck::Missing | TokenCheck::Malformed => {
            unauthorized(state, "AKV10000: Request is missing a Bearer or PoP token.")
        }
        TokenCheck::Unknown => unauthorized(state, "AKV10019: Token could not be validated."),
        TokenCheck::Expired(_) => unauthorized(state, "AKV10032: The token is expired."),
        TokenCheck::Valid(token) if !Audience::KeyVault.accepts(token.audience) => unauthorized(
            state,
            &format!(
                "AKV10022: Invalid audience. Expected https://vault.azure.net, found: {}.",
                token.resource
            ),
        ),
        TokenCheck::Valid(_) => serve_secret(state, tail, query, host),
    };
    reply.client(caller)
}

fn serve_secret(state: &SimState, tail: &str, query: &Query, host: Option<&str>) -> SimReply {
    match query.get("api-version") {
        Some(v) if v.starts_with("7.") || v == "2016-10-01" => {}
        Some(v) => {
            return ArmError::new(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                format!("The specified version ({v}) is not recognized. Consider using the latest supported version (7.5)."),
            )
            .into_reply()
        }
        None => {
            return ArmError::new(StatusCode::BAD_REQUEST, "BadParameter", "The 'api-version' query parameter is required.")
                .into_reply()
        }
    }
    let segments: Vec<String> = tail
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| request::percent_decode(s).into_owned())
        .collect();
    let (name, version) = match segments.as_slice() {
        [name] => (name.as_str(), None),
        [name, version] => (name.as_str(), Some(version.as_str())),
        _ => {
            return ArmError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested resource was not found.",
            )
            .into_reply()
        }
    };
    let found = state
        .secret(name)
        .filter(|secret| version.is_none_or(|v| v.eq_ignore_ascii_case(&secret.version)));
    let Some(secret) = found else {
        let id = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_string(),
        };
        return ArmError::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!("A secret with (name/id) {id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"),
        )
        .into_reply();
    };
    let host = host.unwrap_or("127.0.0.1");
    let body = json!({
        "value": secret.value,
        "id": format!("https://{host}/secrets/{}/{}", secret.name, secret.version),
        "attributes": {
            "enabled": true,
            "created": secret.created_unix,
            "updated": secret.created_unix,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": {},
    });
    SimReply::json(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use std::time::Duration;

    fn state_with_token(resource: &str) -> (SimState, String) {
        let mut config = SimConfig::sample();
        config
            .secrets
            .insert("procfwk-secret".into(), "s3cr3t-value".into());
        let state = SimState::new(config).expect("valid");
        let (token, _) = state.tokens.issue(
            "app",
            "oid",
            resource,
            Duration::from_secs(60),
            Instant::now(),
            &state.clock,
        );
        (state, format!("Bearer {token}"))
    }

    #[test]
    fn secrets_need_a_vault_token() {
        let (state, auth) = state_with_token("https://vault.azure.net/.default");
        let q = Query::parse("api-version=7.4");
        let reply = get_secret(
            &state,
            "procfwk-secret",
            &q,
            Some(&auth),
            Some("127.0.0.1:1"),
        );
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.body_json();
        assert_eq!(body["value"], "s3cr3t-value");
        assert_eq!(body["attributes"]["enabled"], true);
        let id = body["id"].as_str().unwrap_or_default().to_string();
        assert!(id.starts_with("https://127.0.0.1:1/secrets/procfwk-secret/"));
        let version = id.rsplit('/').next().unwrap_or_default().to_string();
        let pinned = get_secret(
            &state,
            &format!("PROCFWK-SECRET/{version}"),
            &q,
            Some(&auth),
            None,
        );
        assert_eq!(pinned.status, StatusCode::OK);
        assert_eq!(reply.client_id.as_deref(), Some("app"));

        let missing = get_secret(&state, "nope", &q, Some(&auth), None);
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.body_json()["error"]["code"], "SecretNotFound");
        let wrong_version = get_secret(&state, "procfwk-secret/0123", &q, Some(&auth), None);
        assert_eq!(wrong_version.status, StatusCode::NOT_FOUND);

        let anonymous = get_secret(&state, "procfwk-secret", &q, None, None);
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anonymous.body_json()["error"]["code"], "Unauthorized");
        assert!(anonymous
            .header_value("www-authenticate")
            .is_some_and(|v| v.contains("vault.azure.net")));
        assert_eq!(
            get_secret(
                &state,
                "procfwk-secret",
                &Query::default(),
                Some(&auth),
                None
            )
            .status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn arm_tokens_are_refused_by_the_vault() {
        let (state, auth) = state_with_token("https://management.azure.com/.default");
        let reply = get_secret(
            &state,
            "procfwk-secret",
            &Query::parse("api-version=7.4"),
            Some(&auth),
            None,
        );
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.body_json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("AKV10022"));
    }
}

//! Stand-ins for Microsoft Entra ID and the App Service managed-identity endpoint:
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (client credentials, `scope`) and `POST /{tenant}/oauth2/token`
//!   (v1, `resource`), answering like Entra, errors included (`AADSTS…` descriptions);
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`, which MSAL-based clients read first;
//! - `GET /msi/token?resource=…&api-version=2019-08-01` with `X-IDENTITY-HEADER` (`IDENTITY_ENDPOINT`).
//!
//! Client secrets are compared and forgotten: they never reach the request log or a trace line.

use super::reply::SimReply;
use super::request::{self, BodyError, Query};
use super::state::{SimState, MANAGED_IDENTITY_KEY};
use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::Filter;

/// Which token endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenEndpoint {
    /// `/oauth2/token`: `resource`, string-typed numbers, `expires_on`.
    V1,
    /// `/oauth2/v2.0/token`: `scope`.
    V2,
}

/// The routes of this module.
pub(crate) fn routes(state: Arc<SimState>) -> BoxedFilter<(SimReply,)> {
    let with_state = warp::any().map(move || Arc::clone(&state));
    let token_v2 = warp::path::param::<String>()
        .and(warp::path!("oauth2" / "v2.0" / "token"))
        .and(warp::post())
        .and(with_state.clone())
        .and(request::body())
        .map(|tenant: String, state: Arc<SimState>, body| {
            token(&state, &tenant, body, TokenEndpoint::V2)
        });
    let token_v1 = warp::path::param::<String>()
        .and(warp::path!("oauth2" / "token"))
        .and(warp::post())
        .and(with_state.clone())
        .and(request::body())
        .map(|tenant: String, state: Arc<SimState>, body| {
            token(&state, &tenant, body, TokenEndpoint::V1)
        });
    let openid = warp::path::param::<String>()
        .and(warp::path!("v2.0" / ".well-known" / "openid-configuration"))
        .and(warp::get())
        .and(warp::header::optional::<String>("host"))
        .map(|tenant: String, host: Option<String>| openid_configuration(&tenant, host.as_deref()));
    let managed_identity = warp::path!("msi" / "token")
        .and(warp::get())
        .and(with_state)
        .and(request::raw_query())
        .and(warp::header::optional::<String>("x-identity-header"))
        .map(
            |state: Arc<SimState>, query: String, header: Option<String>| {
                managed_identity_token(&state, &Query::parse(&query), header.as_deref())
            },
        );
    token_v2
        .or(token_v1)
        .unify()
        .or(openid)
        .unify()
        .or(managed_identity)
        .unify()
        .boxed()
}

/// An Entra error answer (`error`, `error_description` with the AADSTS code, `error_codes`, ids).
fn entra_error(status: StatusCode, error: &str, aadsts: u32, description: &str) -> SimReply {
    let trace_id = Uuid::new_v4();
    let correlation_id = Uuid::new_v4();
    let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{aadsts}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
    });
    SimReply::json(status, &body).header("cache-control", "no-store, no-cache")
}

fn missing_parameter(name: &str) -> SimReply {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// `POST /{tenant}/oauth2[/v2.0]/token` with a form body.
fn token(
    state: &SimState,
    tenant: &str,
    body: Result<Bytes, BodyError>,
    endpoint: TokenEndpoint,
) -> SimReply {
    let Ok(body) = body else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body could not be read.",
        );
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    match field("grant_type") {
        Some("client_credentials") => {}
        other => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!(
                    "The app requested an unsupported grant type '{}'. The simulator supports only client_credentials.",
                    other.unwrap_or("")
                ),
            )
        }
    }
    let Some(client_id) = field("client_id").filter(|c| !c.is_empty()) else {
        return missing_parameter("client_id");
    };
    state.count_token_request(client_id);

    let resource = match endpoint {
        TokenEndpoint::V2 => {
            let Some(scope) = field("scope").filter(|s| !s.trim().is_empty()) else {
                return missing_parameter("scope");
            };
            match scope.split_whitespace().find(|s| s.ends_with("/.default")) {
                Some(resource_scope) => resource_scope.to_string(),
                None => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        1002012,
                        &format!(
                            "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                        ),
                    )
                }
            }
        }
        TokenEndpoint::V1 => match field("resource").filter(|r| !r.trim().is_empty()) {
            Some(resource) => resource.to_string(),
            None => return missing_parameter("resource"),
        },
    };

    let secret = field("client_secret").filter(|s| !s.is_empty());
    let assertion = field("client_assertion").filter(|s| !s.is_empty());
    if secret.is_none() && assertion.is_none() {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    if !state.accepts_any_client() {
        let Some(principal) = state.principal(client_id) else {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            );
        };
        if principal
            .tenant_id
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case(tenant))
        {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. You may have sent your authentication request to the wrong tenant."
                ),
            );
        }
        match secret {
            Some(given) if given == principal.client_secret.expose() => {}
            Some(_) => {
                return entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                )
            }
            None => {
                return entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation. (The simulator verifies only client secrets.)",
                )
            }
        }
    }

    let lifetime = Duration::from_secs(state.config.token_lifetime_secs);
    let now = Instant::now();
    let object_id = state.object_id_of(client_id);
    let (access_token, issued) = state.tokens.issue(
        client_id,
        &object_id,
        &resource,
        lifetime,
        now,
        &state.clock,
    );
    let lifetime_secs = state.config.token_lifetime_secs;
    let body = match endpoint {
        TokenEndpoint::V2 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime_secs,
            "ext_expires_in": lifetime_secs,
            "access_token": access_token,
        }),
        TokenEndpoint::V1 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime_secs.to_string(),
            "ext_expires_in": lifetime_secs.to_string(),
            "expires_on": issued.expires_on_unix.to_string(),
            "not_before": state.clock.wall(now).timestamp().to_string(),
            "resource": resource,
            "access_token": access_token,
        }),
    };
    tracing::debug!(client_id, resource = %issued.resource, "simulator issued a token");
    SimReply::json(StatusCode::OK, &body).header("cache-control", "no-store, no-cache")
}

/// The OpenID metadata MSAL reads before asking for a token (endpoints point back at the simulator).
fn openid_configuration(tenant: &str, host: Option<&str>) -> SimReply {
    let base = format!("http://{}/{tenant}", host.unwrap_or("127.0.0.1"));
    let body = json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "issuer": format!("{base}/v2.0"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": null,
    });
    SimReply::json(StatusCode::OK, &body)
}

/// App Service's error shape.
fn managed_identity_error(status: StatusCode, message: &str) -> SimReply {
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "correlationId": Uuid::new_v4(),
    });
    SimReply::json(status, &body)
}

/// `GET /msi/token?resource=…&api-version=2019-08-01` with `X-IDENTITY-HEADER`.
fn managed_identity_token(
    state: &SimState,
    query: &Query,
    identity_header: Option<&str>,
) -> SimReply {
    state.count_token_request(MANAGED_IDENTITY_KEY);
    let Some(given) = identity_header else {
        return managed_identity_error(
            StatusCode::BAD_REQUEST,
            "The X-IDENTITY-HEADER header is missing.",
        );
    };
    if given != state.config.identity_header {
        return managed_identity_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is invalid.",
        );
    }
    match query.get("api-version") {
        Some("2019-08-01") => {}
        other => {
            return managed_identity_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Unsupported api-version '{}'. Use 2019-08-01.",
                    other.unwrap_or("")
                ),
            )
        }
    }
    let Some(resource) = query.get("resource").filter(|r| !r.trim().is_empty()) else {
        return managed_identity_error(
            StatusCode::BAD_REQUEST,
            "The 'resource' query parameter is required.",
        );
    };
    let client_id = state.config.managed_identity_client_id.as_str();
    let asks_other_identity = query
        .get("client_id")
        .is_some_and(|c| !c.eq_ignore_ascii_case(client_id))
        || query.get("object_id").is_some()
        || query.get("principal_id").is_some()
        || query.get("mi_res_id").is_some();
    if asks_other_identity {
        return managed_identity_error(
            StatusCode::BAD_REQUEST,
            "The requested identity has not been assigned to this resource.",
        );
    }
    let lifetime = Duration::from_secs(state.config.token_lifetime_secs);
    let object_id = state.object_id_of(client_id);
    let (access_token, issued) = state.tokens.issue(
        client_id,
        &object_id,
        resource,
        lifetime,
        Instant::now(),
        &state.clock,
    );
    let body = json!({
        "access_token": access_token,
        "expires_on": issued.expires_on_unix.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    });
    SimReply::json(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Principal, SimConfig};

    fn strict_state() -> SimState {
        let mut config = SimConfig::sample();
        let mut principal = Principal::new("app-1", "right-secret");
        principal.tenant_id = Some("tenant-a".into());
        config.principals.push(principal);
        SimState::new(config).expect("valid")
    }

    fn form(pairs: &[(&str, &str)]) -> Result<Bytes, BodyError> {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Ok(Bytes::from(encoded))
    }

    const ARM: &str = "https://management.azure.com/.default";

    fn v2(state: &SimState, tenant: &str, pairs: &[(&str, &str)]) -> SimReply {
        token(state, tenant, form(pairs), TokenEndpoint::V2)
    }

    #[test]
    fn client_credentials_token_is_issued_and_counted() {
        let state = strict_state();
        let reply = v2(
            &state,
            "tenant-a",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "app-1"),
                ("client_secret", "right-secret"),
                ("scope", ARM),
            ],
        );
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.body_json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        let token = body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let header = format!("Bearer {token}");
        assert!(matches!(
            state.tokens.check(Some(&header), Instant::now()),
            crate::tokens::TokenCheck::Valid(_)
        ));
        assert_eq!(state.token_requests()["app-1"], 1);
    }

    #[test]
    fn token_validation_errors_look_like_entra() {
        let state = strict_state();
        let base = [
            ("grant_type", "client_credentials"),
            ("client_id", "app-1"),
            ("scope", ARM),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            pairs
        };
        let reply = v2(&state, "tenant-a", &with(("client_secret", "wrong")));
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body_json()["error"], "invalid_client");
        let description = reply.body_json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            description.starts_with("AADSTS7000215: Invalid client secret provided."),
            "{description}"
        );
        assert!(!description.contains("wrong"));

        let reply = v2(&state, "tenant-b", &with(("client_secret", "right-secret")));
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body_json()["error"], "invalid_client");

        let unknown = [
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
            ("scope", ARM),
        ];
        let reply = v2(&state, "tenant-a", &unknown);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.body_json()["error"], "unauthorized_client");
        assert!(reply.body_json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("AADSTS700016:"));

        let reply = v2(&state, "tenant-a", &[("client_id", "app-1")]);
        assert_eq!(reply.body_json()["error"], "unsupported_grant_type");
        let reply = v2(
            &state,
            "tenant-a",
            &[("grant_type", "password"), ("client_id", "app-1")],
        );
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.body_json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("AADSTS70003:"));

        let no_default = [
            ("grant_type", "client_credentials"),
            ("client_id", "app-1"),
            ("client_secret", "right-secret"),
            ("scope", "user.read"),
        ];
        assert_eq!(
            v2(&state, "tenant-a", &no_default).body_json()["error"],
            "invalid_scope"
        );
    }

    #[test]
    fn any_client_is_accepted_without_principals() {
        let state = SimState::new(SimConfig::sample()).expect("valid");
        let reply = v2(
            &state,
            "any",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "x"),
                ("client_secret", "y"),
                ("scope", ARM),
            ],
        );
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[test]
    fn v1_endpoint_answers_with_strings_and_resource() {
        let state = SimState::new(SimConfig::sample()).expect("valid");
        let reply = token(
            &state,
            "t",
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "x"),
                ("client_secret", "y"),
                ("resource", "https://vault.azure.net"),
            ]),
            TokenEndpoint::V1,
        );
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.body_json();
        assert!(body["expires_in"].is_string() && body["expires_on"].is_string());
        assert_eq!(body["resource"], "https://vault.azure.net");
    }

    #[test]
    fn managed_identity_checks_header_and_answers_string_expiry() {
        let state = SimState::new(SimConfig::sample()).expect("valid");
        let header = state.config.identity_header.clone();
        let query =
            Query::parse("resource=https%3A%2F%2Fmanagement.azure.com&api-version=2019-08-01");
        let reply = managed_identity_token(&state, &query, Some(&header));
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.body_json();
        assert!(body["expires_on"].is_string());
        assert_eq!(body["resource"], "https://management.azure.com");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["client_id"], state.config.managed_identity_client_id);
        assert_eq!(
            managed_identity_token(&state, &query, None).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            managed_identity_token(&state, &query, Some("nope")).status,
            StatusCode::UNAUTHORIZED
        );
        let other = Query::parse("resource=r&api-version=2019-08-01&client_id=someone-else");
        assert_eq!(
            managed_identity_token(&state, &other, Some(&header)).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(state.token_requests()[MANAGED_IDENTITY_KEY], 4);
    }
}

//! The request bodies procfwk's pipelines send, in both dialects, parsed into valid values.
//!
//! - **v1.x** (1.4 – 1.9): `resourceGroup`, `factoryName` (implicitly ADF); outputs `Status` and
//!   `SimpleStatus` `Running`/`Done`.
//! - **2.x**: `resourceGroupName`, `orchestratorName`, `orchestratorType` (`ADF`/`SYN`); outputs
//!   `ActualStatus` and `SimpleStatus` `Running`/`Complete`.
//!
//! Keys are matched case-insensitively (procfwk 2.x deserialised with Newtonsoft, which does the same).
//! The service principal (`tenantId`, `applicationId`, `authenticationKey`) is optional: without it the
//! Function App's managed identity is used. `applicationId` and `authenticationKey` may be Key Vault
//! secret URLs (procfwk 1.8.2+).

use super::keyvault::KeyVaultSecretRef;
use super::names::{Guid, PipelineName, ResourceName};
use super::run_id::RunId;
use crate::secret::Secret;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// Which generation of procfwk pipelines sent the request; decides the response field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrchestratorType {
    /// Azure Data Factory.
    Adf,
    /// Azure Synapse Analytics pipelines.
    Synapse,
}

impl OrchestratorType {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Adf => "ADF",
            Self::Synapse => "SYN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "ADF" => Some(Self::Adf),
            "SYN" => Some(Self::Synapse),
            _ => None,
        }
    }
}

/// Where a credential value comes from: the request itself, or a Key Vault secret to be read with the
/// Function App's managed identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Value(Secret),
    KeyVault(KeyVaultSecretRef),
}

/// Who we are when we call the worker's orchestrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    ServicePrincipal {
        tenant: Guid,
        client_id: SecretSource,
        client_secret: SecretSource,
    },
    /// No principal in the body: the Function App's own managed identity.
    ManagedIdentity,
}

/// The orchestrator (factory or workspace) that hosts the worker pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerTarget {
    pub subscription: Guid,
    pub resource_group: ResourceName,
    pub orchestrator: ResourceName,
    pub orchestrator_type: OrchestratorType,
}

/// `ExecutePipeline`, `ValidatePipeline`: a worker pipeline and how to reach it.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineRequest {
    pub dialect: Dialect,
    pub credentials: Credentials,
    pub target: WorkerTarget,
    pub pipeline: PipelineName,
    /// Parameter values for `createRun`; scalars are sent as strings, NULL values are omitted so the
    /// worker's default applies (procfwk #13).
    pub parameters: Map<String, Value>,
}

/// `CheckPipelineStatus`, `GetActivityErrors`, `CancelPipeline`: a run of a worker pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRequest {
    pub pipeline: PipelineRequest,
    pub run_id: RunId,
}

/// A request that cannot be served: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RequestError {
    pub field: String,
    pub problem: String,
}

impl RequestError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(field, "is required")
    }
}

/// The top-level keys of a JSON object, looked up case-insensitively.
pub struct Fields<'a> {
    by_lower: HashMap<String, &'a Value>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a Value) -> Result<Self, RequestError> {
        let Value::Object(map) = body else {
            return Err(RequestError::new("body", "must be a JSON object"));
        };
        let by_lower = map
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Ok(Self { by_lower })
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, treating JSON `null` as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.by_lower
            .get(&key.to_ascii_lowercase())
            .copied()
            .filter(|v| !v.is_null())
    }

    /// A string field; empty strings count as absent. Numbers are accepted as their text.
    pub fn text(&self, key: &str) -> Result<Option<String>, RequestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(RequestError::new(key, "must be a string")),
        }
    }

    pub fn required_text(&self, key: &str) -> Result<String, RequestError> {
        self.text(key)?.ok_or_else(|| RequestError::missing(key))
    }

    pub fn guid(&self, key: &str, label: &str) -> Result<Guid, RequestError> {
        let text = self.required_text(key)?;
        Guid::parse(&text)
            .ok_or_else(|| RequestError::new(key, format!("Expected {label} to be a GUID.")))
    }

    /// A required pipeline run id field (procfwk's message when it is not a GUID).
    pub fn run_id(&self, key: &str) -> Result<RunId, RequestError> {
        let text = self.required_text(key)?;
        RunId::parse(&text).map_err(|_| RequestError::new(key, "Expected Run Id to be a GUID."))
    }

    /// An integer field (JSON number or numeric string).
    pub fn integer(&self, key: &str) -> Result<Option<i64>, RequestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| RequestError::new(key, "must be a whole number")),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| RequestError::new(key, "must be a whole number")),
            Some(_) => Err(RequestError::new(key, "must be a whole number")),
        }
    }
}

impl PipelineRequest {
    pub fn parse(body: &Value) -> Result<Self, RequestError> {
        let fields = Fields::new(body)?;
        Self::from_fields(&fields)
    }

    pub fn from_fields(fields: &Fields<'_>) -> Result<Self, RequestError> {
        let dialect = detect_dialect(fields);
        let credentials = parse_credentials(fields)?;
        let subscription = fields.guid("subscriptionId", "Subscription Id")?;
        let (rg_key, orch_key) = match dialect {
            Dialect::V1 => ("resourceGroup", "factoryName"),
            Dialect::V2 => ("resourceGroupName", "orchestratorName"),
        };
        let resource_group = ResourceName::parse(&fields.required_text(rg_key)?)
            .map_err(|p| RequestError::new(rg_key, p))?;
        let orchestrator = ResourceName::parse(&fields.required_text(orch_key)?)
            .map_err(|p| RequestError::new(orch_key, p))?;
        let orchestrator_type = match (dialect, fields.text("orchestratorType")?) {
            (_, Some(t)) => OrchestratorType::parse(&t).ok_or_else(|| {
                RequestError::new("orchestratorType", format!("must be ADF or SYN, not {t:?}"))
            })?,
            (_, None) => OrchestratorType::Adf,
        };
        let pipeline = PipelineName::parse(&fields.required_text("pipelineName")?)
            .map_err(|p| RequestError::new("pipelineName", p))?;
        let parameters = parse_parameters(fields.get("pipelineParameters"))?;
        Ok(Self {
            dialect,
            credentials,
            target: WorkerTarget {
                subscription,
                resource_group,
                orchestrator,
                orchestrator_type,
            },
            pipeline,
            parameters,
        })
    }
}

impl RunRequest {
    pub fn parse(body: &Value) -> Result<Self, RequestError> {
        let fields = Fields::new(body)?;
        let pipeline = PipelineRequest::from_fields(&fields)?;
        let run_id = fields.run_id("runId")?;
        Ok(Self { pipeline, run_id })
    }
}

fn detect_dialect(fields: &Fields<'_>) -> Dialect {
    let v2 = ["resourceGroupName", "orchestratorName", "orchestratorType"]
        .iter()
        .any(|k| fields.has(k));
    let v1 = ["resourceGroup", "factoryName"]
        .iter()
        .any(|k| fields.has(k));
    if v1 && !v2 {
        Dialect::V1
    } else {
        Dialect::V2
    }
}

pub(crate) fn parse_credentials(fields: &Fields<'_>) -> Result<Credentials, RequestError> {
    let tenant = fields.text("tenantId")?;
    let app = fields.text("applicationId")?;
    let key = fields.text("authenticationKey")?;
    if tenant.is_none() && app.is_none() && key.is_none() {
        return Ok(Credentials::ManagedIdentity);
    }
    let tenant = tenant.ok_or_else(|| {
        RequestError::new("tenantId", "is required when a service principal is given")
    })?;
    let app = app.ok_or_else(|| {
        RequestError::new(
            "applicationId",
            "is required when a service principal is given",
        )
    })?;
    let key = key.ok_or_else(|| {
        RequestError::new(
            "authenticationKey",
            "is required when a service principal is given",
        )
    })?;
    let tenant = Guid::parse(&tenant)
        .ok_or_else(|| RequestError::new("tenantId", "Expected Tenant Id to be a GUID."))?;
    let client_id = if Guid::parse(&app).is_some() {
        SecretSource::Value(Secret::new(app))
    } else {
        match KeyVaultSecretRef::parse(&app) {
            Ok(Some(reference)) => SecretSource::KeyVault(reference),
            Ok(None) => {
                return Err(RequestError::new(
                    "applicationId",
                    "Expected Application Id to be a GUID or a Key Vault secret URL.",
                ))
            }
            Err(problem) => return Err(RequestError::new("applicationId", problem)),
        }
    };
    let client_secret = match KeyVaultSecretRef::parse(&key) {
        Ok(Some(reference)) => SecretSource::KeyVault(reference),
        Ok(None) => SecretSource::Value(Secret::new(key)),
        Err(problem) => return Err(RequestError::new("authenticationKey", problem)),
    };
    Ok(Credentials::ServicePrincipal {
        tenant,
        client_id,
        client_secret,
    })
}

fn parse_parameters(value: Option<&Value>) -> Result<Map<String, Value>, RequestError> {
    const FIELD: &str = "pipelineParameters";
    let map = match value {
        None => return Ok(Map::new()),
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(RequestError::new(
                    FIELD,
                    "must be a JSON object of name/value pairs",
                ))
            }
        },
        Some(_) => {
            return Err(RequestError::new(
                FIELD,
                "must be a JSON object of name/value pairs",
            ))
        }
    };
    let mut out = Map::new();
    for (name, value) in map {
        if name.trim().is_empty() {
            return Err(RequestError::new(
                FIELD,
                "parameter names must not be empty",
            ));
        }
        let value = match value {
            Value::Null => continue,
            Value::String(s) => Value::String(s),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(if b { "true" } else { "false" }.into()),
            other => other,
        };
        out.insert(name, value);
    }
    Ok(out)
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: &str = "12345678-1234-1234-1234-012345678910";

    fn v2() -> Value {
        json!({
            "tenantId": T, "applicationId": T, "authenticationKey": "Passw0rd123!",
            "subscriptionId": T, "resourceGroupName": "ADF.procfwk", "orchestratorName": "WorkersFactory",
            "orchestratorType": "ADF", "pipelineName": "Wait 1", "pipelineParameters": {"WaitTime": "3"}
        })
    }

    #[test]
    fn parses_v2() {
        let r = PipelineRequest::parse(&v2()).expect("valid");
        assert_eq!(r.dialect, Dialect::V2);
        assert_eq!(r.target.orchestrator.as_str(), "WorkersFactory");
        assert_eq!(r.pipeline.as_str(), "Wait 1");
        assert_eq!(r.parameters.get("WaitTime"), Some(&json!("3")));
        assert!(matches!(
            r.credentials,
            Credentials::ServicePrincipal { .. }
        ));
    }

    #[test]
    fn parses_v1_case_insensitive_with_scalar_params() {
        let body = json!({
            "TENANTID": T, "applicationid": T, "authenticationKey": "k",
            "subscriptionId": T, "resourceGroup": "ADF.procfwk", "factoryName": "FrameworkFactory",
            "pipelineName": "Wait1", "pipelineParameters": {"WaitTime": 3, "Flag": true, "Gone": null}
        });
        let r = PipelineRequest::parse(&body).expect("valid");
        assert_eq!(r.dialect, Dialect::V1);
        assert_eq!(r.target.orchestrator_type, OrchestratorType::Adf);
        assert_eq!(r.parameters.get("WaitTime"), Some(&json!("3")));
        assert_eq!(r.parameters.get("Flag"), Some(&json!("true")));
        assert!(!r.parameters.contains_key("Gone"));
    }

    #[test]
    fn managed_identity_when_no_principal() {
        let mut b = v2();
        for k in ["tenantId", "applicationId", "authenticationKey"] {
            b.as_object_mut().map(|m| m.remove(k));
        }
        let r = PipelineRequest::parse(&b).expect("valid");
        assert_eq!(r.credentials, Credentials::ManagedIdentity);
    }

    #[test]
    fn key_vault_references() {
        let mut b = v2();
        b["applicationId"] = json!("https://myvault.vault.azure.net/secrets/appid");
        b["authenticationKey"] = json!("https://myvault.vault.azure.net/secrets/appsecret");
        let r = PipelineRequest::parse(&b).expect("valid");
        match r.credentials {
            Credentials::ServicePrincipal {
                client_id,
                client_secret,
                ..
            } => {
                assert!(matches!(client_id, SecretSource::KeyVault(_)));
                assert!(matches!(client_secret, SecretSource::KeyVault(_)));
            }
            Credentials::ManagedIdentity => panic!("expected a principal"),
        }
    }

    #[test]
    fn look_alike_vault_urls_are_refused_naming_the_field() {
        for field in ["applicationId", "authenticationKey"] {
            for url in [
                "http://169.254.169.254/secrets/x",
                "https://10.0.0.1/secrets/x",
                "http://myvault.vault.azure.net/secrets/x",
                "https://myvault.vault.azure.net@127.0.0.1/secrets/x",
            ] {
                let mut b = v2();
                b[field] = json!(url);
                let e = err(b);
                assert_eq!(e.field, field, "{url}: {e}");
            }
        }
    }

    fn err(body: Value) -> RequestError {
        match PipelineRequest::parse(&body) {
            Err(e) => e,
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn names_the_bad_field() {
        let mut b = v2();
        b["tenantId"] = json!("1234-1234-1234-1234-1234");
        assert_eq!(err(b).field, "tenantId");
        let mut b = v2();
        b["subscriptionId"] = json!("nope");
        assert_eq!(err(b).field, "subscriptionId");
        let mut b = v2();
        b.as_object_mut().map(|m| m.remove("pipelineName"));
        assert_eq!(err(b).field, "pipelineName");
        let mut b = v2();
        b.as_object_mut().map(|m| m.remove("authenticationKey"));
        assert_eq!(err(b).field, "authenticationKey");
        let mut b = v2();
        b["orchestratorType"] = json!("XYZ");
        assert_eq!(err(b).field, "orchestratorType");
        let mut b = v2();
        b["applicationId"] = json!("not-a-guid");
        assert_eq!(err(b).field, "applicationId");
        let mut b = v2();
        b["pipelineParameters"] = json!([1, 2]);
        assert_eq!(err(b).field, "pipelineParameters");
        assert_eq!(err(json!([1])).field, "body");
    }

    #[test]
    fn run_request_needs_guid_run_id() {
        let mut b = v2();
        b["runId"] = json!("abc");
        let e = RunRequest::parse(&b).err().map(|e| e.field);
        assert_eq!(e.as_deref(), Some("runId"));
        b["runId"] = json!(T);
        assert!(RunRequest::parse(&b).is_ok());
    }
}

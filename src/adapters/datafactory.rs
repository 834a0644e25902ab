//! Azure Data Factory through ARM (api-version 2018-06-01), with `azure_mgmt_datafactory`.
//!
//! Every call goes through one Azure SDK pipeline configuration: the process-wide HTTP client, our
//! [`ArmRetryPolicy`] (budget-aware), and the caller's credential with its token cache.
//!
//! Two calls build the request themselves on that same pipeline instead of using the generated
//! builders: `createRun`, because the generated `ParameterValueSpecification` model is an empty struct
//! (it would send `{}` and silently drop every worker parameter); and `pipelines/{name}` GET, whose
//! response we read as plain JSON because the generated `ActivityUnion` rejects activity types newer
//! than the crate, while all we need is the activity count.

use super::retry::{ArmRetryPolicy, RetryMode};
use super::upstream::{FromAzure, Service, UpstreamError};
use crate::config::Settings;
use crate::domain::response::{ActivityError, PipelineDescription};
use crate::domain::{OrchestratorType, PipelineName, RunId, RunStatus, WorkerTarget};
use azure_core::auth::TokenCredential;
use azure_core::{
    ClientOptions, Context, Method, Pipeline, Request, RetryOptions, TransportOptions,
};
use azure_mgmt_datafactory::package_2018_06::models;
use azure_mgmt_datafactory::package_2018_06::Client;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

const API_VERSION: &str = "2018-06-01";

/// At most this many generated clients are kept (one per credential, so per principal); beyond it the
/// cache starts afresh.
const MAX_CLIENTS: usize = 1024;

/// What we read of a pipeline run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub run_id: RunId,
    pub pipeline_name: String,
    pub status: RunStatus,
    pub message: String,
}

/// A pipeline run as `queryPipelineRuns` lists it: enough to tell whether it is the run a call of ours
/// created.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedRun {
    /// `None` when ADF lists a run whose id is not a GUID (no run of ours).
    pub run_id: Option<RunId>,
    pub pipeline_name: String,
    pub status: RunStatus,
    /// The run's parameters as ADF shows them (strings; defaults filled in, secure ones masked).
    pub parameters: Map<String, Value>,
    pub run_start: Option<time::OffsetDateTime>,
    /// `invokedBy.invokedByType`: `Manual` for a REST `createRun`.
    pub invoked_by_type: Option<String>,
}

/// The activity runs of a pipeline run: how many there were and the ones that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityReport {
    pub total: usize,
    pub errors: Vec<ActivityError>,
}

pub struct DataFactory {
    http: Arc<dyn azure_core::HttpClient>,
    endpoint: url::Url,
    scope: String,
    max_retries: u32,
    /// Pipeline for calls that must not be repeated on ambiguous failures (createRun).
    write_once: Pipeline,
    /// Pipeline for the reads we build ourselves (`pipelines/{name}`).
    reads: Pipeline,
    /// The generated client of each credential, built on first use: a client is a whole SDK pipeline
    /// (options, policies, user agent), process-wide work rather than per-call work. Keyed by the
    /// credential's address, which stays taken while the client in the entry holds the credential.
    clients: std::sync::Mutex<HashMap<usize, Client>>,
    /// ARM calls in flight from this process. Taken before a request is built, so a burst of a thousand
    /// Infant polls waits in small futures and shares a bounded set of upstream connections (memory stays
    /// flat, and ARM's per-principal throttling buckets are not emptied in one go).
    permits: Arc<tokio::sync::Semaphore>,
}

impl DataFactory {
    pub fn new(http: Arc<dyn azure_core::HttpClient>, settings: &Settings) -> Self {
        let pipeline = |mode| {
            Pipeline::new(
                option_env!("CARGO_PKG_NAME"),
                option_env!("CARGO_PKG_VERSION"),
                Self::options(&http, mode, settings.arm_max_retries),
                Vec::new(),
                Vec::new(),
            )
        };
        let write_once = pipeline(RetryMode::ThrottledOnly);
        let reads = pipeline(RetryMode::Idempotent);
        Self {
            http,
            endpoint: settings.arm_endpoint.clone(),
            scope: settings.arm_scope.clone(),
            max_retries: settings.arm_max_retries,
            write_once,
            reads,
            clients: std::sync::Mutex::new(HashMap::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(
                settings.upstream_concurrency.max(1),
            )),
        }
    }

    fn options(
        http: &Arc<dyn azure_core::HttpClient>,
        mode: RetryMode,
        max_retries: u32,
    ) -> ClientOptions {
        let mut options =
            ClientOptions::new(TransportOptions::new(http.clone())).retry(RetryOptions::none());
        options
            .per_retry_policies_mut()
            .push(Arc::new(ArmRetryPolicy::new(mode, max_retries)));
        options
    }

    fn client(&self, credential: Arc<dyn TokenCredential>) -> Client {
        let key = Arc::as_ptr(&credential) as *const () as usize;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let options = Self::options(&self.http, RetryMode::Idempotent, self.max_retries);
        let client = Client::new(
            self.endpoint.clone(),
            credential,
            vec![self.scope.clone()],
            options,
        );
        clients.insert(key, client.clone());
        client
    }

    /// The cap on ARM calls in flight, for the other ARM adapters to share.
    pub fn upstream_permits(&self) -> Arc<tokio::sync::Semaphore> {
        self.permits.clone()
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, UpstreamError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| UpstreamError::Unreachable {
                service: Service::Arm,
                message: "the ARM client is shutting down".into(),
            })
    }

    fn require_adf(target: &WorkerTarget) -> Result<(), UpstreamError> {
        match target.orchestrator_type {
            OrchestratorType::Adf => Ok(()),
            OrchestratorType::Synapse => Err(UpstreamError::Unsupported {
                field: "orchestratorType",
                message:
                    "orchestratorType: SYN (Synapse) is not supported by this Function App yet; \
                          use ADF"
                        .into(),
            }),
        }
    }

    fn factory_url(&self, target: &WorkerTarget, tail: &[&str]) -> Result<url::Url, UpstreamError> {
        let mut segments = vec![
            "Microsoft.DataFactory",
            "factories",
            target.orchestrator.as_str(),
        ];
        segments.extend(tail);
        super::arm_url(
            &self.endpoint,
            &target.subscription.to_string(),
            target.resource_group.as_str(),
            &segments,
            API_VERSION,
        )
    }

    async fn bearer(&self, credential: &dyn TokenCredential) -> Result<String, UpstreamError> {
        let token = credential
            .get_token(&[self.scope.as_str()])
            .await
            .map_err(|e| UpstreamError::from_azure(Service::EntraId, &e))?;
        Ok(format!("Bearer {}", token.token.secret()))
    }

    /// `POST .../pipelines/{name}/createRun` with the parameters as the body. Returns the run id (a
    /// protocol error if ADF's is not a GUID).
    pub async fn create_run(
        &self,
        credential: Arc<dyn TokenCredential>,
        target: &WorkerTarget,
        pipeline: &PipelineName,
        parameters: &Map<String, Value>,
    ) -> Result<RunId, UpstreamError> {
        Self::require_adf(target)?;
        let _permit = self.permit().await?;
        let url = self.factory_url(target, &["pipelines", pipeline.as_str(), "createRun"])?;
        let mut request = Request::new(url, Method::Post);
        request.insert_header("authorization", self.bearer(credential.as_ref()).await?);
        request.insert_header("content-type", "application/json");
        let body = serde_json::to_vec(parameters).map_err(|e| UpstreamError::Protocol {
            service: Service::Arm,
            message: format!("could not encode the parameters: {e}"),
        })?;
        request.set_body(body);
        let response = self
            .write_once
            .send(&Context::new(), &mut request)
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        let created: models::CreateRunResponse =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
                service: Service::Arm,
                message: format!("createRun answered without a run id: {e}"),
            })?;
        RunId::parse(&created.run_id).map_err(|_| UpstreamError::Protocol {
            service: Service::Arm,
            message: format!(
                "createRun returned a run id that is not a GUID: {:?}",
                created.run_id
            ),
        })
    }

    /// `GET .../pipelineruns/{runId}`.
    pub async fn get_run(
        &self,
        credential: Arc<dyn TokenCredential>,
        target: &WorkerTarget,
        run_id: &RunId,
    ) -> Result<RunInfo, UpstreamError> {
        Self::require_adf(target)?;
        let _permit = self.permit().await?;
        let run = self
            .client(credential)
            .pipeline_runs_client()
            .get(
                target.subscription.to_string(),
                target.resource_group.as_str(),
                target.orchestrator.as_str(),
                run_id.to_string(),
            )
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        Ok(RunInfo {
            run_id: run
                .run_id
                .and_then(|id| RunId::parse(&id).ok())
                .unwrap_or(*run_id),
            pipeline_name: run.pipeline_name.unwrap_or_default(),
            status: RunStatus::parse(run.status.as_deref().unwrap_or("Unknown")),
            message: run.message.unwrap_or_default(),
        })
    }

    /// `POST .../pipelineruns/{runId}/cancel?isRecursive=true`.
    pub async fn cancel_run(
        &self,
        credential: Arc<dyn TokenCredential>,
        target: &WorkerTarget,
        run_id: &RunId,
    ) -> Result<(), UpstreamError> {
        Self::require_adf(target)?;
        let _permit = self.permit().await?;
        self.client(credential)
            .pipeline_runs_client()
            .cancel(
                target.subscription.to_string(),
                target.resource_group.as_str(),
                target.orchestrator.as_str(),
                run_id.to_string(),
            )
            .is_recursive(true)
            .send()
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        Ok(())
    }

    /// `POST .../queryPipelineRuns`: the runs of `pipeline` last updated in `[after, before]`, following
    /// continuation tokens (at most `max_pages` pages; more is an error rather than a partial answer).
    pub async fn query_runs(
        &self,
        credential: Arc<dyn TokenCredential>,
        target: &WorkerTarget,
        pipeline: &PipelineName,
        after: time::OffsetDateTime,
        before: time::OffsetDateTime,
        max_pages: usize,
    ) -> Result<Vec<ListedRun>, UpstreamError> {
        use models::run_query_filter::{Operand, Operator};
        Self::require_adf(target)?;
        let _permit = self.permit().await?;
        let client = self.client(credential);
        let mut filter = models::RunFilterParameters::new(after, before);
        filter.filters = vec![models::RunQueryFilter::new(
            Operand::PipelineName,
            Operator::Equals,
            vec![pipeline.as_str().to_string()],
        )];
        let mut runs = Vec::new();
        for _page in 0..max_pages {
            let page = client
                .pipeline_runs_client()
                .query_by_factory(
                    target.subscription.to_string(),
                    target.resource_group.as_str(),
                    target.orchestrator.as_str(),
                    filter.clone(),
                )
                .await
                .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
            runs.extend(page.value.into_iter().map(|run| ListedRun {
                run_id: run.run_id.and_then(|id| RunId::parse(&id).ok()),
                pipeline_name: run.pipeline_name.unwrap_or_default(),
                status: RunStatus::parse(run.status.as_deref().unwrap_or("Unknown")),
                parameters: match run.parameters {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                },
                run_start: run.run_start,
                invoked_by_type: run.invoked_by.and_then(|i| i.invoked_by_type),
            }));
            match page.continuation_token.filter(|t| !t.is_empty()) {
                Some(token) => filter.continuation_token = Some(token),
                None => return Ok(runs),
            }
        }
        Err(UpstreamError::Protocol {
            service: Service::Arm,
            message: format!(
                "queryPipelineRuns for {pipeline} listed more than {max_pages} pages of runs"
            ),
        })
    }

    /// `POST .../pipelineruns/{runId}/queryActivityruns` over `[after, before]`, following continuation
    /// tokens. Activities whose `error.errorCode` is empty (succeeded ones carry an empty error object)
    /// are not errors.
    pub async fn activity_errors(
        &self,
        credential: Arc<dyn TokenCredential>,
        target: &WorkerTarget,
        run_id: &RunId,
        after: time::OffsetDateTime,
        before: time::OffsetDateTime,
    ) -> Result<ActivityReport, UpstreamError> {
        Self::require_adf(target)?;
        let _permit = self.permit().await?;
        let client = self.client(credential);
        let mut filter = models::RunFilterParameters::new(after, before);
        let mut report = ActivityReport {
            total: 0,
            errors: Vec::new(),
        };
        for _page in 0..100 {
            let page = client
                .activity_runs_client()
                .query_by_pipeline_run(
                    target.subscription.to_string(),
                    target.resource_group.as_str(),
                    target.orchestrator.as_str(),
                    run_id.to_string(),
                    filter.clone(),
                )
                .await
                .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
            report.total += page.value.len();
            report
                .errors
                .extend(page.value.iter().filter_map(activity_error));
            match page.continuation_token.filter(|t| !t.is_empty()) {
                Some(token) => filter.continuation_token = Some(token),
                None => break,
            }
        }
        Ok(report)
    }

    /// `GET .../pipelines/{name}`; `None` when ADF says it does not exist.
    pub async fn describe_pipeline(
        &self,
        credential: Arc<dyn TokenCredential>,
        target: &WorkerTarget,
        pipeline: &PipelineName,
    ) -> Result<Option<PipelineDescription>, UpstreamError> {
        Self::require_adf(target)?;
        let _permit = self.permit().await?;
        let url = self.factory_url(target, &["pipelines", pipeline.as_str()])?;
        let mut request = Request::new(url, Method::Get);
        request.insert_header("authorization", self.bearer(credential.as_ref()).await?);
        let response = match self.reads.send(&Context::new(), &mut request).await {
            Ok(r) => r,
            Err(e) => {
                let err = UpstreamError::from_azure(Service::Arm, &e);
                return if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        let json: Value = serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
            service: Service::Arm,
            message: format!("the pipeline resource is not JSON: {e}"),
        })?;
        Ok(Some(PipelineDescription {
            id: json["id"].as_str().unwrap_or_default().to_string(),
            name: json["name"]
                .as_str()
                .unwrap_or(pipeline.as_str())
                .to_string(),
            resource_type: json["type"]
                .as_str()
                .unwrap_or("Microsoft.DataFactory/factories/pipelines")
                .to_string(),
            activity_count: json["properties"]["activities"]
                .as_array()
                .map_or(0, Vec::len),
        }))
    }
}

impl DataFactory {
    /// `POST .../integrationRuntimes/{name}/getStatus`: the runtime's state and its nodes.
    pub async fn runtime_status(
        &self,
        credential: Arc<dyn TokenCredential>,
        runtime: &crate::leases::RuntimeRef,
    ) -> Result<crate::leases::RuntimeStatus, UpstreamError> {
        use models::IntegrationRuntimeStatusUnion as Status;
        let _permit = self.permit().await?;
        let response = self
            .client(credential)
            .integration_runtimes_client()
            .get_status(
                runtime.subscription.to_string(),
                runtime.resource_group.as_str(),
                runtime.orchestrator.as_str(),
                runtime.name.as_str(),
            )
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        let text = |v: Option<String>| v.unwrap_or_default();
        match response.properties {
            Status::SelfHosted(status) => Ok(crate::leases::RuntimeStatus {
                state: status
                    .integration_runtime_status
                    .state
                    .map(|s| enum_text(&s))
                    .unwrap_or_else(|| "Unknown".into()),
                nodes: status
                    .type_properties
                    .nodes
                    .into_iter()
                    .map(|n| crate::leases::RuntimeNode {
                        node_name: text(n.node_name),
                        machine_name: text(n.machine_name),
                        status: n
                            .status
                            .map(|s| enum_text(&s))
                            .unwrap_or_else(|| "Unknown".into()),
                    })
                    .collect(),
            }),
            _ => Err(UpstreamError::Protocol {
                service: Service::Arm,
                message: format!(
                    "integration runtime {} is not self-hosted, so it has no node VMs to power",
                    runtime.name
                ),
            }),
        }
    }
}

/// An SDK enum as the text ARM sent (`Online`, `NeedRegistration`, ...).
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => "Unknown".into(),
    }
}

fn activity_error(run: &models::ActivityRun) -> Option<ActivityError> {
    let error = run.error.as_ref()?;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let code = text(&error["errorCode"]);
    if code.trim().is_empty() {
        return None;
    }
    Some(ActivityError {
        activity_run_id: run.activity_run_id.clone().unwrap_or_default(),
        activity_name: run.activity_name.clone().unwrap_or_default(),
        activity_type: run.activity_type.clone().unwrap_or_default(),
        error_code: code,
        error_type: text(&error["failureType"]),
        error_message: text(&error["message"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_error_codes_are_not_errors() {
        let mut ok = models::ActivityRun::new();
        ok.error =
            Some(json!({"errorCode": "", "message": "", "failureType": "", "target": "Wait1"}));
        assert!(activity_error(&ok).is_none());
        let mut bad = models::ActivityRun::new();
        bad.activity_name = Some("Call Fail Procedure".into());
        bad.error =
            Some(json!({"errorCode": "2402", "message": "boom", "failureType": "UserError"}));
        let e = activity_error(&bad);
        assert_eq!(e.as_ref().map(|e| e.error_code.as_str()), Some("2402"));
        assert_eq!(e.as_ref().map(|e| e.error_type.as_str()), Some("UserError"));
    }

    #[test]
    fn one_generated_client_per_credential() {
        let df = DataFactory::new(Arc::new(reqwest::Client::new()), &Settings::default());
        let http: Arc<dyn azure_core::HttpClient> = Arc::new(reqwest::Client::new());
        let principal = |secret: &str| -> Arc<dyn TokenCredential> {
            Arc::new(azure_identity::ClientSecretCredential::new(
                http.clone(),
                Settings::default().authority_host,
                "tenant".into(),
                "client".into(),
                secret.into(),
            ))
        };
        let (a, b) = (principal("a"), principal("b"));
        let _ = (df.client(a.clone()), df.client(a), df.client(b));
        let cached = df.clients.lock().map(|c| c.len()).unwrap_or_default();
        assert_eq!(cached, 2);
    }

    #[test]
    fn factory_urls_escape_names() {
        let s = Settings::default();
        let df = DataFactory::new(Arc::new(reqwest::Client::new()), &s);
        let t = WorkerTarget {
            subscription: crate::domain::Guid::new_random(),
            resource_group: crate::domain::ResourceName::parse("ADF.procfwk")
                .unwrap_or_else(|_| unreachable!()),
            orchestrator: crate::domain::ResourceName::parse("WorkersFactory")
                .unwrap_or_else(|_| unreachable!()),
            orchestrator_type: OrchestratorType::Adf,
        };
        let u = df
            .factory_url(&t, &["pipelines", "Wait 1", "createRun"])
            .map(|u| u.to_string());
        let u = u.unwrap_or_default();
        assert!(
            u.contains(
                "/factories/WorkersFactory/pipelines/Wait%201/createRun?api-version=2018-06-01"
            ),
            "{u}"
        );
    }
}

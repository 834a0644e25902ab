//! Azure Compute VMs through ARM: `instanceView`, `start`, `deallocate` and their long-running
//! operations (202 + `Azure-AsyncOperation` / `Location` + `Retry-After`), on the same HTTP client,
//! retry policy and credential cache as the Data Factory calls. [`ArmPower`] binds one credential to
//! these calls and to the runtime status of Data Factory: it is what VmPower decisions act through.
//!
//! Operation URLs come back from ARM; a bearer token is only ever sent to a URL on the configured ARM
//! endpoint's host, never to wherever a header points.

use super::retry::{ArmRetryPolicy, RetryMode};
use super::upstream::{FromAzure, Service, UpstreamError};
use super::DataFactory;
use crate::config::Settings;
use crate::domain::PowerState;
use crate::leases::{
    OperationOutcome, PowerControl, PowerRequest, RuntimeRef, RuntimeStatus, VmRef,
};
use azure_core::auth::TokenCredential;
use azure_core::headers::HeaderName;
use azure_core::{
    ClientOptions, Context, Method, Pipeline, Request, RetryOptions, TransportOptions,
};
use serde_json::Value;
use std::sync::Arc;

pub struct Compute {
    endpoint: url::Url,
    scope: String,
    api_version: String,
    pipeline: Pipeline,
    /// The process's ARM calls in flight, shared with Data Factory: one cap for all of ARM.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Compute {
    /// `permits`: the ARM calls in flight of the whole process ([`DataFactory::upstream_permits`]).
    pub fn new(
        http: Arc<dyn azure_core::HttpClient>,
        settings: &Settings,
        permits: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        let mut options =
            ClientOptions::new(TransportOptions::new(http)).retry(RetryOptions::none());
        // Start and deallocate are safe to repeat: asking again joins the operation in flight.
        options
            .per_retry_policies_mut()
            .push(Arc::new(ArmRetryPolicy::new(
                RetryMode::Idempotent,
                settings.arm_max_retries,
            )));
        Self {
            endpoint: settings.arm_endpoint.clone(),
            scope: settings.arm_scope.clone(),
            api_version: settings.vm.compute_api_version.clone(),
            pipeline: Pipeline::new(
                option_env!("CARGO_PKG_NAME"),
                option_env!("CARGO_PKG_VERSION"),
                options,
                Vec::new(),
                Vec::new(),
            ),
            permits,
        }
    }

    fn vm_url(&self, vm: &VmRef, tail: &str) -> Result<url::Url, UpstreamError> {
        super::arm_url(
            &self.endpoint,
            &vm.subscription.to_string(),
            vm.resource_group.as_str(),
            &[
                "Microsoft.Compute",
                "virtualMachines",
                vm.name.as_str(),
                tail,
            ],
            &self.api_version,
        )
    }

    async fn send(
        &self,
        credential: &dyn TokenCredential,
        url: url::Url,
        method: Method,
    ) -> Result<(u16, azure_core::headers::Headers, Vec<u8>), UpstreamError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| UpstreamError::Unreachable {
                service: Service::Arm,
                message: "the ARM client is shutting down".into(),
            })?;
        let token = credential
            .get_token(&[self.scope.as_str()])
            .await
            .map_err(|e| UpstreamError::from_azure(Service::EntraId, &e))?;
        let mut request = Request::new(url, method);
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        if method == Method::Post {
            request.insert_header("content-type", "application/json");
            request.set_body(b"{}".to_vec());
        }
        let response = self
            .pipeline
            .send(&Context::new(), &mut request)
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        let status = u16::from(response.status());
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| UpstreamError::from_azure(Service::Arm, &e))?;
        Ok((status, headers, body.to_vec()))
    }

    /// `GET .../instanceView`: the `PowerState/…` status (not its position in `statuses[]`). A VM
    /// without one (being created) counts as `stopped`.
    pub async fn power_state(
        &self,
        credential: &dyn TokenCredential,
        vm: &VmRef,
    ) -> Result<PowerState, UpstreamError> {
        let url = self.vm_url(vm, "instanceView")?;
        let (_, _, body) = self.send(credential, url, Method::Get).await?;
        let view: Value = serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
            service: Service::Arm,
            message: format!("the instance view is not JSON: {e}"),
        })?;
        Ok(power_state_of(&view).unwrap_or(PowerState::Stopped))
    }

    /// `POST .../start` or `.../deallocate`. 409 (another operation in flight) is an answer, not an error.
    pub async fn power(
        &self,
        credential: &dyn TokenCredential,
        vm: &VmRef,
        action: &str,
    ) -> Result<PowerRequest, UpstreamError> {
        let url = self.vm_url(vm, action)?;
        match self.send(credential, url, Method::Post).await {
            Ok((_, headers, _)) => {
                let header = |name: &'static str| {
                    headers
                        .get_optional_str(&HeaderName::from_static(name))
                        .map(str::to_string)
                };
                let operation_url = header("azure-asyncoperation")
                    .or_else(|| header("location"))
                    .filter(|u| self.same_host(u));
                Ok(PowerRequest::Accepted {
                    operation_url,
                    retry_after_secs: header("retry-after").and_then(|v| v.trim().parse().ok()),
                })
            }
            Err(UpstreamError::Http {
                status: 409,
                code,
                message,
                ..
            }) => Ok(PowerRequest::Conflict { code, message }),
            Err(e) => Err(e),
        }
    }

    fn same_host(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| {
            u.scheme() == self.endpoint.scheme()
                && u.username().is_empty()
                && u.password().is_none()
                && u.host_str() == self.endpoint.host_str()
                && u.port_or_known_default() == self.endpoint.port_or_known_default()
        })
    }

    /// Follow an operation URL ARM gave us (`Azure-AsyncOperation`: `{"status": …}`; `Location`: 202
    /// while running, 200 when done).
    pub async fn operation(
        &self,
        credential: &dyn TokenCredential,
        operation_url: &str,
    ) -> Result<OperationOutcome, UpstreamError> {
        if !self.same_host(operation_url) {
            return Ok(OperationOutcome::InProgress);
        }
        let url = url::Url::parse(operation_url).map_err(|e| UpstreamError::Protocol {
            service: Service::Arm,
            message: format!("bad operation URL: {e}"),
        })?;
        let (status, _, body) = self.send(credential, url, Method::Get).await?;
        if status == 202 {
            return Ok(OperationOutcome::InProgress);
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(match json["status"].as_str() {
            None | Some("Succeeded") => OperationOutcome::Succeeded,
            Some(s) if s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Canceled") => {
                let said = json["error"]["code"].as_str().unwrap_or(s);
                let message = json["error"]["message"].as_str().unwrap_or("");
                OperationOutcome::Failed(format!("{s}: {said} {message}").trim().to_string())
            }
            Some(_) => OperationOutcome::InProgress,
        })
    }
}

/// The `PowerState/…` code of an instance view (or of a VM resource expanded with it).
pub fn power_state_of(view: &Value) -> Option<PowerState> {
    let statuses = view["statuses"]
        .as_array()
        .or_else(|| view["properties"]["instanceView"]["statuses"].as_array())?;
    statuses.iter().find_map(|s| {
        s["code"]
            .as_str()
            .filter(|c| {
                c.get(..11)
                    .is_some_and(|p| p.eq_ignore_ascii_case("PowerState/"))
            })
            .and_then(PowerState::parse)
    })
}

/// VM and runtime calls bound to one credential: what a VmPower decision acts through.
pub struct ArmPower {
    pub compute: Arc<Compute>,
    pub data_factory: Arc<DataFactory>,
    pub credential: Arc<dyn TokenCredential>,
}

#[async_trait::async_trait]
impl PowerControl for ArmPower {
    async fn power_state(&self, vm: &VmRef) -> Result<PowerState, UpstreamError> {
        self.compute.power_state(self.credential.as_ref(), vm).await
    }
    async fn start(&self, vm: &VmRef) -> Result<PowerRequest, UpstreamError> {
        self.compute
            .power(self.credential.as_ref(), vm, "start")
            .await
    }
    async fn deallocate(&self, vm: &VmRef) -> Result<PowerRequest, UpstreamError> {
        self.compute
            .power(self.credential.as_ref(), vm, "deallocate")
            .await
    }
    async fn operation(&self, url: &str) -> Result<OperationOutcome, UpstreamError> {
        self.compute.operation(self.credential.as_ref(), url).await
    }
    async fn runtime_status(&self, runtime: &RuntimeRef) -> Result<RuntimeStatus, UpstreamError> {
        self.data_factory
            .runtime_status(self.credential.clone(), runtime)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn power_state_is_found_by_code_not_position() {
        let view = json!({"statuses": [
            {"code": "PowerState/deallocating", "displayStatus": "VM deallocating"},
            {"code": "ProvisioningState/succeeded"}]});
        assert_eq!(power_state_of(&view), Some(PowerState::Deallocating));
        let expanded = json!({"properties": {"instanceView": {"statuses": [
            {"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}]}}});
        assert_eq!(power_state_of(&expanded), Some(PowerState::Running));
        assert_eq!(power_state_of(&json!({"statuses": []})), None);
    }

    #[test]
    fn tokens_only_go_to_the_arm_host() {
        let compute = Compute::new(
            crate::adapters::http::shared_client(&Settings::default()).expect("client"),
            &Settings::default(),
            Arc::new(tokio::sync::Semaphore::new(1)),
        );
        assert!(compute.same_host("https://management.azure.com/subscriptions/x/operations/1"));
        assert!(!compute.same_host("https://evil.example/operations/1"));
        assert!(!compute.same_host("http://management.azure.com/operations/1"));
        assert!(!compute.same_host("not a url"));
        assert!(!compute.same_host("https://x@management.azure.com/operations/1"));
        assert!(!compute.same_host("https://management.azure.com:444/operations/1"));
        assert!(!compute.same_host("https://management.azure.com.evil.example/operations/1"));
    }
}

//! The Compute routes (any `20yy-mm-dd[-preview]` api-version, e.g. `2024-07-01`):
//!
//! - `GET  /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`
//!   (`$expand=instanceView` adds the instance view)
//! - `GET  .../virtualMachines/{vm}/instanceView` (`statuses[]`: `ProvisioningState/…`, `PowerState/…`)
//! - `POST .../virtualMachines/{vm}/start`, `/deallocate`, `/powerOff`: long-running operations,
//!   **202** with `Azure-AsyncOperation`, `Location` and `Retry-After`; **200** (empty) when the VM
//!   already is in the requested state; **409** `OperationNotAllowed` when another operation is in
//!   flight (or `powerOff` of a deallocated VM)
//! - `GET  /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}`: the
//!   async operation (`{"status": "InProgress" | "Succeeded" | "Canceled", "startTime", "endTime"?,
//!   "name", "error"?}`); with `monitor=true` (the `Location` URL) 202 while in progress and an empty
//!   200 when done.
//!
//! Gates, in ARM's order: api-version (400), token (401), route (404/405), role (403, naming e.g.
//! `Microsoft.Compute/virtualMachines/start/action`), injected faults (429/5xx), the VM's or the
//! operation's existence (404), then the operation. Power states come from [`crate::compute`].

use super::{
    authenticate, authorization_failed, injected_fault, method_not_allowed, route_not_found,
    ArmRequest,
};
use crate::clock::format_timestamp;
use crate::compute::{
    Accepted, Conflict, OperationStatus, PowerState, VmAction, VmId, VmInfo, VmObservation,
};
use crate::reply::{ArmError, SimReply};
use crate::request;
use crate::state::SimState;
use serde_json::{json, Value};
use warp::http::{Method, StatusCode};

/// Whether the path after `/subscriptions/` is a Compute path (`{sub}/resourceGroups/{rg}/providers/
/// Microsoft.Compute/…` or `{sub}/providers/Microsoft.Compute/…`).
pub(super) fn is_compute_path(tail: &str) -> bool {
    let segments: Vec<&str> = tail.split('/').take(5).collect();
    let word = |i: usize, expected: &str| {
        segments
            .get(i)
            .is_some_and(|s| request::percent_decode(s).eq_ignore_ascii_case(expected))
    };
    (word(1, "resourceGroups") && word(3, "providers") && word(4, "Microsoft.Compute"))
        || (word(1, "providers") && word(2, "Microsoft.Compute"))
}

/// What a Compute request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Vm {
        subscription: String,
        resource_group: String,
        name: String,
        operation: VmOperation,
    },
    AsyncOperation {
        subscription: String,
        location: String,
        operation_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmOperation {
    Get,
    InstanceView,
    Power(VmAction),
}

impl Route {
    /// The RBAC action and the scope ARM checks it on.
    fn action_and_scope(&self) -> (&'static str, String) {
        match self {
            Self::Vm {
                subscription,
                resource_group,
                name,
                operation,
            } => {
                let scope = format!(
                    "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/{name}"
                );
                let action = match operation {
                    VmOperation::Get => "Microsoft.Compute/virtualMachines/read",
                    VmOperation::InstanceView => "Microsoft.Compute/virtualMachines/instanceView/read",
                    VmOperation::Power(VmAction::Start) => "Microsoft.Compute/virtualMachines/start/action",
                    VmOperation::Power(VmAction::Deallocate) => {
                        "Microsoft.Compute/virtualMachines/deallocate/action"
                    }
                    VmOperation::Power(VmAction::PowerOff) => {
                        "Microsoft.Compute/virtualMachines/powerOff/action"
                    }
                };
                (action, scope)
            }
            Self::AsyncOperation {
                subscription,
                location,
                ..
            } => (
                "Microsoft.Compute/locations/operations/read",
                format!("/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{location}"),
            ),
        }
    }
}

fn parse_route(tail: &str, method: &Method) -> Result<Route, ArmError> {
    let segments: Vec<String> = tail
        .trim_end_matches('/')
        .split('/')
        .map(|s| request::percent_decode(s).into_owned())
        .collect();
    let full_path = || format!("/subscriptions/{}", segments.join("/"));
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let is = |s: &str, expected: &str| s.eq_ignore_ascii_case(expected);
    let named = |s: &str| !s.is_empty();
    let (route, allowed) = match parts.as_slice() {
        [sub, rg_word, rg, providers, compute, vms, name, rest @ ..]
            if is(rg_word, "resourceGroups")
                && is(providers, "providers")
                && is(compute, "Microsoft.Compute")
                && is(vms, "virtualMachines")
                && named(sub)
                && named(rg)
                && named(name) =>
        {
            let (operation, allowed) = match rest {
                [] => (VmOperation::Get, Method::GET),
                [v] if is(v, "instanceView") => (VmOperation::InstanceView, Method::GET),
                [a] if is(a, "start") => (VmOperation::Power(VmAction::Start), Method::POST),
                [a] if is(a, "deallocate") => {
                    (VmOperation::Power(VmAction::Deallocate), Method::POST)
                }
                [a] if is(a, "powerOff") => (VmOperation::Power(VmAction::PowerOff), Method::POST),
                _ => return Err(route_not_found(&full_path())),
            };
            let route = Route::Vm {
                subscription: sub.to_string(),
                resource_group: rg.to_string(),
                name: name.to_string(),
                operation,
            };
            (route, allowed)
        }
        [sub, providers, compute, locations, location, operations, id]
            if is(providers, "providers")
                && is(compute, "Microsoft.Compute")
                && is(locations, "locations")
                && is(operations, "operations")
                && named(sub)
                && named(location)
                && named(id) =>
        {
            let route = Route::AsyncOperation {
                subscription: sub.to_string(),
                location: location.to_string(),
                operation_id: id.to_string(),
            };
            (route, Method::GET)
        }
        _ => return Err(route_not_found(&full_path())),
    };
    if *method != allowed {
        return Err(method_not_allowed(method));
    }
    Ok(route)
}

/// Compute accepts many api-versions; any well-formed `20yy-mm-dd[-preview]` one is taken.
fn api_version_ok(version: &str) -> bool {
    let date = version.strip_suffix("-preview").unwrap_or(version);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && date.starts_with("20")
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// A Compute request after the shared start of [`super::handle`].
pub(super) fn serve(state: &SimState, request: &ArmRequest<'_>) -> Result<SimReply, ArmError> {
    let api_version = match request.query.get("api-version") {
        None => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ))
        }
        Some(v) if !api_version_ok(v) => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for API version '{v}' and type 'virtualMachines'. The supported api-versions are '2024-07-01, 2024-03-01, 2023-09-01, 2023-03-01, 2022-11-01'."
                ),
            ))
        }
        Some(v) => v,
    };
    let caller = authenticate(request.token, state)?;
    let route = parse_route(request.tail, request.method)?;
    if state.is_forbidden(&caller.client_id) {
        let (action, scope) = route.action_and_scope();
        return Err(authorization_failed(&caller, action, &scope));
    }
    injected_fault(request.fault, request.method, request.request_id)?;
    let base = format!("http://{}", request.host.unwrap_or("127.0.0.1"));
    match route {
        Route::Vm {
            subscription,
            resource_group,
            name,
            operation,
        } => {
            let id = state
                .vms
                .lookup(&subscription, &resource_group, &name)
                .ok_or_else(|| vm_not_found(&resource_group, &name))?;
            let info = state
                .vms
                .info(id)
                .ok_or_else(|| vm_not_found(&resource_group, &name))?;
            match operation {
                VmOperation::Get => {
                    let expand = request
                        .query
                        .get("$expand")
                        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
                    let observed = observe(state, id, request, &resource_group, &name)?;
                    Ok(SimReply::json(
                        StatusCode::OK,
                        &vm_resource(state, info, &observed, expand),
                    ))
                }
                VmOperation::InstanceView => {
                    let observed = observe(state, id, request, &resource_group, &name)?;
                    Ok(SimReply::json(
                        StatusCode::OK,
                        &instance_view(state, info, &observed),
                    ))
                }
                VmOperation::Power(action) => {
                    if info
                        .refused_actions
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(action.as_str()))
                    {
                        let (action, scope) = route_action_and_scope(info, action);
                        return Err(authorization_failed(&caller, &action, &scope));
                    }
                    let outcome = state
                        .vms
                        .request(id, action, request.now)
                        .ok_or_else(|| vm_not_found(&resource_group, &name))?;
                    match outcome {
                        Ok(Accepted::AlreadyDone) => Ok(SimReply::empty(StatusCode::OK)),
                        Ok(Accepted::InFlight { operation_id, .. }) => {
                            let (async_url, location_url) =
                                operation_urls(&base, info, &operation_id, api_version);
                            Ok(SimReply::empty(StatusCode::ACCEPTED)
                                .header("azure-asyncoperation", &async_url)
                                .header("location", &location_url)
                                .header("retry-after", &state.vms.retry_after_secs().to_string()))
                        }
                        Err(conflict) => Err(operation_not_allowed(info, action, conflict)),
                    }
                }
            }
        }
        Route::AsyncOperation {
            subscription,
            location,
            operation_id,
        } => async_operation(
            state,
            request,
            &base,
            &subscription,
            &location,
            &operation_id,
            api_version,
        ),
    }
}

fn observe(
    state: &SimState,
    id: VmId,
    request: &ArmRequest<'_>,
    resource_group: &str,
    name: &str,
) -> Result<VmObservation, ArmError> {
    state
        .vms
        .observe(id, request.now)
        .ok_or_else(|| vm_not_found(resource_group, name))
}

/// The RBAC action and scope of a power operation on a VM (for a refused operation's 403).
fn route_action_and_scope(info: &VmInfo, action: VmAction) -> (String, String) {
    (
        format!(
            "Microsoft.Compute/virtualMachines/{}/action",
            action.as_str()
        ),
        info.resource_id(),
    )
}

fn vm_not_found(resource_group: &str, name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn operation_not_allowed(info: &VmInfo, action: VmAction, conflict: Conflict) -> ArmError {
    let vm = &info.name;
    let op = action.as_str();
    let message = match (conflict.state, conflict.in_flight) {
        (PowerState::Deallocated, _) => format!(
            "Operation '{op}' is not allowed on VM '{vm}' since the VM is either deallocated or marked to be deallocated. Start the VM first."
        ),
        (state, Some(in_flight)) => format!(
            "Operation '{op}' is not allowed on VM '{vm}' since the VM is {} ('{}' operation in progress). Retry after the ongoing operation completes.",
            match state {
                PowerState::Starting => "starting",
                PowerState::Stopping => "being stopped",
                _ => "either deallocated or marked to be deallocated",
            },
            in_flight.as_str()
        ),
        (state, None) => format!(
            "Operation '{op}' is not allowed on VM '{vm}' since the VM is {}.",
            state.as_str()
        ),
    };
    ArmError::new(StatusCode::CONFLICT, "OperationNotAllowed", message)
}

/// The `Azure-AsyncOperation` and `Location` URLs of an operation.
fn operation_urls(
    base: &str,
    info: &VmInfo,
    operation_id: &str,
    api_version: &str,
) -> (String, String) {
    let url = format!(
        "{base}/subscriptions/{}/providers/Microsoft.Compute/locations/{}/operations/{operation_id}?api-version={api_version}",
        info.subscription_id, info.location
    );
    let location = format!("{url}&monitor=true");
    (url, location)
}

fn async_operation(
    state: &SimState,
    request: &ArmRequest<'_>,
    base: &str,
    subscription: &str,
    location: &str,
    operation_id: &str,
    api_version: &str,
) -> Result<SimReply, ArmError> {
    let not_found = || {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The operation '{operation_id}' was not found in location '{location}'."),
        )
    };
    let view = state
        .vms
        .operation(operation_id, request.now)
        .ok_or_else(not_found)?;
    let info = state.vms.info(view.vm).ok_or_else(not_found)?;
    if !info.subscription_id.eq_ignore_ascii_case(subscription)
        || !info.location.eq_ignore_ascii_case(location)
    {
        return Err(not_found());
    }
    let monitor = request
        .query
        .get("monitor")
        .is_some_and(|m| m.eq_ignore_ascii_case("true"));
    let retry_after = state.vms.retry_after_secs().to_string();
    let preempted = || {
        ArmError::new(
            StatusCode::CONFLICT,
            "OperationPreempted",
            "Operation execution has been preempted by a more recent operation.",
        )
    };
    if monitor {
        return match view.status {
            OperationStatus::InProgress => {
                let (_, location_url) = operation_urls(base, info, operation_id, api_version);
                Ok(SimReply::empty(StatusCode::ACCEPTED)
                    .header("location", &location_url)
                    .header("retry-after", &retry_after))
            }
            OperationStatus::Succeeded => Ok(SimReply::empty(StatusCode::OK)),
            OperationStatus::Canceled => Err(preempted()),
        };
    }
    let mut body = json!({
        "startTime": format_timestamp(state.clock.wall(view.started)),
        "status": view.status.as_str(),
        "name": operation_id,
    });
    if let Some(object) = body.as_object_mut() {
        if let Some(ended) = view.ended {
            object.insert(
                "endTime".into(),
                Value::from(format_timestamp(state.clock.wall(ended))),
            );
        }
        if view.status == OperationStatus::Canceled {
            let error = preempted();
            object.insert(
                "error".into(),
                json!({"code": error.code, "message": error.message}),
            );
        }
    }
    let reply = SimReply::json(StatusCode::OK, &body);
    Ok(if view.status == OperationStatus::InProgress {
        reply.header("retry-after", &retry_after)
    } else {
        reply
    })
}

/// The `statuses[]` of the instance view: provisioning state (`updating` while an operation is in
/// flight) then power state.
fn statuses(state: &SimState, observed: &VmObservation) -> Value {
    let provisioning = if observed.operation.is_some() {
        json!({
            "code": "ProvisioningState/updating",
            "level": "Info",
            "displayStatus": "Updating",
        })
    } else {
        json!({
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "time": format_timestamp(state.clock.wall(observed.last_operation_end)),
        })
    };
    let power = json!({
        "code": format!("PowerState/{}", observed.state.as_str()),
        "level": "Info",
        "displayStatus": observed.state.display_status(),
    });
    json!([provisioning, power])
}

fn instance_view(state: &SimState, info: &VmInfo, observed: &VmObservation) -> Value {
    let mut view = json!({
        "hyperVGeneration": "V2",
        "statuses": statuses(state, observed),
    });
    if observed.state == PowerState::Running {
        if let Some(object) = view.as_object_mut() {
            object.insert("computerName".into(), Value::from(info.name.clone()));
            object.insert(
                "osName".into(),
                Value::from("Windows Server 2022 Datacenter"),
            );
            object.insert("osVersion".into(), Value::from("10.0.20348.2527"));
        }
    }
    view
}

fn vm_resource(state: &SimState, info: &VmInfo, observed: &VmObservation, expand: bool) -> Value {
    let id = info.resource_id();
    let mut properties = json!({
        "vmId": info.vm_id,
        "hardwareProfile": {"vmSize": info.vm_size},
        "storageProfile": {
            "osDisk": {
                "osType": "Windows",
                "name": format!("{}_OsDisk_1", info.name),
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "managedDisk": {"storageAccountType": "Premium_LRS"},
            },
        },
        "osProfile": {"computerName": info.name, "adminUsername": "procfwk"},
        "networkProfile": {
            "networkInterfaces": [{
                "id": format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}-nic",
                    info.subscription_id, info.resource_group, info.name
                ),
            }],
        },
        "provisioningState": if observed.operation.is_some() { "Updating" } else { "Succeeded" },
        "timeCreated": format_timestamp(state.clock.started()),
    });
    if expand {
        if let Some(object) = properties.as_object_mut() {
            object.insert("instanceView".into(), instance_view(state, info, observed));
        }
    }
    json!({
        "name": info.name,
        "id": id,
        "type": "Microsoft.Compute/virtualMachines",
        "location": info.location,
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Faults, SimConfig};
    use crate::routes;
    use std::sync::Arc;
    use warp::http::HeaderMap;

    const VM: &str = "/subscriptions/12345678-1234-1234-1234-012345678910/resourceGroups/ADF.procfwk/providers/Microsoft.Compute/virtualMachines/shir-vm-1";
    const API: &str = "api-version=2024-07-01";

    #[test]
    fn compute_paths_are_recognised_and_parsed() {
        assert!(is_compute_path(
            "s/resourcegroups/rg/providers/microsoft.compute/virtualMachines/vm/start"
        ));
        assert!(is_compute_path(
            "s/providers/Microsoft.Compute/locations/westeurope/operations/x"
        ));
        assert!(!is_compute_path(
            "s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/f"
        ));
        let route = parse_route(
            "s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/my%20vm/POWEROFF",
            &Method::POST,
        );
        assert_eq!(
            route,
            Ok(Route::Vm {
                subscription: "s".into(),
                resource_group: "rg".into(),
                name: "my vm".into(),
                operation: VmOperation::Power(VmAction::PowerOff),
            })
        );
        let status =
            |tail: &str, method: Method| parse_route(tail, &method).err().map(|e| e.status);
        assert_eq!(
            status(
                "s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/start",
                Method::GET
            ),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(
                "s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/restart",
                Method::POST
            ),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(
                "s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
                Method::GET
            ),
            Some(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn api_versions() {
        for ok in ["2024-07-01", "2020-12-01", "2023-09-01-preview"] {
            assert!(api_version_ok(ok), "{ok}");
        }
        for bad in ["", "2024-7-1", "1999-01-01", "2024-07-01-beta", "latest"] {
            assert!(!api_version_ok(bad), "{bad}");
        }
    }

    fn sim(config: SimConfig) -> (Arc<SimState>, impl Fil) {
        let state = Arc::new(SimState::new(config).expect("valid config"));
        (Arc::clone(&state), routes(state))
    }

    fn fast() -> SimConfig {
        SimConfig {
            time_scale: 0.001,
            ..SimConfig::sample()
        }
    }

    /// The filter `routes` returns.
    trait Fil:
        warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
        + Clone
        + 'static
    {
    }

    impl<T> Fil for T where
        T: warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
            + Clone
            + 'static
    {
    }

    async fn token(filter: &impl Fil, client_id: &str) -> String {
        let response = warp::test::request()
            .method("POST")
            .path("/tenant/oauth2/v2.0/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=client_credentials&client_id={client_id}&client_secret=s&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"))
            .reply(filter)
            .await;
        let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn call(
        filter: &impl Fil,
        method: &str,
        path: &str,
        token: &str,
    ) -> (StatusCode, Value, HeaderMap) {
        let response = warp::test::request()
            .method(method)
            .path(path)
            .header("host", "sim.test:7072")
            .header("authorization", format!("Bearer {token}"))
            .reply(filter)
            .await;
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status(), body, response.headers().clone())
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The path and query of an absolute URL on the simulator.
    fn local(url: &str) -> String {
        url.strip_prefix("http://sim.test:7072")
            .unwrap_or(url)
            .to_string()
    }

    /// The `PowerState/…` of an instance view, found by code as the VmPower adapter finds it (the
    /// adapter's own reading of these answers is checked against a running simulator in the handler's
    /// tests/sim_vms.rs).
    fn power_state(view: &Value) -> String {
        view["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["code"].as_str())
            .filter(|code| code.starts_with("PowerState/"))
            .find_map(crate::PowerState::parse)
            .map_or("", |s| s.as_str())
            .to_string()
    }

    #[tokio::test]
    async fn start_polls_to_running_and_conflicts_answer_409() {
        let mut config = fast();
        // 250 ms of `starting`: room for the in-progress checks on a busy machine.
        config.vms[0].start_secs = 250.0;
        let (state, filter) = sim(config);
        let token = token(&filter, "app-1").await;
        let (status, view, _) =
            call(&filter, "GET", &format!("{VM}/instanceView?{API}"), &token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(power_state(&view), "deallocated");
        assert_eq!(view["statuses"][1]["displayStatus"], "VM deallocated");

        let (status, _, headers) =
            call(&filter, "POST", &format!("{VM}/start?{API}"), &token).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let async_url = header(&headers, "azure-asyncoperation").to_string();
        assert!(
            async_url.starts_with("http://sim.test:7072/subscriptions/12345678-1234-1234-1234-012345678910/providers/Microsoft.Compute/locations/westeurope/operations/"),
            "{async_url}"
        );
        assert!(async_url.ends_with(API));
        let location = header(&headers, "location").to_string();
        assert!(location.contains("monitor=true"));
        assert_eq!(header(&headers, "retry-after"), "0");

        let (status, op, _) = call(&filter, "GET", &local(&async_url), &token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(op["status"], "InProgress");
        assert!(op["startTime"].is_string() && op.get("endTime").is_none());
        let (status, _, _) = call(&filter, "GET", &local(&location), &token).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (_, vm, _) = call(
            &filter,
            "GET",
            &format!("{VM}?{API}&$expand=instanceView"),
            &token,
        )
        .await;
        assert_eq!(vm["properties"]["provisioningState"], "Updating");
        assert_eq!(power_state(&vm["properties"]["instanceView"]), "starting");

        // Deallocate while starting: 409 OperationNotAllowed.
        let (status, error, _) =
            call(&filter, "POST", &format!("{VM}/deallocate?{API}"), &token).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error["error"]["code"], "OperationNotAllowed");

        tokio::time::sleep(std::time::Duration::from_millis(280)).await;
        let (_, op, _) = call(&filter, "GET", &local(&async_url), &token).await;
        assert_eq!(op["status"], "Succeeded");
        assert!(op["endTime"].is_string());
        let (status, body, _) = call(&filter, "GET", &local(&location), &token).await;
        assert_eq!((status, body), (StatusCode::OK, Value::Null));
        let (_, view, _) = call(&filter, "GET", &format!("{VM}/instanceView?{API}"), &token).await;
        assert_eq!(power_state(&view), "running");
        assert_eq!(view["statuses"][0]["code"], "ProvisioningState/succeeded");
        assert_eq!(view["computerName"], "shir-vm-1");

        // Start on running: 200, nothing to poll.
        let (status, _, headers) =
            call(&filter, "POST", &format!("{VM}/start?{API}"), &token).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("azure-asyncoperation").is_none());

        let (status, _, _) = call(&filter, "POST", &format!("{VM}/deallocate?{API}"), &token).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, error, _) = call(&filter, "POST", &format!("{VM}/start?{API}"), &token).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error["error"]["code"], "OperationNotAllowed");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'start' is not allowed on VM 'shir-vm-1'"));
        assert_eq!(state.vm_state("SHIR-VM-1").as_deref(), Some("deallocating"));

        let events: Vec<String> = state
            .vm_history()
            .into_iter()
            .filter(|e| e.vm == "shir-vm-1")
            .map(|e| e.state.unwrap_or(e.event))
            .collect();
        assert_eq!(
            events,
            [
                "deallocated",
                "start_requested",
                "starting",
                "running",
                "start_requested",
                "deallocate_requested",
                "deallocating"
            ]
        );
    }

    #[tokio::test]
    async fn refused_actions_answer_403_for_that_vm_and_action_only() {
        let mut config = fast();
        config.vms[0].refused_actions = vec!["Deallocate".into()];
        let (state, filter) = sim(config);
        let token = token(&filter, "app-1").await;
        let (status, _, _) = call(&filter, "POST", &format!("{VM}/start?{API}"), &token).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, error, _) =
            call(&filter, "POST", &format!("{VM}/deallocate?{API}"), &token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error["error"]["code"], "AuthorizationFailed");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("'Microsoft.Compute/virtualMachines/deallocate/action'")
                && message.contains("/virtualMachines/shir-vm-1'"),
            "{message}"
        );
        assert_ne!(state.vm_state("shir-vm-1").as_deref(), Some("deallocating"));
        let vm2 = VM.replace("shir-vm-1", "shir-vm-2");
        let (status, _, _) = call(&filter, "POST", &format!("{vm2}/start?{API}"), &token).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn gates_not_found_forbidden_throttled_and_bad_versions() {
        let mut config = fast();
        config.forbidden_clients = vec!["bad-app".into()];
        let (state, filter) = sim(config);
        let good = token(&filter, "app-1").await;
        let bad = token(&filter, "bad-app").await;

        let (status, error, _) = call(&filter, "POST", &format!("{VM}/start"), &good).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["code"], "MissingApiVersionParameter");
        // Any well-formed version is accepted (seed 000 uses 2020-12-01).
        let vm2 = VM.replace("shir-vm-1", "shir-vm-2");
        let (status, _, _) = call(
            &filter,
            "POST",
            &format!("{vm2}/start?api-version=2020-12-01"),
            &good,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _, _) = call(
            &filter,
            "POST",
            &format!("{VM}/start?api-version=yesterday"),
            &good,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, error, _) = call(&filter, "POST", &format!("{VM}/start?{API}"), "nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error["error"]["code"], "InvalidAuthenticationToken");

        let (status, error, _) = call(&filter, "POST", &format!("{VM}/start?{API}"), &bad).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error["error"]["code"], "AuthorizationFailed");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("'Microsoft.Compute/virtualMachines/start/action'"),
            "{message}"
        );
        assert!(message.contains("/virtualMachines/shir-vm-1'"), "{message}");

        let unknown = VM.replace("shir-vm-1", "no-such-vm");
        let (status, error, _) = call(
            &filter,
            "GET",
            &format!("{unknown}/instanceView?{API}"),
            &good,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error["error"]["code"], "ResourceNotFound");
        let other_rg = VM.replace("ADF.procfwk", "Other");
        let (status, _, _) = call(&filter, "GET", &format!("{other_rg}?{API}"), &good).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let op = "/subscriptions/12345678-1234-1234-1234-012345678910/providers/Microsoft.Compute/locations/westeurope/operations/nope";
        let (status, _, _) = call(&filter, "GET", &format!("{op}?{API}"), &good).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        state.set_faults(Faults {
            throttle_ratio: 1.0,
            retry_after_secs: 3,
            ..Faults::default()
        });
        let (status, error, headers) =
            call(&filter, "POST", &format!("{VM}/start?{API}"), &good).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error["error"]["code"], "TooManyRequests");
        assert_eq!(header(&headers, "retry-after"), "3");
        // Faults come before side effects.
        assert_eq!(state.vm_state("shir-vm-1").as_deref(), Some("deallocated"));
    }

    #[tokio::test]
    async fn forced_preemption_shows_as_canceled() {
        let (state, filter) = sim(fast());
        let token = token(&filter, "app-1").await;
        let (_, _, headers) = call(&filter, "POST", &format!("{VM}/start?{API}"), &token).await;
        let async_url = header(&headers, "azure-asyncoperation").to_string();
        let location = header(&headers, "location").to_string();
        state
            .set_vm_state("shir-vm-1", PowerState::Deallocated, false)
            .expect("forced");
        let (_, op, _) = call(&filter, "GET", &local(&async_url), &token).await;
        assert_eq!(op["status"], "Canceled");
        assert_eq!(op["error"]["code"], "OperationPreempted");
        let (status, _, _) = call(&filter, "GET", &local(&location), &token).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // Wrong location in the operation URL: 404.
        let elsewhere = local(&async_url).replace("westeurope", "eastus");
        let (status, _, _) = call(&filter, "GET", &elsewhere, &token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn integration_runtime_status_over_http() {
        let (state, filter) = sim(fast());
        let token = token(&filter, "app-1").await;
        let factory = "/subscriptions/12345678-1234-1234-1234-012345678910/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/FrameworkFactory";
        let path = format!(
            "{factory}/integrationRuntimes/SelfHostedCluster/getStatus?api-version=2018-06-01"
        );
        let (status, body, _) = call(&filter, "POST", &path, &token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["properties"]["state"], "Offline");
        assert_eq!(
            body["properties"]["typeProperties"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
        state
            .set_vm_state("shir-vm-2", PowerState::Running, true)
            .expect("forced");
        let (_, body, _) = call(&filter, "POST", &path, &token).await;
        assert_eq!(body["properties"]["state"], "Limited");
        assert_eq!(
            body["properties"]["typeProperties"]["nodes"][1]["status"],
            "Online"
        );
        assert_eq!(
            body["properties"]["typeProperties"]["nodes"][1]["isActiveDispatcher"],
            true
        );

        let missing =
            format!("{factory}/integrationRuntimes/Nope/getStatus?api-version=2018-06-01");
        let (status, error, _) = call(&filter, "POST", &missing, &token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error["error"]["code"], "NotFound");
        let other_factory = path.replace("FrameworkFactory", "WorkersFactory");
        let (status, _, _) = call(&filter, "POST", &other_factory, &token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = call(&filter, "GET", &path, &token).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

//! Run links: the portal page where a user looks at one pipeline run, built from the orchestrator's
//! identity (subscription, resource group, factory or workspace name) and the run id, so that every
//! answer about a run — and its ExecutionLog row — lets a user click from a failure to the run.
//!
//! - ADF Studio: `https://adf.azure.com/monitoring/pipelineruns/{runId}?factory=/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataFactory/factories/{factory}`
//!   (Microsoft's Teams-notification how-to; the only documented form).
//! - Synapse Studio: `https://web.azuresynapse.net/en-us/monitoring/pipelineruns/{runId}?workspace=…` with
//!   the workspace's resource id (no Microsoft page documents it; the form Microsoft's FastTrack toolkit and
//!   Airflow's Synapse link use).
//!
//! The resource id goes in the query string percent-encoded (`%2F`), which both studios accept, so a
//! resource group or factory name with `+`, `=` or spaces cannot break the link. Both portals are the
//! public cloud's: China and US Government have their own studio hosts, which no source we trust names.

use super::names::{Guid, ResourceName};
use super::request::{OrchestratorType, WorkerTarget};
use super::run_id::RunId;

/// The portal page of `run` in the orchestrator `target` names.
pub fn run_link(target: &WorkerTarget, run: &RunId) -> String {
    link(
        target.orchestrator_type,
        &target.subscription,
        &target.resource_group,
        &target.orchestrator,
        run,
    )
}

/// The portal page of `run` in an orchestrator given by its parts (a store row's columns).
pub fn link(
    kind: OrchestratorType,
    subscription: &Guid,
    resource_group: &ResourceName,
    orchestrator: &ResourceName,
    run: &RunId,
) -> String {
    let (base, param, provider) = match kind {
        OrchestratorType::Adf => (
            "https://adf.azure.com/monitoring/pipelineruns/",
            "factory",
            "Microsoft.DataFactory/factories",
        ),
        OrchestratorType::Synapse => (
            "https://web.azuresynapse.net/en-us/monitoring/pipelineruns/",
            "workspace",
            "Microsoft.Synapse/workspaces",
        ),
    };
    let resource = format!(
        "/subscriptions/{subscription}/resourceGroups/{}/providers/{provider}/{}",
        resource_group.as_str(),
        orchestrator.as_str()
    );
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(param, &resource)
        .finish();
    format!("{base}{run}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: OrchestratorType, rg: &str, name: &str) -> WorkerTarget {
        WorkerTarget {
            subscription: Guid::parse("00000000-0000-0000-0000-000000000001").unwrap(),
            resource_group: ResourceName::parse(rg).unwrap(),
            orchestrator: ResourceName::parse(name).unwrap(),
            orchestrator_type: kind,
        }
    }

    fn run() -> RunId {
        RunId::parse("0A1B2C3D-0000-0000-0000-00000000000F").unwrap()
    }

    #[test]
    fn adf_studio_link_names_the_run_and_the_factory_resource_id() {
        let link = run_link(
            &target(OrchestratorType::Adf, "rg-etl", "WorkersFactory"),
            &run(),
        );
        assert_eq!(
            link,
            "https://adf.azure.com/monitoring/pipelineruns/0a1b2c3d-0000-0000-0000-00000000000f\
             ?factory=%2Fsubscriptions%2F00000000-0000-0000-0000-000000000001%2FresourceGroups%2Frg-etl\
             %2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2FWorkersFactory"
        );
    }

    #[test]
    fn synapse_studio_link_names_the_workspace_resource_id() {
        let link = run_link(&target(OrchestratorType::Synapse, "rg", "ws1"), &run());
        assert_eq!(
            link,
            "https://web.azuresynapse.net/en-us/monitoring/pipelineruns/0a1b2c3d-0000-0000-0000-00000000000f\
             ?workspace=%2Fsubscriptions%2F00000000-0000-0000-0000-000000000001%2FresourceGroups%2Frg\
             %2Fproviders%2FMicrosoft.Synapse%2Fworkspaces%2Fws1"
        );
    }

    #[test]
    fn names_that_mean_something_in_a_url_stay_inside_the_query_value() {
        let link = run_link(
            &target(OrchestratorType::Adf, "rg+1", "Workers Factory"),
            &run(),
        );
        let url = url::Url::parse(&link).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs.len(), 1, "{link}");
        assert_eq!(pairs[0].0, "factory");
        assert!(pairs[0].1.ends_with(
            "/resourceGroups/rg+1/providers/Microsoft.DataFactory/factories/Workers Factory"
        ));
        assert_eq!(url.host_str(), Some("adf.azure.com"));
    }
}

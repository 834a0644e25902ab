//! Domain values: what a request to one of our functions may contain once it has been parsed, and the
//! vocabulary of pipeline-run statuses. Everything here is pure (no I/O): handlers parse raw JSON into
//! these types at the edge ("parse, don't validate"), so the rest of the code never sees a half-valid input.

pub mod keyvault;
pub mod names;
pub mod power;
pub mod request;
pub mod response;
pub mod run_id;
pub mod run_link;
pub mod status;
pub mod transport;
pub mod upstream;
pub mod worker;

pub use keyvault::{AzureCloud, KeyVaultSecretRef};
pub use names::{Guid, PipelineName, ResourceName};
pub use power::PowerState;
pub use request::{
    Credentials, Dialect, OrchestratorType, PipelineRequest, RequestError, RunRequest,
    SecretSource, WorkerTarget,
};
pub use run_id::{RunId, RunIdError};
pub use status::{RunStatus, ScopeStatus, SimpleStatus, WorkerStatus};
pub use upstream::{Service, UpstreamError};
pub use worker::WorkerKey;

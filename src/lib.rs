//! # procfwk — procfwk's Function App in Rust
//!
//! An Azure Functions custom handler that starts and polls Azure Data Factory worker pipelines for the
//! procfwk hierarchy (Grandparent → Parent → Child → Infant → Worker), plus a local Azure stand-in so the
//! whole thing runs on a laptop.
//!
//! ## Layout
//! Dependencies point one way, from the edge inwards (checked by `tests/layering.rs`): [`host`] →
//! [`functions`] → [`startup`] → the adapters ([`adapters`], and the [`dashboard`] page) → the core
//! ([`leases`] → [`orchestration`] → [`config`] → [`store`]'s interface and [`domain`]). Nothing in the core
//! names an adapter: the adapters implement its ports (the store interface, the VM power port) and
//! produce its errors ([`domain::UpstreamError`]). [`policy`], [`secret`], [`telemetry`], [`fault`] and
//! [`pipeline_retries`] are leaves any layer may use; [`process`] reads only the settings.
//!
//! - [`host`]: the HTTP / custom-handler protocol edge — both ways the Functions host talks to us
//!   (HTTP forwarding on `/api/<Name>` and the invocation payload on `POST /<Name>`), function keys,
//!   body limits, the one place errors become JSON responses, and graceful shutdown on SIGTERM/SIGINT.
//! - [`functions`]: one module per Azure Function (`ExecutePipelineV2`, `CheckPipelineStatus`, ...), each
//!   with a `handle` entry point that parses its request into domain values and delegates; the handler
//!   table ([`functions::FUNCTIONS`]) lists them, one line each, for the host's routing and dispatch.
//! - [`startup`]: the wiring — `AppState` (settings, the Azure clients, admission, the store opened on
//!   first use) and `open_store`, which picks the backend a `PROCFWK_METADATA_DB` value names and hands
//!   it its options and the identity that gets its Entra tokens.
//! - [`adapters`]: the outside world — one HTTP client, credentials and the token cache, Key Vault, ARM
//!   retries with a time budget, Data Factory through `azure_mgmt_datafactory`, Compute VMs (the power
//!   port), and the store backends: `adapters::sqlite` (embedded) and `adapters::sqlserver` (Azure SQL
//!   through tiberius: login, pool, connection, transactions, values, errors, `db init`).
//! - [`policy`]: the request policies every invocation runs under — its time budget and its admission
//!   (work slot) — depending on nothing else in the crate, so host, functions and adapters all use them.
//! - [`dashboard`]: the execution dashboard (HTML with inline SVG) the Dashboard function serves and
//!   `procfwk db report --html` writes.
//! - [`leases`]: VM pools, leases and power decisions for self-hosted integration runtimes (VmPower),
//!   each decision one transaction under the pool's lock, acting through the power port.
//! - [`orchestration`]: procfwk's lifecycle (executions, stages, workers, failure handling), one store
//!   transaction per transition.
//! - [`store`]: the metadata store's interface — transitions, transactions, rows and values, errors,
//!   the one set of statements both backends run, the schema version and deploy scripts, and what a
//!   `PROCFWK_METADATA_DB` value may say (`store::connection_string`).
//! - [`domain`]: values that can only hold valid data (GUIDs, resource names, run statuses, run links,
//!   the two request dialects and their response shapes, worker keys, upstream errors).
//! - [`config`]: typed settings with their defaults in one place. [`process`]: process-wide tuning of
//!   `procfwk serve` (glibc malloc arenas).
//! - [`secret`]: a wrapper that keeps secrets out of logs. [`telemetry`]: tracing set-up. [`fault`]: the
//!   crash test's named abort points (a no-op unless `PROCFWK_FAULT_POINT` is set).
//!   [`pipeline_retries`]: the retry policy of each Azure Function activity of the shipped pipelines,
//!   which `procfwk run` follows too.
//! - The local Azure stand-in (`procfwk sim`: Entra ID, managed identity, Key Vault, Data Factory and
//!   Compute VMs with self-hosted runtime nodes) is not in this crate: it is the workspace crate
//!   `azure-sim` (`crates/azure-sim`), which depends on nothing of the handler.
//!
//! Not in the library: the command line and the developer tooling (`procfwk db`, `run`, `demo`, `bench`,
//! `package`) are the binary's own modules under `src/cli/` (the binary edge, the only place errors
//! become `anyhow`), using this library as `procfwk::…`.
//!
//! ### Glossary
//! - **run id** ([`domain::RunId`]): the id of one run of a pipeline in its orchestrator (a GUID; an
//!   activity run's id is a different thing, `activity_run_id`).
//! - **orchestrator**: where procfwk's pipelines run — an ADF factory today, Synapse and Fabric
//!   workspaces later; "factory" is left only where it is ADF's own word (ARM paths, `factoryName`).
//! - **worker**: one pipeline of an execution's stage that the framework starts, checks and settles
//!   ([`domain::WorkerKey`]; its status is a [`domain::WorkerStatus`]).
//! - **holder**: who holds a lease on a pool — a pipeline run calling VmPower, or a worker
//!   (`worker:<execution>:<stage>:<pipeline>`).
//! - **pool**: one VM, or the up-to-four node VMs of one self-hosted integration runtime, allocated
//!   only while some holder's lease on it is live ([`leases`]).

pub mod adapters;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod fault;
pub mod functions;
pub mod host;
pub mod leases;
pub mod orchestration;
pub mod pipeline_retries;
pub mod policy;
pub mod process;
pub mod secret;
pub mod startup;
pub mod store;
pub mod telemetry;

//! # procfwk — procfwk's Function App in Rust
//!
//! An Azure Functions custom handler that starts and polls Azure Data Factory worker pipelines for the
//! procfwk hierarchy (Grandparent → Parent → Child → Infant → Worker), plus a local Azure stand-in so the
//! whole thing runs on a laptop.
//!
//! ## Layout
//! - [`host`]: the HTTP / custom-handler protocol edge — both ways the Functions host talks to us
//!   (HTTP forwarding on `/api/<Name>` and the invocation payload on `POST /<Name>`), function keys,
//!   body limits, the one place errors become JSON responses, and graceful shutdown on SIGTERM/SIGINT.
//! - [`functions`]: one module per Azure Function (`ExecutePipelineV2`, `CheckPipelineStatus`, ...). Each
//!   parses its request into domain values and delegates.
//! - [`domain`]: values that can only hold valid data (GUIDs, resource names, run statuses, the two request
//!   dialects and their response shapes).
//! - [`orchestration`]: procfwk's lifecycle (executions, stages, workers, failure handling), one store
//!   transaction per transition. [`leases`]: VM pools, leases and power decisions for self-hosted
//!   integration runtimes (VmPower), each decision one transaction under the pool's lock.
//! - [`adapters`]: the outside world — one HTTP client, credentials and the token cache, Key Vault, ARM
//!   retries with a time budget, Data Factory through `azure_mgmt_datafactory`, and Compute VMs.
//! - [`store`]: the metadata store — SQLite embedded, Azure SQL through tiberius — one set of statements.
//! - The local Azure stand-in (`procfwk sim`: Entra ID, managed identity, Key Vault, Data Factory and
//!   Compute VMs with self-hosted runtime nodes) is not in this crate: it is the workspace crate
//!   `azure-sim` (`crates/azure-sim`), which depends on nothing of the handler.
//! - [`dashboard`]: the execution dashboard (HTML with inline SVG) the Dashboard function serves and
//!   `procfwk db report --html` writes.
//! - [`config`]: typed settings with their defaults in one place. [`telemetry`]: tracing set-up.
//! - [`secret`]: a wrapper that keeps secrets out of logs.
//! - [`pipeline_retries`]: the retry policy of each Azure Function activity of the shipped pipelines,
//!   which `procfwk run` follows too.
//! - [`process`]: process-wide tuning of `procfwk serve` (glibc malloc arenas). [`fault`]: the crash
//!   test's named abort points (a no-op unless `PROCFWK_FAULT_POINT` is set).
//!
//! Not in the library: the command line and the developer tooling (`procfwk db`, `run`, `demo`, `bench`,
//! `package`) are the binary's own modules under `src/cli/` (the binary edge, the only place errors
//! become `anyhow`), using this library as `procfwk::…`.

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
pub mod process;
pub mod secret;
pub mod store;
pub mod telemetry;

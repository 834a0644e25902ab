//! The `procfwk` command line: `serve` (the custom handler), `db` (the metadata store), `sim` (the local
//! Azure stand-in, `azure-sim`), and the developer tooling in this folder — [`demo`], [`runner`]
//! (`procfwk run`), [`bench`] and [`package`] (the zip-deploy package). These are the binary's own
//! modules, not the library's; this is the binary edge: errors become `anyhow` here and nowhere else.
//!
//! `sim`, `demo`, `bench`, `package` and `run --simulate` exist only with the `devtools` feature (on by
//! default); the executable `procfwk package` deploys is built without it and has `serve`, `db` and `run`
//! against a handler.

#[cfg(feature = "devtools")]
mod bench;
mod db;
#[cfg(feature = "devtools")]
mod demo;
#[cfg(feature = "devtools")]
mod package;
mod runner;

use anyhow::Context;
use clap::{Parser, Subcommand};
use procfwk::config::Settings;
use procfwk::functions::AppState;
use procfwk::host::{shutdown, Application};
use std::net::{IpAddr, SocketAddr};

#[derive(Parser, Debug)]
#[command(
    name = "procfwk",
    version,
    about = "procfwk's Function App in Rust, with a local Azure simulator"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the Azure Functions custom handler (the Function App).
    Serve(ServeArgs),
    /// Run the local Azure stand-in (Entra ID, managed identity, Key Vault, Data Factory).
    #[cfg(feature = "devtools")]
    Sim(azure_sim::SimArgs),
    /// Start the simulator and the handler in-process and run one sample worker through
    /// ExecutePipelineV2 and CheckPipelineStatus until it completes.
    #[cfg(feature = "devtools")]
    Demo(demo::DemoArgs),
    /// Create the metadata schema, load the sample, read the execution tables.
    Db(db::DbArgs),
    /// Run the whole hierarchy (Parent → Child → Infant) through the functions, like ADF does.
    Run(runner::RunArgs),
    /// Measure the handler against the simulator (latency, throughput, cold start, memory).
    #[cfg(feature = "devtools")]
    Bench(bench::BenchArgs),
    /// Build the Linux executable and write the Function App's zip-deploy package.
    #[cfg(feature = "devtools")]
    Package(package::PackageArgs),
}

/// The `--db` option of the commands that open the metadata store.
#[derive(clap::Args, Debug)]
pub struct MetadataDb {
    /// The metadata store: `sqlite:<path>` or an Azure SQL connection string (default: the
    /// `PROCFWK_METADATA_DB` setting, else `sqlite:procfwk.db`).
    #[arg(
        long,
        env = "PROCFWK_METADATA_DB",
        default_value = "sqlite:procfwk.db",
        hide_env_values = true
    )]
    pub db: String,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on when FUNCTIONS_CUSTOMHANDLER_PORT is not set.
    #[arg(long, default_value_t = 7071)]
    pub port: u16,
    /// Address to listen on. The Functions host talks to us on localhost.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Services log what they do; interactive commands keep the terminal for their own output.
    let level = match cli.command {
        Command::Serve(_) => "info",
        #[cfg(feature = "devtools")]
        Command::Sim(_) => "info",
        _ => "warn",
    };
    procfwk::telemetry::init(level);
    if matches!(cli.command, Command::Serve(_)) {
        procfwk::process::tune_malloc();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let serving = matches!(cli.command, Command::Serve(_));
    let result = runtime.block_on(run(cli));
    if serving {
        // The shutdown bound is the serve command's promise: do not wait on blocking work (a store
        // call) of an invocation cut at the bound. Its transaction rolls back with its connection.
        runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    }
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        #[cfg(feature = "devtools")]
        Command::Sim(args) => Ok(azure_sim::run(args).await?),
        #[cfg(feature = "devtools")]
        Command::Demo(args) => demo::run(args).await,
        Command::Db(args) => db::run(args).await,
        Command::Run(args) => runner::run(args).await,
        #[cfg(feature = "devtools")]
        Command::Bench(args) => bench::run(args).await,
        #[cfg(feature = "devtools")]
        Command::Package(args) => Ok(package::run(&args).map(drop)?),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::from_env().context("invalid configuration")?;
    if !settings.under_functions_host {
        settings.port = args.port;
    }
    let addr = SocketAddr::new(args.bind, settings.port);
    let grace = settings.shutdown_grace;
    let state = AppState::new(settings).context("could not set up the Azure clients")?;
    let app = Application::start(state, addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))?;
    tracing::info!(url = %app.url(), "procfwk handler listening");
    println!("procfwk handler listening on {}", app.url());
    let signal = shutdown::signal().await;
    tracing::info!(
        signal,
        grace_secs = grace.as_secs_f64(),
        "shutting down: refusing new calls, finishing the ones in flight"
    );
    let started = std::time::Instant::now();
    // A second signal (Ctrl-C twice) does not wait for the calls in flight.
    let drained = tokio::select! {
        drained = app.shut_down(grace) => drained,
        again = shutdown::signal() => anyhow::bail!(
            "{again} during shutdown: exiting without waiting for the calls in flight"
        ),
    };
    match drained {
        shutdown::Drained::All { answered } => {
            tracing::info!(
                answered,
                seconds = started.elapsed().as_secs_f64(),
                "shut down: every in-flight call was answered"
            );
            Ok(())
        }
        shutdown::Drained::CutShort { cut } => {
            tracing::error!(cut = ?cut, "shutdown grace passed: these calls were cut");
            anyhow::bail!(
                "{signal}: {} call(s) still running after the {} s shutdown grace (PROCFWK_SHUTDOWN_GRACE_SECS) were cut: {}",
                cut.len(),
                grace.as_secs_f64(),
                cut.join(", ")
            )
        }
    }
}

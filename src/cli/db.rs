//! `procfwk db`: create or upgrade the schema in the configured store, load procfwk's sample metadata,
//! set properties, and print the read-outs operators use (current execution summary, last execution).

use anyhow::Context;
use clap::Subcommand;
use procfwk::orchestration::now;
use procfwk::orchestration::readouts::{LastExecution, ReadRows};
use procfwk::orchestration::sample::{SeedSample, SetProperty};
use procfwk::store::{statements, Row, Store};

#[derive(clap::Args, Debug)]
pub struct DbArgs {
    #[command(flatten)]
    pub store: super::MetadataDb,
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Create the schema, or upgrade an existing database in place (one procfwk master made, or an
    /// older version of ours), keeping every row. `db upgrade` is the same command. Consults the
    /// recorded schema version (skips what is done, refuses a newer one) and refuses, naming it and
    /// before changing anything, an object whose shape procfwk cannot use.
    #[command(alias = "upgrade")]
    Init {
        /// List what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load procfwk's sample metadata into an empty database.
    SeedSample,
    /// Set a property (closing its current version, as procfwk's AddProperty does).
    SetProperty { name: String, value: String },
    /// Workers of the current execution, by status.
    Summary,
    /// The log of the last completed execution.
    LastExecution,
    /// The rows of CurrentExecution.
    Current,
    /// VmPower cost report: per VM pool, VM-hours allocated against the hours some lease was live
    /// (the lower bound), and the number of starts, from the power log.
    VmReport {
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The execution dashboard (what the Dashboard function serves) written to an HTML file.
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Where to write the page.
    #[arg(long)]
    html: std::path::PathBuf,
    /// Executions on the timeline (1-50).
    #[arg(long, default_value_t = 7)]
    executions: usize,
    /// Executions in the stage-duration chart (1-400).
    #[arg(long, default_value_t = 90)]
    history: usize,
    /// Also read and render the page ten more times and print the times taken.
    #[arg(long)]
    bench: bool,
}

/// Write the dashboard of `store` to `path`; returns the page's size in bytes.
pub async fn write_report(
    store: &Store,
    options: procfwk::dashboard::Options,
    path: &std::path::Path,
) -> anyhow::Result<usize> {
    let snapshot = procfwk::dashboard::read(store, options, now())
        .await
        .context("could not read the metadata store")?;
    let page = procfwk::dashboard::html::render(&snapshot);
    std::fs::write(path, &page).with_context(|| format!("could not write {}", path.display()))?;
    Ok(page.len())
}

pub async fn open(db: &str) -> anyhow::Result<Store> {
    let settings = procfwk::config::Settings::from_env().context("invalid configuration")?;
    let azure =
        procfwk::adapters::Azure::new(&settings).context("could not set up the Azure clients")?;
    procfwk::startup::open_store(db, Some(azure.identity.clone()))
        .await
        .context("could not open the metadata store")
}

fn print_rows(rows: &[Row], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    r.opt_text(c)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(columns.to_vec()));
    for row in &cells {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        println!("(no rows)");
    }
}

pub async fn run(args: DbArgs) -> anyhow::Result<()> {
    let store = open(&args.store.db).await?;
    match args.command {
        DbCommand::VmReport { json } => vm_report(&store, json).await?,
        DbCommand::Report(report) => dashboard_report(&store, &report).await?,
        DbCommand::Init { dry_run } => init(&store, dry_run).await?,
        DbCommand::SeedSample => seed_sample(&store).await?,
        DbCommand::SetProperty { name, value } => {
            store
                .run(&SetProperty {
                    name: name.clone(),
                    value: value.clone(),
                    description: None,
                    now: now(),
                })
                .await?;
            println!("{name} = {value}");
        }
        DbCommand::Summary => {
            let rows = store.run(&ReadRows(&statements::CURRENT_SUMMARY)).await?;
            print_rows(&rows, &["PipelineStatus", "RecordCount"]);
        }
        DbCommand::LastExecution => {
            let rows = store.run(&LastExecution).await?;
            print_rows(
                &rows,
                &[
                    "LogId",
                    "StageId",
                    "PipelineId",
                    "PipelineName",
                    "PipelineStatus",
                    "StartDateTime",
                    "EndDateTime",
                ],
            );
        }
        DbCommand::Current => {
            let rows = store
                .run(&ReadRows(&statements::CURRENT_EXECUTION_ROWS))
                .await?;
            print_rows(
                &rows,
                &[
                    "StageId",
                    "PipelineId",
                    "PipelineName",
                    "PipelineStatus",
                    "IsBlocked",
                    "PipelineRunId",
                ],
            );
        }
    }
    Ok(())
}

/// `db init` (and `db upgrade`): create or upgrade the schema, or with `--dry-run` say what would change.
async fn init(store: &Store, dry_run: bool) -> anyhow::Result<()> {
    let report = store.upgrade_schema(dry_run).await.context(if dry_run {
        "the schema upgrade cannot be planned"
    } else {
        "schema creation or upgrade failed"
    })?;
    for line in report.lines() {
        println!("{line}");
    }
    if !dry_run {
        println!(
            "schema ready in {} (version {})",
            store.describe(),
            report.version
        );
    }
    Ok(())
}

async fn seed_sample(store: &Store) -> anyhow::Result<()> {
    match store.run(&SeedSample { now: now() }).await {
        Ok(n) => {
            println!("sample metadata loaded: {n} workers in 5 stages, batches Daily and Hourly")
        }
        // Running the quick start twice is fine: the sample is there already.
        Err(procfwk::orchestration::LifecycleError::Metadata(m))
            if m.contains("already has stages") =>
        {
            println!("metadata already present; nothing loaded")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `db vm-report`: per VM pool, VM-hours allocated against the hours leased, as a table or JSON.
async fn vm_report(store: &Store, json: bool) -> anyhow::Result<()> {
    let log = procfwk::leases::report::read_log(store)
        .await
        .context("could not read the VM power log")?;
    let costs = procfwk::leases::report::costs(&log, chrono::Utc::now().naive_utc());
    if json {
        println!("{}", serde_json::to_string_pretty(&costs)?);
        return Ok(());
    }
    println!(
        "{:<60}  {:>14}  {:>12}  {:>6}  {:>6}  {:>6}",
        "pool", "allocated VM-h", "leased h", "ratio", "starts", "leases"
    );
    for c in &costs {
        let ratio = if c.leased_hours > 0.0 {
            format!("{:.2}", c.allocated_hours / c.leased_hours)
        } else {
            "-".into()
        };
        println!(
            "{:<60}  {:>14.2}  {:>12.2}  {:>6}  {:>6}  {:>6}",
            c.pool_key, c.allocated_hours, c.leased_hours, ratio, c.starts, c.leases
        );
    }
    if costs.is_empty() {
        println!("(no VM pool has a power log yet)");
    }
    Ok(())
}

/// `db report --html`: write the dashboard; with `--bench`, time ten more reads and renders.
async fn dashboard_report(store: &Store, args: &ReportArgs) -> anyhow::Result<()> {
    if !(1..=procfwk::dashboard::Options::MAX_EXECUTIONS).contains(&args.executions) {
        anyhow::bail!("--executions must be from 1 to 50");
    }
    if !(1..=procfwk::dashboard::Options::MAX_HISTORY).contains(&args.history) {
        anyhow::bail!("--history must be from 1 to 400");
    }
    let options = procfwk::dashboard::Options {
        executions: args.executions,
        history: args.history,
    };
    let bytes = write_report(store, options, &args.html).await?;
    println!(
        "dashboard written to {} ({bytes} bytes)",
        args.html.display()
    );
    if args.bench {
        bench_dashboard(store, options).await?;
    }
    Ok(())
}

async fn bench_dashboard(
    store: &Store,
    options: procfwk::dashboard::Options,
) -> anyhow::Result<()> {
    let (mut reads, mut renders) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let snapshot = procfwk::dashboard::read(store, options, now()).await?;
        let read = started.elapsed();
        let page = procfwk::dashboard::html::render(&snapshot);
        renders.push(started.elapsed() - read);
        reads.push(read);
        std::hint::black_box(page);
    }
    reads.sort();
    renders.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "read the store: median {:.1} ms, max {:.1} ms; render: median {:.1} ms, max {:.1} ms (10 runs)",
        ms(reads[5]),
        ms(reads[9]),
        ms(renders[5]),
        ms(renders[9])
    );
    Ok(())
}

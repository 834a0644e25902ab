//! `procfwk demo`: the smallest end-to-end run with no Azure at all. Starts the simulator and the
//! handler in this process, then plays what procfwk's Infant pipeline does for one worker: call
//! `ExecutePipelineV2`, then `CheckPipelineStatus` every few seconds until `SimpleStatus` is no longer
//! `Running`, printing each answer.

use anyhow::{bail, Context};
use azure_sim::{SimConfig, Simulator};
use procfwk::config::Settings;
use procfwk::functions::AppState;
use procfwk::host::Application;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Worker pipeline to run (one of the simulator's sample workers).
    #[arg(long, default_value = "Wait 3")]
    pub pipeline: String,
    /// Seconds the worker waits (its WaitTime parameter).
    #[arg(long, default_value_t = 5)]
    pub wait_time: u32,
    /// Simulated seconds per real second divisor: 0.1 makes a 5 s worker take 0.5 s.
    #[arg(long, default_value_t = 0.2)]
    pub time_scale: f64,
    /// Seconds between status checks (procfwk's PipelineStatusCheckDuration), before time scaling.
    #[arg(long, default_value_t = 2.0)]
    pub check_every: f64,
}

const ID: &str = "12345678-1234-1234-1234-012345678910";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let config = SimConfig {
        time_scale: args.time_scale,
        ..SimConfig::sample()
    };
    let sim = Simulator::start(config, loopback)
        .await
        .context("could not start the simulator")?;
    let settings = Settings {
        arm_endpoint: url::Url::parse(&sim.url())?,
        authority_host: url::Url::parse(&sim.url())?,
        poll_initial: Duration::from_millis(50),
        ..Settings::default()
    };
    let app = Application::start(AppState::new(settings)?, loopback).await?;
    println!("simulator  {}\nhandler    {}\n", sim.url(), app.url());

    let client = reqwest::Client::new();
    let body = json!({
        "tenantId": ID, "applicationId": "11111111-1111-1111-1111-111111111111", "authenticationKey": "demo-secret",
        "subscriptionId": ID, "resourceGroupName": "ADF.procfwk", "orchestratorName": "WorkersFactory",
        "orchestratorType": "ADF", "pipelineName": args.pipeline,
        "pipelineParameters": {"WaitTime": args.wait_time.to_string()},
    });
    let started = Instant::now();
    let call = |name: &'static str, body: Value| {
        let client = client.clone();
        let url = format!("{}/api/{name}", app.url());
        async move {
            let r = client.post(url).json(&body).send().await?;
            let status = r.status();
            let out: Value = r.json().await?;
            if !status.is_success() {
                bail!("{name} answered {status}: {out}");
            }
            Ok::<Value, anyhow::Error>(out)
        }
    };
    let out = call("ExecutePipelineV2", body.clone()).await?;
    println!(
        "{:>7.2}s  ExecutePipelineV2    → {out}",
        started.elapsed().as_secs_f64()
    );
    let mut check = body;
    check["runId"] = out["RunId"].clone();
    loop {
        let out = call("CheckPipelineStatus", check.clone()).await?;
        println!(
            "{:>7.2}s  CheckPipelineStatus  → {out}",
            started.elapsed().as_secs_f64()
        );
        if out["SimpleStatus"] != "Running" {
            println!(
                "\nworker {} finished: {}",
                args.pipeline, out["ActualStatus"]
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.check_every * args.time_scale)).await;
    }
    app.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

//! `procfwk bench`: measure the handler against the simulator, both running as real child processes on
//! loopback, and report every number against a baseline measured in the same run:
//!
//! - p50/p99 latency of CheckPipelineStatus through the handler vs the simulator's run GET called directly,
//!   (a) with no added latency (the handler's own cost, through − direct) and (b) with the simulator adding
//!   a fixed latency per call, like a real ARM round trip (ratio through / direct);
//! - requests per second through the handler at each concurrency level;
//! - cold start: spawn → first 200 on `GET /`;
//! - peak resident memory (VmHWM) of the handler process.

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Sequential samples per path with no added latency.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Sequential samples per path with the simulator's added latency.
    #[arg(long, default_value_t = 200)]
    pub slow_requests: usize,
    /// Latency the simulator adds to every ARM call in part (b), in ms.
    #[arg(long, default_value_t = 50)]
    pub added_latency_ms: u64,
    /// Concurrency levels for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub concurrency: Vec<usize>,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5.0)]
    pub throughput_secs: f64,
    /// Cold starts to time.
    #[arg(long, default_value_t = 20)]
    pub cold_starts: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const TENANT: &str = "12345678-1234-1234-1234-012345678910";
const CLIENT: &str = "b0000000-0000-0000-0000-000000000001";

struct ChildProc {
    child: Child,
    url: String,
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_listening(args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<ChildProc> {
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("spawn")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(pos) = line.find("listening on ") {
                    break line[pos + 13..].trim().to_string();
                }
            }
            _ => bail!("{args:?} exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(ChildProc { child, url })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Peak resident set size of a process, in MiB (Linux `VmHWM`).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Target {
    client: reqwest::Client,
    through_url: String,
    through_body: String,
    direct_url: String,
    token: String,
}

impl Target {
    async fn through(&self) -> anyhow::Result<()> {
        let r = self
            .client
            .post(&self.through_url)
            .header("content-type", "application/json")
            .body(self.through_body.clone())
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("handler answered {}", r.status());
        }
        let _ = r.bytes().await?;
        Ok(())
    }

    async fn direct(&self) -> anyhow::Result<()> {
        let r = self
            .client
            .get(&self.direct_url)
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("simulator answered {}", r.status());
        }
        let _ = r.bytes().await?;
        Ok(())
    }
}

async fn paired_latency(target: &Target, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut through, mut direct) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        target.through().await?;
        through.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        target.direct().await?;
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((through, direct))
}

async fn throughput(target: Arc<Target>, clients: usize, secs: f64) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (target, done, failed) = (target.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    match target.through().await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

async fn cold_start(sim_url: &str) -> anyhow::Result<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--port", &port.to_string()])
        .env("PROCFWK_ARM_ENDPOINT", sim_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = started + Duration::from_secs(10);
    let result = loop {
        if Instant::now() > deadline {
            break Err(anyhow!("no answer within 10 s"));
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                break Ok(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// p50 and p99 of the same call made through the handler and straight to the simulator, in ms.
struct Latency {
    through: (f64, f64),
    direct: (f64, f64),
}

async fn latency(target: &Target, n: usize) -> anyhow::Result<Latency> {
    let (through, direct) = paired_latency(target, n).await?;
    Ok(Latency {
        through: summary(through),
        direct: summary(direct),
    })
}

/// Start a worker run through the handler and get a token from the simulator: the two paths compared
/// are that run's CheckPipelineStatus through the handler and its run GET on the simulator.
async fn target(
    client: &reqwest::Client,
    sim: &ChildProc,
    handler: &ChildProc,
) -> anyhow::Result<Target> {
    let body = json!({
        "tenantId": TENANT, "applicationId": CLIENT, "authenticationKey": "bench-secret",
        "subscriptionId": TENANT, "resourceGroupName": "ADF.procfwk", "orchestratorName": "WorkersFactory",
        "orchestratorType": "ADF", "pipelineName": "Wait Long",
    });
    let created: Value = client
        .post(format!("{}/api/ExecutePipelineV2", handler.url))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let run_id = created["RunId"]
        .as_str()
        .ok_or_else(|| anyhow!("ExecutePipelineV2 gave no RunId: {created}"))?
        .to_string();
    let mut check = body.clone();
    check["runId"] = json!(run_id);
    let token: Value = client
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", "bench-secret"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    Ok(Target {
        client: client.clone(),
        through_url: format!("{}/api/CheckPipelineStatus", handler.url),
        through_body: check.to_string(),
        direct_url: format!(
            "{}/subscriptions/{TENANT}/resourceGroups/ADF.procfwk/providers/Microsoft.DataFactory/factories/WorkersFactory/pipelineruns/{run_id}?api-version=2018-06-01",
            sim.url
        ),
        token: token["access_token"].as_str().unwrap_or_default().to_string(),
    })
}

/// Make the simulator add `ms` to every ARM call (and no other fault).
async fn set_latency(client: &reqwest::Client, sim: &ChildProc, ms: u64) -> anyhow::Result<()> {
    client
        .put(format!("{}/_sim/faults", sim.url))
        .json(&json!({"throttle_ratio": 0.0, "retry_after_secs": 0, "server_error_ratio": 0.0, "latency_ms": ms, "latency_ratio": 1.0}))
        .send()
        .await?;
    Ok(())
}

/// Everything `procfwk bench` measured.
struct Results {
    added_latency_ms: u64,
    /// With no added latency, and with `added_latency_ms` per ARM call.
    fast: Latency,
    slow: Latency,
    /// One entry per concurrency level.
    rates: Vec<Value>,
    /// Peak resident memory of the handler, MiB.
    rss: Option<f64>,
    /// Cold start p50 and p99, ms.
    cold: (f64, f64),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let sim = spawn_listening(&["sim", "--port", "0", "--time-scale", "1"], &[])?;
    let handler = spawn_listening(
        &["serve", "--port", "0"],
        &[
            ("PROCFWK_ARM_ENDPOINT", sim.url.clone()),
            ("AZURE_AUTHORITY_HOST", sim.url.clone()),
        ],
    )?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .tcp_nodelay(true)
        .build()?;
    let target = Arc::new(target(&client, &sim, &handler).await?);

    eprintln!("warming up…");
    paired_latency(&target, 200).await?;
    eprintln!(
        "(a) latency, no added latency: {} samples per path",
        args.requests
    );
    let fast = latency(&target, args.requests).await?;
    eprintln!(
        "(b) latency with {} ms added per ARM call: {} samples per path",
        args.added_latency_ms, args.slow_requests
    );
    set_latency(&client, &sim, args.added_latency_ms).await?;
    let slow = latency(&target, args.slow_requests).await?;
    set_latency(&client, &sim, 0).await?;

    let mut rates = Vec::new();
    for &c in &args.concurrency {
        eprintln!(
            "throughput at {c} concurrent clients for {} s",
            args.throughput_secs
        );
        let (rps, failed) = throughput(target.clone(), c, args.throughput_secs).await;
        rates.push(json!({"clients": c, "requests_per_sec": rps, "failed": failed, "peak_rss_mib_so_far": peak_rss_mib(handler.child.id())}));
    }
    let rss = peak_rss_mib(handler.child.id());

    eprintln!("cold starts: {}", args.cold_starts);
    let mut colds = Vec::new();
    for _ in 0..args.cold_starts {
        colds.push(cold_start(&sim.url).await?);
    }
    let results = Results {
        added_latency_ms: args.added_latency_ms,
        fast,
        slow,
        rates,
        rss,
        cold: summary(colds),
    };
    results.print();
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&results.json())?)?;
    }
    Ok(())
}

impl Results {
    fn json(&self) -> Value {
        let ((t50, t99), (d50, d99)) = (self.fast.through, self.fast.direct);
        let ((st50, st99), (sd50, sd99)) = (self.slow.through, self.slow.direct);
        let (c50, c99) = self.cold;
        json!({
            "latency_no_added_ms": {"through_p50": t50, "through_p99": t99, "direct_p50": d50, "direct_p99": d99,
                "handler_cost_p50": t50 - d50, "handler_cost_p99": t99 - d99},
            "latency_added_ms": {"added": self.added_latency_ms, "through_p50": st50, "through_p99": st99, "direct_p50": sd50, "direct_p99": sd99,
                "ratio_p50": st50 / sd50, "ratio_p99": st99 / sd99},
            "throughput": self.rates,
            "cold_start_ms": {"p50": c50, "p99": c99},
            "peak_rss_mib": self.rss,
        })
    }

    fn print(&self) {
        let ((t50, t99), (d50, d99)) = (self.fast.through, self.fast.direct);
        let ((st50, st99), (sd50, sd99)) = (self.slow.through, self.slow.direct);
        let (c50, c99) = self.cold;
        println!("procfwk bench (handler and simulator as separate processes on loopback)");
        println!("  CheckPipelineStatus, no added latency   p50 {t50:.3} ms through vs {d50:.3} ms direct → handler cost {:.3} ms (target ≤ 0.5)", t50 - d50);
        println!("                                          p99 {t99:.3} ms through vs {d99:.3} ms direct → handler cost {:.3} ms", t99 - d99);
        println!("  with {} ms per ARM call                  p50 {st50:.2} ms through vs {sd50:.2} ms direct → ratio {:.4} (target ≤ 1.02)", self.added_latency_ms, st50 / sd50);
        println!("                                          p99 {st99:.2} ms through vs {sd99:.2} ms direct → ratio {:.4}", st99 / sd99);
        for r in &self.rates {
            println!(
                "  throughput at {:>5} clients              {:.0} requests/s ({} failed)",
                r["clients"],
                r["requests_per_sec"].as_f64().unwrap_or(0.0),
                r["failed"]
            );
        }
        println!(
            "  cold start (spawn → first 200)          p50 {c50:.2} ms, p99 {c99:.2} ms (target ≤ 15)"
        );
        println!(
            "  peak RSS of the handler                 {:.1} MiB (target ≤ 40)",
            self.rss.unwrap_or(f64::NAN)
        );
    }
}

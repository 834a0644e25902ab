//! The handler edge under slow and large bodies, on loopback (the memory test against a real `procfwk
//! serve` process, whose resident memory it measures; the trickling test in-process):
//!
//! - 130 clients that send a request head and then trickle their body one byte at a time (more than the
//!   2 × `PROCFWK_UPSTREAM_CONCURRENCY` work slots) keep no other call waiting, and are answered 408
//!   once `PROCFWK_BODY_TIMEOUT_SECS` has passed;
//! - with the default settings, 256 concurrent maximum-size (1 MiB) bodies, half of them by HTTP
//!   forwarding and half inside invocation payloads, peak at ≤ 64 MiB resident, and resident memory is
//!   back within twice its idle level within 10 s. Run alone, it prints its figures:
//!   `cargo test --test slow_and_large_bodies -- --nocapture large`.

mod support;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// A client that sends a head declaring `declared` bytes, then one byte every `every` until it has been
/// answered; returns the status line's code (0 when the connection closed without an answer).
async fn trickle(addr: String, path: String, declared: u64, every: Duration) -> u16 {
    let Ok(mut socket) = tokio::net::TcpStream::connect(&addr).await else {
        return 0;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    if socket.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            },
            _ = tokio::time::sleep(every) => {
                if socket.write_all(b" ").await.is_err() {
                    // The server stopped reading; its answer may still be there to read.
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut answer)).await;
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn trickling_clients_do_not_keep_other_calls_out() {
    let s = spawn_app_with(
        sim_config(),
        &[
            ("PROCFWK_BODY_TIMEOUT_SECS", "6".into()),
            ("PROCFWK_UPSTREAM_CONCURRENCY", "64".into()),
            ("RUST_LOG", "warn".into()),
        ],
    );
    let addr = s.handler.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    // 130 > 2 × 64 slots; half by forwarding, half by invocation payload, each declaring a maximum-size
    // body it never finishes.
    let tricklers: Vec<_> = (0..130)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/api/ExecutePipelineV2"
            } else {
                "/ExecutePipelineV2"
            };
            tokio::spawn(trickle(
                addr.clone(),
                path.to_string(),
                MIB,
                Duration::from_millis(100),
            ))
        })
        .collect();
    // Let every trickler connect and start.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let body = v2_body("Wait 1", json!({"WaitTime": "1"}));
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        let t = Instant::now();
        let call = tokio::time::timeout(Duration::from_secs(2), s.call("ValidatePipeline", &body));
        let (status, out) = call
            .await
            .unwrap_or_else(|_| panic!("call {round} was kept waiting by trickling clients"));
        assert_eq!(status, 200, "{out}");
        let (status, out) =
            tokio::time::timeout(Duration::from_secs(2), s.invoke("ValidatePipeline", &body))
                .await
                .unwrap_or_else(|_| {
                    panic!("invocation {round} was kept waiting by trickling clients")
                });
        assert_eq!(status, 200, "{out}");
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the other calls ran while the tricklers were still trickling"
    );
    eprintln!("slowest pair of calls while 130 clients trickled: {slowest:?}");

    let mut statuses = Vec::new();
    for t in tricklers {
        statuses.push(t.await.unwrap_or(0));
    }
    let timed_out = statuses.iter().filter(|&&c| c == 408).count();
    assert_eq!(
        timed_out, 130,
        "every trickler is answered 408: {statuses:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered 408 soon after the 6 s bound"
    );
    // And the handler is as responsive as before.
    let (status, out) = s.call("ValidatePipeline", &body).await;
    assert_eq!(status, 200, "{out}");
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A CheckPipelineStatus body of exactly `size` bytes, all fields valid but a huge unknown one and no
/// `runId`: read and parsed in full, then refused with 400.
fn max_body(size: usize) -> Vec<u8> {
    let head = json!({"tenantId": TENANT, "applicationId": CLIENT_A, "authenticationKey": SECRET_A,
        "subscriptionId": SUBSCRIPTION, "resourceGroupName": "rg", "orchestratorName": "adf",
        "orchestratorType": "ADF", "pipelineName": "Wait 1"})
    .to_string();
    let pad = size - head.len() - r#","pad":""#.len();
    let mut out = head.into_bytes();
    out.pop();
    out.extend_from_slice(br#","pad":""#);
    out.extend(std::iter::repeat_n(b'x', pad - 1));
    out.extend_from_slice(b"\"}");
    out
}

#[tokio::test]
async fn large_bodies_stay_within_memory_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handler = spawn(
        &["serve", "--port", "0"],
        &[
            ("RUST_LOG", "warn".into()),
            (
                "PROCFWK_METADATA_DB",
                format!("sqlite:{}", dir.path().join("none.db").display()),
            ),
        ],
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let body = max_body(MIB as usize);
    assert_eq!(body.len() as u64, MIB);
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    let payload = json!({"Data": {"req": {"Method": "POST", "Query": {}, "Headers": {},
        "Body": String::from_utf8_lossy(&body)}}, "Metadata": {}})
    .to_string()
    .into_bytes();

    // Idle: after a few ordinary calls.
    for _ in 0..5 {
        let r = client
            .post(format!("{}/api/CheckPipelineStatus", handler.url))
            .body(b"{}".to_vec())
            .send()
            .await
            .expect("reachable");
        assert_eq!(r.status().as_u16(), 400);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = handler.pid();
    let idle = status_kib(pid, "VmRSS:");

    let calls: Vec<_> = (0..256)
        .map(|i| {
            let client = client.clone();
            let (url, bytes) = if i % 2 == 0 {
                (
                    format!("{}/api/CheckPipelineStatus", handler.url),
                    body.clone(),
                )
            } else {
                (
                    format!("{}/CheckPipelineStatus", handler.url),
                    payload.clone(),
                )
            };
            tokio::spawn(async move {
                let r = client.post(url).body(bytes).send().await.ok()?;
                let status = r.status().as_u16();
                let answer: Value = r.json().await.ok()?;
                // An invocation's own answer travels inside the envelope.
                let inner = answer["Outputs"]["res"]["statusCode"].as_u64();
                Some(inner.map_or(status, |c| c as u16))
            })
        })
        .collect();
    let mut refused = 0;
    let mut busy = 0;
    let mut cut = 0;
    for c in calls {
        match c.await.ok().flatten() {
            Some(400) => refused += 1,
            Some(503) => busy += 1,
            Some(other) => panic!("unexpected status {other}"),
            None => cut += 1,
        }
    }
    let peak = status_kib(pid, "VmHWM:");
    let waited = Instant::now();
    let mut after = status_kib(pid, "VmRSS:");
    while after > 2 * idle && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = status_kib(pid, "VmRSS:");
    }
    eprintln!(
        "256 concurrent 1 MiB bodies: {refused} read in full (400 as expected), {busy} answered 503 \
         ServerBusy, {cut} cut off while sending; idle {idle} KiB, peak {peak} KiB, {after} KiB {:.1} s \
         later",
        waited.elapsed().as_secs_f64()
    );
    assert!(peak <= 64 * 1024, "peak {peak} KiB over 64 MiB");
    assert!(
        after <= 2 * idle,
        "{after} KiB resident 10 s later, over twice the idle {idle} KiB"
    );
    assert!(
        refused >= 8,
        "most of the budget's worth of bodies was read in full ({refused})"
    );
}

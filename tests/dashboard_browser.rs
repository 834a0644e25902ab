//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/deps/40-chromium.sh) loads `/api/Dashboard` from a running `procfwk serve` on a store with a
//! finished, a failed and a running execution, and the test asks the page — through the DevTools
//! protocol, as rendered — what a person looks for: the failed worker's bar is red and links to its run,
//! its row in Failures is red, the running stage shows its progress. A full-page screenshot goes to
//! `target/dashboard-browser.png`.
//!
//! Without Chromium the test says so and does not run, unless PROCFWK_REQUIRE_CHROMIUM=1 (scripts/test
//! sets it through the deps script), where a missing browser is a failure.

mod history;
mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAILED_RED: &str = "rgb(198, 40, 40)";
const RUNNING_BLUE: &str = "rgb(21, 101, 192)";
const SUCCESS_GREEN: &str = "rgb(46, 125, 50)";

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROCFWK_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// A headless Chromium with the DevTools protocol on a loopback port; killed on drop.
struct Browser {
    child: Child,
    devtools: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(executable: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1300,1000",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("DevTools listening on ws://") {
                    let rest = &line[at + "DevTools listening on ws://".len()..];
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port");
        Browser {
            child,
            devtools,
            _profile: profile,
        }
    }

    /// Open `url` in a new tab; returns the tab's DevTools session.
    fn open(&self, url: &str) -> Session {
        let target = http_json(&self.devtools, "PUT", &format!("/json/new?{url}"));
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("a page target")
            .to_string();
        Session::connect(&ws)
    }
}

/// A plain HTTP/1.1 request to the DevTools endpoint, answered with JSON.
fn http_json(host: &str, method: &str, path: &str) -> Value {
    let mut stream = TcpStream::connect(host).expect("devtools reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    // Read the head, then as many bytes as Content-Length says (the server may keep the socket open).
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("devtools answer");
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// One DevTools session over a WebSocket (client frames masked, as RFC 6455 requires).
struct Session {
    stream: TcpStream,
    next_id: u64,
}

impl Session {
    fn connect(ws_url: &str) -> Session {
        let rest = ws_url.strip_prefix("ws://").expect("ws url");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream = TcpStream::connect(host).expect("devtools websocket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let key = base64_encode(uuid::Uuid::new_v4().as_bytes());
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "handshake: {head}");
        Session { stream, next_id: 1 }
    }

    fn send_frame(&mut self, payload: &[u8]) {
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand_mask();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send frame");
    }

    /// The next whole text message (continuation frames joined; pings answered).
    fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).expect("frame head");
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).expect("len16");
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).expect("len64");
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; usize::try_from(len).expect("frame size")];
            self.stream.read_exact(&mut payload).expect("frame payload");
            match opcode {
                0x9 => {
                    // Ping: answer with a pong carrying the same data.
                    let mut pong = vec![0x8Au8, 0x80 | payload.len() as u8];
                    pong.extend_from_slice(&[0, 0, 0, 0]);
                    pong.extend_from_slice(&payload);
                    let _ = self.stream.write_all(&pong);
                }
                0x8 => panic!("DevTools closed the connection"),
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8_lossy(&message).into_owned();
                    }
                }
            }
        }
    }

    /// Call a DevTools method; events that arrive meanwhile are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.send_frame(request.as_bytes());
        loop {
            let message: Value = serde_json::from_str(&self.read_message()).unwrap_or(Value::Null);
            if message["id"] == id {
                assert!(message["error"].is_null(), "{method}: {}", message["error"]);
                return message["result"].clone();
            }
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }
}

fn rand_mask() -> [u8; 4] {
    let b = uuid::Uuid::new_v4();
    let b = b.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(v) = B64.iter().position(|b| *b == c) else {
            continue; // padding and line breaks
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[test]
fn a_person_sees_the_failed_worker_in_red_and_the_running_stage_progress() {
    let required = std::env::var("PROCFWK_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    let Some(executable) = chromium() else {
        assert!(
            !required,
            "PROCFWK_REQUIRE_CHROMIUM=1 but no chromium was found"
        );
        eprintln!("chromium is not installed (source scripts/deps/40-chromium.sh): not run");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let s = history::three_states(dir.path());
    let handler = support::spawn(
        &["serve", "--port", "0"],
        &[
            (
                "PROCFWK_METADATA_DB",
                format!("sqlite:{}", s.path.display()),
            ),
            ("PROCFWK_FUNCTION_KEY", support::FUNCTION_KEY.to_string()),
        ],
    );
    let browser = Browser::start(&executable);
    let mut page = browser.open(&format!(
        "{}/api/Dashboard?code={}",
        handler.url,
        support::FUNCTION_KEY
    ));
    // A new tab starts on about:blank (already "complete"): wait for our page itself to have loaded.
    let started = Instant::now();
    let loaded = format!(
        "location.href.startsWith({}) && document.readyState === 'complete'",
        serde_json::to_string(&handler.url).unwrap_or_default()
    );
    while page.evaluate(&loaded) != true {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the page did not load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let seen = page.evaluate(&format!(
        r#"(() => {{
            const worker = {worker};
            const bar = document.querySelector(`#timeline rect.bar[data-worker="${{worker}}"][data-status="Failed"]`);
            const link = bar && bar.closest('a');
            const row = document.querySelector(`#failures tr.failed[data-worker="${{worker}}"]`);
            const badge = row && row.querySelector('.badge');
            const stage = document.querySelector('#current .execution[data-execution-id="{running}"] .stage[data-stage-id="2"]');
            const box = bar && bar.getBoundingClientRect();
            return {{
                title: document.title,
                barFill: bar && getComputedStyle(bar).fill,
                barShown: !!box && box.width > 0 && box.height > 0,
                barLink: link && link.getAttribute('href'),
                rowBackground: row && getComputedStyle(row.querySelector('td')).backgroundColor,
                badgeBackground: badge && getComputedStyle(badge).backgroundColor,
                badgeText: badge && badge.innerText,
                errorText: row && row.querySelector('.error-message') && row.querySelector('.error-message').innerText,
                stageState: stage && stage.dataset.state,
                stageText: stage && stage.innerText,
                stageSegments: stage ? [...stage.querySelectorAll('svg.progress rect')].slice(1).map(r => getComputedStyle(r).fill) : [],
            }};
        }})()"#,
        worker = serde_json::to_string(&s.failed_worker).unwrap_or_default(),
        running = s.running,
    ));

    // The screenshot first, so a failing run still leaves it for a developer to open.
    let metrics = page.call("Page.getLayoutMetrics", json!({}));
    let size = &metrics["cssContentSize"];
    let shot = page.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true, "clip": {
            "x": 0, "y": 0, "scale": 1,
            "width": size["width"].as_f64().unwrap_or(1300.0),
            "height": size["height"].as_f64().unwrap_or(1000.0).min(8000.0),
        }}),
    );
    let png = base64_decode(shot["data"].as_str().unwrap_or_default());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    let out = target_dir().join("dashboard-browser.png");
    std::fs::create_dir_all(target_dir()).expect("target dir");
    std::fs::write(&out, &png).expect("write screenshot");
    println!("screenshot: {} ({} bytes)", out.display(), png.len());

    assert_eq!(seen["title"], "procfwk dashboard", "{seen}");
    // The failed worker: a visible red bar that links to its run in ADF Studio...
    assert_eq!(
        seen["barFill"], FAILED_RED,
        "the failed worker's bar is not red: {seen}"
    );
    assert_eq!(seen["barShown"], true, "{seen}");
    let link = seen["barLink"].as_str().unwrap_or_default();
    assert!(
        link.starts_with(&format!(
            "https://adf.azure.com/monitoring/pipelineruns/{}?factory=",
            s.failed_run
        )),
        "the failed worker's bar does not link to its run: {seen}"
    );
    // ...and a red row under Failures with a red "Failed" badge and its ErrorLog message.
    assert_eq!(seen["badgeBackground"], FAILED_RED, "{seen}");
    assert_eq!(seen["badgeText"], "Failed", "{seen}");
    assert_ne!(seen["rowBackground"], "rgba(0, 0, 0, 0)", "{seen}");
    assert!(seen["errorText"]
        .as_str()
        .is_some_and(|t| t.contains("<the error> & \"quoted\"")));
    // The running stage shows its progress: one of two done, one running.
    assert_eq!(seen["stageState"], "running", "{seen}");
    assert!(
        seen["stageText"]
            .as_str()
            .is_some_and(|t| t.contains("running: 1 of 2 worker(s) done (50%)")),
        "{seen}"
    );
    assert_eq!(
        seen["stageSegments"],
        json!([SUCCESS_GREEN, RUNNING_BLUE]),
        "{seen}"
    );
}

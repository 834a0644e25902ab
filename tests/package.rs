//! `procfwk package` end to end: build the release executable for the Functions Linux image (glibc
//! baseline 2.28, through cargo zigbuild), unpack the zip, check its layout against the repository's
//! Function App files, check the glibc versions the executable needs with binutils' `objdump -T`,
//! check that it has no simulator in it (built without the `devtools` feature), and start it the way the
//! Functions host does (`FUNCTIONS_CUSTOMHANDLER_PORT`, probe on `/`).
//!
//! This test needs cargo-zigbuild, zig and binutils; README's test command (`bash scripts/test`) installs
//! them (`scripts/deps/10-packaging.sh`). Without them it fails.

/// The package step's ELF reader, the binary's own module (`src/cli/package/elf.rs`), compiled into
/// this test to compare it with objdump.
#[path = "../src/cli/package/elf.rs"]
#[allow(dead_code)]
mod elf;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASELINE: (u32, u32) = (2, 28);

/// Strings only the simulator (`azure-sim`) has, there whenever it is linked: its fake Entra ID token
/// endpoint's error text, its managed identity's default header and its start log line.
const SIMULATOR_MARKERS: [&str; 3] = [
    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    "procfwk-sim-identity-header",
    "procfwk simulator started",
];

/// The simulator markers found in `exe`.
fn simulator_markers_in(exe: &Path) -> Vec<&'static str> {
    let bytes = std::fs::read(exe).expect("read executable");
    SIMULATOR_MARKERS
        .into_iter()
        .filter(|marker| {
            bytes
                .windows(marker.len())
                .any(|window| window == marker.as_bytes())
        })
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_procfwk"))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `GLIBC_x.y` versions `objdump -T` lists for `exe`, newest first.
fn objdump_glibc(exe: &Path) -> Vec<(u32, u32)> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("objdump (binutils) is required for this test: {e}"));
    assert!(out.status.success(), "objdump -T: {}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut versions: Vec<(u32, u32)> = listing
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    versions.reverse();
    versions
}

/// One HTTP/1.1 request on loopback; the status code and body.
fn http(port: u16, request: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn package_zip_has_the_app_layout_an_old_glibc_executable_and_starts_like_under_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip_path = dir.path().join("procfwk-app.zip");
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["package", "--output"])
        .arg(&zip_path)
        .current_dir(repo())
        .output()
        .expect("run procfwk package");
    assert!(
        out.status.success(),
        "procfwk package failed (are cargo-zigbuild and zig installed? .ci/run installs them):\n{}",
        text(&out)
    );
    // The numbers the deployment guide quotes.
    eprintln!(
        "procfwk package took {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout)
    );

    // Layout: exactly host.json, the executable and one function.json per functions/ folder.
    let file = std::fs::File::open(&zip_path).expect("zip written");
    let zip_bytes = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    assert!(
        zip_bytes <= 10 * 1024 * 1024,
        "zip is {zip_bytes} bytes, over 10 MiB"
    );
    let mut archive = zip::ZipArchive::new(file).expect("a zip archive");
    let host_text = std::fs::read(repo().join("host.json")).expect("host.json");
    let host: Value = serde_json::from_slice(&host_text).expect("host.json is JSON");
    let description = &host["customHandler"]["description"];
    let exe_name = description["defaultExecutablePath"]
        .as_str()
        .expect("host.json names the executable");
    let mut expected = BTreeSet::from(["host.json".to_string(), exe_name.to_string()]);
    for entry in std::fs::read_dir(repo().join("functions")).expect("functions/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            expected.insert(format!("{name}/function.json"));
        }
    }
    let names: BTreeSet<String> = archive.file_names().map(String::from).collect();
    assert_eq!(names, expected);
    for name in &names {
        let mut entry = archive.by_name(name).expect("entry");
        let mode = entry.unix_mode().unwrap_or(0);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        if name == exe_name {
            assert_eq!(mode & 0o111, 0o111, "the executable has its run bits");
            assert_eq!(&bytes[..4], b"\x7fELF");
        } else {
            let source = if name == "host.json" {
                repo().join(name)
            } else {
                repo().join("functions").join(name)
            };
            assert_eq!(bytes, std::fs::read(&source).expect("source"), "{name}");
            assert_eq!(mode & 0o111, 0, "{name} is not executable");
        }
    }
    assert_eq!(description["workingDirectory"], "");

    // Unpack like zip deploy does and look at the executable.
    let app = dir.path().join("wwwroot");
    archive.extract(&app).expect("unpack");
    let exe = app.join(exe_name);
    let glibc = objdump_glibc(&exe);
    let needed = glibc.first().copied().expect("a glibc-linked executable");
    assert!(
        needed <= BASELINE,
        "the executable needs GLIBC_{}.{}, newer than {BASELINE:?}",
        needed.0,
        needed.1
    );
    let ours = elf::max_glibc(&std::fs::read(&exe).expect("read exe"))
        .expect("ELF")
        .map(|v| (v.major, v.minor));
    assert_eq!(ours, Some(needed), "our ELF reader agrees with objdump");
    eprintln!("executable needs at most GLIBC_{}.{}", needed.0, needed.1);

    // Built without the `devtools` feature: no simulator in what is deployed. The test's own procfwk
    // (default features) has every marker, so the markers do find a linked simulator.
    assert_eq!(
        simulator_markers_in(&binary()),
        SIMULATOR_MARKERS.to_vec(),
        "the devtools build links the simulator"
    );
    let found = simulator_markers_in(&exe);
    assert!(
        found.is_empty(),
        "the packaged executable contains simulator code: {found:?}"
    );

    // Start it as the Functions host does: the port in FUNCTIONS_CUSTOMHANDLER_PORT, the arguments from
    // host.json, the app root as working directory, readiness = any HTTP answer on `/`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let arguments: Vec<String> = description["arguments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let child = Command::new(&exe)
        .args(&arguments)
        .current_dir(&app)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .env_remove("PROCFWK_FUNCTION_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the packaged executable");
    let _child = Killed(child);
    let probe = Instant::now();
    let status = loop {
        match http(
            port,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ) {
            Ok((status, _)) if status > 0 => break status,
            _ if probe.elapsed() > Duration::from_secs(30) => {
                panic!("the packaged executable did not answer on port {port} within 30 s")
            }
            _ => std::thread::sleep(Duration::from_millis(25)),
        }
    };
    eprintln!(
        "answered {status} on / after {} ms",
        probe.elapsed().as_millis()
    );
    // And it serves the functions (HTTP forwarding): a bad body is a JSON 400 naming the field.
    let body = "{}";
    let (status, reply) = http(
        port,
        &format!(
            "POST /api/CheckPipelineStatus HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("handler answers");
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("InvalidRequest"), "{reply}");
}

#[test]
fn package_refuses_an_executable_that_needs_a_newer_glibc() {
    // The test build of procfwk links against this machine's glibc; one minor version below what it
    // needs must be refused, and exactly what it needs accepted. Proves the check can fail.
    let needed = objdump_glibc(&binary())
        .first()
        .copied()
        .expect("the test binary is glibc-linked");
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |glibc: String| {
        Command::new(binary())
            .args(["package", "--binary"])
            .arg(binary())
            .args(["--glibc", &glibc, "--output"])
            .arg(dir.path().join(format!("{glibc}.zip")))
            .current_dir(repo())
            .output()
            .expect("run procfwk package")
    };
    let older = run(format!("{}.{}", needed.0, needed.1 - 1));
    assert!(!older.status.success());
    assert!(text(&older).contains("needs glibc"), "{}", text(&older));
    assert!(!dir
        .path()
        .join(format!("{}.{}.zip", needed.0, needed.1 - 1))
        .exists());
    let same = run(format!("{}.{}", needed.0, needed.1));
    assert!(same.status.success(), "{}", text(&same));
}

//! `procfwk package`: build the Function App for the Linux Functions host and write its zip-deploy
//! package (`host.json`, the executable with its run bit, one folder per function with `function.json`).
//!
//! The executable is built with `cargo zigbuild` for `x86_64-unknown-linux-gnu.<glibc>`, so it links
//! against an old glibc baseline (2.28 by default) and starts on the Functions host images whatever glibc
//! the build machine has, and without the `devtools` feature, so the simulator (a fake Entra ID token
//! server among others) and the developer commands are not in what is deployed. Whatever built it, the package step reads the executable's ELF version needs
//! ([`elf`]) and refuses one that needs a newer glibc than the baseline.

pub mod elf;
pub mod layout;

pub use elf::GlibcVersion;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The Rust target the Functions Linux (Consumption / Flex Consumption) workers run.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Zip deploy packages above this are slow to cold-start on Consumption; we report against it.
pub const SIZE_TARGET_BYTES: u64 = 10 * 1024 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct PackageArgs {
    /// Where to write the zip.
    #[arg(long)]
    pub output: PathBuf,
    /// The source tree (a clone of this repository).
    #[arg(long, default_value = ".")]
    pub source: PathBuf,
    /// Package this executable instead of building one (it must still meet --glibc).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The newest glibc the executable may need (the build targets this baseline).
    #[arg(long, default_value = "2.28")]
    pub glibc: GlibcVersion,
    /// The cargo profile to build with.
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// `authLevel` of the HTTP functions: `function` (callers send a function key, the default) or
    /// `anonymous` (for an app behind App Service Authentication, where ADF calls with its managed
    /// identity and sends no key; see docs/deploy.md).
    #[arg(long, value_enum, default_value_t = layout::AuthLevel::Function)]
    pub auth_level: layout::AuthLevel,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Layout { path: PathBuf, why: String },
    #[error("could not run `{command}`: {source}. Install the packaging tools: `pip install ziglang` and `cargo install cargo-zigbuild --locked` (see docs/deploy.md)")]
    BuildTool {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); is cargo-zigbuild installed (`cargo install cargo-zigbuild --locked`) and zig available (`pip install ziglang`)?")]
    BuildFailed { command: String, status: String },
    #[error("{}: {source}", path.display())]
    Elf {
        path: PathBuf,
        source: elf::ElfError,
    },
    #[error("{} needs glibc {needed}, newer than the baseline {baseline}: the Functions host image may not have it. Build with `procfwk package` (cargo zigbuild) or pass a static executable", path.display())]
    GlibcTooNew {
        path: PathBuf,
        needed: GlibcVersion,
        baseline: GlibcVersion,
    },
    #[error("writing the zip: {0}")]
    Zip(String),
}

/// What `procfwk package` produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PackageReport {
    pub output: PathBuf,
    pub zip_bytes: u64,
    pub executable: PathBuf,
    pub executable_bytes: u64,
    /// The newest glibc version the executable needs (`None`: none, e.g. a static build).
    pub glibc_needed: Option<String>,
    /// Seconds spent building (0 with --binary).
    pub build_seconds: f64,
    pub entries: Vec<layout::Entry>,
}

/// Build (unless `--binary`), check the executable and write the zip.
pub fn package(args: &PackageArgs) -> Result<PackageReport, PackageError> {
    // Read the layout first: a broken host.json should not cost a release build.
    let files = layout::read_app(&args.source)?.with_auth_level(args.auth_level)?;
    let started = Instant::now();
    let (executable, build_seconds) = match &args.binary {
        Some(path) => (path.clone(), 0.0),
        None => {
            let path = build(&args.source, &args.profile, args.glibc)?;
            (path, started.elapsed().as_secs_f64())
        }
    };
    let bytes = std::fs::read(&executable).map_err(|source| PackageError::Io {
        path: executable.clone(),
        source,
    })?;
    let needed = elf::max_glibc(&bytes).map_err(|source| PackageError::Elf {
        path: executable.clone(),
        source,
    })?;
    if let Some(needed) = needed.filter(|n| *n > args.glibc) {
        return Err(PackageError::GlibcTooNew {
            path: executable,
            needed,
            baseline: args.glibc,
        });
    }
    let entries = layout::write_zip(&files, &bytes, &args.output)?;
    let zip_bytes = std::fs::metadata(&args.output)
        .map_err(|source| PackageError::Io {
            path: args.output.clone(),
            source,
        })?
        .len();
    Ok(PackageReport {
        output: args.output.clone(),
        zip_bytes,
        executable,
        executable_bytes: bytes.len() as u64,
        glibc_needed: needed.map(|v| v.to_string()),
        build_seconds,
        entries,
    })
}

/// `cargo zigbuild --profile <p> --locked --target x86_64-unknown-linux-gnu.<glibc> --bin procfwk
/// --no-default-features` (no `devtools`: the deployed executable has no simulator in it); returns the
/// executable's path.
fn build(source: &Path, profile: &str, glibc: GlibcVersion) -> Result<PathBuf, PackageError> {
    let manifest = source.join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = format!("{TARGET}.{glibc}");
    let mut command = Command::new(&cargo);
    command
        .args([
            "zigbuild",
            "--locked",
            "--bin",
            "procfwk",
            "--no-default-features",
            "--profile",
            profile,
        ])
        .args(["--target", &target])
        .arg("--manifest-path")
        .arg(&manifest);
    let shown = format!(
        "cargo zigbuild --locked --bin procfwk --no-default-features --profile {profile} --target {target} --manifest-path {}",
        manifest.display()
    );
    let status = command.status().map_err(|source| PackageError::BuildTool {
        command: shown.clone(),
        source,
    })?;
    if !status.success() {
        return Err(PackageError::BuildFailed {
            command: shown,
            status: status.to_string(),
        });
    }
    let profile_dir = match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    };
    Ok(target_dir(&cargo, &manifest)?
        .join(TARGET)
        .join(profile_dir)
        .join("procfwk"))
}

/// Cargo's target directory for `manifest` (honours CARGO_TARGET_DIR and .cargo/config).
fn target_dir(cargo: &std::ffi::OsStr, manifest: &Path) -> Result<PathBuf, PackageError> {
    let shown = "cargo metadata --format-version 1 --no-deps".to_string();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .map_err(|source| PackageError::BuildTool {
            command: shown.clone(),
            source,
        })?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    match json["target_directory"].as_str() {
        Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
        _ => Err(PackageError::BuildFailed {
            command: shown,
            status: out.status.to_string(),
        }),
    }
}

/// `procfwk package`: package and print what went into the zip.
pub fn run(args: &PackageArgs) -> Result<PackageReport, PackageError> {
    let report = package(args)?;
    for e in &report.entries {
        println!("  {:o}  {:>10}  {}", e.mode, e.bytes, e.path);
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "wrote {} ({:.2} MiB{}; executable {:.2} MiB, needs glibc {}{})",
        report.output.display(),
        mib(report.zip_bytes),
        if report.zip_bytes <= SIZE_TARGET_BYTES {
            ", within the 10 MiB target"
        } else {
            ", OVER the 10 MiB target"
        },
        mib(report.executable_bytes),
        report.glibc_needed.as_deref().unwrap_or("none (static)"),
        if report.build_seconds > 0.0 {
            format!(", built in {:.0} s", report.build_seconds)
        } else {
            String::new()
        }
    );
    Ok(report)
}

//! The Function App's deployment layout: `host.json` at the root, the executable it names (with its run
//! bit), and one `<Name>/function.json` per folder under `functions/` — read from a source tree and
//! written as a zip for zip deploy.

use super::PackageError;
use serde_json::Value;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Everything that goes into the zip except the executable's bytes.
#[derive(Clone, Debug)]
pub struct AppFiles {
    pub host_json: Vec<u8>,
    /// Where host.json's `customHandler.description.defaultExecutablePath` says the executable is.
    pub executable_path: String,
    /// `(function name, function.json bytes)`, sorted by name.
    pub functions: Vec<(String, Vec<u8>)>,
}

/// The `authLevel` the package gives every HTTP trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthLevel {
    /// As in `functions/` (`function`: a function key is needed).
    Function,
    /// No key: the app must sit behind App Service Authentication.
    Anonymous,
}

impl AppFiles {
    /// Set every HTTP trigger's `authLevel` (no change for [`AuthLevel::Function`]: the files are
    /// packaged as they are).
    pub fn with_auth_level(mut self, level: AuthLevel) -> Result<Self, PackageError> {
        if level == AuthLevel::Function {
            return Ok(self);
        }
        for (name, bytes) in &mut self.functions {
            let mut json: Value = serde_json::from_slice(bytes)
                .map_err(|e| invalid(Path::new(name), format!("function.json is not JSON: {e}")))?;
            let mut changed = false;
            for binding in json["bindings"].as_array_mut().into_iter().flatten() {
                if binding["type"] == "httpTrigger" {
                    binding["authLevel"] = Value::from("anonymous");
                    changed = true;
                }
            }
            if changed {
                let mut text = serde_json::to_vec_pretty(&json)
                    .map_err(|e| invalid(Path::new(name), format!("function.json: {e}")))?;
                text.push(b'\n');
                *bytes = text;
            }
        }
        Ok(self)
    }
}

/// One entry of the written zip.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub bytes: u64,
}

fn invalid(path: &Path, why: impl Into<String>) -> PackageError {
    PackageError::Layout {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PackageError> {
    std::fs::read(path).map_err(|source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read host.json and every `functions/<Name>/function.json` under `source`.
pub fn read_app(source: &Path) -> Result<AppFiles, PackageError> {
    let host_path = source.join("host.json");
    let host_json = read(&host_path)?;
    let host: Value = serde_json::from_slice(&host_json)
        .map_err(|e| invalid(&host_path, format!("is not JSON: {e}")))?;
    let description = &host["customHandler"]["description"];
    let executable_path = description["defaultExecutablePath"]
        .as_str()
        .ok_or_else(|| {
            invalid(
                &host_path,
                "has no customHandler.description.defaultExecutablePath",
            )
        })?
        .to_string();
    let relative = Path::new(&executable_path);
    if executable_path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(invalid(
            &host_path,
            format!(
                "defaultExecutablePath {executable_path:?} must be a relative path inside the app"
            ),
        ));
    }
    match description["workingDirectory"].as_str() {
        None | Some("") => {}
        Some(other) => {
            return Err(invalid(
                &host_path,
                format!("workingDirectory {other:?}: the package expects the app root (\"\")"),
            ))
        }
    }
    let functions_dir = source.join("functions");
    let listing = std::fs::read_dir(&functions_dir).map_err(|source| PackageError::Io {
        path: functions_dir.clone(),
        source,
    })?;
    let mut functions = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| PackageError::Io {
            path: functions_dir.clone(),
            source,
        })?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = dir.join("function.json");
        let bytes = read(&path)?;
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(&path, format!("is not JSON: {e}")))?;
        if json["bindings"].as_array().is_none_or(Vec::is_empty) {
            return Err(invalid(&path, "has no bindings"));
        }
        if name.eq_ignore_ascii_case(&executable_path) {
            return Err(invalid(&dir, "has the executable's name"));
        }
        functions.push((name, bytes));
    }
    if functions.is_empty() {
        return Err(invalid(&functions_dir, "holds no function folder"));
    }
    functions.sort();
    Ok(AppFiles {
        host_json,
        executable_path,
        functions,
    })
}

/// Write the zip to `output` (through a temporary file beside it, so a failed run leaves no half zip).
pub fn write_zip(
    files: &AppFiles,
    executable: &[u8],
    output: &Path,
) -> Result<Vec<Entry>, PackageError> {
    use zip::write::SimpleFileOptions;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| PackageError::Io { path, source }
    };
    let zip_error = |e: zip::result::ZipError| PackageError::Zip(e.to_string());
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let partial: PathBuf = {
        let mut name = output.as_os_str().to_owned();
        name.push(".partial");
        name.into()
    };
    let file = std::fs::File::create(&partial).map_err(io(&partial))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = |mode: u32| {
        SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(9))
            .unix_permissions(mode)
    };
    let mut entries = Vec::new();
    let mut add = |path: String, mode: u32, bytes: &[u8]| -> Result<(), PackageError> {
        zip.start_file(path.as_str(), options(mode))
            .map_err(zip_error)?;
        zip.write_all(bytes).map_err(io(&partial))?;
        entries.push(Entry {
            path,
            mode,
            bytes: bytes.len() as u64,
        });
        Ok(())
    };
    add("host.json".into(), 0o644, &files.host_json)?;
    add(files.executable_path.clone(), 0o755, executable)?;
    for (name, json) in &files.functions {
        add(format!("{name}/function.json"), 0o644, json)?;
    }
    let mut writer = zip.finish().map_err(zip_error)?;
    writer.flush().map_err(io(&partial))?;
    drop(writer);
    std::fs::rename(&partial, output).map_err(io(output))?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(host: &str, functions: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let write = |p: PathBuf, s: &str| {
            if let Some(parent) = p.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::write(p, s).unwrap_or_else(|e| panic!("write: {e}"));
        };
        write(dir.path().join("host.json"), host);
        std::fs::create_dir_all(dir.path().join("functions")).unwrap_or_default();
        for (name, json) in functions {
            write(
                dir.path()
                    .join("functions")
                    .join(name)
                    .join("function.json"),
                json,
            );
        }
        dir
    }

    const HOST: &str = r#"{"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "procfwk", "workingDirectory": "", "arguments": ["serve"]}}}"#;
    const HTTP: &str =
        r#"{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}"#;

    #[test]
    fn reads_the_folders_in_order() {
        let dir = tree(HOST, &[("B", HTTP), ("A", HTTP)]);
        let app = read_app(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(app.executable_path, "procfwk");
        let names: Vec<_> = app.functions.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn refuses_broken_layouts() {
        let escape = HOST.replace("\"procfwk\"", "\"../procfwk\"");
        assert!(read_app(tree(&escape, &[("A", HTTP)]).path()).is_err());
        let no_handler = r#"{"version": "2.0"}"#;
        assert!(read_app(tree(no_handler, &[("A", HTTP)]).path()).is_err());
        assert!(read_app(tree(HOST, &[]).path()).is_err());
        assert!(read_app(tree(HOST, &[("A", r#"{"bindings": []}"#)]).path()).is_err());
        assert!(read_app(tree(HOST, &[("A", "not json")]).path()).is_err());
    }

    #[test]
    fn writes_modes_and_paths() {
        let dir = tree(HOST, &[("A", HTTP)]);
        let app = read_app(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("out/app.zip");
        let entries = write_zip(&app, b"\x7fELF...", &out).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["host.json", "procfwk", "A/function.json"]);
        let file = std::fs::File::open(&out).unwrap_or_else(|e| panic!("{e}"));
        let mut zip = zip::ZipArchive::new(file).unwrap_or_else(|e| panic!("{e}"));
        let exe = zip.by_name("procfwk").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exe.unix_mode().map(|m| m & 0o777), Some(0o755));
    }

    /// `(name, version made by, external attributes)` of every central-directory entry, read from the
    /// zip's bytes (what unzip and Kudu look at), not through the zip crate.
    fn central_directory(zip: &[u8]) -> Vec<(String, u16, u32)> {
        let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([zip[i], zip[i + 1], zip[i + 2], zip[i + 3]]);
        let end = (0..zip.len().saturating_sub(21))
            .rev()
            .find(|&i| u32_at(i) == 0x0605_4b50)
            .unwrap_or_else(|| panic!("no end of central directory"));
        let (count, mut at) = (u16_at(end + 10) as usize, u32_at(end + 16) as usize);
        let mut out = Vec::new();
        for _ in 0..count {
            assert_eq!(u32_at(at), 0x0201_4b50, "central directory header");
            let made_by = u16_at(at + 4);
            let (name_len, extra_len, comment_len) = (
                u16_at(at + 28) as usize,
                u16_at(at + 30) as usize,
                u16_at(at + 32) as usize,
            );
            let external = u32_at(at + 38);
            let name = String::from_utf8_lossy(&zip[at + 46..at + 46 + name_len]).to_string();
            out.push((name, made_by, external));
            at += 46 + name_len + extra_len + comment_len;
        }
        out
    }

    #[test]
    fn the_zip_entries_external_attributes_carry_unix_modes() {
        let dir = tree(HOST, &[("A", HTTP)]);
        let app = read_app(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("app.zip");
        write_zip(&app, b"\x7fELF...", &out).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"));
        let entries = central_directory(&bytes);
        assert_eq!(entries.len(), 3);
        for (name, made_by, external) in entries {
            // Made by Unix (3), so extractors apply the mode in the high 16 bits.
            assert_eq!(made_by >> 8, 3, "{name}");
            let mode = external >> 16;
            assert_eq!(mode & 0o170000, 0o100000, "{name} is a regular file");
            let expected = if name == "procfwk" { 0o755 } else { 0o644 };
            assert_eq!(mode & 0o777, expected, "{name}");
        }
    }

    #[test]
    fn anonymous_auth_level_rewrites_only_http_triggers() {
        const TIMER: &str = r#"{"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * * *"}]}"#;
        let http = r#"{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function"}, {"type": "http", "direction": "out", "name": "res"}]}"#;
        let dir = tree(HOST, &[("A", http), ("T", TIMER)]);
        let app = read_app(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let same = app
            .clone()
            .with_auth_level(AuthLevel::Function)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(same.functions, app.functions);
        let open = app
            .with_auth_level(AuthLevel::Anonymous)
            .unwrap_or_else(|e| panic!("{e}"));
        let json = |i: usize| -> Value {
            serde_json::from_slice(&open.functions[i].1).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(json(0)["bindings"][0]["authLevel"], "anonymous");
        assert_eq!(json(0)["bindings"][1]["type"], "http");
        assert_eq!(open.functions[1].1, TIMER.as_bytes());
    }
}

//! Dependencies between the top-level modules of `src/` point one way: from the edge (`host`) through the
//! functions and the wiring to the adapters and the core, never back. The test reads every `src/**/*.rs`
//! (comments, string literals and `#[cfg(test)]` code left out: tests may use anything), collects the
//! `crate::<module>` paths (also inside `use crate::{…}` groups) and the `super::` paths that leave a
//! top-level module, and fails on an edge the table below does not allow and on any cycle.
//!
//! Limitation: `super::` is resolved from the file's module path; an inline (non-test) `mod` block is not
//! taken into account (none leaves its top-level module that way today).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, from the top. A module may depend on modules of *lower* layers only (not on another module
/// of its own layer). Tooling is special: it may depend on anything, and nothing outside tooling may
/// depend on it (the command line and the helpers being moved to `src/cli/` and `crates/azure-sim`).
const LAYERS: &[(&str, &[&str])] = &[
    // The binary edge: the command line and the developer tooling (`db`, `run`, `demo`, `bench`,
    // `package`), the binary's own modules under `src/cli/`; it may depend on anything and nothing
    // depends on it. (The simulator is the crate `azure-sim`.)
    ("tooling", &["cli"]),
    // The HTTP / custom-handler protocol edge.
    ("edge", &["host"]),
    // One module per Azure Function.
    ("functions", &["functions"]),
    // AppState and opening the store: the one module that knows the core and every adapter.
    ("wiring", &["startup"]),
    // The outside world (ARM, identity, Key Vault, the SQLite and SQL Server stores), and the read-only
    // dashboard page; neither knows the other.
    ("adapters and read models", &["adapters", "dashboard"]),
    // Core: VM leases and power decisions (the power port), on top of the worker lifecycle.
    ("core: leases", &["leases"]),
    ("core: lifecycle", &["orchestration"]),
    // Process-wide tuning reads the settings.
    ("core: process", &["process"]),
    // Typed settings; they check PROCFWK_METADATA_DB with the store interface.
    ("core: settings", &["config"]),
    // The store interface (ports) and the domain values, independent of each other.
    ("core: ports and values", &["store", "domain"]),
    // Leaves: no dependencies of their own (policy: the time budget and admission every invocation runs
    // under).
    (
        "base",
        &["secret", "fault", "telemetry", "pipeline_retries", "policy"],
    ),
];

const TOOLING: &str = "tooling";

/// Where a module sits: its layer's index (0 = top) and name.
fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// One reference from a file to another top-level module.
#[derive(Clone, Debug)]
struct Use {
    file: String,
    line: usize,
    path: String,
}

// ------------------------------------------------------------------------------------------------ lexing

/// The source with comments, string and character literals replaced by blanks (newlines kept, so
/// offsets still give line numbers).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                let mut j = i;
                while j < b.len() {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = src[start..]
                    .find(&close)
                    .map_or(b.len(), |p| start + p + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{..}'), not a lifetime ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src[i + 2..].find('\'').map(|p| i + 2 + p + 1)
                } else {
                    let width = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + width) == Some(&b'\'')).then_some(i + 2 + width)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The index just past the item starting at `from`: through its matching `}` or its `;`.
fn item_end(code: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    let mut i = from;
    while i < code.len() {
        match code[i] {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 && code[i] == b'}' {
                    return i + 1;
                }
            }
            b';' if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    code.len()
}

/// The code without `#[cfg(test)]` items, and the names of `#[cfg(test)] mod name;` files.
fn without_test_code(code: &str) -> (String, Vec<String>) {
    let mut out = code.as_bytes().to_vec();
    let mut test_modules = Vec::new();
    let mut search = 0;
    while let Some(p) = code[search..].find("#[cfg(test)]") {
        let start = search + p;
        let end = item_end(code.as_bytes(), start + "#[cfg(test)]".len());
        let item = code[start + "#[cfg(test)]".len()..end].trim();
        if let Some(name) = item
            .strip_prefix("mod ")
            .or_else(|| item.strip_prefix("pub mod "))
            .and_then(|rest| rest.strip_suffix(';'))
        {
            test_modules.push(name.trim().to_string());
        }
        for c in &mut out[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        search = end;
    }
    (String::from_utf8_lossy(&out).into_owned(), test_modules)
}

// ------------------------------------------------------------------------------------------------ paths

/// The first segment after each `crate::` (and each name of a `crate::{…}` group), and each path that
/// climbs out of `module` with `super::`, as (offset, top-level module, path as written).
fn references(code: &str, module: &[String]) -> Vec<(usize, String, String)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let ident_at = |i: usize| -> String {
        code[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b'$') {
            continue; // `$crate::`, `other_crate::`
        }
        let rest = at + "crate::".len();
        if b.get(rest) == Some(&b'{') {
            let end = item_end(b, rest);
            for name in top_names_of_group(&code[rest + 1..end.saturating_sub(1)]) {
                found.push((at, name.clone(), format!("crate::{{{name}…}}")));
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                found.push((at, name.clone(), format!("crate::{name}")));
            }
        }
    }
    let mut search = 0;
    while let Some(p) = code[search..].find("super::") {
        let at = search + p;
        search = at + 1;
        if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b':') {
            continue; // counted from the first `super::` of a chain
        }
        let mut climbs = 0;
        let mut i = at;
        while code[i..].starts_with("super::") {
            climbs += 1;
            i += "super::".len();
        }
        search = i;
        if climbs < module.len() {
            continue; // still inside the same top-level module
        }
        let name = ident_at(i);
        if !name.is_empty() {
            found.push((
                at,
                name.clone(),
                format!("{}{name}", "super::".repeat(climbs)),
            ));
        }
    }
    found
}

/// The first segment of each path of a `use` group: `a, b::c, d::{e, f}` → a, b, d.
fn top_names_of_group(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if at_start && (c.is_ascii_alphabetic() || c == '_') && depth == 0 => {
                let name: String = group[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
                at_start = false;
            }
            _ => {}
        }
    }
    names
}

// ------------------------------------------------------------------------------------------------ the graph

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `src/a/b.rs` and `src/a/b/mod.rs` → [a, b].
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Edges between top-level modules (`from → to → where`), test code left out.
fn graph(src: &Path) -> BTreeMap<String, BTreeMap<String, Vec<Use>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut parsed = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read");
        let (code, test_modules) = without_test_code(&code_only(&text));
        let dir = if path
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            path.parent().map(Path::to_path_buf)
        } else {
            path.parent()
                .map(|p| p.join(path.file_stem().expect("stem")))
        }
        .expect("dir");
        for name in test_modules {
            test_files.insert(dir.join(format!("{name}.rs")));
            test_files.insert(dir.join(&name).join("mod.rs"));
        }
        parsed.push((path.clone(), code));
    }
    let mut edges: BTreeMap<String, BTreeMap<String, Vec<Use>>> = BTreeMap::new();
    for (path, code) in parsed {
        let relative = path.strip_prefix(src).expect("under src");
        let module = module_path(relative);
        let Some(top) = module.first().cloned() else {
            continue;
        };
        if top == "lib" || top == "main" || test_files.contains(&path) {
            continue;
        }
        edges.entry(top.clone()).or_default();
        for (offset, to, written) in references(&code, &module) {
            if to == top {
                continue;
            }
            edges
                .entry(top.clone())
                .or_default()
                .entry(to)
                .or_default()
                .push(Use {
                    file: relative.display().to_string(),
                    line: code[..offset].matches('\n').count() + 1,
                    path: written,
                });
        }
    }
    edges
}

/// Every cycle's modules, as found by a depth-first search (one per back edge).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, Vec<Use>>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, Vec<Use>>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            found.push(cycle);
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|m| m.keys()) {
            visit(next, edges, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// What is wrong with the graph, one line each.
fn problems(edges: &BTreeMap<String, BTreeMap<String, Vec<Use>>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, tos) in edges {
        let Some((from_layer, from_name)) = layer_of(from) else {
            problems.push(format!(
                "src/{from}: a top-level module missing from the LAYERS table of tests/layering.rs"
            ));
            continue;
        };
        for (to, uses) in tos {
            let allowed = match layer_of(to) {
                None => true, // not a module of ours (`crate::` in a macro of another crate) or reported above
                Some((_, TOOLING)) => from_name == TOOLING,
                Some(_) if from_name == TOOLING => true,
                Some((to_layer, _)) => to_layer > from_layer,
            };
            if !allowed {
                let first = &uses[0];
                problems.push(format!(
                    "{from} ({from_name}) must not depend on {to} ({}): {} at src/{}:{}{}",
                    layer_of(to).map_or("?", |(_, n)| n),
                    first.path,
                    first.file,
                    first.line,
                    if uses.len() > 1 {
                        format!(" and {} more", uses.len() - 1)
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    for cycle in cycles(edges) {
        problems.push(format!("a cycle: {}", cycle.join(" → ")));
    }
    problems
}

#[test]
fn dependencies_between_top_level_modules_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    for (from, tos) in &edges {
        let list: Vec<&str> = tos.keys().map(String::as_str).collect();
        println!("{from} → {}", list.join(", "));
    }
    let problems = problems(&edges);
    assert!(
        problems.is_empty(),
        "dependencies against the layering of tests/layering.rs:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
        if is_module && name != "lib" && name != "main" && layer_of(&name).is_none() {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "no layer for {missing:?}");
}

#[test]
fn the_reader_sees_grouped_uses_super_paths_and_skips_comments_strings_and_tests() {
    let text = r##"
        use crate::{domain::Guid, store::{Row, Tx}};
        // crate::host in a comment
        /* crate::functions */
        const S: &str = "crate::cli";
        const R: &str = r#"crate::sim"#;
        fn f<'a>(c: char) -> bool { c == '"' && crate::config::X }
        #[cfg(test)]
        mod tests { use crate::runner; }
        #[cfg(test)]
        mod model_tests;
        fn g() { super::super::leases::x(); super::sibling(); }
    "##;
    let (code, test_modules) = without_test_code(&code_only(text));
    assert_eq!(test_modules, vec!["model_tests".to_string()]);
    let module = vec!["orchestration".to_string(), "worker".to_string()];
    let names: Vec<String> = references(&code, &module)
        .into_iter()
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(names, vec!["domain", "store", "config", "leases"]);
}

/// The rules themselves: an edge upwards, one into tooling and a cycle are each reported.
#[test]
fn bad_edges_and_cycles_are_reported() {
    let edge = |from: &str, to: &str| {
        (
            from.to_string(),
            BTreeMap::from([(
                to.to_string(),
                vec![Use {
                    file: format!("{from}.rs"),
                    line: 1,
                    path: format!("crate::{to}"),
                }],
            )]),
        )
    };
    let upwards = BTreeMap::from([edge("store", "adapters")]);
    assert_eq!(problems(&upwards).len(), 1, "{:?}", problems(&upwards));
    let into_tooling = BTreeMap::from([edge("leases", "cli")]);
    assert_eq!(problems(&into_tooling).len(), 1);
    let cycle = BTreeMap::from([
        edge("leases", "orchestration"),
        edge("orchestration", "leases"),
    ]);
    assert!(
        problems(&cycle).contains(&"a cycle: leases → orchestration → leases".to_string()),
        "{:?}",
        problems(&cycle)
    );
    let fine = BTreeMap::from([edge("functions", "startup"), edge("startup", "store")]);
    assert!(problems(&fine).is_empty(), "{:?}", problems(&fine));
}

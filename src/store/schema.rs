//! What `procfwk db init` / `db upgrade` does to an Azure SQL database, read from the deploy scripts as
//! written (`deploy/sql`, [`SCHEMA_SCRIPTS`]): each script's schema version (its file
//! name's number), its batches as guard + change (`IF <condition>` on the first line, the change after
//! it), and the objects it declares — tables with their columns, views, and columns added later with
//! `ALTER TABLE … ADD`. From these: the shape check that runs before anything is changed (an existing
//! object of a declared name must be usable: a table, view or synonym with every column procfwk reads),
//! the dry-run listing, and the report of what was changed.

/// The schema scripts of `deploy/sql`, in file-name order (the order they run in).
pub const SCHEMA_SCRIPTS: &[(&str, &str)] = &[
    (
        "001_procfwk_schema.sql",
        include_str!("../../deploy/sql/001_procfwk_schema.sql"),
    ),
    (
        "002_vm_power.sql",
        include_str!("../../deploy/sql/002_vm_power.sql"),
    ),
    (
        "003_claims.sql",
        include_str!("../../deploy/sql/003_claims.sql"),
    ),
    (
        "004_lease_intents.sql",
        include_str!("../../deploy/sql/004_lease_intents.sql"),
    ),
    (
        "005_run_links.sql",
        include_str!("../../deploy/sql/005_run_links.sql"),
    ),
];

/// Split a T-SQL script into batches at lines consisting only of `GO` (any case, surrounding blanks
/// allowed). Batches that hold nothing but blank lines and `--` comments are left out.
pub fn script_batches(script: &str) -> Vec<String> {
    let mut batches = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |lines: &mut Vec<&str>| {
        let has_code = lines.iter().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with("--")
        });
        if has_code {
            batches.push(lines.join("\n").trim().to_string());
        }
        lines.clear();
    };
    for line in script.lines() {
        if line.trim().eq_ignore_ascii_case("GO") {
            flush(&mut current);
        } else {
            current.push(line);
        }
    }
    flush(&mut current);
    batches
}

/// One deploy script, in the order they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub file: &'static str,
    /// The schema version the script brings the database to (`001_…` → 1).
    pub version: i64,
    pub batches: Vec<Batch>,
}

/// One batch of a script: `IF <condition>` and the change it guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The whole batch, as it is sent.
    pub text: String,
    /// The guard's condition (what follows `IF` on the first line).
    pub condition: Option<String>,
    /// A one-line description of the change (`CREATE TABLE [procfwk].[ExecutionControl]`, …).
    pub change: String,
}

/// An object the scripts create when no object of its name exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// `schema.name`, as the scripts spell it (no brackets).
    pub name: String,
    /// `None` for a view; the columns for a table.
    pub columns: Option<Vec<String>>,
}

fn unbracket(s: &str) -> String {
    s.replace(['[', ']'], "")
}

/// The first `[schema].[name]` (or `schema.name`) in `s`.
fn object_after(s: &str, keyword: &str) -> Option<String> {
    let upper = s.to_ascii_uppercase();
    let at = upper.find(keyword)? + keyword.len();
    let rest = s[at..].trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == '\'')
        .unwrap_or(rest.len());
    Some(unbracket(&rest[..end])).filter(|n| !n.is_empty())
}

fn describe_change(action: &str) -> String {
    let first = action.lines().next().unwrap_or("").trim();
    let first = first
        .strip_prefix("EXEC (N'")
        .map(|inner| inner.trim_end_matches("');"))
        .unwrap_or(first);
    let upper = first.to_ascii_uppercase();
    let cut = if upper.starts_with("CREATE VIEW") {
        upper.find(" AS")
    } else if upper.starts_with("CREATE TABLE") || upper.starts_with("INSERT INTO") {
        upper.find(" (")
    } else {
        None
    };
    let text = match cut {
        Some(i) => &first[..i],
        None => first,
    };
    let text = text.trim_end_matches(';').trim();
    if upper.starts_with("INSERT INTO") && upper.contains("SCHEMAVERSION") {
        return format!("{text} (record the schema version)");
    }
    text.to_string()
}

impl Batch {
    /// The table or view this batch creates, if it creates one (`procfwk.ServicePrincipals`).
    pub fn creates(&self) -> Option<String> {
        Self::creates_in(&self.change)
    }

    /// The table or view a change description creates.
    pub fn creates_in(change: &str) -> Option<String> {
        ["CREATE TABLE ", "CREATE VIEW "]
            .iter()
            .find_map(|k| change.strip_prefix(k))
            .map(unbracket)
    }

    fn parse(text: String) -> Self {
        let mut lines = text.lines().filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with("--")
        });
        let first = lines.next().unwrap_or("").trim().to_string();
        let (condition, action) = match first.get(..3) {
            Some(p) if p.eq_ignore_ascii_case("IF ") => (
                Some(first[3..].trim().to_string()),
                lines.collect::<Vec<_>>().join("\n"),
            ),
            _ => (None, text.clone()),
        };
        Self {
            change: describe_change(&action),
            condition,
            text,
        }
    }
}

impl Script {
    pub fn parse(file: &'static str, text: &str) -> Self {
        let version = file
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Self {
            file,
            version,
            batches: script_batches(text).into_iter().map(Batch::parse).collect(),
        }
    }

    /// Tables (with columns) and views the script creates.
    pub fn declared(&self) -> Vec<Declared> {
        let mut out: Vec<Declared> = Vec::new();
        for batch in &self.batches {
            let code: Vec<&str> = batch
                .text
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            let text = &code.join("\n");
            let upper = text.to_ascii_uppercase();
            if let Some(name) = object_after(text, "CREATE TABLE ") {
                let body_start = text.find('(').map(|i| i + 1).unwrap_or(text.len());
                let columns = text[body_start..]
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with('['))
                    .filter_map(|l| l.get(1..).and_then(|r| r.split(']').next()))
                    .map(str::to_string)
                    .collect();
                // A table wins over a view of the same name (ServicePrincipals: a view over
                // dbo.ServicePrincipals when that exists, else this table).
                out.retain(|d| !d.name.eq_ignore_ascii_case(&name));
                out.push(Declared {
                    name,
                    columns: Some(columns),
                });
            } else if upper.contains("CREATE VIEW ") {
                if let Some(name) = object_after(text, "CREATE VIEW ") {
                    if !out.iter().any(|d| d.name.eq_ignore_ascii_case(&name)) {
                        out.push(Declared {
                            name,
                            columns: None,
                        });
                    }
                }
            }
        }
        out
    }

    /// `(table, column)` pairs the script adds to existing tables.
    pub fn added_columns(&self) -> Vec<(String, String)> {
        self.batches
            .iter()
            .filter_map(|b| {
                let table = object_after(&b.text, "ALTER TABLE ")?;
                let column = object_after(&b.text, " ADD ")?;
                Some((table, column))
            })
            .collect()
    }
}

/// The deploy scripts, parsed.
pub fn scripts() -> Vec<Script> {
    SCHEMA_SCRIPTS
        .iter()
        .map(|(file, text)| Script::parse(file, text))
        .collect()
}

/// What `db init` / `db upgrade` found and changed (or, in a dry run, would change).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// The schema version recorded before (`None`: none, e.g. a database procfwk master made).
    pub found_version: Option<i64>,
    /// The version after (in a dry run: the version it would reach).
    pub version: i64,
    /// `(script, change)` for every change made, or to be made in a dry run.
    pub changes: Vec<(String, String)>,
    pub dry_run: bool,
}

impl SchemaReport {
    /// The lines `procfwk db init` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let found = match self.found_version {
            Some(v) => format!("schema version {v}"),
            None => "no schema version recorded".to_string(),
        };
        if self.changes.is_empty() {
            out.push(format!("{found}: nothing to change"));
            return out;
        }
        out.push(if self.dry_run {
            format!(
                "{found}; db upgrade would make {} change(s), reaching version {} (dry run: nothing changed):",
                self.changes.len(),
                self.version
            )
        } else {
            format!(
                "{found}; made {} change(s), now at version {}:",
                self.changes.len(),
                self.version
            )
        });
        for (script, change) in &self.changes {
            out.push(format!("  {script}: {change}"));
        }
        out
    }
}

/// SQL Server's object type codes (`sys.objects.type`) in words.
pub fn type_name(code: &str) -> &'static str {
    match code.trim() {
        "U" => "table",
        "V" => "view",
        "SN" => "synonym",
        "P" | "PC" => "stored procedure",
        "FN" | "IF" | "TF" | "FS" | "FT" => "function",
        "TR" => "trigger",
        "SO" => "sequence",
        "TT" => "table type",
        _ => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_on_go_lines() {
        let batches = script_batches("-- header\nCREATE TABLE a (x INT);\ngo\n\n  GO  \nSELECT 'GO';\nGO\n-- only a comment\nGO");
        assert_eq!(
            batches,
            vec![
                "-- header\nCREATE TABLE a (x INT);".to_string(),
                "SELECT 'GO';".to_string()
            ]
        );
        let schema = script_batches(SCHEMA_SCRIPTS[0].1);
        assert!(schema.len() > 20);
        assert!(schema
            .iter()
            .all(|b| !b.lines().any(|l| l.trim().eq_ignore_ascii_case("go"))));
    }

    #[test]
    fn every_deploy_script_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".sql"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let embedded: Vec<String> = SCHEMA_SCRIPTS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            embedded, files,
            "add new deploy/sql scripts to SCHEMA_SCRIPTS"
        );
    }

    #[test]
    fn every_batch_is_a_guard_and_a_change_and_every_script_records_its_version() {
        let scripts = scripts();
        assert_eq!(
            scripts.iter().map(|s| s.version).collect::<Vec<_>>(),
            (1..=super::super::SCHEMA_VERSION).collect::<Vec<_>>(),
            "one script per schema version, in order"
        );
        for script in &scripts {
            for batch in &script.batches {
                assert!(
                    batch.condition.is_some(),
                    "{}: a batch without an IF guard on its first line: {}",
                    script.file,
                    batch.text
                );
                assert!(!batch.change.is_empty() && !batch.change.starts_with("IF"));
            }
            let last = script
                .batches
                .last()
                .map(|b| b.text.clone())
                .unwrap_or_default();
            assert!(
                last.contains("[SchemaVersion]")
                    && last.contains(&format!("VALUES ({},", script.version)),
                "{} ends by recording version {}",
                script.file,
                script.version
            );
        }
    }

    #[test]
    fn declared_objects_tables_columns_views_and_additions() {
        let scripts = scripts();
        let first = scripts[0].declared();
        let current = first
            .iter()
            .find(|d| d.name == "procfwk.CurrentExecution")
            .and_then(|d| d.columns.clone())
            .unwrap_or_default();
        assert_eq!(
            current.first().map(String::as_str),
            Some("LocalExecutionId")
        );
        assert!(current.iter().any(|c| c == "PipelineParamsUsed"));
        assert!(!current.iter().any(|c| c.starts_with("PK_")), "{current:?}");
        let view = first.iter().find(|d| d.name == "procfwk.LastExecution");
        assert_eq!(view.map(|d| d.columns.is_none()), Some(true));
        assert!(
            first
                .iter()
                .any(|d| d.name == "procfwk.ServicePrincipals" && d.columns.is_some()),
            "{first:?}"
        );
        assert_eq!(
            scripts[2].added_columns(),
            [
                (
                    "procfwk.CurrentExecution".to_string(),
                    "ClaimToken".to_string()
                ),
                (
                    "procfwk.CurrentExecution".to_string(),
                    "ClaimedDateTime".to_string()
                )
            ]
        );
        let changes: Vec<&str> = scripts[0]
            .batches
            .iter()
            .map(|b| b.change.as_str())
            .collect();
        assert!(
            changes.contains(&"CREATE VIEW [procfwk].[LastExecution]"),
            "{changes:?}"
        );
        assert!(
            changes.contains(&"CREATE TABLE [procfwk].[ExecutionControl]"),
            "{changes:?}"
        );
    }
}

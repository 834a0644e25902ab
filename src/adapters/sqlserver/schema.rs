//! `db init` / `db upgrade` on SQL Server: the recorded schema version, the shape check of what exists
//! already, and the deploy scripts' batches run one by one where their guard holds (no enclosing
//! transaction; the scripts are idempotent). What the scripts declare is read by
//! [`crate::store::schema`].

use super::connection::SqlConnection;
use super::values::to_row;
use crate::store::schema::{self, Batch, SchemaReport, Script};
use crate::store::{StoreError, SCHEMA_VERSION};

/// Create or upgrade the schema on `conn` (`dry_run`: only find out what that would change);
/// `description` names the store in logs.
pub(super) async fn upgrade(
    conn: &mut SqlConnection,
    dry_run: bool,
    description: &str,
) -> Result<SchemaReport, StoreError> {
    let found = recorded_version(conn).await?;
    let mut report = SchemaReport {
        found_version: found,
        version: found.unwrap_or(0).max(SCHEMA_VERSION),
        changes: Vec::new(),
        dry_run,
    };
    if let Some(v) = found {
        if v > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
    }
    // Scripts whose version is recorded already are done; the rest run in order.
    let pending: Vec<Script> = schema::scripts()
        .into_iter()
        .filter(|s| s.version > found.unwrap_or(0))
        .collect();
    if pending.is_empty() {
        return Ok(report);
    }
    // Before anything is changed: every object the scripts would leave alone must be usable.
    check_shapes(conn, &pending).await?;
    for script in &pending {
        apply_script(conn, script, &mut report).await?;
        if !dry_run {
            tracing::info!(store = %description, script = script.file, "metadata store schema script applied");
        }
    }
    Ok(report)
}

/// Run (in a dry run: only list) each batch of `script` whose guard holds, recording it in `report`.
async fn apply_script(
    conn: &mut SqlConnection,
    script: &Script,
    report: &mut SchemaReport,
) -> Result<(), StoreError> {
    for (index, batch) in script.batches.iter().enumerate() {
        let context = |e: StoreError| match e {
            StoreError::Database { number, message } => StoreError::Database {
                number,
                message: format!("{}, batch {}: {message}", script.file, index + 1),
            },
            other => other,
        };
        // A dry run changes nothing, so a later guard still sees a name an earlier change
        // would create (ServicePrincipals: the view over dbo's table, else the table): a name
        // is created once.
        let created_before = batch.creates().is_some_and(|name| {
            report.changes.iter().any(|(_, c)| {
                schema::Batch::creates_in(c).is_some_and(|n| n.eq_ignore_ascii_case(&name))
            })
        });
        if !created_before && guard_holds(conn, batch).await.map_err(context)? {
            report
                .changes
                .push((script.file.to_string(), batch.change.clone()));
            if !report.dry_run {
                conn.batch(&batch.text).await.map_err(context)?;
            }
        }
    }
    Ok(())
}

/// The newest schema version recorded in `procfwk.SchemaVersion` (`None`: no such table, or no row).
async fn recorded_version(conn: &mut SqlConnection) -> Result<Option<i64>, StoreError> {
    let exists = conn
        .query(
            "SELECT CASE WHEN OBJECT_ID(N'procfwk.SchemaVersion') IS NULL THEN 0 ELSE 1 END AS Present",
            &[],
        )
        .await?;
    if !first_flag(&exists, "Present")? {
        return Ok(None);
    }
    let rows = conn
        .query(
            "SELECT MAX(Version) AS Version FROM procfwk.SchemaVersion",
            &[],
        )
        .await?;
    match rows.first().map(to_row).transpose()? {
        Some(row) => row.opt_i64("Version"),
        None => Ok(None),
    }
}

/// The first row's integer `column` is not 0.
fn first_flag(rows: &[tiberius::Row], column: &str) -> Result<bool, StoreError> {
    Ok(match rows.first().map(to_row).transpose()? {
        Some(row) => row.i64(column)? != 0,
        None => false,
    })
}

/// Whether a batch's guard holds now. A guard that names an object an earlier change of this run
/// creates (the SchemaVersion row of a database that has no SchemaVersion table yet) holds.
async fn guard_holds(conn: &mut SqlConnection, batch: &Batch) -> Result<bool, StoreError> {
    let Some(condition) = &batch.condition else {
        return Ok(true);
    };
    let sql = format!("SELECT CASE WHEN {condition} THEN 1 ELSE 0 END AS WouldRun");
    match conn.query(&sql, &[]).await {
        Ok(rows) => first_flag(&rows, "WouldRun"),
        Err(e) if e.is_missing_object() => Ok(true),
        Err(e) => Err(e),
    }
}

/// `sys.objects.type` of the object `name` resolves to (`None`: no object of that name).
async fn object_type(conn: &mut SqlConnection, name: &str) -> Result<Option<String>, StoreError> {
    let rows = conn
        .query(
            // (OBJECT_ID in a sub-select: evaluated once, not once per catalogue row, on any engine.)
            "SELECT type AS ObjectType FROM sys.objects WHERE object_id = (SELECT OBJECT_ID(@P1))",
            &[name.into()],
        )
        .await?;
    match rows.first().map(to_row).transpose()? {
        Some(row) => Ok(row.opt_text("ObjectType")?.map(|t| t.trim().to_string())),
        None => Ok(None),
    }
}

/// The object the synonym `name` stands for (empty when the catalogue names none).
async fn synonym_base(conn: &mut SqlConnection, name: &str) -> Result<String, StoreError> {
    let rows = conn
        .query(
            "SELECT base_object_name AS BaseObject FROM sys.synonyms WHERE object_id = (SELECT OBJECT_ID(@P1))",
            &[name.into()],
        )
        .await?;
    Ok(match rows.first().map(to_row).transpose()? {
        Some(row) => row.opt_text("BaseObject")?,
        None => None,
    }
    .unwrap_or_default())
}

/// Every declared object that exists already (and so is left as it is) must be usable: a table, view
/// or synonym (of a table or view), a table with every column the scripts declare for it except those
/// they add. The first that is not is refused by name, before anything is changed.
async fn check_shapes(conn: &mut SqlConnection, pending: &[Script]) -> Result<(), StoreError> {
    let added: Vec<(String, String)> = pending.iter().flat_map(Script::added_columns).collect();
    for declared in pending.iter().flat_map(Script::declared) {
        let mut target = declared.name.clone();
        let mut kind = object_type(conn, &target).await?;
        if kind.is_none()
            && declared
                .name
                .eq_ignore_ascii_case("procfwk.ServicePrincipals")
        {
            // 001 makes procfwk.ServicePrincipals a view over procfwk's own dbo.ServicePrincipals.
            target = "dbo.ServicePrincipals".into();
            kind = object_type(conn, &target).await?;
        }
        let Some(mut code) = kind else { continue };
        let wanted = if declared.columns.is_some() {
            "a table"
        } else {
            "a view"
        };
        let mut described = format!("{target} ({})", schema::type_name(&code));
        if code == "SN" {
            let base = synonym_base(conn, &target).await?;
            code = object_type(conn, &base).await?.unwrap_or_default();
            described = format!(
                "{target} (a synonym of {base}, {})",
                if code.is_empty() {
                    "which does not exist"
                } else {
                    schema::type_name(&code)
                }
            );
            target = base;
        }
        if !matches!(code.as_str(), "U" | "V") {
            return Err(StoreError::UnusableObject {
                object: described,
                problem: format!(
                    "procfwk needs {wanted} (or a synonym of one) of this name; rename or drop that object"
                ),
            });
        }
        for column in declared.columns.iter().flatten() {
            if added.iter().any(|(t, c)| {
                t.eq_ignore_ascii_case(&declared.name) && c.eq_ignore_ascii_case(column)
            }) {
                continue;
            }
            let rows = conn
                .query(
                    "SELECT CASE WHEN COL_LENGTH(@P1, @P2) IS NULL THEN 0 ELSE 1 END AS Present",
                    &[target.as_str().into(), column.as_str().into()],
                )
                .await?;
            if !first_flag(&rows, "Present")? {
                return Err(StoreError::UnusableObject {
                    object: described,
                    problem: format!(
                        "it has no column {column}, which procfwk reads and db init does not add \
                         (procfwk master 1.8.4+ has it); add the column or upgrade procfwk's database first"
                    ),
                });
            }
        }
    }
    Ok(())
}

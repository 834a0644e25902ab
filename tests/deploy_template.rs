//! The ARM template under `deploy/arm/`: its structure (every `parameters('…')` / `variables('…')` it
//! uses is declared and every parameter is used, every resource has type, apiVersion and name, every
//! `dependsOn` names a resource of the template), what it must deploy (Linux Consumption Function App
//! with `FUNCTIONS_WORKER_RUNTIME=custom`, storage, Application Insights, managed identity, Azure SQL
//! with Entra-only authentication, the role assignments, the function URL output), and that its app
//! settings are exactly docs/configuration.md's settings with their documented defaults.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn template() -> Value {
    let path = repo().join("deploy/arm/procfwk.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("template")).expect("JSON")
}

fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Names used as `<function>('name')` in ARM expressions.
fn names_used(text: &str, function: &str) -> BTreeSet<String> {
    let needle = format!("{function}('");
    text.match_indices(&needle)
        .filter(|(at, _)| {
            // `parameters(` but not e.g. `deploymentParameters(`.
            !text[..*at]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        })
        .filter_map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            rest.find('\'').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// Split an argument list at top-level commas (outside quotes and parentheses).
fn split_args(args: &str) -> Vec<String> {
    let (mut out, mut current, mut depth, mut quoted) = (Vec::new(), String::new(), 0, false);
    for c in args.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// `(type, name segments)` of a resource, as `resourceId(type, segment, …)` would name it.
fn resource_key(resource: &Value) -> (String, Vec<String>) {
    let kind = resource["type"].as_str().unwrap_or_default().to_string();
    let name = resource["name"].as_str().unwrap_or_default();
    let segments = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(expr) => match expr
            .strip_prefix("format(")
            .and_then(|e| e.strip_suffix(')'))
        {
            Some(inner) => {
                let args = split_args(inner);
                let pattern = args[0].trim_matches('\'');
                pattern
                    .split('/')
                    .map(|part| {
                        match part
                            .strip_prefix('{')
                            .and_then(|p| p.strip_suffix('}'))
                            .and_then(|i| i.parse::<usize>().ok())
                        {
                            Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
                            None => format!("'{part}'"),
                        }
                    })
                    .collect()
            }
            None => vec![expr.to_string()],
        },
        None => name.split('/').map(|p| format!("'{p}'")).collect(),
    };
    (kind, segments)
}

/// Every problem with the template's structure.
fn problems(t: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in [
        "$schema",
        "contentVersion",
        "parameters",
        "resources",
        "outputs",
    ] {
        if t.get(key).is_none() {
            out.push(format!("no {key}"));
        }
    }
    let mut all = Vec::new();
    strings(t, &mut all);
    let text = all.join("\n");
    let declared: BTreeSet<String> = t["parameters"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let used = names_used(&text, "parameters");
    for p in used.difference(&declared) {
        out.push(format!("parameters('{p}') is not declared"));
    }
    for p in declared.difference(&used) {
        out.push(format!("parameter {p} is never used"));
    }
    let variables: BTreeSet<String> = t["variables"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for v in names_used(&text, "variables").difference(&variables) {
        out.push(format!("variables('{v}') is not declared"));
    }
    let resources = t["resources"].as_array().cloned().unwrap_or_default();
    let keys: BTreeSet<(String, Vec<String>)> = resources.iter().map(resource_key).collect();
    for (i, r) in resources.iter().enumerate() {
        for field in ["type", "apiVersion", "name"] {
            if r[field].as_str().is_none_or(|s| s.is_empty()) {
                out.push(format!("resource {i} has no {field}"));
            }
        }
        for d in r["dependsOn"].as_array().into_iter().flatten() {
            let d = d.as_str().unwrap_or_default();
            let target = d
                .strip_prefix("[resourceId(")
                .and_then(|x| x.strip_suffix(")]"))
                .map(split_args)
                .and_then(|args| {
                    let (kind, segments) = args.split_first()?;
                    Some((kind.trim_matches('\'').to_string(), segments.to_vec()))
                });
            match target {
                Some(key) if keys.contains(&key) => {}
                _ => out.push(format!(
                    "{} depends on {d}, which the template does not deploy",
                    r["name"]
                )),
            }
        }
    }
    out
}

#[test]
fn template_structure_is_sound() {
    assert_eq!(problems(&template()), Vec::<String>::new());
}

#[test]
fn broken_templates_are_detected() {
    let mut t = template();
    t["resources"][0]["sku"]["name"] = "[parameters('storageSku')]".into();
    assert!(problems(&t).iter().any(|p| p.contains("storageSku")));
    let mut t = template();
    if let Some(o) = t["resources"][0].as_object_mut() {
        o.remove("apiVersion");
    }
    assert!(problems(&t).iter().any(|p| p.contains("no apiVersion")));
    let mut t = template();
    t["resources"][2]["dependsOn"][0] =
        "[resourceId('Microsoft.OperationalInsights/workspaces', 'elsewhere')]".into();
    assert!(problems(&t).iter().any(|p| p.contains("does not deploy")));
    let mut t = template();
    t["parameters"]["unused"] = serde_json::json!({"type": "string"});
    assert!(problems(&t).iter().any(|p| p.contains("never used")));
    let mut t = template();
    t["resources"][4]["location"] = "[variables('nowhere')]".into();
    assert!(problems(&t).iter().any(|p| p.contains("nowhere")));
}

fn resource<'a>(t: &'a Value, kind: &str) -> Vec<&'a Value> {
    t["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == kind)
        .collect()
}

#[test]
fn template_deploys_what_the_function_app_needs() {
    let t = template();
    let site = resource(&t, "Microsoft.Web/sites");
    assert_eq!(site.len(), 1);
    assert_eq!(site[0]["kind"], "functionapp,linux");
    assert_eq!(site[0]["identity"]["type"], "SystemAssigned");
    let plan = resource(&t, "Microsoft.Web/serverfarms");
    assert_eq!(plan[0]["sku"]["tier"], "Dynamic", "Consumption plan");
    assert_eq!(plan[0]["properties"]["reserved"], true, "Linux");
    let settings = resource(&t, "Microsoft.Web/sites/config")[0]["properties"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for needle in [
        "'FUNCTIONS_WORKER_RUNTIME', 'custom'",
        "'FUNCTIONS_EXTENSION_VERSION', '~4'",
        "'AzureWebJobsStorage'",
        "'APPLICATIONINSIGHTS_CONNECTION_STRING'",
        "'PROCFWK_METADATA_DB'",
        "Authentication=Active Directory Managed Identity",
    ] {
        assert!(settings.contains(needle), "app settings lack {needle}");
    }
    assert_eq!(resource(&t, "Microsoft.Storage/storageAccounts").len(), 1);
    assert_eq!(resource(&t, "Microsoft.Insights/components").len(), 1);
    let sql = resource(&t, "Microsoft.Sql/servers");
    let admin = &sql[0]["properties"]["administrators"];
    assert_eq!(admin["administratorType"], "ActiveDirectory");
    assert_eq!(admin["azureADOnlyAuthentication"], true);
    assert_eq!(resource(&t, "Microsoft.Sql/servers/databases").len(), 1);
    let roles: Vec<String> = resource(&t, "Microsoft.Authorization/roleAssignments")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["scope"].as_str().unwrap_or_default(),
                r["properties"]["roleDefinitionId"]
            )
        })
        .collect();
    for (scope, role) in [
        (
            "Microsoft.DataFactory/factories",
            "roleDataFactoryContributor",
        ),
        ("Microsoft.Compute/virtualMachines", "vmPowerRoleName"),
        ("Microsoft.KeyVault/vaults", "roleKeyVaultSecretsUser"),
    ] {
        assert!(
            roles.iter().any(|r| r.contains(scope) && r.contains(role)),
            "{scope}: {roles:?}"
        );
    }
    let vm_role = resource(&t, "Microsoft.Authorization/roleDefinitions");
    let actions = vm_role[0]["properties"]["permissions"][0]["actions"].to_string();
    for action in ["start/action", "deallocate/action", "instanceView/read"] {
        assert!(actions.contains(action), "{actions}");
    }
    let url = t["outputs"]["functionAppUrl"]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(url.contains("defaultHostName") && url.contains("https://"));
}

/// docs/configuration.md's table: setting → its default when the default is a plain value.
fn documented_settings() -> BTreeMap<String, Option<String>> {
    let text = std::fs::read_to_string(repo().join("docs/configuration.md")).expect("docs");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let default = cells
            .get(2)
            .and_then(|d| d.strip_prefix('`'))
            .and_then(|d| d.strip_suffix('`'))
            .map(String::from);
        for name in cells[1].split(',') {
            let name = name.trim().trim_matches('`');
            if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !name.is_empty() {
                out.insert(name.to_string(), default.clone());
            }
        }
    }
    out
}

#[test]
fn template_sets_every_documented_setting_to_its_default() {
    let t = template();
    let defaults = t["parameters"]["appSettings"]["defaultValue"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let settings_expr = resource(&t, "Microsoft.Web/sites/config")[0]["properties"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Set by the platform, or meaningful only without the Functions host; MALLOC_ARENA_MAX and
    // MALLOC_MMAP_THRESHOLD_ are glibc's, and as app settings they would reach the Functions host's own
    // process too (procfwk applies its defaults to itself).
    let not_ours = [
        "FUNCTIONS_CUSTOMHANDLER_PORT",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "PROCFWK_FUNCTION_KEY",
        "MALLOC_ARENA_MAX",
        "MALLOC_MMAP_THRESHOLD_",
    ];
    let documented = documented_settings();
    assert!(documented.len() >= 20, "{documented:?}");
    for (name, default) in &documented {
        if not_ours.contains(&name.as_str()) {
            assert!(!defaults.contains_key(name), "{name} must not be set");
            continue;
        }
        if name == "PROCFWK_METADATA_DB" {
            assert!(settings_expr.contains("'PROCFWK_METADATA_DB'"));
            continue;
        }
        let value = defaults
            .get(name)
            .unwrap_or_else(|| panic!("the template does not set {name}"));
        match default {
            Some(d) => assert_eq!(value, d, "{name}"),
            None => assert_eq!(value, "", "{name} has no default: empty means unset"),
        }
    }
    for name in defaults.keys() {
        assert!(
            documented.contains_key(name),
            "{name} is not in docs/configuration.md"
        );
    }
}

//! The ARM template under `deploy/arm/`: its structure (every `parameters('…')` / `variables('…')` it
//! uses is declared and every parameter is used, every resource has type, apiVersion and name, every
//! `dependsOn` names a resource of the template), what it must deploy (Linux Consumption Function App
//! with `FUNCTIONS_WORKER_RUNTIME=custom`, storage, Application Insights, managed identity, Azure SQL
//! with Entra-only authentication, the role assignments, the function URL output), and that its app
//! settings are exactly docs/configuration.md's settings with their documented defaults.
//!
//! Both hosting plans are rendered (a small evaluator of ARM expressions; `reference()`, `listKeys()` and
//! the like stay as their text) and checked: Flex Consumption (the default) has `functionAppConfig` with a
//! custom runtime, its deployment container and identity-based storage, and none of the settings Flex
//! refuses or ignores; Linux Consumption has the Azure Files content settings and `linuxFxVersion`.

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
    t["resources"][3]["dependsOn"][0] =
        "[resourceId('Microsoft.OperationalInsights/workspaces', 'elsewhere')]".into();
    assert!(problems(&t).iter().any(|p| p.contains("does not deploy")));
    let mut t = template();
    t["parameters"]["unused"] = serde_json::json!({"type": "string"});
    assert!(problems(&t).iter().any(|p| p.contains("never used")));
    let mut t = template();
    t["resources"][5]["location"] = "[variables('nowhere')]".into();
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
    assert_eq!(
        t["parameters"]["hostingPlan"]["defaultValue"],
        "FlexConsumption"
    );
    for plan in ["FlexConsumption", "Consumption"] {
        let r = rendered(&t, &[("hostingPlan", plan.into())]).expect("renders");
        let farm = deployed(&r, "Microsoft.Web/serverfarms");
        assert_eq!(farm[0]["properties"]["reserved"], true, "{plan}: Linux");
        let settings = &deployed(&r, "Microsoft.Web/sites/config")[0]["properties"];
        for needle in [
            "AzureWebJobsStorage__accountName",
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            "PROCFWK_METADATA_DB",
        ] {
            assert!(
                settings.get(needle).is_some(),
                "{plan}: app settings lack {needle}"
            );
        }
        assert!(
            settings["PROCFWK_METADATA_DB"]
                .as_str()
                .is_some_and(|s| s.contains("Authentication=Active Directory Managed Identity")),
            "{plan}"
        );
        assert!(
            settings.get("AzureWebJobsStorage").is_none(),
            "{plan}: host storage through the identity, not a key"
        );
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
        ("Microsoft.Storage/storageAccounts", "storageRoles"),
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

// ---- a small evaluator of ARM template expressions, to render the template for one set of parameters ----

/// What the evaluator yields: JSON, or a value only Azure knows at deployment time (`reference()`,
/// `listKeys()`, …), kept as its text so tests can still see what it reads.
#[derive(Clone, Debug, PartialEq)]
enum Arm {
    Json(Value),
    Runtime(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(i64),
    Punct(char),
}

fn tokens(expr: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated string in {expr}")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while chars.get(i).is_some_and(char::is_ascii_digit) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Token::Num(
                text.parse().map_err(|e| format!("{text}: {e}"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if "(),.[]".contains(c) {
            out.push(Token::Punct(c));
            i += 1;
        } else {
            return Err(format!("unexpected {c:?} in {expr}"));
        }
    }
    Ok(out)
}

struct Render<'a> {
    template: &'a Value,
    parameters: BTreeMap<String, Value>,
}

impl Render<'_> {
    /// Evaluate a template string: `[expr]` is an expression, anything else a literal.
    fn string(&self, s: &str) -> Result<Arm, String> {
        match s.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            Some(expr) if !expr.starts_with('[') => {
                let toks = tokens(expr)?;
                let mut at = 0;
                let v = self.expr(&toks, &mut at)?;
                if at != toks.len() {
                    return Err(format!("trailing tokens in {expr}"));
                }
                Ok(v)
            }
            _ => Ok(Arm::Json(Value::String(s.to_string()))),
        }
    }

    /// Evaluate every string of a JSON value; a runtime value inside becomes its `<…>` text.
    fn value(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => match self.string(s)? {
                Arm::Json(j) => j,
                Arm::Runtime(r) => Value::String(format!("<{r}>")),
            },
            Value::Array(a) => {
                Value::Array(a.iter().map(|x| self.value(x)).collect::<Result<_, _>>()?)
            }
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.value(x)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn expr(&self, toks: &[Token], at: &mut usize) -> Result<Arm, String> {
        let mut value = match toks.get(*at).cloned() {
            Some(Token::Str(s)) => {
                *at += 1;
                Arm::Json(Value::String(s))
            }
            Some(Token::Num(n)) => {
                *at += 1;
                Arm::Json(Value::from(n))
            }
            Some(Token::Ident(name)) => {
                *at += 1;
                if toks.get(*at) != Some(&Token::Punct('(')) {
                    return Err(format!("{name} is not called"));
                }
                *at += 1;
                let mut args = Vec::new();
                if toks.get(*at) == Some(&Token::Punct(')')) {
                    *at += 1;
                } else {
                    loop {
                        // Both branches of an `if` are parsed; an error in the one not taken is ignored.
                        args.push(self.expr(toks, at));
                        match toks.get(*at) {
                            Some(Token::Punct(',')) => *at += 1,
                            Some(Token::Punct(')')) => {
                                *at += 1;
                                break;
                            }
                            other => {
                                return Err(format!("expected , or ) in {name}(…), got {other:?}"))
                            }
                        }
                    }
                }
                self.call(&name, args)?
            }
            other => return Err(format!("unexpected {other:?}")),
        };
        loop {
            match toks.get(*at) {
                Some(Token::Punct('.')) => {
                    let Some(Token::Ident(prop)) = toks.get(*at + 1).cloned() else {
                        return Err("a property name after .".into());
                    };
                    *at += 2;
                    value = match value {
                        Arm::Json(v) => Arm::Json(
                            v.get(&prop)
                                .cloned()
                                .ok_or_else(|| format!("no property {prop} in {v}"))?,
                        ),
                        Arm::Runtime(r) => Arm::Runtime(format!("{r}.{prop}")),
                    };
                }
                Some(Token::Punct('[')) => {
                    *at += 1;
                    let index = self.expr(toks, at)?;
                    if toks.get(*at) != Some(&Token::Punct(']')) {
                        return Err("expected ]".into());
                    }
                    *at += 1;
                    value = match (value, index) {
                        (Arm::Json(v), Arm::Json(Value::String(k))) => Arm::Json(
                            v.get(&k)
                                .cloned()
                                .ok_or_else(|| format!("no key {k} in {v}"))?,
                        ),
                        (Arm::Json(v), Arm::Json(Value::Number(n))) => Arm::Json(
                            n.as_u64()
                                .and_then(|i| v.get(i as usize).cloned())
                                .ok_or_else(|| format!("no index {n} in {v}"))?,
                        ),
                        (Arm::Runtime(r), Arm::Json(i)) => Arm::Runtime(format!("{r}[{i}]")),
                        // `copyIndex()` and the like: known per copy at deployment time.
                        (v, i) => Arm::Runtime(format!("{v:?}[{i:?}]")),
                    };
                }
                _ => return Ok(value),
            }
        }
    }

    fn call(&self, name: &str, args: Vec<Result<Arm, String>>) -> Result<Arm, String> {
        let json = |a: &Result<Arm, String>| -> Result<Value, String> {
            match a {
                Ok(Arm::Json(v)) => Ok(v.clone()),
                Ok(Arm::Runtime(r)) => Ok(Value::String(format!("<{r}>"))),
                Err(e) => Err(e.clone()),
            }
        };
        let text = |a: &Result<Arm, String>| -> Result<String, String> {
            Ok(match json(a)? {
                Value::String(s) => s,
                other => other.to_string(),
            })
        };
        let all = |args: &[Result<Arm, String>]| -> Result<Vec<Value>, String> {
            args.iter().map(json).collect()
        };
        Ok(Arm::Json(match name {
            "parameters" => {
                let p = text(&args[0])?;
                match self.parameters.get(&p) {
                    Some(v) => v.clone(),
                    None => {
                        let default = self.template["parameters"][&p]
                            .get("defaultValue")
                            .ok_or_else(|| format!("parameter {p} has no value"))?;
                        self.value(default)?
                    }
                }
            }
            "variables" => {
                let v = text(&args[0])?;
                let raw = self.template["variables"]
                    .get(&v)
                    .ok_or_else(|| format!("no variable {v}"))?;
                self.value(raw)?
            }
            "if" => {
                let condition = json(&args[0])?;
                match condition {
                    Value::Bool(true) => json(&args[1])?,
                    Value::Bool(false) => json(&args[2])?,
                    other => return Err(format!("if() on {other}")),
                }
            }
            "equals" => Value::Bool(json(&args[0])? == json(&args[1])?),
            "not" => Value::Bool(json(&args[0])? == Value::Bool(false)),
            "empty" => Value::Bool(match json(&args[0])? {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            }),
            "greater" => Value::Bool(json(&args[0])?.as_i64() > json(&args[1])?.as_i64()),
            "length" => match json(&args[0])? {
                Value::Array(a) => Value::from(a.len()),
                Value::String(s) => Value::from(s.chars().count()),
                Value::Object(o) => Value::from(o.len()),
                other => return Err(format!("length() of {other}")),
            },
            "null" => Value::Null,
            "createArray" => Value::Array(all(&args)?),
            "createObject" => {
                let values = all(&args)?;
                let mut o = serde_json::Map::new();
                for pair in values.chunks(2) {
                    let key = pair[0].as_str().ok_or("createObject key")?.to_string();
                    o.insert(key, pair.get(1).cloned().unwrap_or(Value::Null));
                }
                Value::Object(o)
            }
            "union" => {
                let mut o = serde_json::Map::new();
                for v in all(&args)? {
                    let Value::Object(m) = v else {
                        return Err("union() of a non-object".into());
                    };
                    o.extend(m);
                }
                Value::Object(o)
            }
            "concat" => {
                let values = all(&args)?;
                if values.iter().all(Value::is_array) {
                    Value::Array(
                        values
                            .into_iter()
                            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                            .collect(),
                    )
                } else {
                    Value::String(
                        values
                            .iter()
                            .map(|v| {
                                v.as_str()
                                    .map(String::from)
                                    .unwrap_or_else(|| v.to_string())
                            })
                            .collect(),
                    )
                }
            }
            "format" => {
                let mut out = text(&args[0])?;
                for (i, a) in args.iter().enumerate().skip(1) {
                    out = out.replace(&format!("{{{}}}", i - 1), &text(a)?);
                }
                Value::String(out)
            }
            "toLower" => Value::String(text(&args[0])?.to_lowercase()),
            "take" => {
                let n = json(&args[1])?.as_u64().ok_or("take() count")? as usize;
                Value::String(text(&args[0])?.chars().take(n).collect())
            }
            "environment" => serde_json::json!({
                "suffixes": {"storage": "core.windows.net"},
                "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"}
            }),
            "subscription" => serde_json::json!({
                "tenantId": "<tenant>", "subscriptionId": "<subscription>", "id": "/subscriptions/<subscription>"
            }),
            "resourceGroup" => serde_json::json!({
                "id": "/subscriptions/<subscription>/resourceGroups/<rg>", "name": "<rg>", "location": "westeurope"
            }),
            // Known only to Azure at deployment time.
            "reference"
            | "listKeys"
            | "resourceId"
            | "subscriptionResourceId"
            | "guid"
            | "uniqueString"
            | "copyIndex" => {
                let texts: Vec<String> = args.iter().map(|a| text(a).unwrap_or_default()).collect();
                return Ok(Arm::Runtime(format!("{name}({})", texts.join(", "))));
            }
            other => return Err(format!("the test's evaluator does not know {other}()")),
        }))
    }
}

/// The template rendered for the example parameters file with these overrides: the resources it deploys
/// (conditions applied), every string evaluated.
fn rendered(t: &Value, overrides: &[(&str, Value)]) -> Result<Vec<Value>, String> {
    let path = repo().join("deploy/arm/procfwk.parameters.example.json");
    let example: Value =
        serde_json::from_str(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let mut parameters: BTreeMap<String, Value> = example["parameters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v["value"].clone()))
        .collect();
    parameters.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let render = Render {
        template: t,
        parameters,
    };
    let mut out = Vec::new();
    for r in t["resources"].as_array().into_iter().flatten() {
        let deploy = match r.get("condition") {
            None => true,
            Some(c) => render.value(c)? == Value::Bool(true),
        };
        if deploy {
            out.push(render.value(r).map_err(|e| format!("{}: {e}", r["type"]))?);
        }
    }
    Ok(out)
}

fn deployed<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
    resources.iter().filter(|r| r["type"] == kind).collect()
}

/// The app settings of the rendered `appsettings` resource and those the site is created with.
fn app_settings(resources: &[Value]) -> (serde_json::Map<String, Value>, BTreeMap<String, Value>) {
    let config = deployed(resources, "Microsoft.Web/sites/config")
        .into_iter()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("/appsettings"))
        })
        .and_then(|c| c["properties"].as_object().cloned())
        .unwrap_or_default();
    let site = deployed(resources, "Microsoft.Web/sites");
    let at_creation = site
        .first()
        .and_then(|s| {
            s["properties"]["siteConfig"]["appSettings"]
                .as_array()
                .cloned()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pair| Some((pair["name"].as_str()?.to_string(), pair["value"].clone())))
        .collect();
    (config, at_creation)
}

/// App settings Flex Consumption deprecates (azure-contracts-2.md §6).
const NOT_ON_FLEX: [&str; 12] = [
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_RUN_FROM_PACKAGE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_TIME_ZONE",
    "TZ",
    "WEBSITE_MOUNT_ENABLED",
    "WEBSITE_USE_PLACEHOLDER_DOTNETISOLATED",
];

/// What is wrong with the template rendered for Flex Consumption.
fn flex_problems(t: &Value) -> Vec<String> {
    let r = match rendered(t, &[("hostingPlan", "FlexConsumption".into())]) {
        Ok(r) => r,
        Err(e) => return vec![format!("does not render: {e}")],
    };
    let mut out = Vec::new();
    let farm = deployed(&r, "Microsoft.Web/serverfarms");
    if farm.first().map(|f| (&f["sku"]["name"], &f["sku"]["tier"]))
        != Some((&Value::from("FC1"), &Value::from("FlexConsumption")))
    {
        out.push(format!(
            "plan sku is not FC1/FlexConsumption: {:?}",
            farm.first().map(|f| &f["sku"])
        ));
    }
    let Some(site) = deployed(&r, "Microsoft.Web/sites").first().copied() else {
        return vec!["no site".into()];
    };
    let config = &site["properties"]["functionAppConfig"];
    if config["runtime"]["name"] != "custom" || !config["runtime"]["version"].is_string() {
        out.push(format!(
            "functionAppConfig.runtime is not custom: {}",
            config["runtime"]
        ));
    }
    let storage = &config["deployment"]["storage"];
    if storage["type"] != "blobContainer" {
        out.push(format!("deployment storage type {}", storage["type"]));
    }
    let container = deployed(
        &r,
        "Microsoft.Storage/storageAccounts/blobServices/containers",
    );
    let container_name = container
        .first()
        .and_then(|c| c["name"].as_str())
        .and_then(|n| n.rsplit('/').next())
        .unwrap_or("<none>")
        .to_string();
    let url = storage["value"].as_str().unwrap_or_default();
    if !(url.starts_with("https://")
        && url.ends_with(&format!(".blob.core.windows.net/{container_name}")))
    {
        out.push(format!(
            "deployment storage {url:?} is not the deployed container {container_name}"
        ));
    }
    if !["SystemAssignedIdentity", "UserAssignedIdentity"].contains(
        &storage["authentication"]["type"]
            .as_str()
            .unwrap_or_default(),
    ) {
        out.push(format!(
            "deployment storage authentication {}",
            storage["authentication"]
        ));
    }
    let scale = &config["scaleAndConcurrency"];
    if ![512, 2048, 4096].contains(&scale["instanceMemoryMB"].as_i64().unwrap_or(0)) {
        out.push(format!("instanceMemoryMB {}", scale["instanceMemoryMB"]));
    }
    if !(40..=1000).contains(&scale["maximumInstanceCount"].as_i64().unwrap_or(0)) {
        out.push(format!(
            "maximumInstanceCount {}",
            scale["maximumInstanceCount"]
        ));
    }
    let site_config = &site["properties"]["siteConfig"];
    if site_config
        .get("linuxFxVersion")
        .is_some_and(|v| !v.is_null())
    {
        out.push("linuxFxVersion is set (Flex has functionAppConfig.runtime instead)".into());
    }
    let (settings, at_creation) = app_settings(&r);
    for name in NOT_ON_FLEX {
        if settings.contains_key(name) || at_creation.contains_key(name) {
            out.push(format!("{name} is set on Flex"));
        }
    }
    if settings.get("AzureWebJobsStorage__accountName").is_none() {
        out.push("no identity-based AzureWebJobsStorage".into());
    }
    let account = deployed(&r, "Microsoft.Storage/storageAccounts");
    if account
        .first()
        .map(|a| &a["properties"]["allowSharedKeyAccess"])
        != Some(&Value::Bool(false))
    {
        out.push("the storage account still allows shared keys".into());
    }
    out
}

/// What is wrong with the template rendered for Linux Consumption.
fn consumption_problems(t: &Value) -> Vec<String> {
    let r = match rendered(t, &[("hostingPlan", "Consumption".into())]) {
        Ok(r) => r,
        Err(e) => return vec![format!("does not render: {e}")],
    };
    let mut out = Vec::new();
    let farm = deployed(&r, "Microsoft.Web/serverfarms");
    if farm.first().map(|f| (&f["sku"]["name"], &f["sku"]["tier"]))
        != Some((&Value::from("Y1"), &Value::from("Dynamic")))
    {
        out.push("plan sku is not Y1/Dynamic".into());
    }
    let Some(site) = deployed(&r, "Microsoft.Web/sites").first().copied() else {
        return vec!["no site".into()];
    };
    if site["properties"]
        .get("functionAppConfig")
        .is_some_and(|c| !c.is_null())
    {
        out.push("functionAppConfig on Consumption".into());
    }
    if !site["properties"]["siteConfig"]["linuxFxVersion"].is_string() {
        out.push("no linuxFxVersion".into());
    }
    if !deployed(
        &r,
        "Microsoft.Storage/storageAccounts/blobServices/containers",
    )
    .is_empty()
    {
        out.push("a deployment container on Consumption".into());
    }
    let (settings, at_creation) = app_settings(&r);
    for (name, expected) in [
        ("FUNCTIONS_WORKER_RUNTIME", Some("custom")),
        ("FUNCTIONS_EXTENSION_VERSION", Some("~4")),
        ("WEBSITE_CONTENTSHARE", None),
        ("WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", None),
    ] {
        // Set when the site is created (the platform creates the content share then) and kept by the
        // appsettings resource, which replaces the whole set.
        for (place, set) in [
            ("appsettings", settings.get(name)),
            ("site creation", at_creation.get(name)),
        ] {
            match (set, expected) {
                (None, _) => out.push(format!("{name} is missing from {place}")),
                (Some(v), Some(e)) if v != e => out.push(format!("{name} is {v} in {place}")),
                _ => {}
            }
        }
    }
    // Azure Files share names: 3–63 lower-case letters, digits and hyphens.
    let share = settings
        .get("WEBSITE_CONTENTSHARE")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !(3..=63).contains(&share.len())
        || !share
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        out.push(format!(
            "WEBSITE_CONTENTSHARE {share:?} is not a valid share name"
        ));
    }
    if !settings
        .get("WEBSITE_CONTENTAZUREFILECONNECTIONSTRING")
        .and_then(Value::as_str)
        .is_some_and(|c| c.contains("AccountKey=<listKeys("))
    {
        out.push("the content share connection string has no account key".into());
    }
    out
}

#[test]
fn flex_consumption_is_complete_and_sets_nothing_flex_refuses() {
    let t = template();
    assert_eq!(flex_problems(&t), Vec::<String>::new());
    assert_eq!(consumption_problems(&t), Vec::<String>::new());
}

#[test]
fn broken_plan_variants_are_detected() {
    type Break = fn(&mut Value);
    let flex: [(&str, Break); 5] = [
        ("WEBSITE_RUN_FROM_PACKAGE is set on Flex", |t| {
            t["parameters"]["appSettings"]["defaultValue"]["WEBSITE_RUN_FROM_PACKAGE"] = "1".into()
        }),
        ("FUNCTIONS_WORKER_RUNTIME is set on Flex", |t| {
            t["variables"]["platformSettings"]["FlexConsumption"]["FUNCTIONS_WORKER_RUNTIME"] =
                "custom".into()
        }),
        ("runtime is not custom", |t| {
            t["variables"]["flexFunctionAppConfig"]["runtime"]["name"] = "python".into()
        }),
        ("is not the deployed container", |t| {
            t["variables"]["deploymentContainerUrl"] =
                "[format('https://{0}.blob.core.windows.net/other', parameters('storageAccountName'))]".into()
        }),
        ("instanceMemoryMB", |t| {
            t["parameters"]["flexInstanceMemoryMB"]["defaultValue"] = 1024.into()
        }),
    ];
    for (expected, break_it) in flex {
        let mut t = template();
        break_it(&mut t);
        let problems = flex_problems(&t);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
    let consumption: [(&str, Break); 4] = [
        ("is not a valid share name", |t| {
            t["variables"]["contentShare"] =
                "[format('{0}-Content-{0}-{0}', parameters('appName'))]".into()
        }),
        ("WEBSITE_CONTENTSHARE is missing from appsettings", |t| {
            if let Some(o) = t["variables"]["platformSettings"]["Consumption"].as_object_mut() {
                o.remove("WEBSITE_CONTENTSHARE");
            }
        }),
        ("no linuxFxVersion", |t| {
            if let Some(o) = t["resources"][5]["properties"]["siteConfig"].as_object_mut() {
                o.remove("linuxFxVersion");
            }
        }),
        (
            "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING is missing from site creation",
            |t| {
                t["resources"][5]["properties"]["siteConfig"]["appSettings"] =
                    "[createArray()]".into()
            },
        ),
    ];
    for (expected, break_it) in consumption {
        let mut t = template();
        break_it(&mut t);
        let problems = consumption_problems(&t);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

#[test]
fn app_service_authentication_is_an_option_that_lets_only_the_factory_in() {
    let t = template();
    let auth = |r: &[Value]| -> Option<Value> {
        deployed(r, "Microsoft.Web/sites/config")
            .into_iter()
            .find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("/authsettingsV2"))
            })
            .cloned()
    };
    let default = rendered(&t, &[]).expect("renders");
    assert_eq!(auth(&default), None, "function keys stay the default");
    let client = "11111111-2222-3333-4444-555555555555";
    let factory_app = "66666666-7777-8888-9999-000000000000";
    let factory_object = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let with = rendered(
        &t,
        &[
            ("easyAuthClientId", client.into()),
            (
                "easyAuthAllowedApplications",
                serde_json::json!([factory_app]),
            ),
            (
                "easyAuthAllowedPrincipals",
                serde_json::json!([factory_object]),
            ),
        ],
    )
    .expect("renders");
    let auth = auth(&with).expect("authsettingsV2 is deployed");
    let p = &auth["properties"];
    assert_eq!(p["platform"]["enabled"], true);
    assert_eq!(p["globalValidation"]["requireAuthentication"], true);
    assert_eq!(
        p["globalValidation"]["unauthenticatedClientAction"],
        "Return401"
    );
    let aad = &p["identityProviders"]["azureActiveDirectory"];
    assert_eq!(aad["registration"]["clientId"], client);
    assert_eq!(
        aad["registration"]["openIdIssuer"],
        "https://login.microsoftonline.com/<tenant>/v2.0"
    );
    let audiences = aad["validation"]["allowedAudiences"].to_string();
    assert!(
        audiences.contains(&format!("api://{client}")),
        "{audiences}"
    );
    let policy = &aad["validation"]["defaultAuthorizationPolicy"];
    assert_eq!(
        policy["allowedApplications"],
        serde_json::json!([factory_app])
    );
    assert_eq!(
        policy["allowedPrincipals"]["identities"],
        serde_json::json!([factory_object])
    );
}

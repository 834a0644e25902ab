//! The Function App's files: `host.json` and every `functions/<Name>/function.json` validate against the
//! official SchemaStore schemas (kept in the repository as test data, `tests/data/schemas/`), the function
//! folders and the handler table (`procfwk::functions::FUNCTIONS`) agree entry for entry — trigger kind,
//! methods, route — and `local.settings.json` is an example without secrets.

use procfwk::functions::{Function, Trigger, FUNCTIONS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schemas() -> PathBuf {
    repo().join("tests/data/schemas")
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

#[test]
fn host_json_validates_and_points_at_the_executable() {
    let schema = read_json(&schemas().join("host.json"));
    let validator = jsonschema::draft7::new(&schema).expect("host.json schema compiles");
    let host = read_json(&repo().join("host.json"));
    assert_eq!(errors(&validator, &host), Vec::<String>::new());
    let handler = &host["customHandler"];
    assert_eq!(handler["description"]["defaultExecutablePath"], "procfwk");
    assert_eq!(handler["description"]["arguments"], json!(["serve"]));
    assert_eq!(handler["enableForwardingHttpRequest"], true);
}

#[test]
fn host_json_schema_rejects_a_broken_file() {
    // Proves the validation above can fail.
    let schema = read_json(&schemas().join("host.json"));
    let validator = jsonschema::draft7::new(&schema).expect("host.json schema compiles");
    let broken = json!({"version": "2.0", "customHandler": {"enableForwardingHttpRequest": "yes"}});
    assert!(!errors(&validator, &broken).is_empty());
}

/// Validate one function.json: its top level against the schema (without the ambiguous `bindings`
/// oneOf), each binding against `bindingBase` plus the definition for its own type.
fn function_json_errors(schema: &Value, function: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut top = schema.clone();
    if let Some(props) = top["properties"].as_object_mut() {
        props.remove("bindings");
    }
    let top_validator = jsonschema::draft4::new(&top).expect("function.json schema compiles");
    out.extend(errors(&top_validator, function));
    let bindings = function["bindings"].as_array().cloned().unwrap_or_default();
    if bindings.is_empty() {
        out.push("no bindings".into());
    }
    for binding in &bindings {
        let definition = match binding["type"].as_str() {
            Some("httpTrigger") | Some("http") => "httpBinding",
            Some("timerTrigger") => "timerTriggerBinding",
            other => {
                out.push(format!("unexpected binding type {other:?}"));
                continue;
            }
        };
        let one = json!({
            "allOf": [{"$ref": "#/definitions/bindingBase"}, {"$ref": format!("#/definitions/{definition}")}],
            "definitions": schema["definitions"].clone(),
        });
        let validator = jsonschema::draft4::new(&one).expect("binding schema compiles");
        out.extend(errors(&validator, binding));
        if binding["type"] == "timerTrigger" {
            let schedule = binding["schedule"].as_str().unwrap_or("");
            if schedule.split_whitespace().count() != 6 {
                out.push(format!(
                    "timer schedule {schedule:?} is not a six-field NCRONTAB expression"
                ));
            }
        }
    }
    out
}

#[test]
fn every_function_json_validates() {
    let schema = read_json(&schemas().join("function.json"));
    let dir = repo().join("functions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("functions/ exists") {
        let path = entry.expect("dir entry").path().join("function.json");
        let function = read_json(&path);
        assert_eq!(
            function_json_errors(&schema, &function),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= FUNCTIONS.len());
}

#[test]
fn binding_validation_can_fail() {
    let schema = read_json(&schemas().join("function.json"));
    let bad_direction =
        json!({"bindings": [{"type": "httpTrigger", "direction": "out", "name": "req"}]});
    assert!(!function_json_errors(&schema, &bad_direction).is_empty());
    let bad_method = json!({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["fetch"]}]});
    assert!(!function_json_errors(&schema, &bad_method).is_empty());
    let no_name = json!({"bindings": [{"type": "http", "direction": "out"}]});
    assert!(!function_json_errors(&schema, &no_name).is_empty());
    let bad_timer = json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "*/5 * * * *"}]});
    assert!(!function_json_errors(&schema, &bad_timer).is_empty());
}

/// What a function.json declares about its trigger, in the table's terms.
#[derive(Debug, PartialEq)]
enum Declared {
    Http {
        methods: Vec<String>,
        route: Option<String>,
    },
    Timer,
    Other(Value),
}

fn declared(function_json: &Value) -> Declared {
    let trigger = &function_json["bindings"][0];
    match trigger["type"].as_str() {
        Some("httpTrigger") => Declared::Http {
            methods: trigger["methods"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            route: trigger["route"].as_str().map(String::from),
        },
        Some("timerTrigger") => Declared::Timer,
        _ => Declared::Other(trigger.clone()),
    }
}

fn from_table(function: &Function) -> Declared {
    match &function.trigger {
        Trigger::Http(http) => Declared::Http {
            methods: http.methods.iter().map(|m| m.to_string()).collect(),
            route: http.route.map(String::from),
        },
        Trigger::Timer(_) => Declared::Timer,
    }
}

/// Every table entry has a folder whose function.json declares the same trigger kind, methods and
/// route, and every folder has an entry of exactly its name.
#[test]
fn function_folders_and_the_handler_table_agree() {
    let mut disagreements = Vec::new();
    for function in FUNCTIONS {
        let path = repo()
            .join("functions")
            .join(function.name)
            .join("function.json");
        if !path.exists() {
            disagreements.push(format!("{}: no {}", function.name, path.display()));
            continue;
        }
        let in_folder = declared(&read_json(&path));
        let in_table = from_table(function);
        if in_folder != in_table {
            disagreements.push(format!(
                "{}: function.json declares {in_folder:?}, the table {in_table:?}",
                function.name
            ));
        }
    }
    for entry in std::fs::read_dir(repo().join("functions")).expect("functions/ exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if !FUNCTIONS.iter().any(|f| f.name == name) {
            disagreements.push(format!(
                "functions/{name} has no entry in the handler table"
            ));
        }
    }
    assert_eq!(disagreements, Vec::<String>::new());
}

#[test]
fn function_folders_match_the_functions_served() {
    for function in Function::http_functions() {
        let path = repo()
            .join("functions")
            .join(function.name())
            .join("function.json");
        let json = read_json(&path);
        let trigger = &json["bindings"][0];
        assert_eq!(trigger["type"], "httpTrigger", "{}", function.name());
        assert_eq!(trigger["authLevel"], "function", "{}", function.name());
        let methods: Vec<String> = trigger["methods"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let expected: Vec<String> = function.methods().iter().map(|m| m.to_string()).collect();
        assert_eq!(methods, expected, "{}", function.name());
        assert!(json["bindings"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x["type"] == "http" && x["name"] == "res")));
    }
    for entry in std::fs::read_dir(repo().join("functions")).expect("functions/ exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        assert!(
            Function::lookup(&name).is_some(),
            "functions/{name} has no handler"
        );
    }
}

#[test]
fn timer_functions_have_a_six_field_schedule_and_no_http_binding() {
    for timer in Function::timer_functions() {
        let json = read_json(
            &repo()
                .join("functions")
                .join(timer.name())
                .join("function.json"),
        );
        let bindings = json["bindings"].as_array().cloned().unwrap_or_default();
        assert_eq!(bindings.len(), 1, "{}", timer.name());
        assert_eq!(bindings[0]["type"], "timerTrigger");
        assert_eq!(bindings[0]["direction"], "in");
        let schedule = bindings[0]["schedule"].as_str().unwrap_or_default();
        assert_eq!(
            schedule.split_whitespace().count(),
            6,
            "NCRONTAB {schedule:?}"
        );
        assert!(
            Function::lookup(timer.name()).is_some_and(|f| !f.is_http()),
            "{} must not be reachable over HTTP",
            timer.name()
        );
    }
}

#[tokio::test]
async fn a_timer_is_not_served_over_http_forwarding() {
    let settings = procfwk::config::Settings::from_env().expect("settings");
    let state = procfwk::functions::AppState::new(settings).expect("state");
    let routes = procfwk::host::routes(state);
    for timer in Function::timer_functions() {
        let response = warp::test::request()
            .method("POST")
            .path(&format!("/api/{}", timer.name()))
            .reply(&routes)
            .await;
        assert_eq!(response.status(), 404, "{}", timer.name());
    }
}

#[test]
fn local_settings_is_an_example_without_secrets() {
    let settings = read_json(&repo().join("local.settings.json"));
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    let text = settings.to_string().to_lowercase();
    for needle in [
        "accountkey=",
        "password",
        "secret",
        "sharedaccesssignature",
        "sig=",
    ] {
        assert!(
            !text.contains(needle),
            "local.settings.json must not carry {needle}"
        );
    }
}

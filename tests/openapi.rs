//! The OpenAPI 3.1 document (`docs/openapi.json`): it names every HTTP function with its methods and
//! answers, its schemas compile as JSON Schema 2020-12, the handler serves it verbatim at
//! `/api/openapi.json`, our error bodies match its `Error` schema — and `scripts/openapi-check` (the OAS 3.1
//! meta-schema, then schemathesis against `procfwk serve` + `procfwk sim`) passes.

use procfwk::functions::{Function, FunctionError};
use serde_json::{json, Value};
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    let text =
        std::fs::read_to_string(repo().join("docs/openapi.json")).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// A validator for one component schema, with the document's components in reach of its `$ref`s.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let mut schema = doc["components"]["schemas"][name].clone();
    schema["components"] = doc["components"].clone();
    jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

#[test]
fn every_function_is_in_the_document_with_its_methods_and_answers() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for function in Function::http_functions() {
        let path = format!("/api/{}", function.route().unwrap_or(function.name()));
        let item = paths
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is not in docs/openapi.json"));
        let documented: Vec<&str> = item
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for method in &documented {
            assert!(
                function.methods().contains(method),
                "{path}: {method} is documented but not served"
            );
            let responses = &item[*method]["responses"];
            assert!(responses["200"].is_object(), "{path} {method}: no 200");
            for code in ["401", "405"] {
                assert_eq!(
                    responses[code]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{path} {method}: {code} is not the error shape"
                );
            }
            assert!(
                item[*method]["operationId"] == function.name(),
                "{path} {method}: operationId"
            );
        }
        // POST where the function takes it (GET with query fields is noted in the descriptions).
        let expected = if function.methods().contains(&"post") {
            "post"
        } else {
            "get"
        };
        assert!(documented.contains(&expected), "{path}: {expected} missing");
    }
    assert_eq!(
        paths.len(),
        Function::http_functions().count(),
        "a path without a function"
    );
}

#[test]
fn every_schema_compiles_and_our_error_bodies_match_the_error_shape() {
    let doc = document();
    for name in doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        validator(&doc, name);
    }
    let error = validator(&doc, "Error");
    let bodies = [
        FunctionError::BadRequest(procfwk::domain::RequestError::new("runId", "is not a GUID")),
        FunctionError::Unauthorized,
        FunctionError::NotFound("X".into()),
        FunctionError::TooLarge { limit: 10 },
        FunctionError::MethodNotAllowed {
            method: "PUT".into(),
            allowed: "POST".into(),
        },
        FunctionError::Conflict {
            message: "m".into(),
            details: json!({"RunId": "r"}),
        },
        FunctionError::Upstream(procfwk::adapters::UpstreamError::Http {
            service: procfwk::adapters::Service::Arm,
            status: 404,
            code: "NotFound".into(),
            message: "m".into(),
        }),
    ];
    for e in bodies {
        let reply = e.into_reply();
        let problems: Vec<String> = error
            .iter_errors(&reply.body)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{}: {problems:?}", reply.body);
    }
    // The check can fail: a body with a renamed field is outside the document.
    assert!(!error
        .is_valid(&json!({"error": {"code": "InvalidRequest", "message": "m", "fieldName": "x"}})));
}

#[tokio::test]
async fn the_handler_serves_the_document_verbatim() {
    let settings = procfwk::config::Settings::from_env().expect("settings");
    let state = procfwk::functions::AppState::new(settings).expect("state");
    let routes = procfwk::host::routes(state);
    let response = warp::test::request()
        .method("GET")
        .path("/api/openapi.json")
        .reply(&routes)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let file = std::fs::read(repo().join("docs/openapi.json")).expect("docs/openapi.json");
    assert_eq!(response.body().as_ref(), file.as_slice());
    // The function's own name (the invocation payload's POST /OpenApi) reaches it too.
    let payload =
        json!({"Data": {"req": {"Method": "GET", "Query": {}, "Headers": {}}}, "Metadata": {}});
    let response = warp::test::request()
        .method("POST")
        .path("/OpenApi")
        .json(&payload)
        .reply(&routes)
        .await;
    let envelope: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    assert_eq!(envelope["Outputs"]["res"]["statusCode"], 200);
    assert_eq!(
        envelope["Outputs"]["res"]["body"]
            .as_str()
            .map(str::as_bytes),
        Some(file.as_slice())
    );
}

/// schemathesis against the real handler (scripts/openapi-check). It needs the Python tools of
/// scripts/deps/30-python-tools.sh; where they are installed (PROCFWK_REQUIRE_SCHEMATHESIS=1, as
/// scripts/test sets it) their absence is a failure, elsewhere the test says it did not run.
#[test]
fn schemathesis_finds_every_answer_in_the_document() {
    let schemathesis = std::env::var("PROCFWK_SCHEMATHESIS")
        .ok()
        .filter(|p| !p.is_empty());
    let required = std::env::var("PROCFWK_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1");
    let Some(schemathesis) = schemathesis else {
        assert!(
            !required,
            "PROCFWK_REQUIRE_SCHEMATHESIS=1 but PROCFWK_SCHEMATHESIS is not set"
        );
        eprintln!(
            "schemathesis is not installed (source scripts/deps/30-python-tools.sh): not run"
        );
        return;
    };
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/openapi-check"))
        .env("PROCFWK_BIN", env!("CARGO_BIN_EXE_procfwk"))
        .env("PROCFWK_SCHEMATHESIS", &schemathesis)
        .env_remove("PROCFWK_METADATA_DB")
        .env_remove("PROCFWK_FUNCTION_KEY")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .output()
        .expect("run scripts/openapi-check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/openapi-check failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

//! Pipeline parameters of a `createRun` request: checked against the pipeline's declared parameters
//! and types, defaults filled in, and turned into the string values a PipelineRun shows
//! (`"WaitTime": "5"`; arrays and objects JSON-encoded, as ADF does).

use super::config::{ParamType, PipelineDef};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The value a run shows for `SecureString` parameters.
const MASKED: &str = "**********";

/// A parameter value of the declared type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Coerced {
    /// The value as a run shows it.
    pub display: String,
    /// The numeric value, for Int and Float parameters.
    pub number: Option<f64>,
}

/// Converts `value` to parameter type `kind`, the way ADF accepts it: numbers and booleans may also
/// arrive as strings (`{"WaitTime": "1"}`), arrays and objects as JSON text.
pub(crate) fn coerce(kind: ParamType, value: &Value) -> Result<Coerced, String> {
    let text = |display: String| Coerced {
        display,
        number: None,
    };
    match (kind, value) {
        (_, Value::Null) => Err("null is not a value".into()),
        (ParamType::String | ParamType::SecureString, Value::String(s)) => Ok(text(s.clone())),
        (ParamType::String | ParamType::SecureString, other) => Ok(text(other.to_string())),
        (ParamType::Int, Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Coerced {
                display: i.to_string(),
                number: Some(i as f64),
            }),
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Coerced {
                    display: (f as i64).to_string(),
                    number: Some(f),
                }),
                _ => Err(format!("'{n}' is not a whole number")),
            },
        },
        (ParamType::Int, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(Coerced {
                display: i.to_string(),
                number: Some(i as f64),
            }),
            Err(_) => Err(format!("'{s}' is not a whole number")),
        },
        (ParamType::Float, Value::Number(n)) => match n.as_f64() {
            Some(f) => Ok(Coerced {
                display: n.to_string(),
                number: Some(f),
            }),
            None => Err(format!("'{n}' is not a number")),
        },
        (ParamType::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Coerced {
                display: s.trim().to_string(),
                number: Some(f),
            }),
            _ => Err(format!("'{s}' is not a number")),
        },
        (ParamType::Bool, Value::Bool(b)) => Ok(text(b.to_string())),
        (ParamType::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(text("true".into())),
            "false" => Ok(text("false".into())),
            _ => Err(format!("'{s}' is not true or false")),
        },
        (ParamType::Array, Value::Array(_)) | (ParamType::Object, Value::Object(_)) => {
            Ok(text(value.to_string()))
        }
        (ParamType::Array | ParamType::Object, Value::String(s)) => {
            match (kind, serde_json::from_str::<Value>(s)) {
                (ParamType::Array, Ok(v @ Value::Array(_)))
                | (ParamType::Object, Ok(v @ Value::Object(_))) => Ok(text(v.to_string())),
                _ => Err(format!(
                    "'{s}' is not a JSON {}",
                    kind.as_str().to_lowercase()
                )),
            }
        }
        (_, other) => Err(format!("{other} is not a value of this type")),
    }
}

/// The parameters of one run, every declared parameter present.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ResolvedParameters {
    /// Parameter name → the value the run shows (`SecureString` values masked).
    pub display: BTreeMap<String, String>,
    /// Parameter name → the value as given (unmasked), for `fail_when` rules.
    values: BTreeMap<String, String>,
    /// Parameter name → numeric value (Int / Float parameters only).
    numbers: BTreeMap<String, f64>,
}

impl ResolvedParameters {
    pub fn number(&self, name: &str) -> Option<f64> {
        self.numbers.get(name).copied()
    }

    /// The unmasked value of a parameter.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn insert(&mut self, name: &str, kind: ParamType, coerced: Coerced) {
        if let Some(n) = coerced.number {
            self.numbers.insert(name.to_string(), n);
        }
        let shown = if kind == ParamType::SecureString {
            MASKED.to_string()
        } else {
            coerced.display.clone()
        };
        self.display.insert(name.to_string(), shown);
        self.values.insert(name.to_string(), coerced.display);
    }
}

/// Checks a `createRun` body against `pipeline` and fills in defaults. The error is the message of a
/// 400 `BadRequest`.
pub(crate) fn resolve(
    pipeline: &PipelineDef,
    body: Option<&Map<String, Value>>,
) -> Result<ResolvedParameters, String> {
    let mut resolved = ResolvedParameters::default();
    if let Some(given) = body {
        for (name, value) in given {
            let Some((declared, def)) = pipeline.parameter(name) else {
                return Err(format!(
                    "The parameter '{name}' is not defined in pipeline '{}'.",
                    pipeline.name
                ));
            };
            let coerced = coerce(def.kind, value).map_err(|problem| {
                format!(
                    "The value of parameter '{declared}' of pipeline '{}' is not of type '{}': {problem}.",
                    pipeline.name,
                    def.kind.as_str()
                )
            })?;
            resolved.insert(declared, def.kind, coerced);
        }
    }
    for (name, def) in &pipeline.parameters {
        if resolved.values.contains_key(name) {
            continue;
        }
        let Some(default) = &def.default else {
            return Err(format!(
                "The required parameter '{name}' of pipeline '{}' is missing and has no default value.",
                pipeline.name
            ));
        };
        // Defaults were checked when the configuration was loaded; this cannot fail.
        let coerced = coerce(def.kind, default)?;
        resolved.insert(name, def.kind, coerced);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use serde_json::json;

    fn pipeline(name: &str) -> PipelineDef {
        SimConfig::sample()
            .pipelines
            .into_iter()
            .find(|p| p.name == name)
            .expect("sample pipeline")
    }

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn ints_accept_numbers_and_numeric_strings() {
        let wait = pipeline("Wait 1");
        for given in [
            json!({"WaitTime": "1"}),
            json!({"WaitTime": 1}),
            json!({"waittime": 1.0}),
        ] {
            let resolved = resolve(&wait, Some(&body(given))).expect("valid");
            assert_eq!(resolved.display["WaitTime"], "1");
            assert_eq!(resolved.number("WaitTime"), Some(1.0));
        }
    }

    #[test]
    fn defaults_fill_missing_parameters() {
        let resolved = resolve(&pipeline("Intentional Error"), None).expect("valid");
        assert_eq!(resolved.display["RaiseErrors"], "false");
        assert_eq!(resolved.display["WaitTime"], "5");
    }

    #[test]
    fn bad_values_and_unknown_names_are_refused() {
        let wait = pipeline("Wait 1");
        let err = resolve(&wait, Some(&body(json!({"WaitTime": "abc"})))).expect_err("bad int");
        assert!(err.contains("WaitTime") && err.contains("Int"), "{err}");
        assert!(resolve(&wait, Some(&body(json!({"WaitTime": 1.5})))).is_err());
        assert!(resolve(&wait, Some(&body(json!({"WaitTime": true})))).is_err());
        let err = resolve(&wait, Some(&body(json!({"Nope": 1})))).expect_err("unknown");
        assert!(err.contains("'Nope'"), "{err}");
    }

    #[test]
    fn secure_strings_are_masked_but_kept() {
        let mut def = pipeline("Wait 1");
        def.parameters.insert(
            "Password".into(),
            crate::config::ParamDef::new(ParamType::SecureString, None),
        );
        let resolved = resolve(&def, Some(&body(json!({"Password": "p@ss"})))).expect("valid");
        assert_eq!(resolved.display["Password"], MASKED);
        assert_eq!(resolved.value("Password"), Some("p@ss"));
        assert!(resolve(&def, None)
            .expect_err("required")
            .contains("'Password'"));
    }

    #[test]
    fn other_types_follow_adf_display_rules() {
        assert_eq!(
            coerce(ParamType::Bool, &json!("TRUE")).map(|c| c.display),
            Ok("true".into())
        );
        assert_eq!(
            coerce(ParamType::Array, &json!(["a", 1])).map(|c| c.display),
            Ok(r#"["a",1]"#.into())
        );
        assert_eq!(
            coerce(ParamType::Array, &json!("[1,2]")).map(|c| c.display),
            Ok("[1,2]".into())
        );
        assert!(coerce(ParamType::Object, &json!("[1]")).is_err());
        assert_eq!(
            coerce(ParamType::String, &json!(5)).map(|c| c.display),
            Ok("5".into())
        );
        assert_eq!(
            coerce(ParamType::Float, &json!("2.5")).map(|c| c.number),
            Ok(Some(2.5))
        );
        assert!(coerce(ParamType::String, &Value::Null).is_err());
    }
}

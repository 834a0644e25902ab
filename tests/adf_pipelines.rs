//! The shipped ADF pipelines (`deploy/adf/`, azure.datafactory.tools layout) checked against the Function
//! App they call: every function exists with that name and method, bodies are JSON with the fields the
//! function needs, dependencies and `activity('…')` references point at existing upstream activities,
//! every output field an expression reads is one the function returns, Execute Pipeline references and
//! parameters match. Then `procfwk run --simulate` is compared with the pipelines: the function calls it
//! makes, in order, are the ones Parent → Child → Infant make, on a clean run and on a failing one.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// `name → JSON` for every file in `deploy/adf/<kind>/`, checking the file is named after its resource.
fn resources(kind: &str) -> BTreeMap<String, Value> {
    let dir = repo().join("deploy/adf").join(kind);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let json = read_json(&path);
        let name = json["name"].as_str().expect("name").to_string();
        assert_eq!(
            path.file_stem().map(|s| s.to_string_lossy().to_string()),
            Some(name.clone()),
            "{} is named after its resource",
            path.display()
        );
        out.insert(name, json);
    }
    out
}

/// The HTTP functions of the app and their methods, from `functions/<Name>/function.json`.
fn functions() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("functions")).expect("functions/") {
        let dir = entry.expect("entry").path();
        let json = read_json(&dir.join("function.json"));
        let Some(trigger) = json["bindings"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["type"] == "httpTrigger"))
        else {
            continue;
        };
        let methods = trigger["methods"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|v| v.as_str().map(str::to_uppercase))
                    .collect()
            })
            .unwrap_or_default();
        let name = dir.file_name().expect("name").to_string_lossy().to_string();
        out.insert(name, methods);
    }
    out
}

/// The top-level fields each function answers with (docs/functions.md; metadata mode for
/// ExecutePipelineV2/CheckPipelineStatus, which add `PipelineStatusCheckDuration` and `WorkerStatus`
/// to the compatibility-mode fields; VmPower as its contract says). The call-sequence test below checks
/// every field the shipped pipelines read against the answers of a real run as well.
fn returns(function: &str) -> &'static [&'static str] {
    match function {
        "StartExecution" => &[
            "ExecutionId",
            "Mode",
            "BatchName",
            "PipelineStatusCheckDuration",
            "Stages",
        ],
        "PrepareStage" => &["ExecutionId", "StageId", "WorkerCount", "Workers"],
        "ExecutePipeline" | "ExecutePipelineV2" | "CheckPipelineStatus" => &[
            "PipelineName",
            "RunId",
            "ActualStatus",
            "SimpleStatus",
            "PipelineStatusCheckDuration",
            "WorkerStatus",
        ],
        "FinishExecution" => &["ExecutionId", "ExecutionStatus", "Workers"],
        "GetActivityErrors" => &[
            "ResponseCount",
            "ResponseErrorCount",
            "Errors",
            "PipelineName",
            "RunId",
            "ActualStatus",
            "SimpleStatus",
        ],
        "ValidatePipeline" => &[
            "PipelineExists",
            "PipelineName",
            "PipelineId",
            "PipelineType",
            "ActivityCount",
        ],
        "CancelPipeline" => &["PipelineName", "RunId", "ActualStatus", "SimpleStatus"],
        "VmPower" => &[
            "VmName",
            "Action",
            "PowerState",
            "Ready",
            "ActiveLeases",
            "Holder",
            "LeaseExpiresAt",
            "Started",
            "Deallocated",
            "RuntimeState",
            "RetryAfterSeconds",
        ],
        _ => &[],
    }
}

/// The fields of the elements of an array a function returns (what `item()` reads in a ForEach).
fn element_fields(function: &str, array: &str) -> &'static [&'static str] {
    match (function, array) {
        ("StartExecution", "Stages") => &["StageId", "StageName", "Workers"],
        ("PrepareStage", "Workers") => &["executionId", "stageId", "pipelineId", "PipelineName"],
        _ => &[],
    }
}

/// Body fields a function needs (docs/functions.md; metadata mode for Execute/Check).
fn requires(function: &str) -> &'static [&'static str] {
    match function {
        "PrepareStage" => &["executionId", "stageId"],
        "ExecutePipelineV2" => &["executionId", "stageId", "pipelineId"],
        "CheckPipelineStatus" => &["executionId", "stageId", "pipelineId", "runId"],
        "FinishExecution" => &["executionId"],
        "VmPower" => &[
            "action",
            "subscriptionId",
            "resourceGroupName",
            "vmName",
            "holder",
        ],
        _ => &[],
    }
}

/// One activity, flattened out of its containers.
#[derive(Clone, Debug)]
struct Activity {
    name: String,
    kind: String,
    parent: Option<String>,
    deps: Vec<(String, Vec<String>)>,
    json: Value,
}

const CHILD_LISTS: [&str; 5] = [
    "activities",
    "ifTrueActivities",
    "ifFalseActivities",
    "defaultActivities",
    "cases",
];

fn flatten(list: &Value, parent: Option<&str>, out: &mut Vec<Activity>) {
    for a in list.as_array().into_iter().flatten() {
        let name = a["name"].as_str().unwrap_or_default().to_string();
        let deps = a["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let conditions = d["dependencyConditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect();
                (
                    d["activity"].as_str().unwrap_or_default().to_string(),
                    conditions,
                )
            })
            .collect();
        out.push(Activity {
            name: name.clone(),
            kind: a["type"].as_str().unwrap_or_default().to_string(),
            parent: parent.map(String::from),
            deps,
            json: a.clone(),
        });
        let tp = &a["typeProperties"];
        for list in CHILD_LISTS {
            if list == "cases" {
                for case in tp["cases"].as_array().into_iter().flatten() {
                    flatten(&case["activities"], Some(&name), out);
                }
            } else {
                flatten(&tp[list], Some(&name), out);
            }
        }
    }
}

/// Every string in an activity's own JSON (not in the activities it contains).
fn own_strings(value: &Value, top: bool, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| own_strings(v, false, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if !top && CHILD_LISTS.contains(&k.as_str()) {
                    continue;
                }
                own_strings(v, false, out);
            }
        }
        _ => {}
    }
}

/// `activity('X').output.Field` (or `?.Field`) references in an expression: `(X, Some(Field))`, or
/// `(X, None)` when no output field is read.
fn activity_refs(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("activity('") {
        rest = &rest[at + "activity('".len()..];
        let Some(end) = rest.find('\'') else { break };
        let name = rest[..end].to_string();
        rest = &rest[end + 1..];
        let after = rest.strip_prefix(')').unwrap_or(rest);
        let field = after
            .strip_prefix(".output")
            .map(|f| f.strip_prefix('?').unwrap_or(f))
            .and_then(|f| f.strip_prefix('.'))
            .map(|f| {
                f.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            });
        out.push((name, field));
    }
    out
}

/// Identifiers after `prefix` in an expression (`pipeline().parameters.`, `item().`).
fn idents_after(s: &str, prefix: &str) -> Vec<String> {
    s.match_indices(prefix)
        .map(|(at, _)| {
            s[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Names passed as `function('name')` in an expression (e.g. `variables('WorkerResult')`).
fn idents_in_call(s: &str, function: &str) -> Vec<String> {
    let needle = format!("{function}('");
    s.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &s[at + needle.len()..];
            rest.find('\'').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// The body with every `@{…}` interpolation replaced by `0`, so it can be parsed as JSON.
fn body_as_json(body: &str) -> Result<Value, String> {
    let mut out = String::new();
    let mut rest = body;
    while let Some(at) = rest.find("@{") {
        out.push_str(&rest[..at]);
        let mut depth = 0;
        let mut end = None;
        for (i, c) in rest[at + 1..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(at + 1 + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.ok_or("unbalanced @{")?;
        out.push('0');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).map_err(|e| format!("{e} in {out}"))
}

struct Factory {
    pipelines: BTreeMap<String, Value>,
    linked: BTreeMap<String, Value>,
    functions: BTreeMap<String, Vec<String>>,
}

impl Factory {
    fn shipped() -> Self {
        Self {
            pipelines: resources("pipeline"),
            linked: resources("linkedService"),
            functions: functions(),
        }
    }

    fn activities(&self, pipeline: &str) -> Vec<Activity> {
        let mut out = Vec::new();
        flatten(
            &self.pipelines[pipeline]["properties"]["activities"],
            None,
            &mut out,
        );
        out
    }

    /// Every problem found in every pipeline.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in self.pipelines.keys() {
            out.extend(
                self.pipeline_problems(name)
                    .into_iter()
                    .map(|p| format!("{name}: {p}")),
            );
        }
        for (name, ls) in &self.linked {
            if let Some(store) =
                ls["properties"]["typeProperties"]["functionKey"]["store"]["referenceName"].as_str()
            {
                if !self.linked.contains_key(store) {
                    out.push(format!("linked service {name}: no linked service {store}"));
                }
            }
        }
        out
    }

    fn pipeline_problems(&self, pipeline: &str) -> Vec<String> {
        let mut out = Vec::new();
        let acts = self.activities(pipeline);
        let by_name: BTreeMap<&str, &Activity> =
            acts.iter().map(|a| (a.name.as_str(), a)).collect();
        if by_name.len() != acts.len() {
            out.push("activity names are not unique".into());
        }
        let params = &self.pipelines[pipeline]["properties"]["parameters"];
        // Outgoing conditions per activity: ADF refuses Completed next to Succeeded/Failed.
        let mut outgoing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for a in &acts {
            for (target, conditions) in &a.deps {
                match by_name.get(target.as_str()) {
                    None => out.push(format!("{} depends on missing {target}", a.name)),
                    Some(t) if t.parent != a.parent => out.push(format!(
                        "{} depends on {target} outside its container",
                        a.name
                    )),
                    Some(_) => {}
                }
                if conditions.is_empty() {
                    out.push(format!("{} → {target}: no condition", a.name));
                }
                for c in conditions {
                    if !["Succeeded", "Failed", "Skipped", "Completed"].contains(&c.as_str()) {
                        out.push(format!("{} → {target}: unknown condition {c}", a.name));
                    }
                    outgoing
                        .entry(target.as_str())
                        .or_default()
                        .insert(c.as_str());
                }
            }
        }
        for (source, conditions) in &outgoing {
            if conditions.contains("Completed")
                && (conditions.contains("Succeeded") || conditions.contains("Failed"))
            {
                out.push(format!("{source}: Completed next to Succeeded/Failed"));
            }
        }
        for a in &acts {
            let tp = &a.json["typeProperties"];
            match a.kind.as_str() {
                "AzureFunctionActivity" => {
                    let function = tp["functionName"].as_str().unwrap_or_default();
                    let method = tp["method"].as_str().unwrap_or_default().to_uppercase();
                    match self.functions.get(function) {
                        None => out.push(format!("{}: no function {function:?}", a.name)),
                        Some(methods) if !methods.contains(&method) => out.push(format!(
                            "{}: {function} does not accept {method} ({methods:?})",
                            a.name
                        )),
                        Some(_) => {}
                    }
                    let ls = a.json["linkedServiceName"]["referenceName"]
                        .as_str()
                        .unwrap_or_default();
                    if self.linked.get(ls).map(|l| &l["properties"]["type"])
                        != Some(&Value::from("AzureFunction"))
                    {
                        out.push(format!("{}: no Azure Function linked service {ls}", a.name));
                    }
                    let body = tp["body"]["value"].as_str().or(tp["body"].as_str());
                    match body.map(body_as_json) {
                        None if method == "POST" => {
                            out.push(format!("{}: POST without a body", a.name))
                        }
                        None => {}
                        Some(Err(e)) => out.push(format!("{}: body is not JSON: {e}", a.name)),
                        Some(Ok(json)) => {
                            let keys: BTreeSet<String> = json
                                .as_object()
                                .map(|o| o.keys().map(|k| k.to_lowercase()).collect())
                                .unwrap_or_default();
                            // VmPower in worker mode: the VM comes from the worker's metadata.
                            let needed = if function == "VmPower" && keys.contains("executionid") {
                                &["action", "executionId", "stageId", "pipelineId"][..]
                            } else {
                                requires(function)
                            };
                            for field in needed {
                                if !keys.contains(&field.to_lowercase()) {
                                    out.push(format!("{}: body lacks {field}", a.name));
                                }
                            }
                        }
                    }
                }
                "ExecutePipeline" => {
                    let target = tp["pipeline"]["referenceName"].as_str().unwrap_or_default();
                    match self.pipelines.get(target) {
                        None => out.push(format!("{}: no pipeline {target}", a.name)),
                        Some(t) => {
                            let declared = t["properties"]["parameters"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default();
                            let passed = tp["parameters"].as_object().cloned().unwrap_or_default();
                            for p in passed.keys() {
                                if !declared.contains_key(p) {
                                    out.push(format!("{}: {target} has no parameter {p}", a.name));
                                }
                            }
                            for (p, d) in &declared {
                                if d.get("defaultValue").is_none() && !passed.contains_key(p) {
                                    out.push(format!("{}: {target} needs parameter {p}", a.name));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
            // Variables: declared, and set by SetVariable activities only.
            let declared_vars = self.pipelines[pipeline]["properties"]["variables"].clone();
            if a.kind == "SetVariable" {
                let v = tp["variableName"].as_str().unwrap_or_default();
                if declared_vars.get(v).is_none() {
                    out.push(format!("{} sets undeclared variable {v}", a.name));
                }
            }
            // Expressions.
            let allowed = self.referable(&acts, a);
            let guaranteed = self.guaranteed(&acts, a);
            let mut strings = Vec::new();
            own_strings(&a.json, true, &mut strings);
            for s in strings.iter().filter(|s| s.contains('@')) {
                for v in idents_in_call(s, "variables") {
                    if declared_vars.get(&v).is_none() {
                        out.push(format!("{} reads undeclared variable {v}", a.name));
                    }
                }
                for (target, field) in activity_refs(s) {
                    if !allowed.contains(&target) {
                        out.push(format!(
                            "{} reads activity('{target}'), which is not upstream",
                            a.name
                        ));
                        continue;
                    }
                    if let Some(each) = self.enclosing_loop(&acts, &target, a) {
                        out.push(format!(
                            "{} reads activity('{target}') inside the loop {each} from outside it (copy it into a variable)",
                            a.name
                        ));
                        continue;
                    }
                    if !guaranteed.contains(&target) {
                        out.push(format!(
                            "{} reads activity('{target}'), which may not have run when it runs",
                            a.name
                        ));
                        continue;
                    }
                    let Some(field) = field else { continue };
                    let source = by_name[target.as_str()];
                    let fields: &[&str] = match source.kind.as_str() {
                        "AzureFunctionActivity" => returns(
                            source.json["typeProperties"]["functionName"]
                                .as_str()
                                .unwrap_or_default(),
                        ),
                        "ExecutePipeline" => &["pipelineRunId", "pipelineName"],
                        _ => &[],
                    };
                    if !fields.contains(&field.as_str()) {
                        out.push(format!(
                            "{} reads {target}.output.{field}, which it does not return",
                            a.name
                        ));
                    }
                }
                for p in idents_after(s, "pipeline().parameters.") {
                    if params.get(&p).is_none() {
                        out.push(format!("{} reads undeclared parameter {p}", a.name));
                    }
                }
                let items = idents_after(s, "item().");
                if !items.is_empty() {
                    match self.foreach_elements(&acts, a) {
                        None => out.push(format!(
                            "{} reads item() outside a ForEach over a function's array",
                            a.name
                        )),
                        Some(fields) => {
                            for f in items.iter().filter(|f| !fields.contains(&f.as_str())) {
                                out.push(format!(
                                    "{} reads item().{f}, which the array's elements lack",
                                    a.name
                                ));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Activities whose output `a` may read: upstream of it (transitively, in its container and in
    /// every enclosing one), anything inside those; for an Until, also what it contains (its condition).
    fn referable(&self, acts: &[Activity], a: &Activity) -> BTreeSet<String> {
        let by_name: BTreeMap<&str, &Activity> =
            acts.iter().map(|a| (a.name.as_str(), a)).collect();
        let descendants = |root: &str, out: &mut BTreeSet<String>| {
            let mut stack = vec![root.to_string()];
            while let Some(p) = stack.pop() {
                for c in acts
                    .iter()
                    .filter(|c| c.parent.as_deref() == Some(p.as_str()))
                {
                    out.insert(c.name.clone());
                    stack.push(c.name.clone());
                }
            }
        };
        let mut out = BTreeSet::new();
        if a.kind == "Until" {
            descendants(&a.name, &mut out);
        }
        let mut current = Some(a);
        while let Some(x) = current {
            let mut stack: Vec<String> = x.deps.iter().map(|(d, _)| d.clone()).collect();
            while let Some(d) = stack.pop() {
                if out.insert(d.clone()) {
                    descendants(&d, &mut out);
                    if let Some(up) = by_name.get(d.as_str()) {
                        stack.extend(up.deps.iter().map(|(d, _)| d.clone()));
                    }
                }
            }
            current = x.parent.as_deref().and_then(|p| by_name.get(p).copied());
        }
        out
    }

    /// The loop (Until or ForEach) that holds `target` but not `reader`, if any: ADF's designer may refuse
    /// such a reference, and its value is only the last iteration's. An Until's own condition may read
    /// what it holds.
    fn enclosing_loop(&self, acts: &[Activity], target: &str, reader: &Activity) -> Option<String> {
        let parent_of = |name: &str| {
            acts.iter()
                .find(|c| c.name == name)
                .and_then(|c| c.parent.clone())
        };
        let mut reader_chain = vec![reader.name.clone()];
        let mut at = reader.parent.clone();
        while let Some(p) = at {
            at = parent_of(&p);
            reader_chain.push(p);
        }
        let mut at = parent_of(target);
        while let Some(p) = at {
            let container = acts.iter().find(|c| c.name == p)?;
            if ["Until", "ForEach"].contains(&container.kind.as_str()) && !reader_chain.contains(&p)
            {
                return Some(p);
            }
            at = container.parent.clone();
        }
        None
    }

    /// Activities that have certainly run whenever `a` runs: those it depends on (transitively) through
    /// dependencies that do not allow `Skipped`, in its container and in every enclosing one, and, for
    /// an Until's condition, the first activity of its body.
    fn guaranteed(&self, acts: &[Activity], a: &Activity) -> BTreeSet<String> {
        let by_name: BTreeMap<&str, &Activity> =
            acts.iter().map(|a| (a.name.as_str(), a)).collect();
        let mut out = BTreeSet::new();
        if a.kind == "Until" {
            // Each iteration runs the body; its activities without dependencies always start.
            for c in acts
                .iter()
                .filter(|c| c.parent.as_deref() == Some(a.name.as_str()))
            {
                if c.deps.is_empty() {
                    out.insert(c.name.clone());
                }
            }
            // Those that depend only on guaranteed ones through Succeeded run whenever the loop goes on.
            loop {
                let before = out.len();
                for c in acts
                    .iter()
                    .filter(|c| c.parent.as_deref() == Some(a.name.as_str()))
                {
                    if !c.deps.is_empty()
                        && c.deps.iter().all(|(d, conds)| {
                            out.contains(d) && conds.iter().all(|c| c != "Skipped")
                        })
                    {
                        out.insert(c.name.clone());
                    }
                }
                if out.len() == before {
                    break;
                }
            }
        }
        let mut current = Some(a);
        while let Some(x) = current {
            let mut stack: Vec<String> = x
                .deps
                .iter()
                .filter(|(_, conds)| !conds.iter().any(|c| c == "Skipped"))
                .map(|(d, _)| d.clone())
                .collect();
            while let Some(d) = stack.pop() {
                if out.insert(d.clone()) {
                    if let Some(up) = by_name.get(d.as_str()) {
                        stack.extend(
                            up.deps
                                .iter()
                                .filter(|(_, conds)| !conds.iter().any(|c| c == "Skipped"))
                                .map(|(d, _)| d.clone()),
                        );
                    }
                }
            }
            current = x.parent.as_deref().and_then(|p| by_name.get(p).copied());
        }
        out
    }

    /// For an activity inside a ForEach over `activity('X').output.Array`: the fields of its elements.
    fn foreach_elements(&self, acts: &[Activity], a: &Activity) -> Option<&'static [&'static str]> {
        let mut current = a.parent.as_deref();
        while let Some(p) = current {
            let container = acts.iter().find(|c| c.name == p)?;
            if container.kind == "ForEach" {
                let items = container.json["typeProperties"]["items"]["value"].as_str()?;
                let (source, field) = activity_refs(items).into_iter().next()?;
                let source = acts.iter().find(|s| s.name == source)?;
                let function = source.json["typeProperties"]["functionName"].as_str()?;
                return Some(element_fields(function, &field?));
            }
            current = container.parent.as_deref();
        }
        None
    }

    /// Activity runs per worker: `(fixed on success, fixed on failure, per poll of each Until)`,
    /// counting the Child's Execute Pipeline activity that starts the Infant.
    fn lifecycle(&self, infant: &str) -> (usize, usize, Vec<(String, usize)>) {
        let top = self.pipelines[infant]["properties"]["activities"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut success = 1 + top.len();
        let mut failure = 1 + top.len();
        let mut polls = Vec::new();
        for a in &top {
            let tp = &a["typeProperties"];
            match a["type"].as_str() {
                Some("Until") => polls.push((
                    a["name"].as_str().unwrap_or_default().to_string(),
                    tp["activities"].as_array().map_or(0, Vec::len),
                )),
                Some("IfCondition") => {
                    success += tp["ifTrueActivities"].as_array().map_or(0, Vec::len);
                    failure += tp["ifFalseActivities"].as_array().map_or(0, Vec::len);
                }
                _ => {}
            }
        }
        (success, failure, polls)
    }
}

#[test]
fn shipped_pipelines_call_existing_functions_and_read_what_they_return() {
    let factory = Factory::shipped();
    for name in [
        "01-Grandparent",
        "02-Parent",
        "03-Child",
        "04-Infant",
        "04-Infant-VmPower",
        "Intentional Error",
    ] {
        assert!(factory.pipelines.contains_key(name), "{name} is shipped");
    }
    for i in 1..=10 {
        assert!(factory.pipelines.contains_key(&format!("Wait {i}")));
    }
    assert_eq!(factory.problems(), Vec::<String>::new());
    // The Infant is Execute → Until(Check → Wait) → done; the VmPower variant adds start/status/stop.
    let kinds = |p: &str| -> Vec<(String, String)> {
        factory
            .activities(p)
            .into_iter()
            .filter(|a| a.kind == "AzureFunctionActivity")
            .map(|a| {
                (
                    a.name,
                    a.json["typeProperties"]["functionName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    let functions_of = |p: &str| -> Vec<String> { kinds(p).into_iter().map(|(_, f)| f).collect() };
    assert_eq!(
        functions_of("04-Infant"),
        ["ExecutePipelineV2", "CheckPipelineStatus"]
    );
    assert_eq!(
        functions_of("04-Infant-VmPower"),
        [
            "VmPower",
            "VmPower",
            "ExecutePipelineV2",
            "CheckPipelineStatus",
            "VmPower"
        ]
    );
    // The VM is released whenever it was started: after the worker's loop, whether it succeeded, failed
    // or was skipped (the VM never became ready, or the worker could not be started) — but never when
    // the start itself failed. The worker's result comes after the stop, whatever the stop did.
    let vm = factory.activities("04-Infant-VmPower");
    let find = |name: &str| vm.iter().find(|a| a.name == name).expect(name);
    let conditions = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        find("Stop VM").deps,
        [
            ("Start VM".to_string(), conditions(&["Succeeded"])),
            (
                "Wait Until Worker Completes".to_string(),
                conditions(&["Completed", "Skipped"])
            )
        ]
    );
    assert_eq!(
        find("Worker Result").deps,
        [("Stop VM".to_string(), conditions(&["Completed"]))]
    );
    assert_eq!(
        find("VM Not Started").deps,
        [("Start VM".to_string(), conditions(&["Failed"]))]
    );
    // Every VmPower call names the worker, so the VM comes from its metadata.
    for name in ["Start VM", "Get VM Status", "Stop VM"] {
        let body = find(name).json["typeProperties"]["body"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for field in ["executionId", "stageId", "pipelineId"] {
            assert!(body.contains(&format!("\"{field}\"")), "{name}: {body}");
        }
        assert!(!body.contains("vmName"), "{name}: {body}");
    }
    let declared = &factory.pipelines["04-Infant-VmPower"]["properties"]["parameters"];
    assert_eq!(
        declared.as_object().map(|o| o.len()),
        Some(3),
        "the Child's three parameters are all the VmPower Infant needs"
    );
}

#[test]
fn activities_per_worker_lifecycle_stay_within_budget() {
    let factory = Factory::shipped();
    let (success, failure, polls) = factory.lifecycle("04-Infant");
    eprintln!(
        "04-Infant: {success} activities per worker (+{} when it fails), {polls:?} per poll",
        failure - success
    );
    assert!(success <= 4, "fixed activities per worker: {success}");
    assert_eq!(polls.len(), 1);
    // Check, copy the answer into a variable (what is read after the loop, as procfwk's Infant does),
    // wait.
    assert!(polls[0].1 <= 3, "activities per poll: {}", polls[0].1);
    let (success, failure, polls) = factory.lifecycle("04-Infant-VmPower");
    eprintln!("04-Infant-VmPower: {success} activities per worker (+{} when it fails), {polls:?} per poll", failure - success);
    // The worker's loop copies the check's answer into a variable (read after the loop) each poll.
    assert!(polls.iter().all(|(_, n)| *n <= 3), "{polls:?}");
    assert!(success <= 8, "{success}");
}

#[test]
fn broken_pipelines_are_detected() {
    // Each change breaks the Infant in one way the validation must report.
    type Break = fn(&mut Value);
    let cases: [(&str, Break); 12] = [
        (
            "inside the loop Wait Until Worker Completes from outside it",
            |p| {
                p["properties"]["activities"][2]["typeProperties"]["expression"]["value"] =
                    "@equals('Success', activity('Check Worker').output.WorkerStatus)".into();
            },
        ),
        ("may not have run", |p| {
            let succeeded = &mut p["properties"]["activities"][2];
            succeeded["dependsOn"][0]["dependencyConditions"] =
                serde_json::json!(["Succeeded", "Skipped"]);
            succeeded["typeProperties"]["expression"]["value"] =
                "@equals('', activity('Execute Worker').output.RunId)".into();
        }),
        ("reads undeclared variable Nope", |p| {
            p["properties"]["activities"][2]["typeProperties"]["expression"]["value"] =
                "@equals('Success', json(variables('Nope')).WorkerStatus)".into();
        }),
        ("no function", |p| {
            p["properties"]["activities"][0]["typeProperties"]["functionName"] =
                "ExecutePipelineV3".into()
        }),
        ("does not accept GET", |p| {
            p["properties"]["activities"][0]["typeProperties"]["method"] = "GET".into()
        }),
        ("depends on missing", |p| {
            p["properties"]["activities"][1]["dependsOn"][0]["activity"] = "Execute Workr".into()
        }),
        ("which it does not return", |p| {
            let until = &mut p["properties"]["activities"][1]["typeProperties"];
            until["expression"]["value"] =
                "@not(equals('Running', activity('Check Worker').output.Status))".into();
        }),
        ("not upstream", |p| {
            p["properties"]["activities"][0]["typeProperties"]["body"]["value"] =
                "{\"executionId\": \"@{activity('Check Worker').output.RunId}\"}".into();
        }),
        ("body lacks runId", |p| {
            let check = &mut p["properties"]["activities"][1]["typeProperties"]["activities"][0];
            check["typeProperties"]["body"]["value"] =
                "{\"executionId\": \"x\", \"stageId\": 1, \"pipelineId\": 1}".into();
        }),
        ("body is not JSON", |p| {
            p["properties"]["activities"][0]["typeProperties"]["body"]["value"] =
                "{\"executionId\": \"@{pipeline().parameters.executionId}\",}".into();
        }),
        ("undeclared parameter", |p| {
            p["properties"]["activities"][0]["typeProperties"]["body"]["value"] =
                "{\"executionId\": \"@{pipeline().parameters.ExecutionID}\", \"stageId\": 1, \"pipelineId\": 1}".into();
        }),
        ("Completed next to Succeeded", |p| {
            p["properties"]["activities"][2]["dependsOn"][0]["dependencyConditions"] =
                serde_json::json!(["Completed"]);
            let mut extra = p["properties"]["activities"][2].clone();
            extra["name"] = "Another".into();
            extra["dependsOn"][0]["dependencyConditions"] = serde_json::json!(["Succeeded"]);
            if let Some(list) = p["properties"]["activities"].as_array_mut() {
                list.push(extra);
            }
        }),
    ];
    for (expected, break_it) in cases {
        let mut factory = Factory::shipped();
        let infant = factory.pipelines.get_mut("04-Infant").expect("04-Infant");
        break_it(infant);
        let problems = factory.problems();
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "expected a problem with {expected:?}, got {problems:?}"
        );
    }
    // The Child must pass the Infant's parameters, and read only fields the Workers elements have.
    let mut factory = Factory::shipped();
    let child = factory.pipelines.get_mut("03-Child").expect("03-Child");
    let executor = &mut child["properties"]["activities"][1]["typeProperties"]["activities"][0];
    if let Some(params) = executor["typeProperties"]["parameters"].as_object_mut() {
        params.remove("pipelineId");
        params.insert(
            "PipelineID".into(),
            serde_json::json!({"value": "@item().PipelineID", "type": "Expression"}),
        );
    }
    let problems = factory.problems();
    for expected in [
        "needs parameter pipelineId",
        "has no parameter PipelineID",
        "item().PipelineID",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

// ---- procfwk run against the simulator, compared with the pipelines ------------------------------

/// What a pipeline does, as far as function calls go.
#[derive(Clone, Debug)]
enum Step {
    /// One Azure Function activity: its function, retries, and whether it runs after an earlier failure.
    Call {
        function: String,
        retries: u64,
        after_failure: bool,
    },
    /// An Until: its body one or more times.
    Until(Vec<Step>),
    /// A ForEach over `Stages` (key: stageId) or `Workers` (key: pipelineId).
    ForEach {
        by_stage: bool,
        sequential: bool,
        body: Vec<Step>,
        after_failure: bool,
    },
}

fn steps_of(factory: &Factory, list: &Value) -> Vec<Step> {
    // Topological order of the activities in this container.
    let acts: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    let mut done: Vec<String> = Vec::new();
    let mut ordered = Vec::new();
    while ordered.len() < acts.len() {
        let before = ordered.len();
        for a in &acts {
            let name = a["name"].as_str().unwrap_or_default().to_string();
            let ready = a["dependsOn"].as_array().into_iter().flatten().all(|d| {
                done.iter()
                    .any(|n| Some(n.as_str()) == d["activity"].as_str())
            });
            if !done.contains(&name) && ready {
                done.push(name);
                ordered.push(a.clone());
            }
        }
        assert!(ordered.len() > before, "dependency cycle");
    }
    let mut out = Vec::new();
    for a in ordered {
        let after_failure = a["dependsOn"].as_array().into_iter().flatten().any(|d| {
            d["dependencyConditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == "Completed" || c == "Failed"))
        });
        let tp = &a["typeProperties"];
        match a["type"].as_str().unwrap_or_default() {
            "AzureFunctionActivity" => out.push(Step::Call {
                function: tp["functionName"].as_str().unwrap_or_default().to_string(),
                retries: a["policy"]["retry"].as_u64().unwrap_or(0),
                after_failure,
            }),
            "ExecutePipeline" => {
                let target = tp["pipeline"]["referenceName"].as_str().unwrap_or_default();
                out.extend(steps_of(
                    factory,
                    &factory.pipelines[target]["properties"]["activities"],
                ));
            }
            "Until" => out.push(Step::Until(steps_of(factory, &tp["activities"]))),
            "ForEach" => out.push(Step::ForEach {
                by_stage: tp["items"]["value"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(".Stages")),
                sequential: tp["isSequential"] == true,
                body: steps_of(factory, &tp["activities"]),
                after_failure,
            }),
            _ => {}
        }
    }
    out
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Call {
    #[serde(default)]
    action: Option<String>,
    function: String,
    status: u16,
    stage_id: Option<i64>,
    pipeline_id: Option<i64>,
    fields: Vec<String>,
}

/// Match `calls` against `steps`; returns how many calls the steps account for and whether they failed.
fn replay(steps: &[Step], calls: &[Call]) -> Result<(usize, bool), String> {
    let mut i = 0;
    let mut failed = false;
    for step in steps {
        match step {
            Step::Call {
                function,
                retries,
                after_failure,
            } => {
                if failed && !after_failure {
                    continue;
                }
                let mut ok = false;
                for _ in 0..=*retries {
                    let call = calls
                        .get(i)
                        .ok_or(format!("expected {function} after call {i}, the run ended"))?;
                    if &call.function != function {
                        return Err(format!(
                            "call {i}: expected {function}, the run called {}",
                            call.function
                        ));
                    }
                    i += 1;
                    if call.status == 200 {
                        ok = true;
                        break;
                    }
                    if calls.get(i).map(|c| &c.function) != Some(function) {
                        break;
                    }
                }
                failed = !ok;
            }
            Step::Until(body) => {
                if failed {
                    continue;
                }
                let first = match body.first() {
                    Some(Step::Call { function, .. }) => function.clone(),
                    _ => return Err("an Until without a first call".into()),
                };
                let mut iterations = 0;
                loop {
                    let (n, body_failed) = replay(body, &calls[i..])?;
                    i += n;
                    iterations += 1;
                    if body_failed {
                        failed = true;
                        break;
                    }
                    if calls.get(i).map(|c| &c.function) != Some(&first) {
                        break;
                    }
                }
                if iterations == 0 {
                    return Err("an Until ran no iteration".into());
                }
            }
            Step::ForEach {
                by_stage,
                sequential,
                body,
                after_failure,
            } => {
                if failed && !after_failure {
                    continue;
                }
                let key = |c: &Call| if *by_stage { c.stage_id } else { c.pipeline_id };
                let end = calls[i..]
                    .iter()
                    .position(|c| key(c).is_none())
                    .map_or(calls.len(), |p| i + p);
                let mine = &calls[i..end];
                let mut groups: Vec<(i64, Vec<Call>)> = Vec::new();
                for c in mine {
                    let k = key(c).unwrap_or_default();
                    let last = groups.last().map(|(g, _)| *g);
                    match groups.iter_mut().find(|(g, _)| *g == k) {
                        Some((_, list)) => {
                            if *sequential && last != Some(k) {
                                return Err(format!(
                                    "sequential ForEach: item {k} resumed after another"
                                ));
                            }
                            list.push(c.clone())
                        }
                        None => groups.push((k, vec![c.clone()])),
                    }
                }
                if *sequential && groups.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err("stages out of order".into());
                }
                let mut any_failed = false;
                for (k, group) in &groups {
                    let (n, f) = replay(body, group)?;
                    if n != group.len() {
                        return Err(format!(
                            "item {k}: {} calls not in the pipelines: {:?}",
                            group.len() - n,
                            &group[n..]
                        ));
                    }
                    any_failed |= f;
                }
                i = end;
                // ADF's ForEach runs every item, then fails if one did.
                failed = any_failed;
            }
        }
    }
    Ok((i, failed))
}

fn procfwk(args: &[&str], db: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_procfwk"))
        .args(args)
        .env("PROCFWK_METADATA_DB", db)
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .env_remove("PROCFWK_FUNCTION_KEY")
        .output()
        .expect("run procfwk")
}

struct Exec(&'static str);

#[async_trait::async_trait]
impl procfwk::store::Transition for Exec {
    type Output = u64;
    type Error = procfwk::store::StoreError;
    async fn apply(&self, tx: &mut dyn procfwk::store::Tx) -> Result<u64, Self::Error> {
        let statement = procfwk::store::Statement {
            name: "test",
            sql: self.0,
        };
        tx.execute(&statement, &[]).await
    }
}

/// `procfwk run --simulate` on the sample; the calls it recorded.
async fn recorded_run(raise_errors: bool) -> (bool, Vec<Call>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("procfwk.db").display());
    for args in [&["db", "init"][..], &["db", "seed-sample"][..]] {
        let out = procfwk(args, &db);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if raise_errors {
        let store = procfwk::startup::open_store(&db, None)
            .await
            .expect("store");
        store
            .run(&Exec("UPDATE procfwk.PipelineParameters SET ParameterValue = 'true' WHERE ParameterName = 'RaiseErrors'"))
            .await
            .expect("update");
    }
    let record = dir.path().join("calls.json");
    let out = procfwk(
        &[
            "run",
            "--simulate",
            "--time-scale",
            "0.01",
            "--quiet",
            "--db",
            &db,
            "--record",
            record.to_str().expect("path"),
        ],
        &db,
    );
    let calls: Vec<Call> = serde_json::from_slice(&std::fs::read(&record).unwrap_or_else(|e| {
        panic!(
            "no call record ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
    .expect("call record");
    (out.status.success(), calls)
}

/// Every `(function, field)` the given pipelines read from function outputs.
fn fields_read(factory: &Factory, pipelines: &[&str]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for p in pipelines {
        let acts = factory.activities(p);
        for a in &acts {
            let mut strings = Vec::new();
            own_strings(&a.json, true, &mut strings);
            for (target, field) in strings.iter().flat_map(|s| activity_refs(s)) {
                let source = acts.iter().find(|s| s.name == target);
                if let (Some(field), Some(function)) = (
                    field,
                    source.and_then(|s| s.json["typeProperties"]["functionName"].as_str()),
                ) {
                    out.insert((function.to_string(), field));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn procfwk_run_makes_the_calls_the_shipped_parent_child_and_infant_make() {
    let factory = Factory::shipped();
    let steps = steps_of(
        &factory,
        &factory.pipelines["02-Parent"]["properties"]["activities"],
    );
    let read = fields_read(&factory, &["02-Parent", "03-Child", "04-Infant"]);
    for raise_errors in [false, true] {
        let (succeeded, calls) = recorded_run(raise_errors).await;
        assert_eq!(succeeded, !raise_errors, "the run's outcome");
        let (n, failed) = replay(&steps, &calls)
            .unwrap_or_else(|e| panic!("raise_errors={raise_errors}: {e}\ncalls: {calls:#?}"));
        assert_eq!(
            n,
            calls.len(),
            "every call is one the pipelines make: {:?}",
            &calls[n..]
        );
        assert_eq!(
            failed, raise_errors,
            "the Parent fails exactly when the run does"
        );
        let workers: BTreeSet<i64> = calls.iter().filter_map(|c| c.pipeline_id).collect();
        let stages: BTreeSet<i64> = calls.iter().filter_map(|c| c.stage_id).collect();
        assert_eq!(stages.len(), 4, "every stage of the sample is prepared");
        assert!(
            workers.len() >= if raise_errors { 4 } else { 11 },
            "{workers:?}"
        );
        // Every field the pipelines read is in the answers of the run.
        let mut answered: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for c in calls.iter().filter(|c| c.status == 200) {
            answered
                .entry(&c.function)
                .or_default()
                .extend(c.fields.iter().map(String::as_str));
        }
        for (function, field) in &read {
            let got = answered.get(function.as_str());
            assert!(
                got.is_some_and(|f| f.contains(field.as_str())),
                "the pipelines read {function}.output.{field}; the run's answers had {got:?}"
            );
        }
    }
}

#[test]
fn the_call_replay_rejects_a_sequence_the_pipelines_would_not_make() {
    let factory = Factory::shipped();
    let steps = steps_of(
        &factory,
        &factory.pipelines["02-Parent"]["properties"]["activities"],
    );
    let call = |function: &str, stage: Option<i64>, worker: Option<i64>| Call {
        action: None,
        function: function.into(),
        status: 200,
        stage_id: stage,
        pipeline_id: worker,
        fields: Vec::new(),
    };
    let good = vec![
        call("StartExecution", None, None),
        call("PrepareStage", Some(1), None),
        call("ExecutePipelineV2", Some(1), Some(1)),
        call("ExecutePipelineV2", Some(1), Some(2)),
        call("CheckPipelineStatus", Some(1), Some(2)),
        call("CheckPipelineStatus", Some(1), Some(1)),
        call("CheckPipelineStatus", Some(1), Some(1)),
        call("FinishExecution", None, None),
    ];
    assert_eq!(replay(&steps, &good).map(|r| r.0), Ok(good.len()));
    // A worker that is never checked, a check before its start, a stage prepared twice out of order.
    let mut unchecked = good.clone();
    unchecked.remove(4);
    assert!(replay(&steps, &unchecked).is_err());
    let mut swapped = good.clone();
    swapped.swap(2, 5);
    assert!(replay(&steps, &swapped).is_err());
    let mut no_finish = good.clone();
    no_finish.pop();
    assert!(replay(&steps, &no_finish).is_err());
    let mut late_stage = good.clone();
    late_stage.insert(7, call("PrepareStage", Some(1), None));
    late_stage.insert(7, call("PrepareStage", Some(2), None));
    assert!(replay(&steps, &late_stage).is_err());
}

// ---- procfwk run playing 04-Infant-VmPower: a VM per stage, and each failure path ---------------------

/// Rows of a query, every column as text.
struct Rows(&'static str, &'static [&'static str]);

#[async_trait::async_trait]
impl procfwk::store::Transition for Rows {
    type Output = Vec<Vec<Option<String>>>;
    type Error = procfwk::store::StoreError;
    async fn apply(&self, tx: &mut dyn procfwk::store::Tx) -> Result<Self::Output, Self::Error> {
        let statement = procfwk::store::Statement {
            name: "test",
            sql: self.0,
        };
        let rows = tx.query(&statement, &[]).await?;
        rows.iter()
            .map(|r| {
                self.1
                    .iter()
                    .map(|c| match r.opt_text(c) {
                        Ok(t) => Ok(t),
                        Err(_) => r.opt_i64(c).map(|n| n.map(|n| n.to_string())),
                    })
                    .collect()
            })
            .collect()
    }
}

struct VmRun {
    succeeded: bool,
    stdout: String,
    calls: Vec<Call>,
    /// `(stage, pipeline) → PipelineStatus` of the execution's workers.
    workers: BTreeMap<(i64, i64), String>,
    /// Leases still held, by pool.
    leases: Vec<String>,
    /// `VmName Event` of the power log.
    power_log: Vec<String>,
}

impl VmRun {
    /// The calls about one worker, as `Function` or `VmPower:action`.
    fn calls_of(&self, pipeline_id: i64) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.pipeline_id == Some(pipeline_id))
            .map(|c| match &c.action {
                Some(a) => format!("{}:{a}", c.function),
                None => c.function.clone(),
            })
            .collect()
    }

    fn statuses_of_stage(&self, stage: i64) -> BTreeSet<String> {
        self.workers
            .iter()
            .filter(|((s, _), _)| *s == stage)
            .map(|(_, status)| status.clone())
            .collect()
    }
}

/// The sample with one VM per stage (stage N's workers on `vm_of(N)`, grace 0 so that a stop
/// deallocates at once), played by `procfwk run --simulate --infant vm-power`.
async fn vm_run(vm_of: fn(i64) -> String, sim_config: Option<Value>) -> VmRun {
    vm_run_with("vm-power", vm_of, sim_config).await
}

/// The same, played with the given Infant (`vm-power` or `plain`: the plain Infant with the workers'
/// runtimes handled by metadata mode's Execute/Check).
async fn vm_run_with(infant: &str, vm_of: fn(i64) -> String, sim_config: Option<Value>) -> VmRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("procfwk.db").display());
    for args in [&["db", "init"][..], &["db", "seed-sample"][..]] {
        let out = procfwk(args, &db);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = procfwk::startup::open_store(&db, None)
        .await
        .expect("store");
    let stages = store
        .run(&Rows(
            "SELECT DISTINCT StageId FROM procfwk.Pipelines WHERE StageId <= 4",
            &["StageId"],
        ))
        .await
        .expect("stages");
    for stage in stages
        .iter()
        .filter_map(|r| r[0].as_deref()?.parse::<i64>().ok())
    {
        let sql = format!(
            "INSERT INTO procfwk.WorkerRuntimes (PipelineId, SubscriptionId, ResourceGroupName, VmNames, GraceSeconds, LeaseSeconds) \
             SELECT PipelineId, '12345678-1234-1234-1234-012345678910', 'ADF.procfwk', '{}', 0, 600 FROM procfwk.Pipelines WHERE StageId = {stage}",
            vm_of(stage)
        );
        store
            .run(&Exec(Box::leak(sql.into_boxed_str())))
            .await
            .expect("runtime rows");
    }
    let record = dir.path().join("calls.json");
    let mut args: Vec<String> = [
        "run",
        "--simulate",
        "--time-scale",
        "0.01",
        "--quiet",
        "--infant",
        infant,
        "--db",
        &db,
        "--record",
        record.to_str().expect("path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(config) = sim_config {
        let path = dir.path().join("sim.json");
        std::fs::write(&path, config.to_string()).expect("sim config");
        args.extend(["--sim-config".to_string(), path.display().to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = procfwk(&argv, &db);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let calls: Vec<Call> = serde_json::from_slice(&std::fs::read(&record).unwrap_or_else(|e| {
        panic!(
            "no call record ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
    .expect("call record");
    // A failed execution stays in CurrentExecution (for a restart); a finished one is in the log, where
    // the last entry of each worker is its final state.
    let mut workers: BTreeMap<(i64, i64), String> = BTreeMap::new();
    for sql in [
        "SELECT StageId, PipelineId, PipelineStatus FROM procfwk.ExecutionLog ORDER BY LogId",
        "SELECT StageId, PipelineId, PipelineStatus FROM procfwk.CurrentExecution",
    ] {
        let rows = store
            .run(&Rows(sql, &["StageId", "PipelineId", "PipelineStatus"]))
            .await
            .expect("workers");
        if sql.contains("CurrentExecution") && !rows.is_empty() {
            workers.clear();
        }
        for r in rows {
            let n = |i: usize| r[i].as_deref().and_then(|t| t.parse().ok()).unwrap_or(-1);
            workers.insert((n(0), n(1)), r[2].clone().unwrap_or_default());
        }
    }
    let leases = store
        .run(&Rows("SELECT PoolKey FROM procfwk.VmLeases", &["PoolKey"]))
        .await
        .expect("leases")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    let power_log = store
        .run(&Rows(
            "SELECT VmName, Event FROM procfwk.VmPowerLog ORDER BY LogId",
            &["VmName", "Event"],
        ))
        .await
        .expect("power log")
        .into_iter()
        .map(|r| {
            format!(
                "{} {}",
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default()
            )
        })
        .collect();
    VmRun {
        succeeded: out.status.success(),
        stdout,
        calls,
        workers,
        leases,
        power_log,
    }
}

fn vm_per_stage(stage: i64) -> String {
    format!("shir-vm-{stage}")
}

/// The simulator's sample VMs, `refused` answering 403 to one of its power actions.
fn sim_refusing(vm: &str, action: &str) -> Value {
    let vms: Vec<Value> = (1..=4)
        .map(|n| {
            let name = format!("shir-vm-{n}");
            let refused: Vec<&str> = if name == vm { vec![action] } else { vec![] };
            serde_json::json!({"name": name, "refused_actions": refused})
        })
        .collect();
    serde_json::json!({ "vms": vms })
}

/// Start, status until ready, the worker, stop: what 04-Infant-VmPower calls for a worker that runs.
fn ran_with_its_vm(calls: &[String]) -> bool {
    let Some(first) = calls.first() else {
        return false;
    };
    let after_status = calls.iter().skip(1).skip_while(|c| *c == "VmPower:status");
    let rest: Vec<&String> = after_status.collect();
    first == "VmPower:start"
        && calls.get(1).map(String::as_str) == Some("VmPower:status")
        && rest.first().map(|c| c.as_str()) == Some("ExecutePipelineV2")
        && rest
            .iter()
            .filter(|c| c.as_str() == "CheckPipelineStatus")
            .count()
            >= 1
        && rest.last().map(|c| c.as_str()) == Some("VmPower:stop")
}

#[tokio::test]
async fn procfwk_run_plays_the_vm_power_infant_with_a_vm_per_stage() {
    let run = vm_run(vm_per_stage, None).await;
    assert!(run.succeeded, "{}", run.stdout);
    assert_eq!(run.workers.len(), 11);
    assert!(
        run.workers.values().all(|s| s == "Success"),
        "{:?}",
        run.workers
    );
    for pipeline in run.workers.keys().map(|(_, p)| *p) {
        let calls = run.calls_of(pipeline);
        assert!(ran_with_its_vm(&calls), "worker {pipeline}: {calls:?}");
    }
    let outcomes = replay_vm_infant(&run);
    assert_eq!(outcomes.len(), 11);
    for (pipeline, o) in &outcomes {
        assert_eq!(o["Stop VM"], Outcome::Succeeded, "worker {pipeline}");
        assert_eq!(o["VM Not Started"], Outcome::Skipped, "worker {pipeline}");
    }
    // Each stage started its own VM, and each was deallocated once its workers were done.
    for n in 1..=4 {
        for event in ["StartRequested", "DeallocateRequested"] {
            assert!(
                run.power_log.contains(&format!("shir-vm-{n} {event}")),
                "shir-vm-{n} {event}: {:?}",
                run.power_log
            );
        }
    }
    assert_eq!(run.leases, Vec::<String>::new(), "every lease given back");
}

#[tokio::test]
async fn with_the_plain_infant_a_missing_vm_fails_its_workers_too() {
    fn missing_in_stage_2(stage: i64) -> String {
        if stage == 2 {
            "shir-vm-missing".into()
        } else {
            vm_per_stage(stage)
        }
    }
    let run = vm_run_with("plain", missing_in_stage_2, None).await;
    assert!(!run.succeeded, "the run fails: {}", run.stdout);
    assert_eq!(
        run.statuses_of_stage(2),
        BTreeSet::from(["StartRuntimeVmError".to_string()]),
        "recorded, not left Preparing: {:?}",
        run.workers
    );
    for stage in [3, 4] {
        assert_eq!(
            run.statuses_of_stage(stage),
            BTreeSet::from(["Blocked".to_string()]),
            "{:?}",
            run.workers
        );
    }
}

/// The calls of a worker whose VM start is refused: the Start VM activity and its retries.
fn refused_starts() -> Vec<String> {
    let policy = procfwk::pipeline_retries::for_call("VmPower", Some("start"));
    vec!["VmPower:start".to_string(); 1 + policy.retries as usize]
}

#[tokio::test]
async fn a_missing_vm_fails_its_workers_cleanly_blocks_later_stages_and_is_never_stopped() {
    fn missing_in_stage_2(stage: i64) -> String {
        if stage == 2 {
            "shir-vm-missing".into()
        } else {
            vm_per_stage(stage)
        }
    }
    let run = vm_run(missing_in_stage_2, None).await;
    assert!(!run.succeeded, "the run fails: {}", run.stdout);
    assert_eq!(
        run.statuses_of_stage(1),
        BTreeSet::from(["Success".to_string()])
    );
    assert_eq!(
        run.statuses_of_stage(2),
        BTreeSet::from(["StartRuntimeVmError".to_string()]),
        "{:?}",
        run.workers
    );
    for stage in [3, 4] {
        assert_eq!(
            run.statuses_of_stage(stage),
            BTreeSet::from(["Blocked".to_string()])
        );
    }
    for ((stage, pipeline), _) in run.workers.iter().filter(|((s, _), _)| *s == 2) {
        assert_eq!(
            run.calls_of(*pipeline),
            refused_starts(),
            "stage {stage} worker {pipeline}: the start and its retries; no stop for a VM never started, no worker run"
        );
    }
    assert!(
        run.calls.iter().all(|c| !(c.function == "VmPower"
            && c.status == 404
            && c.action.as_deref() != Some("start"))),
        "only the start met the missing VM"
    );
    assert!(run
        .calls
        .iter()
        .any(|c| c.function == "VmPower" && c.status == 404));
    assert!(
        run.leases.is_empty(),
        "no lease left on the missing VM: {:?}",
        run.leases
    );
    assert!(
        run.stdout.contains("could not be started") || run.stdout.contains("VmNotStarted"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_refused_start_fails_the_worker_without_a_stop_and_a_refused_stop_fails_nothing() {
    // Stage 3's VM refuses to start: its workers fail (recorded), stage 4 is blocked, no stop is tried.
    let run = vm_run(vm_per_stage, Some(sim_refusing("shir-vm-3", "start"))).await;
    assert!(!run.succeeded, "{}", run.stdout);
    for stage in [1, 2] {
        assert_eq!(
            run.statuses_of_stage(stage),
            BTreeSet::from(["Success".to_string()])
        );
    }
    assert_eq!(
        run.statuses_of_stage(3),
        BTreeSet::from(["StartRuntimeVmError".to_string()])
    );
    assert_eq!(
        run.statuses_of_stage(4),
        BTreeSet::from(["Blocked".to_string()])
    );
    for ((_, pipeline), _) in run.workers.iter().filter(|((s, _), _)| *s == 3) {
        assert_eq!(run.calls_of(*pipeline), refused_starts());
    }
    assert!(run
        .calls
        .iter()
        .any(|c| c.function == "VmPower" && c.status == 403));

    // Stage 4's VM refuses to deallocate: the worker still succeeds, and so does the run; the lease
    // stays until it expires (the idle sweep deallocates the VM later).
    let run = vm_run(vm_per_stage, Some(sim_refusing("shir-vm-4", "deallocate"))).await;
    assert!(run.succeeded, "a failed stop fails nothing: {}", run.stdout);
    assert!(
        run.workers.values().all(|s| s == "Success"),
        "{:?}",
        run.workers
    );
    let (_, pipeline) = *run
        .workers
        .keys()
        .find(|(s, _)| *s == 4)
        .expect("a stage-4 worker");
    let calls = run.calls_of(pipeline);
    assert!(ran_with_its_vm(&calls), "{calls:?}");
    let stops: Vec<u16> = run
        .calls
        .iter()
        .filter(|c| c.pipeline_id == Some(pipeline) && c.action.as_deref() == Some("stop"))
        .map(|c| c.status)
        .collect();
    let retries = procfwk::pipeline_retries::for_call("VmPower", Some("stop")).retries;
    assert_eq!(
        stops,
        vec![403; 1 + retries as usize],
        "Stop VM and its retries, all refused"
    );
    assert!(
        run.leases.iter().all(|p| p.ends_with("/shir-vm-4")) && !run.leases.is_empty(),
        "only shir-vm-4's lease is left: {:?}",
        run.leases
    );
}

// ---- evaluating the pipelines' expressions: bodies are JSON whatever the values ---------------------

/// A small interpreter of ADF's expression language, enough for the shipped request bodies: string
/// interpolation (`@{…}`), literals (`'…'` with `''` for a quote; a backslash is an ordinary character),
/// `pipeline()`, `activity('…')`, `item()`, `variables('…')`, property access (`.x`, `?.x`, `['x']`) and
/// the functions the bodies use.
struct Adf {
    pipeline: Value,
    activities: BTreeMap<String, Value>,
    item: Value,
    variables: BTreeMap<String, Value>,
}

impl Adf {
    /// A JSON string value of a pipeline: an expression when it starts with `@`, interpolated
    /// otherwise (ADF's rules; `@@` is a literal `@`).
    fn evaluate_text(&self, text: &str) -> Result<Value, String> {
        if let Some(expr) = text.strip_prefix('@') {
            if !expr.starts_with('{') && !expr.starts_with('@') {
                return self.expression(expr);
            }
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("@{") {
            out.push_str(&rest[..at]);
            let chars: Vec<(usize, char)> = rest[at + 2..].char_indices().collect();
            let (mut depth, mut quoted, mut end) = (0i32, false, None);
            for (i, c) in chars {
                match c {
                    '\'' => quoted = !quoted,
                    '{' if !quoted => depth += 1,
                    '}' if !quoted && depth == 0 => {
                        end = Some(at + 2 + i);
                        break;
                    }
                    '}' if !quoted => depth -= 1,
                    _ => {}
                }
            }
            let end = end.ok_or(format!("unterminated @{{ in {text}"))?;
            let value = self.expression(&rest[at + 2..end])?;
            out.push_str(&match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    fn expression(&self, expr: &str) -> Result<Value, String> {
        let chars: Vec<char> = expr.chars().collect();
        let mut at = 0;
        let v = self.parse(&chars, &mut at)?;
        skip_spaces(&chars, &mut at);
        if at != chars.len() {
            return Err(format!("trailing text at {at} in {expr}"));
        }
        Ok(v)
    }

    fn parse(&self, c: &[char], at: &mut usize) -> Result<Value, String> {
        skip_spaces(c, at);
        let mut value = match c.get(*at) {
            Some('\'') => {
                let mut s = String::new();
                *at += 1;
                loop {
                    match c.get(*at) {
                        None => return Err("unterminated string".into()),
                        Some('\'') if c.get(*at + 1) == Some(&'\'') => {
                            s.push('\'');
                            *at += 2;
                        }
                        Some('\'') => {
                            *at += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            *at += 1;
                        }
                    }
                }
                Value::String(s)
            }
            Some(ch) if ch.is_ascii_digit() || *ch == '-' => {
                let start = *at;
                *at += 1;
                while c.get(*at).is_some_and(|d| d.is_ascii_digit()) {
                    *at += 1;
                }
                let text: String = c[start..*at].iter().collect();
                Value::from(text.parse::<i64>().map_err(|e| e.to_string())?)
            }
            Some(ch) if ch.is_ascii_alphabetic() => {
                let start = *at;
                while c
                    .get(*at)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    *at += 1;
                }
                let name: String = c[start..*at].iter().collect();
                match name.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => {
                        skip_spaces(c, at);
                        if c.get(*at) != Some(&'(') {
                            return Err(format!("{name} is not called"));
                        }
                        *at += 1;
                        let mut args = Vec::new();
                        skip_spaces(c, at);
                        if c.get(*at) == Some(&')') {
                            *at += 1;
                        } else {
                            loop {
                                args.push(self.parse(c, at)?);
                                skip_spaces(c, at);
                                match c.get(*at) {
                                    Some(',') => *at += 1,
                                    Some(')') => {
                                        *at += 1;
                                        break;
                                    }
                                    other => return Err(format!("{name}(…): got {other:?}")),
                                }
                            }
                        }
                        self.call(&name, &args)?
                    }
                }
            }
            other => return Err(format!("unexpected {other:?}")),
        };
        loop {
            let optional = c.get(*at) == Some(&'?');
            let step = if optional { *at + 1 } else { *at };
            match c.get(step) {
                Some('.') => {
                    *at = step + 1;
                    let start = *at;
                    while c
                        .get(*at)
                        .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                    {
                        *at += 1;
                    }
                    let name: String = c[start..*at].iter().collect();
                    value = property(&value, &name, optional)?;
                }
                Some('[') => {
                    *at = step + 1;
                    let index = self.parse(c, at)?;
                    skip_spaces(c, at);
                    if c.get(*at) != Some(&']') {
                        return Err("expected ]".into());
                    }
                    *at += 1;
                    value = match index {
                        Value::String(k) => property(&value, &k, optional)?,
                        Value::Number(n) => n
                            .as_u64()
                            .and_then(|i| value.get(i as usize).cloned())
                            .ok_or("index out of range")?,
                        other => return Err(format!("bad index {other}")),
                    };
                }
                _ => return Ok(value),
            }
        }
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        let text = |i: usize| -> Result<String, String> {
            match args.get(i) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("{name}: argument {i} is {other}, not a string")),
                None => Err(format!("{name}: no argument {i}")),
            }
        };
        Ok(match name {
            "pipeline" => self.pipeline.clone(),
            "activity" => {
                self.activities.get(&text(0)?).cloned().ok_or_else(|| {
                    format!("activity {} has not run", text(0).unwrap_or_default())
                })?
            }
            "item" => self.item.clone(),
            "variables" => self
                .variables
                .get(&text(0)?)
                .cloned()
                .ok_or("no such variable")?,
            "replace" => Value::String(text(0)?.replace(&text(1)?, &text(2)?)),
            "concat" => Value::String(
                args.iter()
                    .map(|a| match a {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            "string" => Value::String(match &args[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            "json" => serde_json::from_str(&text(0)?).map_err(|e| format!("json(): {e}"))?,
            "equals" => Value::Bool(args.first() == args.get(1)),
            other => return Err(format!("the test's interpreter does not know {other}()")),
        })
    }
}

fn skip_spaces(c: &[char], at: &mut usize) {
    while c.get(*at).is_some_and(|ch| ch.is_whitespace()) {
        *at += 1;
    }
}

fn property(value: &Value, name: &str, optional: bool) -> Result<Value, String> {
    match value.get(name) {
        Some(v) => Ok(v.clone()),
        None if optional => Ok(Value::Null),
        None => Err(format!("no property {name} in {value}")),
    }
}

/// A value with every character JSON must escape in a string: quote, backslash, and a backslash
/// sequence that would mean something else if pasted raw.
const AWKWARD: &str = r#"Daily "EU" \ batch \" \\n \u0041"#;

/// Every Azure Function activity body of every pipeline, evaluated with `AWKWARD` as each string
/// parameter, activity output and item field: `(pipeline, activity, template, evaluated body)`.
fn evaluated_bodies(factory: &Factory) -> Vec<(String, String, String, Result<Value, String>)> {
    let mut out = Vec::new();
    for (name, pipeline) in &factory.pipelines {
        let declared = pipeline["properties"]["parameters"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let parameters: serde_json::Map<String, Value> = declared
            .iter()
            .map(|(p, d)| {
                let v = if d["type"] == "int" {
                    Value::from(7)
                } else {
                    Value::from(AWKWARD)
                };
                (p.clone(), v)
            })
            .collect();
        let acts = factory.activities(name);
        // Every output field an activity is read for is the awkward value.
        let mut activities: BTreeMap<String, Value> = BTreeMap::new();
        for a in &acts {
            let mut strings = Vec::new();
            own_strings(&a.json, true, &mut strings);
            for (target, field) in strings.iter().flat_map(|s| activity_refs(s)) {
                let entry = activities
                    .entry(target)
                    .or_insert_with(|| serde_json::json!({"output": {}}));
                if let Some(f) = field {
                    entry["output"][f] = Value::from(AWKWARD);
                }
            }
        }
        let adf = Adf {
            pipeline: serde_json::json!({
                "parameters": parameters,
                "RunId": AWKWARD,
                "DataFactory": AWKWARD,
            }),
            activities,
            item: serde_json::json!({}),
            variables: BTreeMap::new(),
        };
        for a in acts.iter().filter(|a| a.kind == "AzureFunctionActivity") {
            let template = a.json["typeProperties"]["body"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let body = adf.evaluate_text(&template).and_then(|v| match v {
                Value::String(s) => serde_json::from_str(&s).map_err(|e| format!("{e}: {s}")),
                other => Ok(other),
            });
            out.push((name.clone(), a.name.clone(), template, body));
        }
    }
    out
}

#[test]
fn every_request_body_is_json_and_carries_quotes_and_backslashes_intact() {
    let factory = Factory::shipped();
    let bodies = evaluated_bodies(&factory);
    assert_eq!(bodies.len(), 10, "the ten Azure Function activities");
    for (pipeline, activity, template, body) in &bodies {
        let body = body
            .as_ref()
            .unwrap_or_else(|e| panic!("{pipeline} / {activity}: not JSON: {e}"));
        // Every field the template fills from an expression inside quotes arrives as the value itself;
        // literal fields keep their literal.
        let shape = body_as_json(template).expect("template shape");
        for (field, placeholder) in shape.as_object().into_iter().flatten() {
            let got = &body[field];
            match placeholder {
                Value::String(s) if s == "0" => assert_eq!(
                    got,
                    &Value::from(AWKWARD),
                    "{pipeline} / {activity}: {field}"
                ),
                Value::Number(_) => assert!(got.is_number(), "{pipeline} / {activity}: {field}"),
                literal => assert_eq!(got, literal, "{pipeline} / {activity}: {field}"),
            }
        }
    }
    // What the handler reads: StartExecution's batch name, through the handler's own field reader.
    let (_, _, _, start) = bodies
        .iter()
        .find(|(p, a, _, _)| p == "02-Parent" && a == "Start Execution")
        .expect("Start Execution");
    let start = start.as_ref().expect("JSON");
    let fields = procfwk::domain::request::Fields::new(start).expect("an object");
    assert_eq!(
        fields.text("batchName").expect("text").as_deref(),
        Some(AWKWARD)
    );
}

#[test]
fn the_interpreter_catches_a_body_that_pastes_values_raw() {
    let adf = Adf {
        pipeline: serde_json::json!({"parameters": {"BatchName": AWKWARD}}),
        activities: BTreeMap::new(),
        item: Value::Null,
        variables: BTreeMap::new(),
    };
    // The Parent's body before it escaped its values.
    let raw = adf
        .evaluate_text("{\"batchName\": \"@{pipeline().parameters.BatchName}\"}")
        .expect("evaluates");
    assert!(serde_json::from_str::<Value>(raw.as_str().unwrap_or_default()).is_err());
    // ADF's literals: '' is a quote, a backslash is itself.
    assert_eq!(
        adf.expression("'it''s \\ fine'"),
        Ok(Value::from("it's \\ fine"))
    );
    assert_eq!(adf.expression("concat('a', 'b')"), Ok(Value::from("ab")));
}

#[test]
fn the_managed_identity_linked_service_variant_replaces_the_key_one() {
    let default = &resources("linkedService")["FrameworkFunctions"];
    let path = repo().join("deploy/adf-msi/linkedService/FrameworkFunctions.json");
    let msi = read_json(&path);
    // The same resource, so the pipelines use it unchanged when it is deployed instead.
    assert_eq!(msi["name"], default["name"]);
    assert_eq!(msi["type"], default["type"]);
    assert_eq!(msi["properties"]["type"], "AzureFunction");
    let tp = &msi["properties"]["typeProperties"];
    assert_eq!(tp["authentication"], "MSI");
    assert!(tp["resourceId"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(tp["functionAppUrl"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://")));
    assert!(
        tp.get("functionKey").is_none(),
        "no shared secret in the factory"
    );
    // The default keeps the function key (from Key Vault).
    assert!(default["properties"]["typeProperties"]["functionKey"].is_object());
    assert!(default["properties"]["typeProperties"]
        .get("authentication")
        .is_none());
}

// ---- one worker's calls replayed against an Infant pipeline with ADF's dependency rules --------------

/// How an activity ended, for its dependants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Skipped,
}

/// `Function` or `Function:action` for an Azure Function activity (VmPower's literal action).
fn call_label(activity: &Value) -> String {
    let tp = &activity["typeProperties"];
    let function = tp["functionName"].as_str().unwrap_or_default();
    let body = tp["body"]["value"].as_str().unwrap_or_default();
    match body_as_json(body)
        .ok()
        .and_then(|b| b["action"].as_str().map(String::from))
    {
        Some(action) => format!("{function}:{action}"),
        None => function.to_string(),
    }
}

fn label_of(call: &Call) -> String {
    match &call.action {
        Some(a) => format!("{}:{a}", call.function),
        None => call.function.clone(),
    }
}

/// Replay `calls` against one container of activities: each activity runs when all its dependencies
/// are met (`Completed` = succeeded or failed; a skipped activity's dependants see `Skipped`), an
/// Azure Function activity consumes its call and retries, an Until repeats its body while the next call
/// is the body's first. Returns the calls consumed and every activity's outcome.
fn replay_container(
    list: &Value,
    calls: &[Call],
) -> Result<(usize, BTreeMap<String, Outcome>), String> {
    let acts: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    let mut outcome: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut i = 0;
    while outcome.len() < acts.len() {
        let ready = acts.iter().find(|a| {
            let name = a["name"].as_str().unwrap_or_default();
            !outcome.contains_key(name)
                && a["dependsOn"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|d| outcome.contains_key(d["activity"].as_str().unwrap_or_default()))
        });
        let a = ready.ok_or("dependency cycle")?;
        let name = a["name"].as_str().unwrap_or_default().to_string();
        let runs = a["dependsOn"].as_array().into_iter().flatten().all(|d| {
            let o = outcome[d["activity"].as_str().unwrap_or_default()];
            d["dependencyConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    matches!(
                        (c.as_str().unwrap_or_default(), o),
                        ("Succeeded", Outcome::Succeeded)
                            | ("Failed", Outcome::Failed)
                            | ("Completed", Outcome::Succeeded | Outcome::Failed)
                            | ("Skipped", Outcome::Skipped)
                    )
                })
        });
        if !runs {
            outcome.insert(name, Outcome::Skipped);
            continue;
        }
        let result = match a["type"].as_str().unwrap_or_default() {
            "AzureFunctionActivity" => {
                let label = call_label(a);
                let retries = a["policy"]["retry"].as_u64().unwrap_or(0);
                let mut ok = false;
                for _ in 0..=retries {
                    let call = calls.get(i).ok_or(format!(
                        "{name}: expected {label}, the worker's calls ended"
                    ))?;
                    if label_of(call) != label {
                        return Err(format!("{name}: expected {label}, got {}", label_of(call)));
                    }
                    i += 1;
                    if call.status == 200 {
                        ok = true;
                        break;
                    }
                    if calls.get(i).map(label_of) != Some(label.clone()) {
                        break;
                    }
                }
                if ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                }
            }
            "Until" => {
                let body = &a["typeProperties"]["activities"];
                let first = body
                    .as_array()
                    .and_then(|b| b.iter().find(|x| x["type"] == "AzureFunctionActivity"))
                    .map(call_label)
                    .ok_or("an Until without a call")?;
                let mut result = Outcome::Succeeded;
                loop {
                    let (n, inner) = replay_container(body, &calls[i..])?;
                    i += n;
                    if inner.values().any(|o| *o == Outcome::Failed) {
                        result = Outcome::Failed;
                        break;
                    }
                    if calls.get(i).map(label_of) != Some(first.clone()) {
                        break;
                    }
                }
                result
            }
            "Fail" => Outcome::Failed,
            // Wait, SetVariable; an IfCondition here holds no call (its outcome is the run's, checked
            // by the caller).
            _ => Outcome::Succeeded,
        };
        outcome.insert(name, result);
    }
    Ok((i, outcome))
}

/// Every worker's calls in a VmPower Infant run are exactly those 04-Infant-VmPower makes, given the
/// answers they got; returns each worker's activity outcomes.
fn replay_vm_infant(run: &VmRun) -> BTreeMap<i64, BTreeMap<String, Outcome>> {
    let factory = Factory::shipped();
    let activities = &factory.pipelines["04-Infant-VmPower"]["properties"]["activities"];
    let mut out = BTreeMap::new();
    let workers: BTreeSet<i64> = run.calls.iter().filter_map(|c| c.pipeline_id).collect();
    for pipeline in workers {
        let calls: Vec<Call> = run
            .calls
            .iter()
            .filter(|c| c.pipeline_id == Some(pipeline))
            .cloned()
            .collect();
        let (n, outcome) = replay_container(activities, &calls)
            .unwrap_or_else(|e| panic!("worker {pipeline}: {e}\n{:?}", run.calls_of(pipeline)));
        assert_eq!(
            n,
            calls.len(),
            "worker {pipeline}: calls the pipeline would not make: {:?}",
            &run.calls_of(pipeline)[n..]
        );
        out.insert(pipeline, outcome);
    }
    out
}

/// Where the Azure Function activities of `factory` retry otherwise than `procfwk::pipeline_retries`
/// (the table `procfwk run` follows) says, and rows of that table no pipeline has. VmPower's action is
/// read from the activity's body as ADF evaluates it.
fn retry_policy_problems(factory: &Factory) -> Vec<String> {
    use procfwk::pipeline_retries::{for_call, ACTIVITIES};
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (pipeline, activity, _, body) in evaluated_bodies(factory) {
        let Some(a) = factory
            .activities(&pipeline)
            .into_iter()
            .find(|a| a.name == activity)
        else {
            problems.push(format!("{pipeline}/{activity}: not found"));
            continue;
        };
        let function = a.json["typeProperties"]["functionName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let action = body
            .as_ref()
            .ok()
            .and_then(|b| b["action"].as_str().map(String::from));
        let policy = &a.json["policy"];
        let (retry, interval) = (
            policy["retry"].as_u64(),
            policy["retryIntervalInSeconds"].as_u64(),
        );
        let Some(row) = ACTIVITIES
            .iter()
            .find(|r| r.pipeline == pipeline && r.activity == activity)
        else {
            problems.push(format!(
                "{pipeline}/{activity} ({function}): no retry policy in procfwk::pipeline_retries"
            ));
            continue;
        };
        seen.insert((row.pipeline, row.activity));
        if row.function != function || row.action.map(String::from) != action {
            problems.push(format!(
                "{pipeline}/{activity}: calls {function} {action:?}, the table says {} {:?}",
                row.function, row.action
            ));
        }
        if retry != Some(u64::from(row.policy.retries))
            || interval != Some(u64::from(row.policy.interval_secs))
        {
            problems.push(format!(
                "{pipeline}/{activity}: retry {retry:?} every {interval:?} s, documented {} every {} s",
                row.policy.retries, row.policy.interval_secs
            ));
        }
        if for_call(&function, action.as_deref()) != row.policy {
            problems.push(format!(
                "{pipeline}/{activity}: procfwk run retries {function} otherwise"
            ));
        }
    }
    for row in ACTIVITIES {
        if !seen.contains(&(row.pipeline, row.activity)) {
            problems.push(format!(
                "procfwk::pipeline_retries has {}/{}, which no shipped pipeline has",
                row.pipeline, row.activity
            ));
        }
    }
    problems
}

#[test]
fn every_function_activity_retries_as_documented_and_as_procfwk_run_does() {
    let factory = Factory::shipped();
    let problems = retry_policy_problems(&factory);
    assert!(problems.is_empty(), "{problems:#?}");
    // The worker's own calls ride out an instance restart in both Infants.
    for pipeline in ["04-Infant", "04-Infant-VmPower"] {
        for a in factory
            .activities(pipeline)
            .iter()
            .filter(|a| a.kind == "AzureFunctionActivity")
        {
            assert!(
                a.json["policy"]["retry"].as_u64() >= Some(3),
                "{pipeline}/{}",
                a.name
            );
        }
    }
}

#[test]
fn the_retry_check_catches_a_policy_that_drifted() {
    let mut factory = Factory::shipped();
    let infant = factory.pipelines.get_mut("04-Infant").expect("04-Infant");
    infant["properties"]["activities"][0]["policy"]["retry"] = Value::from(0);
    let problems = retry_policy_problems(&factory);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("04-Infant/Execute Worker: retry Some(0)")),
        "{problems:#?}"
    );
    let mut factory = Factory::shipped();
    let child = factory.pipelines.get_mut("03-Child").expect("03-Child");
    child["properties"]["activities"][0]["name"] = Value::from("Renamed");
    let problems = retry_policy_problems(&factory);
    assert!(
        problems.iter().any(|p| p.contains("03-Child/Renamed")),
        "{problems:#?}"
    );
}

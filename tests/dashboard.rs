//! The execution dashboard: what it shows of a finished, a failed and a running execution, how the
//! handler serves it (function key, query options, both protocols), `procfwk db report --html`, and its
//! read and render time on a year of nightly executions.

mod history;
mod support;

use procfwk::dashboard::{self, Options};
use serde_json::{json, Value};
use std::time::Instant;

fn page_of(path: &std::path::Path, options: Options) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = procfwk::startup::open_store(&format!("sqlite:{}", path.display()), None)
            .await
            .expect("open store");
        let snapshot = dashboard::read(&store, options, procfwk::orchestration::now())
            .await
            .expect("read snapshot");
        dashboard::html::render(&snapshot)
    })
}

/// The element (start tag up to its end) that carries `marker`.
fn tag_with<'a>(page: &'a str, marker: &str) -> Vec<&'a str> {
    page.match_indices(marker)
        .filter_map(|(at, _)| {
            let start = page[..at].rfind('<')?;
            let end = at + page[at..].find('>')?;
            Some(&page[start..=end])
        })
        .collect()
}

#[test]
fn the_three_states_are_on_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = history::three_states(dir.path());
    let page = page_of(&s.path, Options::default());

    // The running execution: stage 1 done, stage 2 running with one of two workers done.
    assert!(page.contains(&format!("data-execution-id=\"{}\"", s.running)));
    let stage2 = tag_with(&page, "data-stage-id=\"2\" data-state=");
    assert_eq!(
        stage2,
        vec!["<div class=\"stage-row stage\" data-stage-id=\"2\" data-state=\"running\" data-done=\"1\" data-total=\"2\">"]
    );
    assert!(page.contains("running: 1 of 2 worker(s) done (50%)"));
    assert!(page.contains("data-stage-id=\"1\" data-state=\"done\""));
    assert!(page.contains("data-stage-id=\"3\" data-state=\"waiting\""));

    // The failed worker: a red bar linking to its run in ADF Studio.
    let link = format!(
        "https://adf.azure.com/monitoring/pipelineruns/{}?factory=%2Fsubscriptions%2F{}%2FresourceGroups%2F{}%2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2F{}",
        s.failed_run,
        history::SUBSCRIPTION,
        history::RESOURCE_GROUP,
        history::FACTORY
    );
    let bar = format!("<a href=\"{link}\" target=\"_blank\" rel=\"noopener\"><rect class=\"bar s-failed\" data-worker=\"{}\" data-status=\"Failed\"", s.failed_worker);
    assert!(page.contains(&bar), "no red bar linking to the failed run");
    assert!(page.contains("fill=\"#c62828\""));
    // Its ErrorLog row, escaped.
    assert!(page.contains(
        "Operation on target Raise Errors or Not failed: &lt;the error&gt; &amp; &quot;quoted&quot;"
    ));
    assert!(!page.contains("<the error>"));
    // Both logged executions are on the timeline, newest first.
    let failed_at = page.find(&format!("Execution {} ·", s.failed));
    let finished_at = page.find(&format!("Execution {} ·", s.finished));
    assert!(
        matches!((failed_at, finished_at), (Some(a), Some(b)) if a < b),
        "{failed_at:?} {finished_at:?}"
    );
    // Stage durations over time with procfwk's AverageStageDuration.
    assert!(page.contains("AverageStageDuration (last 2 execution(s))"));
    assert!(page.contains("class=\"stage-line\" data-stage-id=\"1\""));
}

#[test]
fn text_from_the_store_is_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history::sample_store(dir.path());
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let evil = "<img src=x onerror=alert(1)>\"'&";
    let execution = uuid::Uuid::new_v4();
    let mut w = history::Worker::done(1, 1, evil, "Failed", history::day(3), 10);
    w.run_id = Some(uuid::Uuid::new_v4());
    history::log_execution(&conn, execution, &[w.clone()]);
    history::error_row(
        &conn,
        execution,
        w.run_id.unwrap_or_default(),
        "</td><script>alert(2)</script>",
    );
    conn.execute(
        "UPDATE Stages SET StageName = '<b>Extract</b>' WHERE StageId = 1",
        [],
    )
    .expect("rename stage");
    let page = page_of(&path, Options::default());
    assert!(
        !page.contains("<img"),
        "markup from a pipeline name reached the page"
    );
    assert!(
        !page.contains("<script"),
        "markup from an error message reached the page"
    );
    assert!(
        !page.contains("<b>Extract"),
        "markup from a stage name reached the page"
    );
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"));
}

#[test]
fn the_handler_serves_it_behind_the_function_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = history::three_states(dir.path());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(served(&s));
}

async fn served(s: &history::ThreeStates) {
    let stack = support::spawn_app_with(
        support::sim_config(),
        &[
            (
                "PROCFWK_METADATA_DB",
                format!("sqlite:{}", s.path.display()),
            ),
            ("PROCFWK_FUNCTION_KEY", support::FUNCTION_KEY.to_string()),
        ],
    );
    let handler = &stack.handler;
    let client = reqwest::Client::new();
    let url = format!("{}/api/Dashboard", handler.url);

    let r = client.get(&url).send().await.expect("reachable");
    assert_eq!(r.status().as_u16(), 401);

    let r = client
        .get(&url)
        .header("x-functions-key", support::FUNCTION_KEY)
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let page = r.text().await.unwrap_or_default();
    for id in [s.running, s.failed, s.finished] {
        assert!(page.contains(&id.to_string()), "{id} is not on the page");
    }
    assert!(
        !page.contains(support::FUNCTION_KEY),
        "the key is on the page"
    );
    assert!(
        !page.to_lowercase().contains("sqlite:"),
        "the store setting is on the page"
    );

    // Options by query string; a bad one is a 400 naming its field.
    let r = client
        .get(format!("{url}?code={}&executions=1", support::FUNCTION_KEY))
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 200);
    let page = r.text().await.unwrap_or_default();
    assert!(page.contains(&s.failed.to_string()));
    assert!(!page.contains(&format!("Execution {} ·", s.finished)));
    let r = client
        .get(format!("{url}?executions=0"))
        .header("x-functions-key", support::FUNCTION_KEY)
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["field"], "executions");
    // Read-only: GET only.
    let r = client
        .post(&url)
        .header("x-functions-key", support::FUNCTION_KEY)
        .body("{}")
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 405);

    // The invocation payload: the page travels inside Outputs.res with its content type.
    let payload = json!({
        "Data": {"req": {"Url": "http://localhost:7071/api/Dashboard", "Method": "GET",
            "Query": {"history": "5"}, "Headers": {}, "Params": {}, "Identities": []}},
        "Metadata": {},
    });
    let r = client
        .post(format!("{}/Dashboard", handler.url))
        .header("x-functions-key", support::FUNCTION_KEY)
        .json(&payload)
        .send()
        .await
        .expect("reachable");
    assert_eq!(r.status().as_u16(), 200);
    let envelope: Value = r.json().await.unwrap_or(Value::Null);
    let res = &envelope["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200);
    assert_eq!(res["headers"]["Content-Type"], "text/html; charset=utf-8");
    assert!(res["body"]
        .as_str()
        .is_some_and(|b| b.starts_with("<!DOCTYPE html>") && b.contains(&s.running.to_string())));
}

#[test]
fn db_report_writes_the_same_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = history::three_states(dir.path());
    let out = dir.path().join("night.html");
    let status = std::process::Command::new(support::binary())
        .args([
            "db",
            "--db",
            &format!("sqlite:{}", s.path.display()),
            "report",
            "--html",
            out.to_str().unwrap_or_default(),
        ])
        .env_remove("PROCFWK_METADATA_DB")
        .output()
        .expect("run procfwk db report");
    assert!(status.status.success(), "{status:?}");
    let page = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(&format!("data-execution-id=\"{}\"", s.running)));
    assert!(page.contains("data-status=\"Failed\""));
}

/// The render time the issue asks for: a year of nightly executions of 200 workers.
/// `cargo test --test dashboard a_year -- --nocapture` prints it.
#[test]
fn a_year_of_nights_reads_and_renders_quickly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let path = history::year_of_nights(dir.path(), 365, 200);
    let generated = started.elapsed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime
        .block_on(procfwk::startup::open_store(
            &format!("sqlite:{}", path.display()),
            None,
        ))
        .expect("open store");
    let (mut reads, mut renders, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..5 {
        let t = Instant::now();
        let snapshot = runtime
            .block_on(dashboard::read(
                &store,
                Options::default(),
                procfwk::orchestration::now(),
            ))
            .expect("read");
        let read = t.elapsed();
        let page = dashboard::html::render(&snapshot);
        renders.push(t.elapsed() - read);
        reads.push(read);
        bytes = page.len();
        assert_eq!(snapshot.executions.len(), 90);
        assert_eq!(snapshot.timeline.len(), 7 * 200);
        assert_eq!(snapshot.pools.len(), 1);
        let cost = snapshot.pools[0].cost.clone().expect("pool cost");
        // 95 leased and 105 allocated minutes a night.
        assert!(
            (cost.leased_hours - 365.0 * 95.0 / 60.0).abs() < 0.01,
            "{cost:?}"
        );
        assert!(
            (cost.allocated_hours - 365.0 * 105.0 / 60.0).abs() < 0.01,
            "{cost:?}"
        );
    }
    reads.sort();
    renders.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "365 executions x 200 workers (store generated in {:.1} s): read median {:.1} ms (max {:.1}), render median {:.1} ms (max {:.1}), page {} KiB",
        generated.as_secs_f64(),
        ms(reads[2]),
        ms(reads[4]),
        ms(renders[2]),
        ms(renders[4]),
        bytes / 1024
    );
    // A debug build on a busy two-core machine: generous, but a full scan per execution would miss it.
    assert!(ms(reads[2]) + ms(renders[2]) < 3000.0);
}

/// `procfwk run --report FILE` after a real run whose Intentional Error fails: the page shows the
/// failed worker with the ErrorLog rows the lifecycle wrote; without --report the run says how to get it.
#[test]
fn procfwk_run_writes_the_report_of_a_real_failed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history::sample_store(dir.path());
    rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.execute(
                "UPDATE PipelineParameters SET ParameterValue = 'true' WHERE ParameterName = 'RaiseErrors'",
                [],
            )
        })
        .expect("raise errors");
    let report = dir.path().join("run.html");
    let db = format!("sqlite:{}", path.display());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--simulate",
            "--time-scale",
            "0.01",
            "--quiet",
            "--db",
            &db,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(support::binary())
            .args(&args)
            .env_remove("PROCFWK_METADATA_DB")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("IDENTITY_HEADER")
            .output()
            .expect("run procfwk run")
    };
    let out = run(&["--report", report.to_str().unwrap_or_default()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the execution should fail: {stdout}");
    assert!(
        stdout.contains(&format!("dashboard: {}", report.display())),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&report).unwrap_or_default();
    let failed = tag_with(
        &page,
        "data-worker=\"Intentional Error\" data-status=\"Failed\"",
    );
    assert!(!failed.is_empty(), "the failed worker is not on the page");
    assert!(
        page.contains("<table class=\"errors\">"),
        "no ErrorLog rows"
    );
    assert!(page.contains("https://adf.azure.com/monitoring/pipelineruns/"));

    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dashboard: run with --report"), "{stdout}");
}

/// Azure SQL runs the same statements: through tiberius (against the project's TDS test server over
/// the same file) the page is the page SQLite gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiberius_reads_the_same_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture_dir = dir.path().to_path_buf();
    let s = tokio::task::spawn_blocking(move || history::three_states(&fixture_dir))
        .await
        .expect("fixture");
    let server = tds_test_server::TdsTestServer::start(tds_test_server::ServerOptions {
        database_path: s.path.clone(),
        users: vec![("procfwk".into(), "dash-Pw-4e7".into())],
        init_sql: procfwk::adapters::sqlite::schema_statements(),
        ..Default::default()
    })
    .await
    .expect("TDS server");
    let tds = procfwk::startup::open_store(
        &format!(
            "Server=tcp:127.0.0.1,{};Database=procfwk;User ID=procfwk;Password=dash-Pw-4e7;Encrypt=DANGER_PLAINTEXT",
            server.port()
        ),
        None,
    )
    .await
    .expect("tiberius store");
    let sqlite = procfwk::startup::open_store(&format!("sqlite:{}", s.path.display()), None)
        .await
        .expect("sqlite store");
    let now = procfwk::orchestration::now();
    let over_tds = dashboard::read(&tds, Options::default(), now)
        .await
        .expect("read over TDS");
    let embedded = dashboard::read(&sqlite, Options::default(), now)
        .await
        .expect("read from SQLite");
    assert_eq!(over_tds.timeline.len(), 7);
    assert_eq!(over_tds.current.len(), 5);
    assert_eq!(
        dashboard::html::render(&over_tds),
        dashboard::html::render(&embedded)
    );
}

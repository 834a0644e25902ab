//! The whole sample hierarchy with the metadata in "Azure SQL": `procfwk db seed-sample` and the handler
//! talk TDS (tiberius) to the project's test server (on PostgreSQL, schema by `procfwk db init`), `procfwk run` plays the pipelines. Also measures the
//! store round trips per worker lifecycle (printed with `--nocapture`).

mod support;
use std::process::Command;
use support::*;
use tds_test_server::{ServerOptions, TdsTestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_hierarchy_on_tiberius_and_round_trips_per_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    // PostgreSQL behind the TDS server (Azure SQL's concurrency semantics); the schema comes from
    // `procfwk db init` (deploy/sql as written).
    let server = TdsTestServer::start(ServerOptions {
        backend: tds_test_server::Backend::postgres_for_tests().expect("PostgreSQL for the tests"),
        database_path: dir.path().join("procfwk.db"),
        users: vec![("procfwk".into(), "e2e-Pw-9c1".into())],
        ..Default::default()
    })
    .await
    .expect("TDS server");
    let db = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;User ID=procfwk;Password=e2e-Pw-9c1;Encrypt=DANGER_PLAINTEXT",
        server.port()
    );
    // The TDS server lives in this process: run the commands off the async threads.
    let init_db = db.clone();
    let init = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["db", "init"])
            .env("PROCFWK_METADATA_DB", &init_db)
            .output()
    })
    .await
    .expect("join")
    .expect("db init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let seed_db = db.clone();
    let seed = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["db", "seed-sample"])
            .env("PROCFWK_METADATA_DB", &seed_db)
            .output()
    })
    .await
    .expect("join")
    .expect("seed");
    assert!(
        seed.status.success(),
        "{}",
        String::from_utf8_lossy(&seed.stderr)
    );

    let stack = stack_with(
        sim_config(),
        &[
            ("PROCFWK_METADATA_DB", db.clone()),
            ("RUST_LOG", "info".into()),
        ],
    );
    server.clear_statements();
    let started = std::time::Instant::now();
    let url = stack.handler.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["run", "--functions-url", &url, "--time-scale", "0.01"])
            .output()
    })
    .await
    .expect("join")
    .expect("run");
    let wall = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\n{}", stack.handler.output());
    assert!(text.contains("succeeded"), "{text}");
    assert!(
        !db.is_empty() && !stack.handler.output().contains("e2e-Pw-9c1"),
        "the connection string's password is never logged"
    );

    let sent = server.statements();
    let transactions = sent
        .iter()
        .filter(|s| s.contains("BEGIN TRANSACTION"))
        .count();
    let statements = sent
        .iter()
        .filter(|s| {
            !s.contains("BEGIN TRANSACTION") && !s.starts_with("COMMIT") && s.trim() != "SELECT 1"
        })
        .count();
    let workers = 11.0;
    println!(
        "full sample on tiberius: {} round trips ({} transactions, {} statements) for 11 workers = {:.1} round trips and {:.1} transactions per worker; wall time {:.2} s",
        sent.len(),
        transactions,
        statements,
        sent.len() as f64 / workers,
        transactions as f64 / workers,
        wall.as_secs_f64()
    );
    assert!(
        (sent.len() as f64 / workers) < 80.0,
        "round trips per worker grew: {}",
        sent.len()
    );
}

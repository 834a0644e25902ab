//! The TDS test server as a standalone process, so that any TDS client
//! (tiberius, sqlcmd with `-N disable`, …) can be pointed at it:
//!
//! ```text
//! cargo run -p tds-test-server -- --listen 127.0.0.1:14330 \
//!     --postgres "host=127.0.0.1 port=54329 user=postgres dbname=procfwk"
//! cargo run -p tds-test-server -- --listen 127.0.0.1:14330 --sqlite /tmp/procfwk.db
//! ```
//!
//! Options: `--listen ADDR` (default `127.0.0.1:1433`); exactly one backend:
//! `--postgres CONNINFO` (the database of the connection string is used as it
//! is; add `--fresh-database` to create a new empty one next to it instead)
//! or `--sqlite FILE`; `--login USER:PASSWORD` (repeatable; without it any
//! login is accepted). Clients connect without TLS (`encrypt=DANGER_PLAINTEXT`).
//! Runs until interrupted (Ctrl-C).

use std::net::SocketAddr;
use std::path::PathBuf;
use tds_test_server::{Backend, PgTarget, ServerOptions, TdsTestServer};

const USAGE: &str = "usage: tds-test-server [--listen ADDR] (--postgres CONNINFO [--fresh-database] | --sqlite FILE) [--login USER:PASSWORD]...";

fn parse(args: &[String]) -> Result<ServerOptions, String> {
    let mut listen: SocketAddr = "127.0.0.1:1433".parse().map_err(|e| format!("{e}"))?;
    let mut postgres: Option<String> = None;
    let mut sqlite: Option<PathBuf> = None;
    let mut fresh = false;
    let mut users = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                listen = v
                    .parse()
                    .map_err(|e| format!("--listen {v:?}: {e} (use IP:PORT)"))?;
            }
            "--postgres" => postgres = Some(value("--postgres")?),
            "--sqlite" => sqlite = Some(PathBuf::from(value("--sqlite")?)),
            "--fresh-database" => fresh = true,
            "--login" => {
                let v = value("--login")?;
                let (u, p) = v
                    .split_once(':')
                    .ok_or_else(|| "--login takes USER:PASSWORD".to_string())?;
                users.push((u.to_string(), p.to_string()));
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (backend, database_path) = match (postgres, sqlite) {
        (Some(conninfo), None) => (
            Backend::Postgres(PgTarget {
                conninfo,
                fresh_database: fresh,
            }),
            PathBuf::new(),
        ),
        (None, Some(path)) => (Backend::Sqlite, path),
        _ => return Err(format!("name exactly one backend\n{USAGE}")),
    };
    Ok(ServerOptions {
        backend,
        database_path,
        listen: Some(listen),
        users,
        ..Default::default()
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = match TdsTestServer::start(options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tds-test-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "tds-test-server listening on {} (connect with encrypt=DANGER_PLAINTEXT)",
        server.addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse(&args(&[
            "--listen",
            "127.0.0.1:14330",
            "--postgres",
            "host=127.0.0.1 dbname=x",
            "--login",
            "sa:pw",
        ]))
        .unwrap();
        assert_eq!(o.listen, Some("127.0.0.1:14330".parse().unwrap()));
        assert!(matches!(o.backend, Backend::Postgres(ref t) if !t.fresh_database));
        assert_eq!(o.users, vec![("sa".to_string(), "pw".to_string())]);
        assert!(parse(&args(&["--sqlite", "a.db", "--postgres", "x"])).is_err());
        assert!(parse(&args(&["--listen", "nope", "--sqlite", "a.db"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }
}

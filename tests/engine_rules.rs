//! What Azure SQL does differently from SQLite, shown on the multi-version engine (PostgreSQL behind
//! the TDS test server, with Azure SQL's case-insensitive collation and 900-byte key limit): lease
//! holders that differ only in case are one holder, and pools of long VM names still fit their keys.

mod pg_support;

use pg_support::{pg_db, pool, RunningVms};
use procfwk::leases::{Change, Decision, PoolSpec};
use procfwk::orchestration::now;
use std::sync::Arc;

fn take(spec: &PoolSpec, holder: &str) -> Decision {
    Decision::new(
        spec.clone(),
        Change::Take {
            holder: holder.into(),
            lease_secs: 300,
        },
        now(),
        Arc::new(RunningVms::default()),
    )
}

#[tokio::test]
async fn holders_that_differ_only_in_case_are_one_holder() {
    let db = pg_db(2).await;
    let store = &db.store;
    let pool = pool(&"r".repeat(90), &["shir-vm-01"], 4, 600);
    let first = take(&pool, "Nightly-Run-1").run(store).await.expect("take");
    assert_eq!(first.active_leases, 1);
    let again = take(&pool, "nightly-run-1")
        .run(store)
        .await
        .expect("the same holder in other case renews, it does not collide on the key");
    assert_eq!(again.active_leases, 1, "{again:?}");
    let release = Decision::new(
        pool.clone(),
        Change::Release {
            holder: "NIGHTLY-RUN-1".into(),
        },
        now(),
        Arc::new(RunningVms::default()),
    )
    .run(store)
    .await
    .expect("release");
    assert_eq!(release.active_leases, 0, "{release:?}");
}

#[tokio::test]
async fn long_names_keep_the_lease_key_within_900_bytes() {
    let db = pg_db(2).await;
    let store = &db.store;
    let vms: Vec<String> = (1..=4).map(|i| format!("{}{i}", "v".repeat(63))).collect();
    let names: Vec<&str> = vms.iter().map(String::as_str).collect();
    let pool = pool(&"r".repeat(90), &names, 4, 600);
    assert!(pool.key().chars().count() <= procfwk::leases::MAX_POOL_KEY_CHARS);
    let holder = "h".repeat(200);
    let report = take(&pool, &holder).run(store).await.expect("no 1946");
    assert_eq!(report.active_leases, 1);
}

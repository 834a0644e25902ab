//! The lock-convoy benchmark of issue #9: 50 concurrent Infants start their worker's VM on one runtime
//! pool, every ARM call taking 200 ms, through tiberius on the multi-version engine (PostgreSQL behind
//! the TDS test server), while unrelated transitions (a status check's read) keep running. Once with the
//! convoy fix (per-pool turn in the process + a bounded lock wait, `PROCFWK_VM_LOCK_WAIT_SECS`), once
//! with it switched off (`off`: every caller queues on the pool's row lock holding a pooled connection).
//!
//! `cargo test --release --test vm_convoy -- --nocapture` prints the table; the assertions hold on any
//! machine: with the fix, unrelated transitions are not starved of connections.

mod pg_support;

use pg_support::{pg_db, pool, RunningVms};
use procfwk::leases::{Change, Decision, PowerControl};
use procfwk::orchestration::now;
use procfwk::store::{statements, StoreError, Transition, Tx};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INFANTS: usize = 50;
const ARM_LATENCY: Duration = Duration::from_millis(200);
const POOL_SIZE: u32 = 10;

struct StatusRead;

#[async_trait::async_trait]
impl Transition for StatusRead {
    type Output = usize;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<usize, StoreError> {
        Ok(tx.query(&statements::CURRENT_PROPERTIES, &[]).await?.len())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Outcome {
    vm_p50: Duration,
    vm_p99: Duration,
    busy_answers: usize,
    most_in_use: u32,
    other_p99: Duration,
    other_max: Duration,
}

async fn run(lock_wait: Option<Duration>) -> Outcome {
    let db = pg_db(POOL_SIZE).await;
    let (backend, store) = (db.backend.clone(), db.store.clone());
    let spec = pool("shir-rg", &["shir-vm-01"], 64, 600);
    let power: Arc<dyn PowerControl> = Arc::new(RunningVms::with_latency(ARM_LATENCY));
    // The pool exists and its VM runs before the burst.
    Decision::new(
        spec.clone(),
        Change::Take {
            holder: "warm-up".into(),
            lease_secs: 600,
        },
        now(),
        power.clone(),
    )
    .with_lock_wait(lock_wait)
    .run(&store)
    .await
    .expect("warm-up");

    let done = Arc::new(AtomicBool::new(false));
    let most_in_use = Arc::new(AtomicU32::new(0));
    let sampler = {
        let (backend, done, most) = (backend.clone(), done.clone(), most_in_use.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let s = backend.pool_status();
                most.fetch_max(s.connections.saturating_sub(s.idle), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Unrelated transitions arrive at a fixed rate (one every 25 ms), each on its own, as other
    // Infants' status checks do.
    let other = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let store = store.clone();
                calls.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    let _ = store.run(&StatusRead).await;
                    t0.elapsed()
                }));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let mut took = Vec::new();
            for call in calls {
                if let Ok(t) = call.await {
                    took.push(t);
                }
            }
            took
        })
    };
    let infants: Vec<_> = (0..INFANTS)
        .map(|i| {
            let (store, spec, power) = (store.clone(), spec.clone(), power.clone());
            tokio::spawn(async move {
                let t0 = Instant::now();
                let report = Decision::new(
                    spec,
                    Change::Take {
                        holder: format!("infant-{i}"),
                        lease_secs: 600,
                    },
                    now(),
                    power,
                )
                .with_lock_wait(lock_wait)
                .run(&store)
                .await
                .expect("decision");
                (t0.elapsed(), report.deferred && !report.ready)
            })
        })
        .collect();
    let mut vm = Vec::new();
    let mut busy_answers = 0;
    for infant in infants {
        let (took, busy) = infant.await.expect("infant");
        vm.push(took);
        busy_answers += usize::from(busy);
    }
    done.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let mut others = other.await.expect("other");
    vm.sort();
    others.sort();
    db.server.shutdown().await;
    Outcome {
        vm_p50: percentile(&vm, 0.5),
        vm_p99: percentile(&vm, 0.99),
        busy_answers,
        most_in_use: most_in_use.load(Ordering::SeqCst),
        other_p99: percentile(&others, 0.99),
        other_max: others.last().copied().unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_infants_on_one_pool_do_not_starve_other_transitions() {
    let fixed = run(Some(Duration::from_secs(2))).await;
    let off = run(None).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| {INFANTS} Infants, one pool, {} ms per ARM call, pool of {POOL_SIZE} | convoy fix on | off | ratio on/off |", ARM_LATENCY.as_millis());
    println!("|---|---|---|---|");
    println!(
        "| VmPower decision p50 (ms) | {:.0} | {:.0} | {:.2} |",
        ms(fixed.vm_p50),
        ms(off.vm_p50),
        ms(fixed.vm_p50) / ms(off.vm_p50).max(1e-9)
    );
    println!(
        "| VmPower decision p99 (ms) | {:.0} | {:.0} | {:.2} |",
        ms(fixed.vm_p99),
        ms(off.vm_p99),
        ms(fixed.vm_p99) / ms(off.vm_p99).max(1e-9)
    );
    println!(
        "| answered busy (ask again) | {} | {} | |",
        fixed.busy_answers, off.busy_answers
    );
    println!(
        "| most pooled connections in use | {} | {} | |",
        fixed.most_in_use, off.most_in_use
    );
    println!(
        "| unrelated transition p99 (ms) | {:.1} | {:.1} | {:.3} |",
        ms(fixed.other_p99),
        ms(off.other_p99),
        ms(fixed.other_p99) / ms(off.other_p99).max(1e-9)
    );
    println!(
        "| unrelated transition max (ms) | {:.1} | {:.1} | |",
        ms(fixed.other_max),
        ms(off.other_max)
    );
    assert_eq!(off.busy_answers, 0, "without the fix every caller queues");
    assert!(
        off.most_in_use >= POOL_SIZE - 1,
        "without the fix the queue takes the connections: {}",
        off.most_in_use
    );
    assert!(
        fixed.most_in_use <= 4,
        "with the fix the decisions queue in the process, not on connections: {}",
        fixed.most_in_use
    );
    assert!(
        fixed.other_p99 < off.other_p99,
        "unrelated transitions wait less with the fix: {:?} vs {:?}",
        fixed.other_p99,
        off.other_p99
    );
}

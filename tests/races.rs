//! Forced interleavings on the multi-version engine (PostgreSQL at READ COMMITTED behind the TDS test
//! server: snapshot reads that do not wait, row locks that do, as Azure SQL's READ_COMMITTED_SNAPSHOT).
//! Each test drives the real transitions through tiberius, holding one transaction at a chosen
//! statement while another runs, into the interleaving that used to break the store's promise.

mod pg_support;

use chrono::NaiveDateTime;
use pg_support::{count, pg_db, pool, PgDb, RunningVms, Sql};
use procfwk::adapters::sqlserver::SqlServerBackend;
use procfwk::leases::workers::RenewLease;
use procfwk::leases::{Change, Decision, PoolSpec, PowerControl};
use procfwk::orchestration::sample::SeedSample;
use procfwk::orchestration::stage::Prepared;
use procfwk::orchestration::{
    now, AdoptRun, Claim, ClaimWorker, LifecycleError, ParentState, PrepareStage, PreviousParent,
    ReadWorker, RecordRunId, StartExecution, TakeOverClaim, WorkerKey,
};
use procfwk::store::{Backend, Row, SqlValue, Statement, StoreError, Transition, Tx};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The decision of a VmPower start: `holder` takes a 600 s lease on `spec`'s pool at `at`.
fn take_lease(
    spec: &PoolSpec,
    holder: &str,
    at: NaiveDateTime,
    power: Arc<dyn PowerControl>,
) -> Decision {
    Decision::new(
        spec.clone(),
        Change::Take {
            holder: holder.into(),
            lease_secs: 600,
        },
        at,
        power,
    )
}

/// A fresh database on the PostgreSQL engine with procfwk's sample.
async fn db() -> PgDb {
    let pg = pg_db(6).await;
    pg.store
        .run(&SeedSample { now: now() })
        .await
        .expect("seed sample");
    pg
}

/// A transaction that stops right after statement `after` has run, tells the test, and goes on only
/// when the test says so.
struct Held {
    inner: Box<dyn Tx>,
    after: &'static str,
    reached: Option<oneshot::Sender<()>>,
    go: Option<oneshot::Receiver<()>>,
}

impl Held {
    async fn hold(&mut self, name: &str) {
        if name == self.after {
            if let Some(tx) = self.reached.take() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.go.take() {
                let _ = rx.await;
            }
        }
    }
}

#[async_trait::async_trait]
impl Tx for Held {
    async fn query(&mut self, s: &Statement, p: &[SqlValue]) -> Result<Vec<Row>, StoreError> {
        let rows = self.inner.query(s, p).await;
        self.hold(s.name).await;
        rows
    }
    async fn execute(&mut self, s: &Statement, p: &[SqlValue]) -> Result<u64, StoreError> {
        let n = self.inner.execute(s, p).await;
        self.hold(s.name).await;
        n
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.commit().await
    }
    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.rollback().await
    }
}

/// A held transaction: told when it reached its statement, told to go on, and its outcome.
type HeldRun<T> = (
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<<T as Transition>::Output, <T as Transition>::Error>>,
);

/// Run `transition` in its own transaction, held after statement `after` until `go` is sent.
fn run_held<T>(backend: Arc<SqlServerBackend>, transition: T, after: &'static str) -> HeldRun<T>
where
    T: Transition + 'static,
    T::Output: 'static,
    T::Error: 'static,
{
    let (reached_tx, reached_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let inner = backend.begin().await?;
        let mut held = Box::new(Held {
            inner,
            after,
            reached: Some(reached_tx),
            go: Some(go_rx),
        });
        match transition.apply(held.as_mut()).await {
            Ok(out) => {
                held.commit().await?;
                Ok(out)
            }
            Err(e) => {
                let _ = held.rollback().await;
                Err(e)
            }
        }
    });
    (reached_rx, go_tx, task)
}

fn start_at(now: NaiveDateTime, parent: &str) -> StartExecution {
    StartExecution {
        batch: None,
        calling_orchestrator: "FrameworkFactory".into(),
        parent_run_id: Some(parent.into()),
        previous_parent: None,
        now,
    }
}

/// Item 1: two Parents take over the same stale scope at once. The first is held right after it read
/// the scope; the second runs meanwhile. Before the scope lock, both took over (each saw a stale
/// `Running` in its snapshot and each compare-and-set matched): two Parents drove one execution.
#[tokio::test]
async fn two_parents_never_take_over_one_stale_scope() {
    let db = db().await;
    let first = db
        .store
        .run(&start_at(now(), "parent-0"))
        .await
        .expect("first execution");
    // Its Parent died; five hours later two new Parents arrive (the default stale window is 4 h).
    let later = now() + chrono::Duration::hours(5);
    let (reached, go, a) = run_held(
        db.backend.clone(),
        start_at(later, "parent-a"),
        "CONTROL_GET",
    );
    reached.await.expect("A read the scope");
    let b_store = db.store.clone();
    let b = tokio::spawn(async move { b_store.run(&start_at(later, "parent-b")).await });
    // B must not get ahead of A: it waits for A's lock on the scope.
    let b_finished_while_a_held = !db.waits_for_a_lock(&b).await;
    let _ = go.send(());
    let a = a.await.expect("A's task");
    let b = b.await.expect("B's task");
    assert!(
        !b_finished_while_a_held,
        "B decided on the scope while A held it"
    );
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        1,
        "exactly one Parent takes over: A {a:?}, B {b:?}"
    );
    let loser = if a.is_ok() { &b } else { &a };
    assert!(
        matches!(loser, Err(LifecycleError::AlreadyRunning(_))),
        "{loser:?}"
    );
    let control = db.count("SELECT COUNT(0) AS N FROM procfwk.ExecutionControl WHERE ParentRunId = 'parent-a' OR ParentRunId = 'parent-b'").await;
    assert_eq!(control, 1);
    let executions = db
        .count("SELECT COUNT(DISTINCT LocalExecutionId) AS N FROM procfwk.CurrentExecution")
        .await;
    assert_eq!(executions, 1, "one execution in CurrentExecution");
    let logged = db
        .count("SELECT COUNT(0) AS N FROM procfwk.ExecutionLog WHERE PipelineStatus = 'Unknown'")
        .await;
    assert!(
        logged <= 11,
        "unfinished rows logged once, not once per Parent: {}",
        logged
    );
    let _ = first;
}

/// Item 4: a StartExecution replayed after its COMMIT was acknowledged to no one (or retried by ADF
/// with the same Parent run) recognises its own execution instead of answering 409.
#[tokio::test]
async fn a_replayed_start_recognises_its_own_execution() {
    let db = db().await;
    let at = now();
    let first = db
        .store
        .run(&start_at(at, "parent-7"))
        .await
        .expect("start");
    let replay = db
        .store
        .run(&start_at(at, "parent-7"))
        .await
        .expect("the replay is not refused");
    assert_eq!(replay.execution_id, first.execution_id);
    assert_eq!(replay.stages, first.stages);
    let other = db.store.run(&start_at(at, "parent-8")).await;
    assert!(
        matches!(other, Err(LifecycleError::AlreadyRunning(_))),
        "another Parent is still refused: {other:?}"
    );
}

/// Item 4, first start of a scope: ADF repeats a `StartExecution` whose first attempt is still
/// running (the client timed out). The scope has no row yet, so there is nothing to lock: the repeat
/// waits on the first attempt's insert of the scope row and then meets its key. It must recognise the
/// row as its own Parent's and answer with that execution; before, it answered 409 and the Parent
/// failed while its execution stayed `Running` (found by the stress run, tests/stress.rs).
#[tokio::test]
async fn a_repeat_overlapping_the_first_start_of_a_scope_gets_its_execution() {
    let db = db().await;
    let at = now();
    let (reached, go, first) = run_held(
        db.backend.clone(),
        start_at(at, "parent-9"),
        "CONTROL_INSERT",
    );
    reached
        .await
        .expect("the first attempt inserted the scope row");
    let store = db.store.clone();
    let repeat = tokio::spawn(async move { store.run(&start_at(at, "parent-9")).await });
    assert!(
        db.waits_for_a_lock(&repeat).await,
        "the repeat waits on the scope row's key"
    );
    let _ = go.send(());
    let first = first
        .await
        .expect("first")
        .expect("the first attempt starts");
    let repeat = repeat
        .await
        .expect("repeat")
        .expect("the repeat is answered, not refused");
    assert_eq!(repeat.execution_id, first.execution_id);
    assert_eq!(repeat.stages, first.stages);
    let executions = db
        .count("SELECT COUNT(DISTINCT LocalExecutionId) AS N FROM procfwk.CurrentExecution")
        .await;
    assert_eq!(executions, 1, "the repeat left no execution of its own");
}

/// Item 3: two callers take over the claim of a start that died, at the same moment. The takeover is
/// a compare-and-set on the claim token: the second waits on the row, re-reads it and loses.
/// The first worker of the first stage of a new execution, claimed with a token whose holder then
/// "died" (records nothing).
async fn worker_claimed_by_a_dead_call(db: &PgDb) -> (WorkerKey, Uuid, String) {
    let started = db.store.run(&start_at(now(), "p")).await.expect("start");
    let id = started.execution_id;
    let stage = started.stages[0].stage_id;
    let prepared = db
        .store
        .run(&PrepareStage {
            execution_id: id,
            stage_id: stage,
            now: now(),
        })
        .await
        .expect("prepare");
    let pipeline_id = match prepared {
        Prepared::Workers(w) => w[0].pipeline_id,
        other => panic!("{other:?}"),
    };
    let key = WorkerKey {
        execution_id: id,
        stage_id: stage,
        pipeline_id,
    };
    let plan = db.store.run(&ReadWorker { key }).await.expect("plan");
    let dead = Uuid::new_v4();
    let claim = db
        .store
        .run(&ClaimWorker {
            key,
            params_used: plan.params_used(),
            token: dead,
            now: now(),
        })
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Claimed);
    (key, dead, plan.params_used())
}

#[tokio::test]
async fn of_two_takeovers_one_wins() {
    let db = db().await;
    let (key, dead, params_used) = worker_claimed_by_a_dead_call(&db).await;
    // The holder died. A and B both saw its claim and take it over.
    let take = |token| TakeOverClaim {
        key,
        seen: Some(dead),
        token,
        now: now(),
    };
    let (a_token, b_token) = (Uuid::new_v4(), Uuid::new_v4());
    let (reached, go, a) = run_held(db.backend.clone(), take(a_token), "CLAIM_TAKEOVER");
    reached.await.expect("A took over, not committed yet");
    let b_store = db.store.clone();
    let b_take = take(b_token);
    let b = tokio::spawn(async move { b_store.run(&b_take).await });
    assert!(db.waits_for_a_lock(&b).await, "B waits on A's row lock");
    let _ = go.send(());
    assert!(a.await.expect("A").expect("A's takeover"), "A wins");
    assert!(!b.await.expect("B").expect("B's takeover"), "B loses");
    let again = db
        .store
        .run(&ClaimWorker {
            key,
            params_used,
            token: b_token,
            now: now(),
        })
        .await
        .expect("claim");
    assert!(
        matches!(again, Claim::InFlight { token: Some(t), .. } if t == a_token),
        "{again:?}"
    );
}

/// Issue #10: one caller takes a dead claim over to start the worker afresh (ADF listed no run a moment
/// earlier) while another, whose look-up found a run of the same claim, adopts it. Both are
/// compare-and-sets on the claim seen: the adopter waits on the row, re-reads it, finds the claim
/// changed and records nothing — the new holder's own run is the only one recorded, never a run of a
/// claim that is no longer the worker's.
#[tokio::test]
async fn adopting_a_dead_claims_run_and_taking_the_claim_over_exclude_each_other() {
    let db = db().await;
    let (key, dead, _) = worker_claimed_by_a_dead_call(&db).await;
    let new_holder = Uuid::new_v4();
    let take = TakeOverClaim {
        key,
        seen: Some(dead),
        token: new_holder,
        now: now(),
    };
    let (reached, go, a) = run_held(db.backend.clone(), take, "CLAIM_TAKEOVER");
    reached.await.expect("A took over, not committed yet");
    let b_store = db.store.clone();
    let found = procfwk::domain::RunId::from_store(Uuid::new_v4());
    let b = tokio::spawn(async move {
        b_store
            .run(&AdoptRun {
                key,
                seen: Some(dead),
                run_id: found,
                link: format!("https://adf.azure.com/monitoring/pipelineruns/{found}"),
            })
            .await
    });
    assert!(db.waits_for_a_lock(&b).await, "B waits on A's row lock");
    let _ = go.send(());
    assert!(a.await.expect("A").expect("A's takeover"), "A takes over");
    assert!(
        !b.await.expect("B").expect("B's adoption"),
        "B adopts nothing"
    );
    let plan = db.store.run(&ReadWorker { key }).await.expect("plan");
    assert_eq!(plan.run_id, None);
    // The new holder records its own run; an adoption after that changes nothing either.
    let own = procfwk::domain::RunId::from_store(Uuid::new_v4());
    let recorded = db
        .store
        .run(&RecordRunId {
            key,
            run_id: own,
            token: new_holder,
            link: format!("https://adf.azure.com/monitoring/pipelineruns/{own}"),
        })
        .await
        .expect("record");
    assert!(recorded);
    let late = AdoptRun {
        key,
        seen: Some(new_holder),
        run_id: found,
        link: format!("https://adf.azure.com/monitoring/pipelineruns/{found}"),
    };
    assert!(!db.store.run(&late).await.expect("adopt late"));
    let plan = db.store.run(&ReadWorker { key }).await.expect("plan");
    assert_eq!(plan.run_id, Some(own));
}

/// Issue #10: two new Parents arrive for a scope whose Parent run ADF reports over (asked before each
/// start's transaction). The first takes the scope over at once — no stale timeout — and the second,
/// waiting on the scope's lock, finds a different Parent recorded than the one it asked about, so its
/// answer no longer applies and the (not stale) scope is refused.
#[tokio::test]
async fn two_parents_told_the_holder_is_over_take_the_scope_over_once() {
    let db = db().await;
    let first = db
        .store
        .run(&start_at(now(), "parent-0"))
        .await
        .expect("first execution");
    let told = |parent: &str, state| StartExecution {
        previous_parent: Some(PreviousParent {
            execution_id: first.execution_id,
            parent_run_id: "parent-0".into(),
            state,
        }),
        ..start_at(now(), parent)
    };
    // Alive: refused although nothing else would refuse it.
    let alive = db.store.run(&told("parent-x", ParentState::Alive)).await;
    assert!(
        matches!(alive, Err(LifecycleError::AlreadyRunning(_))),
        "{alive:?}"
    );
    let (reached, go, a) = run_held(
        db.backend.clone(),
        told("parent-a", ParentState::Over),
        "CONTROL_GET",
    );
    reached.await.expect("A read the scope");
    let b_store = db.store.clone();
    let b_start = told("parent-b", ParentState::Over);
    let b = tokio::spawn(async move { b_store.run(&b_start).await });
    let b_finished_while_a_held = !db.waits_for_a_lock(&b).await;
    let _ = go.send(());
    let a = a.await.expect("A's task");
    let b = b.await.expect("B's task");
    assert!(!b_finished_while_a_held, "B decided while A held the scope");
    let a = a.expect("A takes the scope over at once: its holder is over");
    assert_eq!(
        a.execution_id, first.execution_id,
        "a restart of the execution"
    );
    assert!(matches!(b, Err(LifecycleError::AlreadyRunning(_))), "{b:?}");
    let control = db
        .count("SELECT COUNT(0) AS N FROM procfwk.ExecutionControl WHERE ParentRunId = 'parent-a'")
        .await;
    assert_eq!(control, 1);
}

/// Item 2: a worker renews its lease (without the pool lock) while a power decision that read the
/// lease as expired is about to remove it. The removal re-checks the expiry, so the renewed lease
/// survives and the VM is not deallocated under the running worker.
#[tokio::test]
async fn a_renewal_that_commits_mid_decision_keeps_the_vm() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-01"], 4, 0);
    let power = Arc::new(RunningVms::default());
    let t0 = now();
    let holder = "worker-1".to_string();
    let taken = Decision::new(
        spec.clone(),
        Change::Take {
            holder: holder.clone(),
            lease_secs: 60,
        },
        t0,
        power.clone(),
    )
    .run(&db.store)
    .await
    .expect("take");
    assert!(taken.ready);
    // Two minutes on, the lease has expired — unless the renewal below lands first.
    let t1 = t0 + chrono::Duration::seconds(120);
    let (reached, go, sweep) = run_held(
        db.backend.clone(),
        Decision::observe(spec.key(), t1, power.clone()),
        "VM_LEASES_OF_POOL",
    );
    reached.await.expect("the sweep read the leases");
    let renewed = db
        .store
        .run(&RenewLease {
            pool_key: spec.key(),
            holder: holder.clone(),
            lease_secs: 60,
            now: t1,
        })
        .await
        .expect("renew");
    assert!(renewed, "the renewal does not wait for the pool lock");
    let _ = go.send(());
    let report = sweep.await.expect("sweep task").expect("sweep");
    assert_eq!(
        power.deallocations(),
        0,
        "no deallocation under a live lease: {report:?}"
    );
    assert_eq!(report.active_leases, 1, "{report:?}");
    let leases = db.count("SELECT COUNT(0) AS N FROM procfwk.VmLeases").await;
    assert_eq!(leases, 1, "the renewed lease is still there");
}

/// Item 5: a decision holds the pool's lock (in production through its ARM calls). Another caller
/// waits at most its lock wait, then hears "busy, not ready, ask again" from a snapshot read — it
/// does not queue with a pooled connection held. With no bound it waits for the holder.
#[tokio::test]
async fn a_busy_pool_answers_not_ready_instead_of_queueing() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-02"], 4, 600);
    let power = Arc::new(RunningVms::default());
    let take = |holder: &str| take_lease(&spec, holder, now(), power.clone());
    take("first").run(&db.store).await.expect("pool exists");
    let (reached, go, holder) = run_held(db.backend.clone(), take("holder"), "VM_POOL_LOCK");
    reached.await.expect("the pool is locked");
    let t0 = std::time::Instant::now();
    let busy = take("waiter")
        .with_lock_wait(Some(Duration::from_millis(300)))
        .run(&db.store)
        .await
        .expect("a busy answer, not an error");
    let waited = t0.elapsed();
    assert!(!busy.ready && busy.deferred, "{busy:?}");
    assert_eq!(busy.retry_after_secs, Some(5));
    assert_eq!(
        busy.active_leases, 1,
        "only the committed lease: the waiter's start is an intent, not a lease yet: {busy:?}"
    );
    assert!(busy.lease_expires.is_none(), "{busy:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let intents = db
        .count("SELECT COUNT(0) AS N FROM procfwk.VmLeaseIntents WHERE Holder = 'waiter'")
        .await;
    assert_eq!(
        intents, 1,
        "the waiter's start is recorded for the next decision"
    );
    // Unbounded, a caller waits for the holder.
    let store = db.store.clone();
    let unbounded = take("patient").with_lock_wait(None);
    let patient = tokio::spawn(async move { unbounded.run(&store).await });
    assert!(
        db.waits_for_a_lock(&patient).await,
        "without a bound it queues"
    );
    let _ = go.send(());
    holder.await.expect("holder").expect("holder's decision");
    let report = patient.await.expect("patient").expect("patient's decision");
    assert!(report.ready, "{report:?}");
    assert_eq!(
        report.active_leases, 4,
        "first, holder, waiter (its intent taken as a lease), patient: {report:?}"
    );
}

/// ARM for power decisions that looks, at each deallocation, at the leases committed in the store.
struct WatchedVms {
    vms: RunningVms,
    store: procfwk::store::Store,
    leases_at_deallocation: std::sync::Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl procfwk::leases::PowerControl for WatchedVms {
    async fn power_state(
        &self,
        vm: &procfwk::leases::VmRef,
    ) -> Result<procfwk::domain::PowerState, procfwk::adapters::UpstreamError> {
        self.vms.power_state(vm).await
    }
    async fn start(
        &self,
        vm: &procfwk::leases::VmRef,
    ) -> Result<procfwk::leases::PowerRequest, procfwk::adapters::UpstreamError> {
        self.vms.start(vm).await
    }
    async fn deallocate(
        &self,
        vm: &procfwk::leases::VmRef,
    ) -> Result<procfwk::leases::PowerRequest, procfwk::adapters::UpstreamError> {
        let leases = count(
            &self
                .store
                .run(&Sql(
                    "SELECT COUNT(0) AS N FROM procfwk.VmLeases WHERE Holder <> 'first'",
                    vec![],
                ))
                .await
                .expect("count leases"),
        );
        self.leases_at_deallocation
            .lock()
            .expect("lock")
            .push(leases);
        self.vms.deallocate(vm).await
    }
    async fn operation(
        &self,
        url: &str,
    ) -> Result<procfwk::leases::OperationOutcome, procfwk::adapters::UpstreamError> {
        self.vms.operation(url).await
    }
    async fn runtime_status(
        &self,
        runtime: &procfwk::leases::RuntimeRef,
    ) -> Result<procfwk::leases::RuntimeStatus, procfwk::adapters::UpstreamError> {
        self.vms.runtime_status(runtime).await
    }
}

/// A start that finds the pool busy while the holding decision is about to deallocate: that decision
/// read the leases before the start arrived. The start is recorded as an intent, not as a lease, so the
/// deallocation happens with no lease in the store (before, the start wrote a lease row without the
/// pool's lock and the VM was deallocated under it). The holder's next status call takes the lease and
/// starts the VM again.
#[tokio::test]
async fn a_start_on_a_busy_pool_is_never_deallocated_under() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-03"], 4, 0);
    let power = Arc::new(WatchedVms {
        vms: RunningVms::default(),
        store: db.store.clone(),
        leases_at_deallocation: Default::default(),
    });
    let t0 = now();
    let change = |holder: &str, take: bool| {
        if take {
            Change::Take {
                holder: holder.into(),
                lease_secs: 600,
            }
        } else {
            Change::Release {
                holder: holder.into(),
            }
        }
    };
    let first = Decision::new(spec.clone(), change("first", true), t0, power.clone())
        .run(&db.store)
        .await
        .expect("take");
    assert!(first.ready, "{first:?}");
    // The last holder's stop, held once it has read the intents and the leases (no grace: it deallocates).
    let t1 = t0 + chrono::Duration::seconds(5);
    let stop = Decision::new(spec.clone(), change("first", false), t1, power.clone());
    let (reached, go, stopping) = run_held(db.backend.clone(), stop, "VM_LEASES_OF_POOL");
    reached.await.expect("the stop read the leases");
    let busy = Decision::new(spec.clone(), change("second", true), t1, power.clone())
        .with_lock_wait(Some(Duration::from_millis(300)))
        .run(&db.store)
        .await
        .expect("a busy answer");
    assert!(
        !busy.ready && busy.deferred && busy.lease_expires.is_none(),
        "{busy:?}"
    );
    let _ = go.send(());
    let stopped = stopping.await.expect("stop task").expect("stop");
    assert!(stopped.deallocated, "the stop saw no lease: {stopped:?}");
    assert_eq!(
        *power.leases_at_deallocation.lock().expect("lock"),
        vec![0],
        "no lease in the store while the VM is deallocated"
    );
    // The waiter polls: its status call takes the lease it asked for and wants the VM again.
    let t2 = t1 + chrono::Duration::seconds(5);
    let status = Decision::new(
        spec.clone(),
        Change::Renew {
            holder: "second".into(),
            lease_secs: 600,
        },
        t2,
        power.clone(),
    )
    .run(&db.store)
    .await
    .expect("status");
    assert_eq!(status.active_leases, 1, "{status:?}");
    assert!(status.lease_expires.is_some(), "{status:?}");
    let taken = db
        .count("SELECT COUNT(0) AS N FROM procfwk.VmPowerLog WHERE Event = 'LeaseTaken' AND Holder = 'second'")
        .await;
    assert_eq!(
        taken, 1,
        "the intent was taken as a lease by the status call's decision"
    );
    assert!(status.nodes_needed >= 1, "{status:?}");
    let intents = db
        .count("SELECT COUNT(0) AS N FROM procfwk.VmLeaseIntents WHERE Intent = 'Take'")
        .await;
    assert_eq!(intents, 0, "the intent became the lease");
}

/// A start its client gave up on can reach a decision after the same holder's stop (it waited for the
/// pool; the client's retry already took the lease, and the holder stopped). It must take no lease: the
/// stop is remembered, and a start sent before it is refused. A start sent after the stop takes its
/// lease as usual.
#[tokio::test]
async fn a_start_sent_before_its_holders_stop_takes_no_lease() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-04"], 4, 0);
    let power = Arc::new(RunningVms::default());
    let decide = |change: Change, at: NaiveDateTime| {
        let decision = Decision::new(spec.clone(), change, at, power.clone());
        let store = db.store.clone();
        async move { decision.run(&store).await }
    };
    let take = || Change::Take {
        holder: "infant-1".into(),
        lease_secs: 600,
    };
    let t0 = now();
    let abandoned_sent = t0;
    let retried = decide(take(), t0 + chrono::Duration::seconds(1))
        .await
        .expect("the retried start");
    assert!(retried.ready, "{retried:?}");
    decide(
        Change::Release {
            holder: "infant-1".into(),
        },
        t0 + chrono::Duration::seconds(30),
    )
    .await
    .expect("stop");
    let late = decide(take(), abandoned_sent)
        .await
        .expect("the late start");
    assert!(
        late.lease_expires.is_none() && !late.ready && late.active_leases == 0,
        "{late:?}"
    );
    let leases = db.count("SELECT COUNT(0) AS N FROM procfwk.VmLeases").await;
    assert_eq!(leases, 0, "no lease left after the holder's stop");
    let refused = db
        .count("SELECT COUNT(0) AS N FROM procfwk.VmPowerLog WHERE Event = 'LeaseRefused'")
        .await;
    assert_eq!(refused, 1, "the refusal is in the power log");
    let again = decide(take(), t0 + chrono::Duration::seconds(60))
        .await
        .expect("a new start");
    assert!(
        again.lease_expires.is_some() && again.nodes_needed == 1,
        "{again:?}"
    );
}

/// A stop that finds the pool busy releases at once (before, its lease stayed until it expired, and the
/// VM with it): the holder's lease row is deleted without the pool's lock, and the next decision counts
/// the pool idle from the stop.
#[tokio::test]
async fn a_stop_on_a_busy_pool_releases_its_lease_at_once() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-05"], 4, 600);
    let power = Arc::new(RunningVms::default());
    let t0 = now();
    for holder in ["a", "b"] {
        take_lease(&spec, holder, t0, power.clone())
            .run(&db.store)
            .await
            .expect("take");
    }
    let t1 = t0 + chrono::Duration::seconds(10);
    let (reached, go, holding) = run_held(
        db.backend.clone(),
        Decision::new(
            spec.clone(),
            Change::Release { holder: "a".into() },
            t1,
            power.clone(),
        ),
        "VM_POOL_LOCK",
    );
    reached.await.expect("the pool is locked");
    let t2 = t1 + chrono::Duration::seconds(1);
    let busy = Decision::new(
        spec.clone(),
        Change::Release { holder: "b".into() },
        t2,
        power.clone(),
    )
    .with_lock_wait(Some(Duration::from_millis(300)))
    .run(&db.store)
    .await
    .expect("a busy answer");
    assert!(busy.deferred, "{busy:?}");
    let b_left = db
        .count("SELECT COUNT(0) AS N FROM procfwk.VmLeases WHERE Holder = 'b'")
        .await;
    assert_eq!(b_left, 0, "b's lease is gone at once");
    let _ = go.send(());
    holding.await.expect("task").expect("a's stop");
    let sweep = Decision::observe(spec.key(), t2 + chrono::Duration::seconds(1), power.clone())
        .run(&db.store)
        .await
        .expect("sweep");
    assert_eq!(sweep.active_leases, 0, "{sweep:?}");
    let rows = db
        .store
        .run(&Sql(
            "SELECT LastLeaseEndDateTime FROM procfwk.VmPools WHERE PoolKey = @P1",
            vec![spec.key().into()],
        ))
        .await
        .expect("pool");
    let last_end = rows[0]
        .opt_datetime("LastLeaseEndDateTime")
        .expect("column")
        .expect("a last lease end");
    assert!(
        (last_end - t2).num_milliseconds().abs() < 10,
        "the pool is idle from b's stop ({t2}), not a's ({t1}): {last_end}"
    );
}

/// A decision turning a start's intent into a lease races the same holder's stop on the busy pool: the
/// stop replaces the intent after the decision read it. The decision's compare-and-set on the intent
/// fails, so it takes no lease for a holder that has stopped.
#[tokio::test]
async fn a_stop_recorded_while_a_decision_takes_its_intent_wins() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-06"], 4, 0);
    let power = Arc::new(RunningVms::default());
    let t0 = now();
    let take = |holder: &str, at: NaiveDateTime| take_lease(&spec, holder, at, power.clone());
    take("first", t0).run(&db.store).await.expect("pool");
    // "late" starts on a busy pool: an intent.
    let (reached, go, holding) = run_held(db.backend.clone(), take("first", t0), "VM_POOL_LOCK");
    reached.await.expect("locked");
    take("late", t0 + chrono::Duration::seconds(1))
        .with_lock_wait(Some(Duration::from_millis(300)))
        .run(&db.store)
        .await
        .expect("busy start");
    let _ = go.send(());
    holding.await.expect("task").expect("holder");
    // A decision reads that intent and is held there; "late" stops meanwhile (the pool is busy).
    let t2 = t0 + chrono::Duration::seconds(2);
    let (reached, go, converting) = run_held(
        db.backend.clone(),
        Decision::observe(spec.key(), t2, power.clone()),
        "VM_INTENTS_OF_POOL",
    );
    reached.await.expect("read the intent");
    let stop = Decision::new(
        spec.clone(),
        Change::Release {
            holder: "late".into(),
        },
        t2,
        power.clone(),
    )
    .with_lock_wait(Some(Duration::from_millis(300)))
    .run(&db.store)
    .await
    .expect("busy stop");
    assert!(stop.deferred, "{stop:?}");
    let _ = go.send(());
    converting.await.expect("task").expect("the decision");
    let late = db
        .count("SELECT COUNT(0) AS N FROM procfwk.VmLeases WHERE Holder = 'late'")
        .await;
    assert_eq!(late, 0, "no lease for a holder that stopped");
}

/// Two first decisions about a new pool: the second found no pool row (the first had not committed),
/// then, reading the latest commit, finds the pool's VM already in the pool it was about to create. It
/// locks that pool and goes on (before, it answered 409 "VM already belongs to the VM pool …" naming
/// its own pool).
#[tokio::test]
async fn two_first_decisions_about_a_new_pool_both_take_their_lease() {
    let db = db().await;
    let spec = pool("shir-rg", &["shir-vm-07"], 4, 0);
    let power = Arc::new(RunningVms::default());
    let take = |holder: &str| take_lease(&spec, holder, now(), power.clone());
    let (reached, go, second) = run_held(db.backend.clone(), take("second"), "VM_POOL_LOCK");
    reached.await.expect("the second found no pool");
    let first = take("first").run(&db.store).await.expect("first");
    assert!(first.ready, "{first:?}");
    let _ = go.send(());
    let second = second
        .await
        .expect("task")
        .expect("the second decision is not refused");
    assert_eq!(second.active_leases, 2, "{second:?}");
}

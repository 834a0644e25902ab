//! Lease intents (`procfwk.VmLeaseIntents`): what a holder asked of a VM pool while another decision held
//! the pool's lock, recorded without that lock, and what a stop leaves behind.
//!
//! - A `Take` on a busy pool is recorded as an intent, not as a lease: only a decision under the pool's
//!   lock writes `VmLeases` rows, so a decision that deallocates has seen every lease there is. The next
//!   decision under the lock (the holder's own `status`, anyone's, or the sweeper's) turns the intent
//!   into a lease that expires when the asked-for lease would have.
//! - A `Release` on a busy pool deletes the holder's own lease at once (fewer leases can only keep a VM
//!   up longer than needed, never stop it under someone) and is recorded, so that the next decision
//!   counts the pool idle from then.
//! - Every release, busy or not, stays recorded for [`RELEASE_MEMORY_MINUTES`]: a start of the same holder
//!   sent *before* its stop (a call its client gave up on, still waiting for the pool) does not take a
//!   lease after the stop. A later start of the holder (sent after the stop) takes its lease as usual.
//!
//! An intent replaces the holder's earlier one only if it was asked later (a compare-and-set on
//! `IntentDateTime`), and a decision turns a `Take` into a lease only if the row it read is still there
//! (a compare-and-set on the same column), so a release recorded meanwhile always wins.

use super::LeaseError;
use crate::store::statements as sql;
use crate::store::{Row, Tx};
use chrono::{Duration, NaiveDateTime};

/// How long a release stands against starts of its holder that were sent before it: far longer than any
/// call can wait for a pool (the request budget is at most a few minutes).
pub const RELEASE_MEMORY_MINUTES: i64 = 60;

/// What a holder asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentKind {
    Take { lease_secs: u32 },
    Release,
}

impl IntentKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Take { .. } => "Take",
            Self::Release => "Release",
        }
    }

    fn lease_secs(self) -> Option<i64> {
        match self {
            Self::Take { lease_secs } => Some(i64::from(lease_secs)),
            Self::Release => None,
        }
    }
}

/// One recorded intent.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub holder: String,
    pub kind: IntentKind,
    /// When the holder asked (its call's arrival).
    pub at: NaiveDateTime,
}

impl Intent {
    fn read(row: &Row) -> Result<Self, LeaseError> {
        let at = row.opt_datetime("IntentDateTime")?.ok_or_else(|| {
            LeaseError::Store(crate::store::StoreError::Data {
                column: "IntentDateTime".into(),
                problem: "is NULL".into(),
            })
        })?;
        let kind = match row.text("Intent")?.trim() {
            k if k.eq_ignore_ascii_case("Take") => IntentKind::Take {
                lease_secs: row
                    .opt_i64("LeaseSeconds")?
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(0),
            },
            k if k.eq_ignore_ascii_case("Release") => IntentKind::Release,
            other => {
                return Err(LeaseError::Store(crate::store::StoreError::Data {
                    column: "Intent".into(),
                    problem: format!("{other:?} is neither Take nor Release"),
                }))
            }
        };
        Ok(Self {
            holder: row.text("Holder")?,
            kind,
            at,
        })
    }

    /// The end of the lease a `Take` asked for.
    pub fn lease_end(&self) -> Option<NaiveDateTime> {
        match self.kind {
            IntentKind::Take { lease_secs } => {
                Some(self.at + Duration::seconds(i64::from(lease_secs)))
            }
            IntentKind::Release => None,
        }
    }
}

/// Every intent recorded for the pool.
pub async fn of_pool(tx: &mut dyn Tx, pool_key: &str) -> Result<Vec<Intent>, LeaseError> {
    tx.query(&sql::VM_INTENTS_OF_POOL, &[pool_key.into()])
        .await?
        .iter()
        .map(Intent::read)
        .collect()
}

/// Record `kind` for `holder`, asked at `at`, unless the holder's recorded intent was asked later.
/// Returns whether it was recorded. Two writers inserting the first intent of one holder at once: one
/// fails on the primary key, and the transition runs again (a unique violation is retried).
pub async fn record(
    tx: &mut dyn Tx,
    pool_key: &str,
    holder: &str,
    kind: IntentKind,
    at: NaiveDateTime,
) -> Result<bool, LeaseError> {
    let params = [
        pool_key.into(),
        holder.into(),
        kind.as_str().into(),
        at.into(),
        kind.lease_secs().into(),
    ];
    if tx.execute(&sql::VM_INTENT_REPLACE, &params).await? > 0 {
        return Ok(true);
    }
    let current = tx
        .query(&sql::VM_INTENT_GET, &[pool_key.into(), holder.into()])
        .await?;
    if !current.is_empty() {
        // Asked later than this (or at the same instant): that one stands.
        return Ok(false);
    }
    tx.execute(&sql::VM_INTENT_INSERT, &params).await?;
    Ok(true)
}

/// Turn a `Take` intent into the lease it asked for: true if this decision took it (it was still the
/// intent read), false if a later intent replaced it meanwhile.
pub async fn consume_take(
    tx: &mut dyn Tx,
    pool_key: &str,
    intent: &Intent,
) -> Result<bool, LeaseError> {
    Ok(tx
        .execute(
            &sql::VM_INTENT_CONSUME_TAKE,
            &[
                pool_key.into(),
                intent.holder.as_str().into(),
                intent.at.into(),
            ],
        )
        .await?
        > 0)
}

/// Forget a holder's intents asked before `now` (a decision under the lock acts on its later call).
pub async fn clear_before(
    tx: &mut dyn Tx,
    pool_key: &str,
    holder: &str,
    now: NaiveDateTime,
) -> Result<(), LeaseError> {
    tx.execute(
        &sql::VM_INTENT_CLEAR_BEFORE,
        &[pool_key.into(), holder.into(), now.into()],
    )
    .await?;
    Ok(())
}

/// Forget releases older than [`RELEASE_MEMORY_MINUTES`].
pub async fn purge(tx: &mut dyn Tx, pool_key: &str, now: NaiveDateTime) -> Result<(), LeaseError> {
    let before = now - Duration::minutes(RELEASE_MEMORY_MINUTES);
    tx.execute(&sql::VM_INTENT_PURGE, &[pool_key.into(), before.into()])
        .await?;
    Ok(())
}

/// The holder released at or after `asked`: a start it sent at `asked` comes too late.
pub fn released_since<'a>(
    intents: &'a [Intent],
    holder: &str,
    asked: NaiveDateTime,
) -> Option<&'a Intent> {
    intents.iter().find(|i| {
        i.kind == IntentKind::Release
            && super::decide::same_holder(&i.holder, holder)
            && i.at >= asked
    })
}

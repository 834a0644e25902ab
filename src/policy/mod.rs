//! Request policies: what every invocation runs under, whichever function it calls — its time budget
//! ([`budget`]) and its work slot ([`admission`]). Both travel as task-locals set at the host edge.
//! This module depends on nothing else in the crate, so the host (which sets them), the functions (whose
//! polling loops sleep without a slot and stop before the deadline) and the adapters (whose ARM retries
//! stop before the deadline) all use it without a dependency pointing back up.

pub mod admission;
pub mod budget;

//! Process-wide tuning of `procfwk serve` that must happen before any thread starts: glibc's malloc
//! arenas (see [`crate::config::malloc_arena_max`] for why one).

/// Apply the malloc arena limit. Call before the async runtime starts its threads: a thread picks its
/// arena at its first allocation.
pub fn tune_malloc() {
    let Some(arenas) = crate::config::malloc_arena_max() else {
        return;
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc parameter; it is called before other threads exist.
        let applied = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        if applied != 1 {
            tracing::warn!(
                arenas,
                "glibc refused M_ARENA_MAX; keeping its default arenas"
            );
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

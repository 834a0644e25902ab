//! Process-wide tuning of `procfwk serve` that must happen before any thread starts: glibc's malloc
//! arenas (see [`crate::config::malloc_arena_max`] for why one) and its mmap threshold; and handing
//! freed heap back to the system after large request bodies.

/// Apply the malloc arena limit. Call before the async runtime starts its threads: a thread picks its
/// arena at its first allocation.
pub fn tune_malloc() {
    fix_mmap_threshold();
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

/// Allocations from 128 KiB up (glibc's initial threshold) always get pages of their own, which go back
/// to the system when freed. glibc otherwise raises the threshold to the size of each mmapped block
/// freed, up to 32 MiB: after the first large request body, every later one would come from the heap
/// and stay resident there once freed. Left alone when `MALLOC_MMAP_THRESHOLD_` is set.
fn fix_mmap_threshold() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc parameter; it is called before other threads exist.
        let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
        if applied != 1 {
            tracing::warn!("glibc refused M_MMAP_THRESHOLD; keeping its dynamic threshold");
        }
    }
}

/// Hand free heap memory back to the system (glibc's `malloc_trim`); called when the last large
/// request body in flight is released. A no-op elsewhere.
pub fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory; it is safe to call from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

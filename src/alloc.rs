//! The allocator alertpipe runs with: mimalloc (the binary declares it global in
//! `src/main.rs`; so do the benchmarks that host stages in their own process, so they measure
//! the stages as shipped). Under webhook load glibc's malloc and free were a quarter of the
//! process's CPU samples (perf, benches/RESULTS.md "2026-12-07, afternoon").

/// mimalloc's `mi_option_purge_delay` (the option before `mi_option_use_numa_nodes` in
/// mimalloc.h, v2 and v3; libmimalloc-sys names only the latter).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Freed memory goes back to the OS after 3 ms instead of mimalloc's 10: the archive's peak
/// RSS under a flood of logs stays under its 256 MiB budget (`benches/archive_memory.sh`:
/// 219 / 232-236 / 245 MiB at 0 / 3 / 10 ms; glibc's malloc 186, but 0.7x mimalloc's speed
/// on the webhook path). At once (0 ms) cost push decoding 0.7x its speed (527 vs 740 MB/s,
/// `cargo bench --bench archive`, interleaved runs; benches/RESULTS.md "2026-12-07,
/// evening"). `MIMALLOC_PURGE_DELAY` in the environment (milliseconds, mimalloc's own
/// variable) wins. Call first thing in `main`.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option; mimalloc reads it at each purge, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// See [`tune`].
const PURGE_DELAY_MS: std::ffi::c_long = 3;

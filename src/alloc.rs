//! The allocator alertpipe runs with: mimalloc (the binary declares it global in
//! `src/main.rs`; so do the benchmarks that host stages in their own process, so they measure
//! the stages as shipped). Under webhook load glibc's malloc and free were a quarter of the
//! process's CPU samples (perf, benches/RESULTS.md "2026-12-07, afternoon").

/// mimalloc's `mi_option_purge_delay` (the option before `mi_option_use_numa_nodes` in
/// mimalloc.h, v2 and v3; libmimalloc-sys names only the latter).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Freed memory goes back to the OS 100 ms after it is freed, not mimalloc v3's 1,000: the
/// archive's peak RSS under a flood of logs stays under its 256 MiB budget
/// (`benches/archive_memory.sh`: 220 / 234 / 277 MiB at 3 / 100 / 1,000 ms; glibc's malloc 186,
/// but 0.7x mimalloc's speed on the webhook path). Shorter costs speed: at 3 ms (shipped until
/// 2026-12-07, evening) the Parquet encoder's buffers were returned between row groups and
/// faulted back zeroed, and `cargo bench --bench archive` ran the archive stage alone at 74.7
/// vs 95.8 MB/s and push decoding at 722 vs 852 MB/s (interleaved runs, medians of 3;
/// benches/RESULTS.md "2026-12-07, night"). `MIMALLOC_PURGE_DELAY` in the environment
/// (milliseconds, mimalloc's own variable) wins. Call first thing in `main`.
pub fn tune() {
    set_purge_delay(PURGE_DELAY_MS);
}

/// For a batch command whose peak memory matters more than its speed (`archive compact`,
/// which holds a whole row group of each file it merges): freed memory goes back after 3 ms.
/// `bash benches/archive_memory.sh`: compaction's peak RSS 374 -> 309 MiB, benches/RESULTS.md.
pub fn tune_for_batch() {
    set_purge_delay(BATCH_PURGE_DELAY_MS);
}

fn set_purge_delay(ms: std::ffi::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option; mimalloc reads it at each purge, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// See [`tune`].
const PURGE_DELAY_MS: std::ffi::c_long = 100;
/// See [`tune_for_batch`].
const BATCH_PURGE_DELAY_MS: std::ffi::c_long = 3;

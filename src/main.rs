//! The `alertpipe` command: parses and dispatches (`cli`); the work lives in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: under webhook load, malloc and free were a quarter of
/// the process's CPU samples (perf, benches/RESULTS.md "2026-12-07, afternoon").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the option before `mi_option_use_numa_nodes` in
/// mimalloc.h, v2 and v3; libmimalloc-sys names only the latter).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

fn main() -> ExitCode {
    // Freed memory goes back to the OS at once, not after 10 ms: under a flood of logs the
    // archive's peak RSS is 234 MiB instead of 278 (benches/archive_memory.sh; glibc: 186),
    // for ~0.5 µs more CPU per alert on the webhook path.
    // SAFETY: sets one integer option; mimalloc reads it at each purge, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `alertpipe archive cat ... | head` closing the pipe is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("alertpipe: {}", cli::report(&e));
            ExitCode::FAILURE
        }
    }
}

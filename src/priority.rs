//! Background work yields the CPU to the acknowledgement path. A process running every role
//! shares its cores between the webhook's path (HTTP workers, the ingest arbiter, the
//! producer) and the consumer stages; under a storm the stages may fall behind (their lag is
//! measured and alerted on) but a webhook must still be answered at once. `serve` lowers the
//! priority (`server.background_nice`) of the threads doing consumer work: the System thread
//! once the HTTP workers and the ingest arbiter are started (librdkafka's consumer threads,
//! started from it later, inherit it), the persist workers and the archive thread.

use std::sync::atomic::{AtomicI32, Ordering};

static NICE: AtomicI32 = AtomicI32::new(0);

/// The nice value background threads run at (0: as the rest; up to 19).
pub fn set_background_nice(nice: i32) {
    NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
}

/// Sets the calling thread's nice value to the configured one (no-op when 0 or not Linux;
/// the same value again changes nothing, so a restarted actor may call it again).
pub fn background_thread() {
    let nice = NICE.load(Ordering::Relaxed);
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on Linux
        // PRIO_PROCESS with a thread id changes that thread alone.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(),
                "cannot lower a background thread's priority");
        }
    }
}

/// The calling thread's nice value (tests).
#[cfg(all(test, target_os = "linux"))]
fn current() -> i32 {
    // SAFETY: as above; getpriority returns the nice value (errno is not consulted here).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_background_thread_runs_lower_and_others_do_not() {
        set_background_nice(7);
        let before = std::thread::spawn(current).join().unwrap();
        let lowered = std::thread::spawn(|| {
            background_thread();
            current()
        })
        .join()
        .unwrap();
        set_background_nice(0);
        assert_eq!(lowered, before + 7);
        assert_eq!(std::thread::spawn(current).join().unwrap(), before);
    }
}

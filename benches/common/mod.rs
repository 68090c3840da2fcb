#![allow(dead_code)] // each benchmark uses a subset
//! Shared by the benchmarks: the local stack's addresses, medians, timing.

pub mod loki;

/// The allocator the `alertpipe` binary runs with, so stages hosted in a benchmark's process
/// are measured as shipped (librdkafka, under the bare producers and consumers, allocates
/// with libc's malloc either way). A benchmark calls `alertpipe::alloc::tune()`
/// first, as the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// `.state/stack.env` (or $ALERTPIPE_STACK_ENV), written by `deploy/local/stack.sh up`.
pub fn stack() -> HashMap<String, String> {
    let path = std::env::var("ALERTPIPE_STACK_ENV")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.state/stack.env").into());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; run `bash deploy/local/stack.sh up` first"));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `f` `runs` times; the median of what it returns (a rate).
pub fn median_of(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    median((0..runs).map(|_| f()).collect())
}

pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A bare consumer (a new group, librdkafka's defaults but for `props`, storing nothing) reads
/// `topic` from the beginning: the time from its creation to its first and to its `n`-th
/// message. Its close (leaving the group, joining librdkafka's threads) comes after the clock
/// stops, as a stage's does; a `give_up` without messages panics.
pub fn bare_consume(
    brokers: &str,
    topic: &str,
    n: usize,
    props: &[(&str, &str)],
    give_up: Duration,
) -> (Duration, Duration) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let started = Instant::now();
    let group = format!("bench-bare-{}-{:?}", std::process::id(), started);
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in props {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("a bare consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let (mut got, mut last) = (0, Instant::now());
    let mut first = None;
    let mut bytes = 0usize;
    while got < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Owned, as a stage holds them.
                bytes += m.payload().map(<[u8]>::to_vec).unwrap_or_default().len();
                got += 1;
                last = Instant::now();
                first.get_or_insert(last - started);
            }
            Some(Err(_)) | None => {
                assert!(
                    last.elapsed() < give_up,
                    "bare consumer stalled at {got}/{n}"
                )
            }
        }
    }
    let took = started.elapsed();
    assert!(bytes > 0);
    (first.unwrap_or(took), took)
}

//! `alertpipe-loadgen`: C concurrent senders post webhook batches of B alerts for N seconds
//! against a running alertpipe, and (same run, same broker) a baseline that produces the same
//! messages straight to Kafka with a bare rdkafka producer. Prints alerts/s, p50/p99 batch
//! latency, and, given the server's pid, its CPU time per alert and peak RSS. With `--rate`
//! the load is open-loop: latency counts from each batch's scheduled time.

use std::rc::Rc;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use serde_json::json;

use alertpipe::config::Config;
use alertpipe::domain::parse_webhook;

/// A binary of its own, not a subcommand of the service: none of this is in the service.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "alertpipe-loadgen",
    version,
    about = "Load generator: webhook batches against a running alertpipe, and a bare-producer baseline"
)]
pub struct LoadgenArgs {
    /// alertpipe's config (its Kafka settings give the baseline's broker); environment
    /// overrides ALERTPIPE__SECTION__KEY apply on top.
    #[arg(long, env = "ALERTPIPE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// alertpipe's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Bearer token for the webhook (else env ALERTPIPE_AUTH_SECRET when auth is on).
    #[arg(long, env = "LOADGEN_TOKEN")]
    pub token: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, short = 'b', default_value_t = 50)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Offered load in alerts/s (open loop); unset: as fast as answers come (closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// alertpipe's pid, to report its CPU per alert and RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// What to run.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Topic for the baseline's messages.
    #[arg(long, default_value = "alerts-baseline")]
    pub baseline_topic: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Alertpipe,
    Baseline,
    Both,
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    alerts: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu_s: Option<f64>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.alerts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn pct(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A webhook body of `n` alerts, all new (unique fingerprints), like Alertmanager's.
fn webhook_body(seq: &mut u64, n: usize) -> Vec<u8> {
    let alerts: Vec<_> = (0..n)
        .map(|_| {
            *seq += 1;
            json!({
                "status": "firing",
                "labels": {"alertname": "LoadTest", "cluster": "prod", "service": "payment",
                           "severity": if *seq % 2 == 0 { "critical" } else { "custom" },
                           "instance": format!("host-{}", *seq % 97)},
                "annotations": {"summary": "DB connection failed",
                                "description": "synthetic load from alertpipe loadgen"},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://grafana.example.com/alerting",
                "fingerprint": format!("{:016x}", *seq ^ 0x5bd1_e995_0000_0000),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "receiver": "alertpipe", "status": "firing", "alerts": alerts,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "version": "4",
        "groupKey": "{}:{}", "truncatedAlerts": 0
    }))
    .unwrap_or_default()
}

fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// With `--rate`: how often each sender starts a batch.
fn open_loop_period(args: &LoadgenArgs) -> Option<Duration> {
    args.rate
        .map(|r| Duration::from_secs_f64(args.concurrency as f64 * args.batch as f64 / r))
}

/// The `k`-th slot of a sender: closed loop (None) or every `period` from `start`.
fn next_slot(start: Instant, period: Option<Duration>, k: u32) -> Option<Instant> {
    period.map(|p| start + p * k)
}

/// One sender's timetable, the same for alertpipe's senders and the baseline's: open loop (a
/// batch every period, senders staggered across one period) or closed loop (the next batch as
/// soon as the last is answered), until the run's deadline.
struct Schedule {
    start: Instant,
    offset: Duration,
    period: Option<Duration>,
    deadline: Duration,
    k: u32,
}

impl Schedule {
    fn new(start: Instant, period: Option<Duration>, sender: usize, deadline: Duration) -> Self {
        let offset = period.map(|p| p * sender as u32 / 8).unwrap_or_default();
        Schedule {
            start,
            offset,
            period,
            deadline,
            k: 0,
        }
    }

    /// Waits for the next batch's turn: None when the run is over, else its scheduled time
    /// (open loop; latency counts from it) or None inside (closed loop: count from now).
    async fn next(&mut self) -> Option<Option<Instant>> {
        let slot = next_slot(self.start + self.offset, self.period, self.k);
        self.k += 1;
        match slot {
            Some(at) if at.duration_since(self.start) >= self.deadline => None,
            Some(at) => {
                actix_web::rt::time::sleep_until(at.into()).await;
                Some(slot)
            }
            None if self.start.elapsed() >= self.deadline => None,
            None => Some(None),
        }
    }
}

async fn run_alertpipe(args: &LoadgenArgs) -> RunResult {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let url = format!("{}/api/v1/alerts", args.target.trim_end_matches('/'));
    let auth = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let period = open_loop_period(args);
    let deadline = Duration::from_secs(args.duration_s);
    let cpu0 = args.pid.and_then(proc_cpu_s);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..args.concurrency {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        let batch = args.batch;
        tasks.push(actix_web::rt::spawn(async move {
            let mut seq = (sender as u64) << 40 | rand_seed();
            let mut res = RunResult::default();
            let mut schedule = Schedule::new(start, period, sender, deadline);
            while let Some(slot) = schedule.next().await {
                let body = webhook_body(&mut seq, batch);
                let t0 = slot.unwrap_or_else(Instant::now);
                let mut req = client
                    .post(&url)
                    .insert_header(("content-type", "application/json"));
                if let Some(a) = &auth {
                    req = req.insert_header(("authorization", a.as_str()));
                }
                match req.send_body(body).await {
                    Ok(mut r) if r.status().is_success() => {
                        let _ = r.body().await;
                        res.alerts += batch as u64;
                        res.latencies.push(t0.elapsed());
                    }
                    Ok(mut r) => {
                        let _ = r.body().await;
                        res.errors += 1;
                    }
                    Err(_) => res.errors += 1,
                }
            }
            res
        }));
    }
    collect(tasks, start, cpu0, args.pid).await
}

async fn run_baseline(cfg: &Config, args: &LoadgenArgs) -> anyhow::Result<RunResult> {
    let producer = Rc::new(alertpipe::kafka::future_producer(&cfg.kafka)?);
    let topic = Rc::new(args.baseline_topic.clone());
    // Warm, as alertpipe's producer is: connected, metadata known, producer id granted (the
    // first acks are slower, which an open-loop run would count for every batch scheduled
    // meanwhile).
    let mut warm_seq = (0xffff_u64 << 40) | rand_seed(); // apart from every sender's range
    if let Some(e) = parse_webhook(&webhook_body(&mut warm_seq, 1))
        .unwrap_or_default()
        .first()
    {
        let payload = serde_json::to_vec(e)?;
        let rec = FutureRecord::to(&topic)
            .key(e.fingerprint.as_str())
            .payload(&payload);
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("baseline producer cannot reach the broker: {e}"))?;
    }
    let period = open_loop_period(args);
    let deadline = Duration::from_secs(args.duration_s);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..args.concurrency {
        let (producer, topic) = (producer.clone(), topic.clone());
        let batch = args.batch;
        tasks.push(actix_web::rt::spawn(async move {
            let mut seq = (sender as u64) << 40 | rand_seed();
            let mut res = RunResult::default();
            let mut schedule = Schedule::new(start, period, sender, deadline);
            while let Some(slot) = schedule.next().await {
                // The same messages alertpipe would produce: mapped from a webhook body.
                let events = parse_webhook(&webhook_body(&mut seq, batch)).unwrap_or_default();
                let t0 = slot.unwrap_or_else(Instant::now);
                let mut acks = Vec::with_capacity(events.len());
                for e in &events {
                    let payload = serde_json::to_vec(e).unwrap_or_default();
                    let rec = FutureRecord::to(&topic)
                        .key(e.fingerprint.as_str())
                        .payload(&payload);
                    match producer.send_result(rec) {
                        Ok(ack) => acks.push(ack),
                        Err(_) => res.errors += 1,
                    }
                }
                let ok = futures_util::future::join_all(acks)
                    .await
                    .into_iter()
                    .all(|a| matches!(a, Ok(Ok(_))));
                if ok {
                    res.alerts += events.len() as u64;
                    res.latencies.push(t0.elapsed());
                } else {
                    res.errors += 1;
                }
            }
            res
        }));
    }
    Ok(collect(tasks, start, None, None).await)
}

async fn collect(
    tasks: Vec<actix_web::rt::task::JoinHandle<RunResult>>,
    start: Instant,
    cpu0: Option<f64>,
    pid: Option<u32>,
) -> RunResult {
    let mut total = RunResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.alerts += r.alerts;
            total.errors += r.errors;
            total.latencies.extend(r.latencies);
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort();
    total.cpu_s = match (cpu0, pid.and_then(proc_cpu_s)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    total
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 & 0xff_ffff_ffff)
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub async fn run(cfg: Config, args: LoadgenArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.batch == 0 || args.runs == 0 {
        anyhow::bail!("--concurrency, --batch and --runs must be above 0");
    }
    if args.mode != Mode::Alertpipe {
        alertpipe::kafka::ensure_topics(
            &cfg.kafka,
            &[args.baseline_topic.as_str()],
            Duration::from_secs(10),
        )
        .await?;
    }
    let idle_rss = args.pid.and_then(|p| proc_status_kb(p, "VmRSS:"));
    println!(
        "loadgen: concurrency={} batch={} duration={}s rate={} runs={} target={} brokers={}",
        args.concurrency,
        args.batch,
        args.duration_s,
        args.rate.map_or("max".into(), |r| format!("{r}/s")),
        args.runs,
        args.target,
        cfg.kafka.brokers
    );
    let (mut ap, mut base) = (Vec::new(), Vec::new());
    for i in 1..=args.runs {
        if args.mode != Mode::Alertpipe {
            let r = run_baseline(&cfg, &args).await?;
            println!(
                "run {i} baseline : {:>9.0} alerts/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                r.rate(),
                ms(r.pct(0.5)),
                ms(r.pct(0.99)),
                r.errors
            );
            base.push(r);
        }
        if args.mode != Mode::Baseline {
            let r = run_alertpipe(&args).await;
            let cpu = r
                .cpu_s
                .map(|c| format!("  cpu {:.1} µs/alert", c * 1e6 / r.alerts.max(1) as f64))
                .unwrap_or_default();
            println!(
                "run {i} alertpipe: {:>9.0} alerts/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}{cpu}",
                r.rate(),
                ms(r.pct(0.5)),
                ms(r.pct(0.99)),
                r.errors
            );
            ap.push(r);
        }
    }
    println!("--- medians of {} runs ---", args.runs);
    let med = |v: &[RunResult], f: &dyn Fn(&RunResult) -> f64| median(v.iter().map(f).collect());
    if !base.is_empty() {
        println!(
            "baseline  alerts/s {:.0}  p50 {:.2} ms  p99 {:.2} ms",
            med(&base, &|r| r.rate()),
            med(&base, &|r| ms(r.pct(0.5))),
            med(&base, &|r| ms(r.pct(0.99)))
        );
    }
    if !ap.is_empty() {
        println!(
            "alertpipe alerts/s {:.0}  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            med(&ap, &|r| r.rate()),
            med(&ap, &|r| ms(r.pct(0.5))),
            med(&ap, &|r| ms(r.pct(0.99))),
            ap.iter().map(|r| r.errors).sum::<u64>()
        );
        if ap.iter().all(|r| r.cpu_s.is_some()) {
            println!(
                "alertpipe cpu per alert {:.1} µs",
                med(&ap, &|r| r.cpu_s.unwrap_or_default() * 1e6
                    / r.alerts.max(1) as f64)
            );
        }
    }
    if !ap.is_empty() && !base.is_empty() {
        let ratios: Vec<f64> = ap
            .iter()
            .zip(&base)
            .map(|(a, b)| a.rate() / b.rate().max(1e-9))
            .collect();
        println!(
            "ratio alertpipe/baseline {:.2} (median of per-run ratios)",
            median(ratios)
        );
        if args.rate.is_some() {
            let p99: Vec<f64> = ap
                .iter()
                .zip(&base)
                .map(|(a, b)| a.pct(0.99).as_secs_f64() / b.pct(0.99).as_secs_f64().max(1e-9))
                .collect();
            println!(
                "p99 alertpipe/baseline {:.2} (median of per-run ratios; under 1: alertpipe answers faster)",
                median(p99)
            );
        }
    }
    if let Some(pid) = args.pid {
        let kb = |f| {
            proc_status_kb(pid, f).map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
        };
        println!(
            "alertpipe RSS idle {}  peak {}",
            idle_rss.map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0)),
            kb("VmHWM:")
        );
    }
    verdict(&ap).and(verdict(&base))
}

/// A benchmark of a failing system is no benchmark: fail when a run acknowledged nothing or
/// more than 1% of its requests failed.
fn verdict(runs: &[RunResult]) -> anyhow::Result<()> {
    for (i, r) in runs.iter().enumerate() {
        let requests = r.latencies.len() as u64 + r.errors;
        if r.alerts == 0 || r.errors * 100 > requests {
            anyhow::bail!(
                "run {}: {} alerts acknowledged, {} of {} requests failed: the system under test is failing",
                i + 1,
                r.alerts,
                r.errors,
                requests
            );
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = LoadgenArgs::parse();
    let result = Config::load(args.config.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|cfg| actix_web::rt::System::new().block_on(run(cfg, args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alertpipe-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;

//! Test utilities: the local stack's addresses, the real app booted on port 0 with its own
//! topic, private peers (a broker, an Alertmanager) that a test may stop and start.

pub mod app;
pub mod binary;
pub mod cluster;
pub mod hdfs;
pub mod logs;
pub mod otelcol;
pub mod parquet;
pub mod smtp;
pub mod teams;
pub mod tls;

pub use app::{spawn_app, spawn_app_with, TestApp};

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use alertpipe::kafka::{read_topic, ReadMessage};

pub struct Stack {
    vars: HashMap<String, String>,
}

impl Stack {
    /// The running local stack, from its env file. A missing stack fails the test, saying how
    /// to start it.
    pub fn get() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| {
            let path = std::env::var("ALERTPIPE_STACK_ENV")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".state/stack.env")
                });
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "the local stack is not running ({}: {e}).\n\
                     Start it with `bash deploy/local/stack.sh up` (or run the whole suite with \
                     `bash deploy/local/test.sh`, which does).",
                    path.display()
                )
            });
            let vars = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let stack = Stack { vars };
            let brokers = stack.var("STACK_KAFKA_BROKERS");
            assert!(
                std::net::TcpStream::connect(brokers).is_ok(),
                "the stack's Kafka broker at {brokers} does not answer: restart the stack with \
                 `bash deploy/local/stack.sh down && bash deploy/local/stack.sh up`"
            );
            stack
        })
    }

    pub fn var(&self, key: &str) -> &str {
        match self.vars.get(key) {
            Some(v) => v,
            None if ["LOKI", "PROMTAIL", "LOGCLI"]
                .iter()
                .any(|p| key.contains(p)) =>
            {
                panic!(
                "{key}: the stack runs without Loki, Promtail and logcli here (not installed). \
                 Put loki, promtail and logcli 3.4.6 on PATH, or set ALERTPIPE_PEERS_DIR to a \
                 directory of the upstream release binaries (README), then rerun stack.sh up"
            )
            }
            None => panic!("{key} missing from the stack env file; rerun stack.sh up"),
        }
    }
}

/// A name no other test (or earlier run) uses.
/// Debian's chromium, headless, as quiet as this machine's closed network needs, with time
/// for a page's script to run and file pages allowed to load file scripts.
pub fn chromium() -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        "--virtual-time-budget=5000",
    ]);
    c
}

/// A string that marks alert `i` of a storm wherever it lands (rows, mails).
pub fn storm_token(i: usize) -> String {
    format!("stormalert{i:06}x")
}

/// A firing webhook of `n` unique critical alerts, numbered from `from`; each summary is
/// [`storm_token`] of its number.
pub fn storm_webhook(from: usize, n: usize) -> Vec<u8> {
    let alerts: Vec<_> = (from..from + n)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": format!("Storm{i}"), "service": format!("svc{}", i % 4),
                           "cluster": "prod", "severity": "critical"},
                "annotations": {"summary": storm_token(i)},
                "startsAt": "2026-11-24T13:23:14Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://loki.example/",
                "fingerprint": format!("{:016x}", 0x5707_0000_0000u64 + i as u64),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "receiver": "webhook-critical", "status": "firing", "alerts": alerts,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "version": "4", "groupKey": "storm",
        "truncatedAlerts": 0
    }))
    .unwrap()
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port for a child process to listen on. A port found by binding port 0 and closing it can
/// be taken again before the child binds it: by the next caller here (tests run in parallel),
/// by another test's port-0 listener, or as the source port of an outgoing connection. So the
/// ports come from below the kernel's ephemeral range (`ip_local_port_range`), where neither
/// port-0 binds nor outgoing connections land, and none is handed out twice by this process.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<std::sync::Mutex<u32>> = OnceLock::new();
    const LOW: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768u32)
        .max(LOW + 1_000);
    let span = ephemeral - LOW;
    let next = NEXT.get_or_init(|| {
        // Processes running tests at once start at different places.
        std::sync::Mutex::new(std::process::id().wrapping_mul(7_919) % span)
    });
    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..span {
        let port = u16::try_from(LOW + *n % span).expect("below 65536");
        *n = (*n + 1) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{ephemeral}");
}

pub fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub async fn read_json(
    brokers: &str,
    topic: &str,
    expect: usize,
    idle: Duration,
) -> Vec<serde_json::Value> {
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    let msgs: Vec<ReadMessage> =
        actix_web::rt::task::spawn_blocking(move || read_topic(&b, &t, expect, idle))
            .await
            .unwrap()
            .expect("topic readable");
    msgs.into_iter()
        .map(|m| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&m.payload).expect("message is JSON");
            v["_key"] = m.key.into();
            v
        })
        .collect()
}

/// The records on `topic` (payload, key and headers), waiting until `expect` messages or
/// `idle` of silence.
pub async fn read_records(
    brokers: &str,
    topic: &str,
    expect: usize,
    idle: Duration,
) -> Vec<ReadMessage> {
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    actix_web::rt::task::spawn_blocking(move || read_topic(&b, &t, expect, idle))
        .await
        .unwrap()
        .expect("topic readable")
}

/// The payloads on `topic`, waiting until `expect` messages or `idle` of silence.
pub async fn read_payloads(
    brokers: &str,
    topic: &str,
    expect: usize,
    idle: Duration,
) -> Vec<Vec<u8>> {
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    actix_web::rt::task::spawn_blocking(move || read_topic(&b, &t, expect, idle))
        .await
        .unwrap()
        .expect("topic readable")
        .into_iter()
        .map(|m| m.payload)
        .collect()
}

/// Waits until consumer group `group` has committed everything on `topic` (for the archive:
/// every line is in a closed file, and nothing more will be written).
pub async fn wait_group_drained(brokers: &str, group: &str, topic: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (b, g, t) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
        let lag = actix_web::rt::task::spawn_blocking(move || {
            alertpipe::kafka::group_lag(&b, &g, &t, Duration::from_secs(5))
        })
        .await
        .unwrap();
        if let Ok(0) = lag {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not drain {topic} within {within:?}: {lag:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A turn to start JVM peers (Kafka brokers, HDFS) for a test: at most two tests start theirs at
/// once. A JVM's start is CPU-bound (class loading, JIT); one alone is ready in about 4 s, but
/// eight at once beside the rest of the suite on two cores took over a minute each.
pub struct JvmTurn(());

static JVM_TURNS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static JVM_TURN_FREED: std::sync::Condvar = std::sync::Condvar::new();
const JVM_TURNS_AT_ONCE: usize = 2;

impl JvmTurn {
    /// Waits (blocking the test's thread) for a turn; the turn ends when this is dropped.
    pub fn take() -> JvmTurn {
        let mut busy = JVM_TURNS.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= JVM_TURNS_AT_ONCE {
            busy = JVM_TURN_FREED.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy += 1;
        JvmTurn(())
    }
}

impl Drop for JvmTurn {
    fn drop(&mut self) {
        let mut busy = JVM_TURNS.lock().unwrap_or_else(|e| e.into_inner());
        *busy -= 1;
        JVM_TURN_FREED.notify_one();
    }
}

/// The last `lines` lines of a peer's log, for a failure message (its directory is gone by
/// the time anyone reads the message).
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A private Apache Kafka broker (KRaft, one combined node, `deploy/local/kafka.sh`) with its
/// data in `dir`, so a restart on the same `port` keeps the data (and its controller port).
pub fn start_broker(dir: &std::path::Path, port: u16) -> Proc {
    let _turn = JvmTurn::take();
    let script = Stack::get().var("STACK_KAFKA_SH");
    let cport_file = dir.join("controller.port");
    let cport: u16 = match std::fs::read_to_string(&cport_file) {
        Ok(p) => p.trim().parse().expect("controller.port holds a port"),
        Err(_) => {
            let p = free_port();
            std::fs::write(&cport_file, p.to_string()).expect("write controller.port");
            p
        }
    };
    let log = std::fs::File::create(dir.join(format!("kafka-{port}.log"))).expect("broker log");
    let child = Command::new("bash")
        .arg(script)
        .args(["run", &dir.join("kafka").display().to_string()])
        .args([port.to_string(), cport.to_string()])
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("kafka starts");
    let proc = Proc { child }; // killed even if it never answers
    let ready = Command::new("bash")
        .arg(script)
        .args(["ready", &port.to_string(), "120"])
        .status()
        .expect("kafka.sh ready runs");
    assert!(
        ready.success(),
        "the private Kafka broker on {port} did not answer within 120 s; its log ends:\n{}",
        log_tail(&dir.join(format!("kafka-{port}.log")), 30)
    );
    proc
}

/// A private Alertmanager running the project's config, pointed at `target_url`, with test
/// timings (group_wait 1s, group_interval 2s). `peer`: cluster with another replica.
pub fn start_alertmanager(
    dir: &std::path::Path,
    port: u16,
    target_url: &str,
    token: &str,
    cluster: Option<(u16, Option<u16>)>,
) -> Proc {
    let project = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/alertmanager/alertmanager.yml"),
    )
    .unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let cfg = project
        .replace("http://alertpipe:8080", target_url)
        .replace(
            "/etc/alertmanager/secrets/alertpipe-token",
            token_file.to_str().unwrap(),
        )
        .replace("group_wait: 10s", "group_wait: 1s")
        .replace("group_interval: 1m", "group_interval: 2s");
    let cfg_file = dir.join("alertmanager.yml");
    std::fs::write(&cfg_file, cfg).unwrap();
    let mut cmd = Command::new(Stack::get().var("STACK_ALERTMANAGER_BIN"));
    cmd.arg(format!("--config.file={}", cfg_file.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    match cluster {
        None => {
            cmd.arg("--cluster.listen-address=");
        }
        Some((listen, peer)) => {
            cmd.arg(format!("--cluster.listen-address=127.0.0.1:{listen}"))
                .arg("--cluster.advertise-address=127.0.0.1:".to_owned() + &listen.to_string())
                .arg("--cluster.peer-timeout=2s");
            if let Some(p) = peer {
                cmd.arg(format!("--cluster.peer=127.0.0.1:{p}"));
            }
        }
    }
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("alertmanager starts");
    let proc = Proc { child }; // killed even if it never listens
    wait_port(port, Duration::from_secs(20), "alertmanager");
    proc
}

/// Waits until `f` returns Some, polling; panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A database of its own for one test, created from a migrated template; dropped on Drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

fn admin_exec(admin_url: &str, sql: &str) {
    use diesel::{Connection, RunQueryDsl};
    let mut c = diesel::PgConnection::establish(admin_url)
        .unwrap_or_else(|e| panic!("cannot reach the stack's PostgreSQL ({admin_url}): {e}"));
    diesel::sql_query(sql)
        .execute(&mut c)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn db_url(admin_url: &str, name: &str) -> String {
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

impl TestDb {
    pub fn new() -> TestDb {
        Self::on(Stack::get().var("STACK_PG_URL"))
    }

    /// On the server at `admin_url` (its `postgres` database).
    pub fn on(admin_url: &str) -> TestDb {
        static TEMPLATES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let template = format!("alertpipe_tpl_{}", std::process::id());
        {
            let mut made = TEMPLATES.lock().unwrap();
            if !made.contains(&admin_url.to_owned()) {
                admin_exec(admin_url, &format!("DROP DATABASE IF EXISTS {template}"));
                admin_exec(admin_url, &format!("CREATE DATABASE {template}"));
                alertpipe::db::migrate(&db_url(admin_url, &template)).expect("migrations apply");
                made.push(admin_url.to_owned());
            }
        }
        let name = unique("t").replace('-', "_");
        admin_exec(
            admin_url,
            &format!("CREATE DATABASE {name} TEMPLATE {template}"),
        );
        TestDb {
            url: db_url(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    pub fn conn(&self) -> diesel::PgConnection {
        use diesel::Connection;
        diesel::PgConnection::establish(&self.url).expect("test database reachable")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        use diesel::{Connection, RunQueryDsl};
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut c);
        }
    }
}

/// A private PostgreSQL cluster a test may stop and start (the stack's is shared).
pub struct PrivatePg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_url: String,
}

fn as_postgres(cmd: &str, args: &[&str]) -> std::process::Output {
    let bin = format!("{}/{cmd}", Stack::get().var("STACK_PG_BIN"));
    let root = is_root();
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &bin]);
        c
    } else {
        Command::new(&bin)
    };
    c.args(args).output().expect("postgres tool runs")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:", dir.path().to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown for postgres");
        }
        let data = dir.path().join("data");
        let out = as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pg = PrivatePg {
            port,
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
        };
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        let out = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// Produces raw messages straight to a topic (what a redelivery or a foreign producer does).
pub async fn produce_raw(brokers: &str, topic: &str, messages: &[(&str, Vec<u8>)]) {
    use rdkafka::producer::FutureRecord;
    let mut cfg = alertpipe::config::KafkaConfig {
        brokers: brokers.to_owned(),
        ..Default::default()
    };
    cfg.producer.clear();
    alertpipe::kafka::ensure_topics(&cfg, &[topic], Duration::from_secs(10))
        .await
        .expect("topic created");
    let producer = alertpipe::kafka::future_producer(&cfg).expect("producer");
    for (key, payload) in messages {
        producer
            .send(
                FutureRecord::to(topic).key(*key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

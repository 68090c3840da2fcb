//! The log half's real programs: Loki (the stack's, or a private one with the shipped config),
//! Promtail (private, the shipped config, its own log directory and positions file) and
//! Prometheus (private, the shipped config). Binaries come from the stack's env file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, Proc, Stack};

pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Sends SIGTERM and waits: the program's own shutdown path (Promtail saves its positions).
pub fn terminate(p: &mut Proc, within: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = p.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    p.kill9();
}

fn wait_http_ok(url: &str, within: Duration, what: &str, log: &Path, proc: &mut Proc) {
    if let Err(e) = try_wait_http_ok(url, within, what, log, proc) {
        panic!("{e}");
    }
}

/// Waits for 200 at `url`; Err (with the log's tail) when the program exits or times out.
fn try_wait_http_ok(
    url: &str,
    within: Duration,
    what: &str,
    log: &Path,
    proc: &mut Proc,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let ok = Command::new("curl")
            .args(["-fs", "-o", "/dev/null", url])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        let exited = proc.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(format!(
                "{what} not ready at {url} ({}):\n{}",
                exited.map_or("timed out".to_owned(), |s| format!("exited: {s}")),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies `config/loki/rules/` with test timings (evaluate every second, no pending period);
/// expressions, labels and annotations stay as shipped.
pub fn stage_rules(into: &Path) {
    let src = repo_file("config/loki/rules/fake");
    let dst = into.join("fake");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let fast: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("    interval:") {
                    "    interval: 1s".to_owned()
                } else if l.starts_with("        for:") {
                    "        for: 0s".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        std::fs::write(dst.join(path.file_name().unwrap()), fast.join("\n")).unwrap();
    }
}

/// A Loki: the stack's shared one, or a private single binary running `config/loki/loki.yml`.
pub struct Loki {
    pub url: String,
    _proc: Option<Proc>,
    _dir: Option<tempfile::TempDir>,
}

impl Loki {
    pub fn stack() -> Loki {
        Loki {
            url: Stack::get().var("STACK_LOKI_URL").to_owned(),
            _proc: None,
            _dir: None,
        }
    }

    /// A private Loki whose ruler evaluates the shipped rules (test timings) and sends to
    /// `alertmanager`.
    pub fn start_with_ruler(alertmanager: &str) -> Loki {
        Self::start_private(Some(alertmanager))
    }

    /// A private Loki with no rules: for data a test must not let reach the stack's ruler
    /// (which alerts the demo's alertpipe), such as lines of the seed's `payment` service.
    pub fn start_without_ruler() -> Loki {
        Self::start_private(None)
    }

    fn start_private(alertmanager: Option<&str>) -> Loki {
        let dir = tempfile::tempdir().unwrap();
        match alertmanager {
            Some(_) => stage_rules(&dir.path().join("rules")),
            None => std::fs::create_dir_all(dir.path().join("rules/fake")).unwrap(),
        }
        let alertmanager = alertmanager.unwrap_or("http://127.0.0.1:9");
        let env = [
            (
                "LOKI_RULES_DIR",
                dir.path().join("rules").display().to_string(),
            ),
            ("LOKI_ALERTMANAGER_URL", alertmanager.to_owned()),
            ("LOKI_RULER_INTERVAL", "1s".to_owned()),
            ("LOKI_RULER_POLL", "1s".to_owned()),
        ];
        // A port picked free may be taken before Loki binds it: try fresh ports again.
        let mut attempt = 0;
        let (proc, http) = loop {
            attempt += 1;
            let http = free_port();
            match try_loki_process("config/loki/loki.yml", dir.path(), "loki", http, &env, None) {
                Ok(p) => break (p, http),
                Err(e) if attempt < 3 => eprintln!("private Loki did not start ({e}); again"),
                Err(e) => panic!("{e}"),
            }
        };
        Loki {
            url: format!("http://127.0.0.1:{http}"),
            _proc: Some(proc),
            _dir: Some(dir),
        }
    }

    /// `{stream labels}`, `[(ts_ns, line, structured metadata)]` per stream, over the last hour.
    pub async fn streams(&self, query: &str) -> Vec<LokiStream> {
        let (status, v) = loki_get(
            &self.url,
            "/loki/api/v1/query_range",
            &[("query", query), ("since", "1h"), ("limit", "5000")],
        )
        .await;
        assert_eq!(status, 200, "{query}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: no result in {v}"))
            .iter()
            .map(|s| LokiStream {
                labels: str_map(&s["stream"]),
                entries: s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| LokiEntry {
                        ts_ns: e[0].as_str().unwrap().parse().unwrap(),
                        line: e[1].as_str().unwrap().to_owned(),
                        metadata: str_map(&e[2]["structuredMetadata"]),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every line of `query`, oldest first.
    pub async fn lines(&self, query: &str) -> Vec<String> {
        let mut all: Vec<(i64, String)> = self
            .streams(query)
            .await
            .into_iter()
            .flat_map(|s| s.entries.into_iter().map(|e| (e.ts_ns, e.line)))
            .collect();
        all.sort();
        all.into_iter().map(|(_, l)| l).collect()
    }
}

#[derive(Debug)]
pub struct LokiStream {
    pub labels: BTreeMap<String, String>,
    pub entries: Vec<LokiEntry>,
}

#[derive(Debug)]
pub struct LokiEntry {
    pub ts_ns: i64,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every line of a `query_range` answer of streams, in the answer's order.
pub fn result_lines(v: &Value) -> Vec<String> {
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(|e| e[1].as_str().map(str::to_owned))
        .collect()
}

/// GET on a Loki-API server (Loki itself), with structured metadata kept apart from labels.
pub async fn loki_get(base: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    loki_get_with(base, path, params, None).await
}

/// [`loki_get`] with a bearer token (alertpipe's Loki API over the archive).
pub async fn loki_get_with(
    base: &str,
    path: &str,
    params: &[(&str, &str)],
    token: Option<&str>,
) -> (u16, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let mut req = client
        .get(format!("{base}{path}"))
        .insert_header(("X-Loki-Response-Encoding-Flags", "categorize-labels"));
    if let Some(t) = token {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    let mut resp = req
        .query(&params)
        .expect("query string")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
    let body = resp.body().limit(64 << 20).await.expect("loki body");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (resp.status().as_u16(), v)
}

/// Starts the real Loki on `config` (a shipped file) with its data in `dir` and waits for
/// /ready; Err when Loki exits at start (a port taken meanwhile, say) or times out.
pub fn try_loki_process(
    config: &str,
    dir: &Path,
    name: &str,
    http: u16,
    env: &[(&str, String)],
    target: Option<&str>,
) -> Result<Proc, String> {
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(Stack::get().var("STACK_LOKI_BIN"));
    cmd.arg(format!("-config.file={}", repo_file(config).display()))
        .arg("-config.expand-env=true")
        .env("LOKI_LISTEN_ADDRESS", "127.0.0.1")
        .env("LOKI_INSTANCE_ADDR", "127.0.0.1")
        .env("LOKI_HTTP_PORT", http.to_string())
        .env("LOKI_GRPC_PORT", free_port().to_string())
        .env("LOKI_DATA_DIR", dir.join("data"))
        .env("LOKI_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(t) = target {
        cmd.arg(format!("-target={t}"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc {
        child: cmd.spawn().expect("loki starts"),
    };
    try_wait_http_ok(
        &format!("http://127.0.0.1:{http}/ready"),
        Duration::from_secs(120),
        name,
        &log_path,
        &mut proc,
    )?;
    Ok(proc)
}

/// A private Promtail running `config/promtail/promtail.yml`, tailing `<dir>/logs/*/*.log`:
/// a service's lines go in `logs/<service>/<file>.log`.
pub struct Promtail {
    pub dir: tempfile::TempDir,
    pub port: u16,
    token: String,
    loki: String,
    alertpipe: String,
    proc: Option<Proc>,
}

impl Promtail {
    /// Sends `Bearer test-token` to alertpipe (ignored by an app without auth).
    pub fn start(loki: &str, alertpipe: &str) -> Promtail {
        Self::start_with_token(loki, alertpipe, "test-token")
    }

    /// Sends `Bearer <token>` to alertpipe, from a token file as the shipped config says.
    pub fn start_with_token(loki: &str, alertpipe: &str, token: &str) -> Promtail {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let mut p = Promtail {
            dir,
            port: free_port(),
            token: token.to_owned(),
            loki: loki.to_owned(),
            alertpipe: alertpipe.to_owned(),
            proc: None,
        };
        p.up();
        p
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Appends raw bytes (lines must end in \n) to `logs/<service>/<file>`.
    pub fn append(&self, service: &str, file: &str, bytes: &[u8]) {
        use std::io::Write;
        let d = self.logs().join(service);
        std::fs::create_dir_all(&d).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(file))
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn token_file(&self) -> PathBuf {
        let f = self.dir.path().join("alertpipe-token");
        std::fs::write(&f, &self.token).unwrap();
        f
    }

    pub fn up(&mut self) {
        let log_path = self.dir.path().join(format!("promtail-{}.log", self.port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(Stack::get().var("STACK_PROMTAIL_BIN"))
            .arg(format!(
                "-config.file={}",
                repo_file("config/promtail/promtail.yml").display()
            ))
            .arg("-config.expand-env=true")
            .env("HOSTNAME", "test-host")
            .env("PROMTAIL_LISTEN_ADDRESS", "127.0.0.1")
            .env("PROMTAIL_HTTP_PORT", self.port.to_string())
            .env("PROMTAIL_POSITIONS", self.dir.path().join("positions.yaml"))
            .env(
                "PROMTAIL_LOG_GLOB",
                format!("{}/*/*.log", self.logs().display()),
            )
            .env("ALERTPIPE_TOKEN_FILE", self.token_file())
            .env("LOKI_PUSH_URL", format!("{}/loki/api/v1/push", self.loki))
            .env(
                "ALERTPIPE_PUSH_URL",
                format!("{}/loki/api/v1/push", self.alertpipe),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("promtail starts");
        let mut proc = Proc { child };
        wait_http_ok(
            // /ready stays 500 until some file matches the glob: the server answering is enough.
            &format!("http://127.0.0.1:{}/metrics", self.port),
            Duration::from_secs(30),
            "promtail",
            &log_path,
            &mut proc,
        );
        self.proc = Some(proc);
    }

    /// SIGTERM: Promtail flushes what it holds and saves its positions.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            terminate(&mut p, Duration::from_secs(15));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("promtail-{}.log", self.port)))
            .unwrap_or_default()
    }
}

/// A private Prometheus running `config/prometheus/prometheus.yml` (and its rules), scraping
/// `alertpipe` (host:port) every second and sending alerts to `alertmanager` (host:port).
pub struct Prometheus {
    pub url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(alertpipe: &str, alertmanager: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(repo_file("config/prometheus/prometheus.yml"))
            .expect("config/prometheus/prometheus.yml");
        let cfg = shipped
            .replace("alertpipe:8080", alertpipe)
            .replace("alertmanager:9093", alertmanager)
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        for e in std::fs::read_dir(repo_file("config/prometheus/rules")).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("interval: 30s", "interval: 1s");
            std::fs::write(dir.path().join("rules").join(p.file_name().unwrap()), text).unwrap();
        }
        let port = free_port();
        let log_path = dir.path().join("prometheus.log");
        let child = Command::new(Stack::get().var("STACK_PROMETHEUS_BIN"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("prometheus starts");
        let mut proc = Proc { child };
        let url = format!("http://127.0.0.1:{port}");
        wait_http_ok(
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
            "prometheus",
            &log_path,
            &mut proc,
        );
        Prometheus {
            url,
            _proc: proc,
            _dir: dir,
        }
    }

    /// An instant query: HTTP status and the JSON answer.
    pub async fn query(&self, expr: &str) -> (u16, Value) {
        let client = awc::Client::default();
        let mut resp = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .unwrap()
            .send()
            .await
            .expect("prometheus answers");
        let v: Value = resp.json().limit(16 << 20).await.unwrap_or(Value::Null);
        (resp.status().as_u16(), v)
    }

    pub async fn get(&self, path: &str) -> Value {
        let client = awc::Client::default();
        let mut resp = client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("prometheus answers");
        resp.json().limit(16 << 20).await.unwrap_or(Value::Null)
    }
}

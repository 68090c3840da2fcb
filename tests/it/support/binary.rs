//! The real `alertpipe` binary as a child process: started with a role set and environment,
//! killed with SIGKILL or stopped with SIGTERM, started again under the same settings.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::logs::terminate;
use super::{free_port, Proc};

pub struct Binary {
    pub port: u16,
    roles: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    proc: Option<Proc>,
    /// When the current process was started.
    pub started: Instant,
}

impl Binary {
    /// Starts `alertpipe serve --roles <roles>` with `env` (ALERTPIPE__… keys); its stderr
    /// is appended to `log`.
    pub fn start(roles: &str, env: &[(&str, String)], log: &Path) -> Binary {
        let mut b = Binary {
            port: free_port(),
            roles: roles.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            log: log.to_owned(),
            proc: None,
            started: Instant::now(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_alertpipe"))
            .args(["serve", "--roles", &self.roles])
            .env(
                "ALERTPIPE__SERVER__LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env("ALERTPIPE__TELEMETRY__LOG_LEVEL", "info,librdkafka=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("alertpipe binary starts");
        self.proc = Some(Proc { child });
        self.started = Instant::now();
    }

    /// Sets (or replaces) one environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<String>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Sends a signal (`HUP`, ...) to the running process.
    pub fn signal(&self, name: &str) {
        let pid = self.proc.as_ref().expect("running").child.id();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{name} {pid}");
    }

    /// SIGTERM: the service's own drain and exit.
    pub fn sigterm(&mut self) {
        if let Some(mut p) = self.proc.take() {
            terminate(&mut p, Duration::from_secs(40));
        }
    }

    /// Starts it again with the same port and settings.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits for `/readyz` to answer 200; fails with the last answer and the log's tail.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.readyz().await;
            if status == 200 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "alertpipe ({}) not ready within {within:?}: {status} {body}\n{}",
                    self.roles,
                    self.log_tail()
                );
            }
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `/metrics` as text (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish();
        match client.get(format!("{}/metrics", self.url())).send().await {
            Ok(mut r) => String::from_utf8_lossy(&r.body().await.unwrap_or_default()).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// `/readyz`: the status and the reason given.
    pub async fn readyz(&self) -> (u16, String) {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish();
        match client.get(format!("{}/readyz", self.url())).send().await {
            Ok(mut r) => {
                let body = r.body().await.unwrap_or_default();
                (
                    r.status().as_u16(),
                    String::from_utf8_lossy(&body).into_owned(),
                )
            }
            Err(e) => (0, e.to_string()),
        }
    }
}

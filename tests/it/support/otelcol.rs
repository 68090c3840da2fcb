//! A private OpenTelemetry Collector (the stack's build of `config/otelcol/builder.yaml`)
//! running the shipped `config/otelcol/otelcol.yaml`, tailing `<dir>/logs/*/*.log` and sending
//! OTLP to a test alertpipe. Its read positions and send queue live in `<dir>/storage`, so a
//! stop and a start resume where it was.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::logs::{repo_file, terminate};
use super::{Proc, Stack};

pub struct Collector {
    pub dir: tempfile::TempDir,
    token: String,
    alertpipe: String,
    proc: Option<Proc>,
    starts: usize,
    /// The CA of an https:// alertpipe's certificate.
    ca: Option<PathBuf>,
}

impl Collector {
    /// Sends `Bearer test-token` (ignored by an app without auth).
    pub fn start(alertpipe: &str) -> Collector {
        Self::start_with_token(alertpipe, "test-token")
    }

    pub fn start_with_token(alertpipe: &str, token: &str) -> Collector {
        Self::start_full(alertpipe, token, None)
    }

    /// Sends to an https:// alertpipe whose certificate `ca` signed.
    pub fn start_with_ca(alertpipe: &str, ca: &std::path::Path) -> Collector {
        Self::start_full(alertpipe, "test-token", Some(ca.to_owned()))
    }

    fn start_full(alertpipe: &str, token: &str, ca: Option<PathBuf>) -> Collector {
        let dir = tempfile::tempdir().expect("collector dir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let mut c = Collector {
            dir,
            token: token.to_owned(),
            alertpipe: alertpipe.to_owned(),
            proc: None,
            starts: 0,
            ca,
        };
        c.up();
        c
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Appends raw bytes (lines must end in \n) to `logs/<service>/<file>`.
    pub fn append(&self, service: &str, file: &str, bytes: &[u8]) {
        use std::io::Write;
        let d = self.logs().join(service);
        std::fs::create_dir_all(&d).expect("service dir");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(file))
            .expect("log file");
        f.write_all(bytes).expect("append");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("otelcol.log")
    }

    /// Starts the collector and waits until its pipeline runs ("Everything is ready").
    pub fn up(&mut self) {
        let token_file = self.dir.path().join("alertpipe-token");
        std::fs::write(&token_file, &self.token).expect("token file");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("collector log");
        let child = Command::new(Stack::get().var("STACK_OTELCOL_BIN"))
            .arg("--config")
            .arg(repo_file("config/otelcol/otelcol.yaml"))
            // Info level: the readiness line waited for below.
            .env("OTELCOL_LOG_LEVEL", "info")
            .env("HOSTNAME", "test-host")
            .env("CLUSTER", "prod")
            .env("OTELCOL_STORAGE_DIR", self.dir.path().join("storage"))
            .env(
                "OTELCOL_LOG_GLOB",
                format!("{}/*/*.log", self.logs().display()),
            )
            .env("ALERTPIPE_OTLP_URL", format!("{}/otlp", self.alertpipe))
            .env("ALERTPIPE_TOKEN_FILE", &token_file)
            .env(
                "ALERTPIPE_CA_FILE",
                self.ca.as_ref().map(|p| p.as_os_str()).unwrap_or_default(),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the collector starts");
        let mut proc = Proc { child };
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if text.matches("Everything is ready").count() >= self.starts {
                break;
            }
            let exited = proc.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the collector did not become ready ({exited:?}); its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.proc = Some(proc);
    }

    /// SIGTERM: the collector stops reading, keeps its positions and queue on disk.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            terminate(&mut p, Duration::from_secs(20));
        }
    }

    /// SIGKILL, as an OOM kill or a node loss would.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

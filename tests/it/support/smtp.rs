//! A real SMTP server per test: Debian's aiosmtpd with deploy/local/smtp_sink.py, storing mail
//! in a Maildir and answering 451/550 on demand.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{eventually, free_port, Proc, Stack};

pub struct Smtp {
    _proc: Proc,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The CA of a secure server's certificate (`start_secure`).
    pub pki: Option<super::tls::Pki>,
}

impl Smtp {
    pub fn start() -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let maildir = dir.path().join("maildir");
        let child = Command::new(Stack::get().var("STACK_SYS_PYTHON"))
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "smtp_sink.MaildirSink",
            ])
            .arg(&maildir)
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        // Owned before the wait, so a server that never listens is still killed.
        let proc = Proc { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp {
            _proc: proc,
            dir,
            port,
            pki: None,
        }
    }

    /// A submission server as Outlook's: STARTTLS with a certificate for `localhost` made by
    /// the test (its CA: `pki`), then AUTH required (`user`, `password`).
    pub fn start_secure(user: &str, password: &str) -> Smtp {
        let pki = super::tls::Pki::new("alertpipe-smtp-ca");
        let cert = pki.issue("smtp", "localhost");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let maildir = dir.path().join("maildir");
        let pw = dir.path().join("password");
        std::fs::write(&pw, password).unwrap();
        let child = Command::new(Stack::get().var("STACK_SYS_PYTHON"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/local/smtp_tls.py"
            ))
            .args(["127.0.0.1", &port.to_string()])
            .arg(&maildir)
            .arg(&cert.cert)
            .arg(&cert.key)
            .arg(user)
            .arg(&pw)
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local"),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("smtp.log")).unwrap())
            .spawn()
            .expect("the STARTTLS server starts");
        let proc = Proc { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp_tls.py did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp {
            _proc: proc,
            dir,
            port,
            pki: Some(pki),
        }
    }

    /// `451 N`: the next N messages get 451; `550`: every message gets 550.
    pub fn fault(&self, spec: Option<&str>) {
        let f = self.dir.path().join("fault");
        match spec {
            Some(s) => std::fs::write(f, s).unwrap(),
            None => {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    pub fn mails(&self) -> Vec<Value> {
        let out = Command::new(Stack::get().var("STACK_SYS_PYTHON"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/read_maildir.py"
            ))
            .arg(self.maildir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub async fn wait_mails(&self, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(30), &format!("{n} mails"), || {
            let m = if self.maildir().join("new").exists() {
                self.mails()
            } else {
                Vec::new()
            };
            async move { (m.len() >= n).then_some(m) }
        })
        .await
    }
}

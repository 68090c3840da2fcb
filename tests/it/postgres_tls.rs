//! The alert history on a PostgreSQL that takes TLS connections only, with SCRAM passwords
//! (`hostssl ... scram-sha-256`, a certificate made by the test), as a managed PostgreSQL has
//! it: `sslmode = "verify-full"` with the CA connects; a certificate for another host name, a
//! wrong password and `sslmode = "disable"` are refused, each with an error that says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::tls::Pki;
use crate::support::{free_port, Stack};

const PASSWORD: &str = "history-keeper-42";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL program as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct SecurePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    pki: Pki,
}

impl SecurePostgres {
    /// `sans`: the server certificate's subject alternative names.
    fn start(sans: &str) -> SecurePostgres {
        let bin = PathBuf::from(Stack::get().var("STACK_PG_BIN"));
        // PostgreSQL runs as `postgres`: its directory must be reachable by that user.
        let dir = tempfile::Builder::new()
            .prefix("alertpipe-pgtls-")
            .tempdir_in("/var/tmp")
            .expect("pg dir");
        let pki = Pki::new("alertpipe-test-ca");
        let server = pki.issue_for("server", "localhost", sans);
        let data = dir.path().join("data");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:", &dir.path().to_string_lossy()]);
                    c
                },
                "chown",
            );
        }
        let mut initdb = as_pg(&bin.join("initdb"));
        initdb.args([
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb");
        let (crt, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::copy(&server.cert, &crt).expect("server.crt");
        std::fs::copy(&server.key, &key).expect("server.key");
        let port = free_port();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        use std::io::Write;
        writeln!(
            conf,
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             password_encryption = 'scram-sha-256'\nfsync = off",
            dir.path().display()
        )
        .expect("postgresql.conf");
        if is_root() {
            for f in [&crt, &key] {
                let mut c = Command::new("chown");
                c.args(["postgres:", &f.to_string_lossy()]);
                run(c, "chown");
            }
        }
        let mut chmod = Command::new("chmod");
        chmod.args(["600", &key.to_string_lossy()]);
        run(chmod, "chmod");
        let mut start = as_pg(&bin.join("pg_ctl"));
        start.args([
            "-D",
            &data.to_string_lossy(),
            "-l",
            &dir.path().join("postgres.log").to_string_lossy(),
            "-w",
            "-t",
            "30",
            "start",
        ]);
        run(start, "pg_ctl start");
        let mut psql = Command::new(bin.join("psql"));
        psql.args([
            "-q",
            "-h",
            &dir.path().to_string_lossy(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            &format!("CREATE ROLE alertpipe LOGIN PASSWORD '{PASSWORD}'"),
            "-c",
            "CREATE DATABASE alertpipe OWNER alertpipe",
        ]);
        run(psql, "create the role and database");
        SecurePostgres {
            bin,
            dir,
            port,
            pki,
        }
    }

    /// `alertpipe migrate` against it: (success, stderr).
    fn migrate(
        &self,
        host: &str,
        sslmode: &str,
        ca: Option<&Path>,
        password: &str,
    ) -> (bool, String) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_alertpipe"));
        c.arg("migrate")
            .env(
                "ALERTPIPE__DATABASE__URL",
                format!("postgres://alertpipe@{host}:{}/alertpipe", self.port),
            )
            .env("ALERTPIPE__DATABASE__SSLMODE", sslmode)
            .env("ALERTPIPE_DATABASE_PASSWORD", password);
        if let Some(ca) = ca {
            c.env("ALERTPIPE__DATABASE__CA_FILE", ca);
        }
        let out = c.output().expect("alertpipe runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for SecurePostgres {
    fn drop(&mut self) {
        let mut stop = as_pg(&self.bin.join("pg_ctl"));
        stop.args([
            "-D",
            &self.dir.path().join("data").to_string_lossy(),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = stop.output();
    }
}

#[test]
fn verify_full_connects_and_a_wrong_host_password_or_plaintext_is_refused_clearly() {
    let pg = SecurePostgres::start("DNS:localhost");
    let ca = pg.pki.ca();
    let mut errors = Vec::new();
    let (ok, err) = pg.migrate("localhost", "verify-full", Some(&ca), PASSWORD);
    assert!(ok, "verify-full with the CA connects: {err}");

    // The certificate names localhost; 127.0.0.1 is not it.
    let (ok, err) = pg.migrate("127.0.0.1", "verify-full", Some(&ca), PASSWORD);
    assert!(!ok);
    assert!(err.contains("does not match host name"), "{err}");
    errors.push(err);

    let (ok, err) = pg.migrate("localhost", "verify-full", Some(&ca), "not-the-password");
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
    errors.push(err);

    let (ok, err) = pg.migrate("localhost", "disable", None, PASSWORD);
    assert!(!ok);
    assert!(err.contains("no encryption"), "{err}");
    errors.push(err);

    let other = Pki::new("someone-elses-ca");
    let (ok, err) = pg.migrate("localhost", "verify-full", Some(&other.ca()), PASSWORD);
    assert!(!ok);
    assert!(err.contains("certificate verify failed"), "{err}");
    errors.push(err);

    for e in &errors {
        assert!(!e.contains(PASSWORD), "no password in an error: {e}");
    }
}

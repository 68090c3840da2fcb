//! alertpipe's own port over TLS (`[server.tls]`), with the real senders configured for it:
//! Alertmanager (`tls_config.ca_file`) and the OpenTelemetry Collector (`tls.ca_file`) deliver
//! over TLS with the project's CA; a renewed certificate is served to new connections without
//! dropping open ones, noticed by the file watch or at once on SIGHUP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertpipe::config::{Config, Role, ServerTls};
use alertpipe::startup::Application;
use serde_json::json;

use crate::support::binary::Binary;
use crate::support::otelcol::Collector;
use crate::support::tls::Pki;
use crate::support::{
    eventually, free_port, read_json, read_payloads, start_alertmanager, unique, Stack,
};

struct TlsApp {
    port: u16,
    alerts: String,
    logs: String,
    handle: actix_web::dev::ServerHandle,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(pki: &Pki) -> TlsApp {
    let dir = tempfile::tempdir().unwrap();
    let issued = pki.issue("alertpipe", "localhost");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&issued.cert, &cert).unwrap();
    std::fs::copy(&issued.key, &key).unwrap();
    let mut cfg = Config::default();
    cfg.server.roles = vec![Role::Ingest];
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.workers = 1;
    cfg.server.shutdown_timeout_s = 2;
    cfg.server.tls = Some(ServerTls {
        cert_file: cert.clone(),
        key_file: key.clone(),
    });
    cfg.kafka.brokers = Stack::get().var("STACK_KAFKA_BROKERS").to_owned();
    cfg.kafka.alerts_topic = unique("alerts");
    cfg.kafka.logs_topic = unique("logs");
    cfg.kafka.partitions = 1;
    cfg.validate().expect("valid config");
    let (alerts, logs) = (cfg.kafka.alerts_topic.clone(), cfg.kafka.logs_topic.clone());
    let app = Application::build(cfg).await.expect("app builds");
    let port = app.port();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TlsApp {
        port,
        alerts,
        logs,
        handle,
        cert,
        key,
        _dir: dir,
    }
}

/// A TLS client that trusts `ca` only.
fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session carries the certificate of the session it resumes: every connection
    // here is a full handshake, to see the certificate served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> Tls {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// GET `path` on a kept-alive connection; the status code.
fn get(tls: &mut Tls, path: &str) -> u16 {
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
    )
    .unwrap();
    tls.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("a response");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).unwrap();
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn served(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}

/// GET /healthz on `tls` (a new connection when None), off the System's thread (the server's
/// own tasks run there): the connection, the status and the certificate it was served.
async fn healthz(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    tls: Option<Tls>,
) -> (Tls, u16, Vec<u8>) {
    let config = config.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let mut tls = tls.unwrap_or_else(|| connect(port, &config));
        let status = get(&mut tls, "/healthz");
        let cert = served(&tls);
        (tls, status, cert)
    })
    .await
    .expect("the TLS client ran")
}

#[actix_web::test]
async fn alertmanager_and_the_collector_deliver_over_tls_with_the_projects_ca() {
    let pki = Pki::new("alertpipe-test-ca");
    let app = start(&pki).await;
    let config = client_config(&pki.ca());
    let (_, status, _) = healthz(app.port, &config, None).await;
    assert_eq!(status, 200, "answers over TLS");

    // Alertmanager, with the shipped config pointed at https:// and told the CA.
    let dir = tempfile::tempdir().unwrap();
    let am = free_port();
    let _am = start_alertmanager(
        dir.path(),
        am,
        &format!("https://localhost:{}", app.port),
        "unused-token",
        None,
    );
    let cfg_file = dir.path().join("alertmanager.yml");
    let shipped = std::fs::read_to_string(&cfg_file).unwrap();
    let with_ca = shipped.replace(
        "        http_config:\n",
        &format!(
            "        http_config:\n          tls_config:\n            ca_file: {}\n",
            pki.ca().display()
        ),
    );
    assert_ne!(
        shipped, with_ca,
        "the webhook receivers have an http_config"
    );
    std::fs::write(&cfg_file, with_ca).unwrap();
    let http = awc::Client::default();
    eventually(Duration::from_secs(20), "alertmanager reloaded", || async {
        let r = http
            .post(format!("http://127.0.0.1:{am}/-/reload"))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let alert = json!([{
        "labels": {"alertname": "PaymentDBDown", "cluster": "prod", "service": "payment",
                   "instance": "db-1", "severity": "critical"},
        "annotations": {"summary": "PaymentDBDown over TLS"},
        "startsAt": "2026-01-01T10:00:00Z"}]);
    let r = http
        .post(format!("http://127.0.0.1:{am}/api/v2/alerts"))
        .send_json(&alert)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let brokers = Stack::get().var("STACK_KAFKA_BROKERS").to_owned();
    let got = eventually(Duration::from_secs(30), "the alert in kafka", || async {
        let m = read_json(&brokers, &app.alerts, 1, Duration::from_secs(1)).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(got[0]["alertname"], "PaymentDBDown");

    // The collector, with the shipped config and the CA.
    let collector = Collector::start_with_ca(&format!("https://localhost:{}", app.port), &pki.ca());
    collector.append("payment", "app.log", b"level=error msg=\"over TLS\"\n");
    eventually(Duration::from_secs(30), "the line in kafka", || async {
        let p = read_payloads(&brokers, &app.logs, 1, Duration::from_secs(1)).await;
        (!p.is_empty()).then_some(())
    })
    .await;
    app.handle.stop(true).await;
}

#[actix_web::test]
async fn a_renewed_certificate_is_served_to_new_connections_and_open_ones_stay() {
    let pki = Pki::new("alertpipe-test-ca");
    let app = start(&pki).await;
    let config = client_config(&pki.ca());
    let (mut open, status, before) = healthz(app.port, &config, None).await;
    assert_eq!(status, 200);

    let renewed = pki.issue("renewed", "localhost");
    std::fs::copy(&renewed.key, &app.key).unwrap();
    std::fs::copy(&renewed.cert, &app.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The connection opened before keeps working (used within the keep-alive window).
        let (kept, status, still) = healthz(app.port, &config, Some(open)).await;
        assert_eq!(status, 200, "the open connection was kept");
        assert_eq!(still, before, "with the certificate it began with");
        open = kept;
        let (_, status, now) = healthz(app.port, &config, None).await;
        assert_eq!(status, 200);
        if now != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, status, _) = healthz(app.port, &config, Some(open)).await;
    assert_eq!(status, 200, "and still works after the reload");
    app.handle.stop(true).await;
}

/// SIGHUP reads the certificate again at once. The renewed files keep the old modification
/// times, so the 5 s file watch cannot be what noticed: only the signal can have. And
/// `alertpipe healthcheck` (the container's) answers over TLS.
#[actix_web::test]
async fn sighup_serves_a_renewed_certificate_at_once() {
    let pki = Pki::new("alertpipe-test-ca");
    let dir = tempfile::tempdir().unwrap();
    let issued = pki.issue("alertpipe", "localhost");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&issued.cert, &cert).unwrap();
    std::fs::copy(&issued.key, &key).unwrap();
    let bin = Binary::start(
        "ingest",
        &[
            (
                "ALERTPIPE__SERVER__TLS__CERT_FILE",
                cert.display().to_string(),
            ),
            (
                "ALERTPIPE__SERVER__TLS__KEY_FILE",
                key.display().to_string(),
            ),
            (
                "ALERTPIPE__KAFKA__BROKERS",
                Stack::get().var("STACK_KAFKA_BROKERS").to_owned(),
            ),
            ("ALERTPIPE__KAFKA__ALERTS_TOPIC", unique("alerts")),
            ("ALERTPIPE__KAFKA__LOGS_TOPIC", unique("logs")),
            ("ALERTPIPE__KAFKA__PARTITIONS", "1".into()),
        ],
        &dir.path().join("alertpipe.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", bin.port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "alertpipe never listened\n{}",
            bin.log_tail()
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let config = client_config(&pki.ca());
    let (_, status, before) = healthz(bin.port, &config, None).await;
    assert_eq!(status, 200);
    // The container health check speaks TLS to it too.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_alertpipe"))
        .arg("healthcheck")
        .env(
            "ALERTPIPE__SERVER__LISTEN",
            format!("127.0.0.1:{}", bin.port),
        )
        .env("ALERTPIPE__SERVER__TLS__CERT_FILE", &cert)
        .env("ALERTPIPE__SERVER__TLS__KEY_FILE", &key)
        .output()
        .expect("alertpipe healthcheck runs");
    assert!(
        check.status.success(),
        "healthcheck over TLS: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let renewed = pki.issue("renewed", "localhost");
    for (from, to) in [(&renewed.key, &key), (&renewed.cert, &cert)] {
        let stamp = std::fs::metadata(to).unwrap().modified().unwrap();
        std::fs::copy(from, to).unwrap();
        let f = std::fs::File::options().write(true).open(to).unwrap();
        f.set_modified(stamp).unwrap();
    }
    bin.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, status, now) = healthz(bin.port, &config, None).await;
        assert_eq!(status, 200);
        if now != before {
            assert_eq!(
                now,
                renewed.chain()[0].to_vec(),
                "the renewed certificate, from the files"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not bring the renewed certificate within 3 s\n{}",
            bin.log_tail()
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

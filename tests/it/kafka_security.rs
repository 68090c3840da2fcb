//! alertpipe against a real Apache Kafka that only takes SASL_SSL (SCRAM-SHA-512, a user made
//! with Kafka's own storage tool, a CA and a broker certificate made by the test, PEM stores),
//! as a managed Kafka has it: the whole flow works; a wrong password, an unknown CA and a
//! plaintext client each fail with an error naming the cause (not a timeout), in `/readyz`
//! and in the webhook's 503; and once fixed and restarted, the alert refused meanwhile (and
//! retried, as Alertmanager does) is stored once. Its SSL listener requires a client
//! certificate (mTLS), with and without which alertpipe is tried too.

use std::process::Command;
use std::time::{Duration, Instant};

use alertpipe::config::{Config, KafkaProtocol, KafkaSecurity, Role, SaslMechanism, Secret};
use alertpipe::startup::Application;

use crate::support::app::{notify, persist};
use crate::support::smtp::Smtp;
use crate::support::tls::Pki;
use crate::support::{
    eventually, fixture, free_port, log_tail, spawn_app_with, unique, JvmTurn, Proc, Stack, TestDb,
};

const USER: &str = "alertpipe";
const PASSWORD: &str = "right-horse-battery-staple";

/// A broker whose clients' listeners are SASL_SSL, and SSL with a client certificate
/// required (mTLS); its inter-broker and controller listeners stay on loopback, plaintext,
/// as inside a managed cluster.
struct SecureKafka {
    _proc: Proc,
    _dir: tempfile::TempDir,
    pki: Pki,
    port: u16,
    mtls_port: u16,
}

impl SecureKafka {
    fn start() -> SecureKafka {
        let pki = Pki::new("alertpipe-test-ca");
        let broker = pki.issue("broker", "localhost");
        let dir = tempfile::tempdir().expect("broker dir");
        let (port, mtls_port) = (free_port(), free_port());
        let (inner, controller) = (free_port(), free_port());
        let extra = dir.path().join("secure.properties");
        std::fs::write(
            &extra,
            format!(
                "listeners=SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls_port},PLAINTEXT://127.0.0.1:{inner},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=SASL_SSL://localhost:{port},SSL://localhost:{mtls_port},PLAINTEXT://127.0.0.1:{inner}\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
                 listener.name.sasl_ssl.ssl.keystore.location={bundle}\n\
                 listener.name.ssl.ssl.keystore.type=PEM\n\
                 listener.name.ssl.ssl.keystore.location={bundle}\n\
                 listener.name.ssl.ssl.truststore.type=PEM\n\
                 listener.name.ssl.ssl.truststore.location={ca}\n\
                 listener.name.ssl.ssl.client.auth=required\n",
                bundle = broker.bundle.display(),
                ca = pki.ca().display(),
            ),
        )
        .expect("broker properties");
        let script = Stack::get().var("STACK_KAFKA_SH").to_owned();
        let log = dir.path().join("kafka.log");
        let _turn = JvmTurn::take();
        let child = Command::new("bash")
            .arg(&script)
            .arg("run")
            .arg(dir.path().join("kafka"))
            .args([
                inner.to_string(),
                controller.to_string(),
                "1".into(),
                String::new(),
            ])
            .arg(&extra)
            .env(
                "KAFKA_ADD_SCRAM",
                format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]"),
            )
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("kafka.err")).expect("log"))
            .spawn()
            .expect("kafka starts");
        let proc = Proc { child };
        let ready = Command::new("bash")
            .arg(&script)
            .args(["ready", &inner.to_string(), "120"])
            .status()
            .expect("kafka.sh ready runs");
        assert!(
            ready.success(),
            "the SASL_SSL broker did not answer within 120 s; its log ends:\n{}\n{}",
            log_tail(&log, 30),
            log_tail(&dir.path().join("kafka.err"), 10)
        );
        SecureKafka {
            _proc: proc,
            _dir: dir,
            pki,
            port,
            mtls_port,
        }
    }

    fn brokers(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// What a client that does it right configures.
    fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            protocol: KafkaProtocol::SaslSsl,
            mechanism: SaslMechanism::ScramSha512,
            username: USER.into(),
            password: Secret::new(PASSWORD),
            ca_file: Some(self.pki.ca()),
            ..KafkaSecurity::default()
        }
    }
}

fn alerts_in(db: &TestDb) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM alerts")
        .get_result::<N>(&mut db.conn())
        .map(|r| r.n)
        .unwrap_or(0)
}

#[actix_web::test]
async fn webhook_history_and_mail_over_sasl_ssl() {
    let kafka = SecureKafka::start();
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let security = kafka.security();
    let app = spawn_app_with(Some(&kafka.brokers()), |c| {
        persist(&db)(c);
        notify(&db, smtp.port, None)(c);
        c.kafka.security = security;
    })
    .await;
    let (status, _, body) = app
        .post_alerts(fixture("alertmanager/firing-critical.json"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(60),
        "the alert's history row",
        || async { (alerts_in(&db) == 1).then_some(()) },
    )
    .await;
    let mails = smtp.wait_mails(1).await;
    assert!(mails[0]["subject"]
        .as_str()
        .unwrap_or("")
        .contains("CRITICAL"));
}

/// An app with the ingest and persist roles on `security`, not waiting for readiness.
async fn start(kafka: &SecureKafka, db: &TestDb, topic: &str, security: KafkaSecurity) -> Running {
    start_on(&kafka.brokers(), db, topic, security).await
}

async fn start_on(brokers: &str, db: &TestDb, topic: &str, security: KafkaSecurity) -> Running {
    let mut cfg = Config::default();
    cfg.server.roles = vec![Role::Ingest];
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.workers = 1;
    cfg.server.shutdown_timeout_s = 2;
    cfg.kafka.brokers = brokers.to_owned();
    cfg.kafka.alerts_topic = topic.to_owned();
    cfg.kafka.partitions = 1;
    cfg.kafka.message_timeout_ms = 5_000;
    cfg.kafka.security = security;
    persist(db)(&mut cfg);
    cfg.persist.group = format!("{topic}-persist");
    cfg.validate().expect("valid config");
    if std::env::var_os("TEST_LOG").is_some() {
        alertpipe::telemetry::init(&cfg.telemetry);
    }
    let app = Application::build(cfg).await.expect("app builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    Running {
        url,
        handle,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(20))
            .finish(),
    }
}

struct Running {
    url: String,
    handle: actix_web::dev::ServerHandle,
    client: awc::Client,
}

impl Running {
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("app answers");
        let body = r.json::<serde_json::Value>().await.unwrap_or_default();
        (r.status().as_u16(), body)
    }

    async fn post_alert(&self) -> (u16, serde_json::Value) {
        let mut r = self
            .client
            .post(format!("{}/api/v1/alerts", self.url))
            .insert_header(("content-type", "application/json"))
            .send_body(fixture("alertmanager/firing-critical.json"))
            .await
            .expect("app answers");
        let body = r.json::<serde_json::Value>().await.unwrap_or_default();
        (r.status().as_u16(), body)
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

#[actix_web::test]
async fn a_wrong_password_an_unknown_ca_and_a_plaintext_client_are_named_and_nothing_is_lost() {
    let kafka = SecureKafka::start();
    let other_ca = Pki::new("someone-elses-ca");
    let db = TestDb::new();
    let topic = unique("alerts");
    let good = kafka.security();
    let cases = [
        (
            "a wrong password",
            KafkaSecurity {
                password: Secret::new("wrong-password"),
                ..good.clone()
            },
            "Authentication failed",
        ),
        (
            "an unknown CA",
            KafkaSecurity {
                ca_file: Some(other_ca.ca()),
                ..good.clone()
            },
            "certificate verify failed",
        ),
        (
            "a plaintext client",
            KafkaSecurity::default(),
            "security.protocol",
        ),
    ];
    for (what, security, cause) in cases {
        let app = start(&kafka, &db, &topic, security).await;
        let deadline = Instant::now() + Duration::from_secs(45);
        let reason = loop {
            let (status, body) = app.get("/readyz").await;
            let reason = body["reason"].as_str().unwrap_or("").to_owned();
            if status == 503 && reason.contains(cause) {
                break reason;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: /readyz never named {cause:?}: {status} {reason}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(
            !reason.contains("wrong-password") && !reason.contains(PASSWORD),
            "{reason}"
        );
        let (status, body) = app.post_alert().await;
        let error = body["error"].as_str().unwrap_or("").to_owned();
        assert_eq!(
            status, 503,
            "{what}: never 200 for an unacknowledged alert: {body}"
        );
        assert!(
            error.contains(cause),
            "{what}: the 503 names the cause: {error}"
        );
        app.stop().await;
    }
    assert_eq!(alerts_in(&db), 0, "nothing got through");
    // Fixed and restarted: the alert Alertmanager retries is stored, once.
    let app = start(&kafka, &db, &topic, good).await;
    eventually(Duration::from_secs(60), "ready once fixed", || async {
        (app.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(app.post_alert().await.0, 200);
    eventually(
        Duration::from_secs(60),
        "the retried alert stored",
        || async { (alerts_in(&db) == 1).then_some(()) },
    )
    .await;
    app.stop().await;
}

/// mTLS: the SSL listener requires a client certificate. One from the broker's CA gets the
/// alert through; none at all is named in `/readyz` and the webhook's 503, not a timeout.
#[actix_web::test]
async fn a_client_certificate_gets_in_where_the_broker_requires_one_and_its_absence_is_named() {
    let kafka = SecureKafka::start();
    let client = kafka.pki.issue("client", "alertpipe");
    let db = TestDb::new();
    let topic = unique("alerts");
    let brokers = format!("localhost:{}", kafka.mtls_port);
    let without = KafkaSecurity {
        protocol: KafkaProtocol::Ssl,
        ca_file: Some(kafka.pki.ca()),
        ..KafkaSecurity::default()
    };
    let app = start_on(&brokers, &db, &topic, without.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, body) = app.get("/readyz").await;
        let reason = body["reason"].as_str().unwrap_or("").to_lowercase();
        if status == 503 && reason.contains("certificate") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never named the missing client certificate: {status} {reason}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(app.post_alert().await.0, 503, "never 200 unacknowledged");
    app.stop().await;

    let with = KafkaSecurity {
        cert_file: Some(client.cert),
        key_file: Some(client.key),
        ..without
    };
    let app = start_on(&brokers, &db, &topic, with).await;
    eventually(
        Duration::from_secs(60),
        "ready with the certificate",
        || async { (app.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(app.post_alert().await.0, 200);
    eventually(Duration::from_secs(60), "the alert stored", || async {
        (alerts_in(&db) == 1).then_some(())
    })
    .await;
    app.stop().await;
}

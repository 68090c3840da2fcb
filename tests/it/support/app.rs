//! The real application booted on port 0 for a test, with its own topics and groups, and
//! a builder with the role presets the tests share (`persist`, `notify`, `archive`), the peers
//! they need (`with_db`, `with_smtp`, `with_teams`), request helpers, and `wait_drained`.

use std::path::Path;
use std::time::{Duration, Instant};

use alertpipe::config::{Config, Role, Secret};
use alertpipe::startup::Application;

use super::smtp::Smtp;
use super::{read_json, unique, Stack, TestDb};

pub struct TestApp {
    pub url: String,
    pub topic: String,
    pub brokers: String,
    pub client: awc::Client,
    /// The config the app runs with (its topics, groups, archive root).
    pub config: Config,
    /// The test database, when built `with_db`/`persist`/`notify`.
    pub db: Option<TestDb>,
    /// The SMTP server, when built `with_smtp`.
    pub smtp: Option<Smtp>,
    /// The archive's root, when built with the archive role.
    pub archive_root: Option<tempfile::TempDir>,
    /// Stops the app (gracefully: its stages commit and leave their groups) when dropped.
    server: actix_web::dev::ServerHandle,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Outside a runtime (a panic unwinding past the test's System) the process ends anyway.
        if tokio::runtime::Handle::try_current().is_ok() {
            let server = self.server.clone();
            actix_web::rt::spawn(async move { server.stop(true).await });
        }
    }
}

/// Boots the real application on port 0 against `brokers` (the stack's when None), with its
/// own topic, and waits until it is ready. `TestApp::builder()` is the same with presets.
pub async fn spawn_app_with(brokers: Option<&str>, modify: impl FnOnce(&mut Config)) -> TestApp {
    boot(brokers, modify, None, None).await
}

async fn boot(
    brokers: Option<&str>,
    modify: impl FnOnce(&mut Config),
    db: Option<TestDb>,
    smtp: Option<Smtp>,
) -> TestApp {
    let brokers = brokers
        .map(str::to_owned)
        .unwrap_or_else(|| Stack::get().var("STACK_KAFKA_BROKERS").to_owned());
    let mut cfg = Config::default();
    cfg.server.roles = vec![Role::Ingest];
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.workers = 1;
    cfg.server.shutdown_timeout_s = 2;
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.alerts_topic = unique("alerts");
    cfg.kafka.partitions = 2;
    cfg.kafka.message_timeout_ms = 5_000;
    modify(&mut cfg);
    cfg.validate().expect("test config is valid");
    if std::env::var_os("TEST_LOG").is_some() {
        alertpipe::telemetry::init(&cfg.telemetry);
    }
    let topic = cfg.kafka.alerts_topic.clone();
    let config = cfg.clone();
    let app = Application::build(cfg).await.expect("app builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let server = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    // Pooled connections are dropped before the server's 5 s keep-alive closes them, so a
    // request after a pause never lands on a connection the server already closed.
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(3)))
        .finish();
    let t = TestApp {
        url,
        topic,
        brokers,
        client,
        config,
        db,
        smtp,
        archive_root: None,
        server,
    };
    t.wait_ready(Duration::from_secs(30)).await;
    t
}

pub async fn spawn_app(modify: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(None, modify).await
}

impl TestApp {
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self
                .client
                .get(format!("{}/readyz", self.url))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string());
            if status == Ok(200) {
                return;
            }
            assert!(Instant::now() < deadline, "app not ready: {status:?}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs a webhook body; returns status, headers of interest and the JSON body.
    pub async fn post_alerts(
        &self,
        body: impl Into<Vec<u8>>,
        auth: Option<&str>,
    ) -> (u16, Option<String>, serde_json::Value) {
        let auth: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        self.post_alerts_with(body, &auth).await
    }

    /// `post_alerts` with extra request headers (credentials, Content-Encoding).
    pub async fn post_alerts_with(
        &self,
        body: impl Into<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, serde_json::Value) {
        let mut req = self
            .client
            .post(format!("{}/api/v1/alerts", self.url))
            .insert_header(("content-type", "application/json"));
        for &(name, value) in headers {
            req = req.insert_header((name, value));
        }
        let mut resp = req
            .send_body(body.into())
            .await
            .expect("request reaches the app");
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.body().limit(1 << 20).await.expect("response body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (resp.status().as_u16(), retry_after, json)
    }

    /// GETs `path_and_query`; returns the status and the body.
    pub async fn get(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        let mut resp = self
            .client
            .get(format!("{}{path_and_query}", self.url))
            .send()
            .await
            .expect("request reaches the app");
        let body = resp.body().limit(16 << 20).await.expect("body");
        (resp.status().as_u16(), body.to_vec())
    }

    /// The app's /metrics text.
    pub async fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.get("/metrics").await.1).into_owned()
    }

    /// Everything on this app's topic, waiting until `expect` messages or `idle` of silence.
    pub async fn topic_messages(&self, expect: usize, idle: Duration) -> Vec<serde_json::Value> {
        read_json(&self.brokers, &self.topic, expect, idle).await
    }

    /// Waits until `stage`'s consumer group has committed everything now on its topic: its
    /// effects (rows, mails, files) are durable. Kafka tells, not the stage's outputs.
    /// Waits until `stage`'s group has committed everything on its topic (for notify: every
    /// notification is in the outbox, not necessarily sent).
    pub async fn wait_committed(&self, stage: Role, within: Duration) {
        let (group, topic) = match stage {
            Role::Persist => (&self.config.persist.group, &self.config.kafka.alerts_topic),
            Role::Notify => (&self.config.notify.group, &self.config.kafka.alerts_topic),
            Role::Archive => (&self.config.archive.group, &self.config.kafka.logs_topic),
            other => panic!("{other:?} has no consumer group"),
        };
        super::wait_group_drained(&self.brokers, group, topic, within).await;
    }

    /// Waits until `stage` has made everything on its topic durable: committed, and for
    /// notify the outbox empty too (every mail sent and recorded).
    pub async fn wait_drained(&self, stage: Role, within: Duration) {
        let deadline = Instant::now() + within;
        self.wait_committed(stage, within).await;
        while stage == Role::Notify && !self.outbox_empty() {
            assert!(
                Instant::now() < deadline,
                "notifications still in the outbox after {within:?}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// No notification of this app's database waits in the outbox.
    fn outbox_empty(&self) -> bool {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = diesel::PgConnection::establish(&self.config.database.url)
            .expect("the notify stage's database");
        diesel::sql_query("SELECT count(*) AS n FROM notification_outbox")
            .get_result::<N>(&mut c)
            .map(|r| r.n == 0)
            .unwrap_or(false)
    }

    /// POSTs a Loki push body; returns the status and the body text.
    pub async fn push_logs(&self, body: Vec<u8>, content_type: &str, gzip: bool) -> (u16, String) {
        let mut req = self
            .client
            .post(format!("{}/loki/api/v1/push", self.url))
            .insert_header(("content-type", content_type));
        if gzip {
            req = req.insert_header(("content-encoding", "gzip"));
        }
        let mut resp = req.send_body(body).await.expect("push reaches the app");
        let text = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
        (resp.status().as_u16(), text)
    }

    /// GETs a JSON endpoint; returns the status and the body.
    pub async fn get_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path_and_query).await;
        let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, v)
    }
}

/// The persist stage on `db` (added to the app's roles).
pub fn persist(db: &TestDb) -> impl FnOnce(&mut Config) {
    let url = db.url.clone();
    move |c: &mut Config| {
        add_role(c, Role::Persist);
        c.database.url = url;
        c.database.pool_size = 4;
        c.persist.group = unique("persist");
        c.persist.linger_ms = 20;
    }
}

/// The notify stage on `db`, mailing to the SMTP server on `smtp_port`, quick retries and
/// digests; the `teams` receiver posts to `teams_url` when given.
pub fn notify(db: &TestDb, smtp_port: u16, teams_url: Option<String>) -> impl FnOnce(&mut Config) {
    let url = db.url.clone();
    move |c: &mut Config| {
        add_role(c, Role::Notify);
        c.database.url = url;
        c.database.pool_size = 4;
        c.notify.group = unique("notify");
        c.notify.dlq_topic = unique("dlq");
        c.notify.smtp.port = smtp_port;
        c.notify.smtp.timeout_s = 3;
        c.notify.backoff_base_ms = 50;
        c.notify.backoff_max_ms = 200;
        c.notify.digest_window_s = 2;
        c.notify.grafana_url = "https://grafana.example.com".into();
        if let Some(u) = teams_url {
            for r in &mut c.notify.receivers {
                if r.name == "teams" {
                    r.webhook_url = Secret::new(u.clone());
                }
            }
        }
    }
}

/// The archive stage writing under `root` on a `logs` topic of its own, files closed after
/// a second.
pub fn archive(root: &Path) -> impl FnOnce(&mut Config) {
    let root = root.display().to_string();
    move |c: &mut Config| {
        add_role(c, Role::Archive);
        c.archive.root = root;
        c.archive.max_age_s = 1;
        c.archive.group = unique("archive");
        c.kafka.logs_topic = unique("logs");
    }
}

fn add_role(c: &mut Config, role: Role) {
    if !c.server.roles.contains(&role) {
        c.server.roles.push(role);
    }
}

type Modify<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// Roles and the peers they need for a test app; `spawn` boots it. The presets are the
/// functions above, so a test that builds its config by hand gets the same settings.
pub struct TestAppBuilder<'a> {
    brokers: Option<String>,
    roles: Vec<Role>,
    db: Option<TestDb>,
    smtp: Option<Smtp>,
    teams: Option<String>,
    archive: Option<tempfile::TempDir>,
    modify: Vec<Modify<'a>>,
}

impl TestApp {
    /// An ingest-only app on the stack's broker until told otherwise.
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            brokers: None,
            roles: vec![Role::Ingest],
            db: None,
            smtp: None,
            teams: None,
            archive: None,
            modify: Vec::new(),
        }
    }

    /// The app's own database (`with_db`, or a persist/notify role).
    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("built with_db()")
    }

    /// The app's own SMTP server (`with_smtp`, or the notify role).
    pub fn smtp(&self) -> &Smtp {
        self.smtp.as_ref().expect("built with_smtp()")
    }
}

impl<'a> TestAppBuilder<'a> {
    /// Adds roles; persist and notify get a database of their own (and notify an SMTP server)
    /// unless given one, archive a temporary root.
    pub fn with_roles(mut self, roles: &[Role]) -> Self {
        for r in roles {
            if !self.roles.contains(r) {
                self.roles.push(*r);
            }
        }
        self
    }

    /// Another broker than the stack's (a private one a test stops and starts).
    pub fn with_brokers(mut self, brokers: &str) -> Self {
        self.brokers = Some(brokers.to_owned());
        self
    }

    /// A database of its own (from the migrated template): `app.db()`.
    pub fn with_db(mut self) -> Self {
        self.db.get_or_insert_with(TestDb::new);
        self
    }

    /// An SMTP server of its own (Debian's aiosmtpd, a Maildir): `app.smtp()`.
    pub fn with_smtp(mut self) -> Self {
        self.smtp.get_or_insert_with(Smtp::start);
        self
    }

    /// The `teams` receiver posts to `url`.
    pub fn with_teams(mut self, url: &str) -> Self {
        self.teams = Some(url.to_owned());
        self
    }

    /// Anything else, applied after the presets.
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + 'a) -> Self {
        self.modify.push(Box::new(f));
        self
    }

    pub async fn spawn(mut self) -> TestApp {
        let mut presets: Vec<Modify<'_>> = Vec::new();
        let roles = self.roles.clone();
        presets.push(Box::new(move |c: &mut Config| c.server.roles = roles));
        if self.roles.contains(&Role::Persist) {
            let db = self.db.get_or_insert_with(TestDb::new);
            presets.push(Box::new(persist(db)));
        }
        if self.roles.contains(&Role::Notify) {
            let db = self.db.get_or_insert_with(TestDb::new);
            let smtp = self.smtp.get_or_insert_with(Smtp::start);
            presets.push(Box::new(notify(db, smtp.port, self.teams.clone())));
        }
        if self.roles.contains(&Role::Archive) {
            let root = self
                .archive
                .get_or_insert_with(|| tempfile::tempdir().expect("archive root"));
            presets.push(Box::new(archive(root.path())));
        }
        let modify = self.modify;
        let all = move |c: &mut Config| {
            for f in presets.into_iter().chain(modify) {
                f(c);
            }
        };
        let mut app = boot(self.brokers.as_deref(), all, self.db, self.smtp).await;
        app.archive_root = self.archive;
        app
    }
}

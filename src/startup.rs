//! Builds the whole application in one place: the ingest role's actors, the consumer stages
//! (`persist`, `notify`, `archive`, one `stage::Start` each, in a loop), then the HTTP server.
//! `main` and the integration tests both call `Application::build`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Supervisor};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::config::{Config, Role};
use crate::db::PgPool;
use crate::http::budget::Budget;
use crate::http::{self, AppState};
use crate::kafka::consumer::poison::{dlq_topic, PoisonStore};
use crate::kafka::consumer::StageHealth;
use crate::kafka::priority::Foreground;
use crate::kafka::producer::{Flush, KafkaProducerActor};
use crate::stage::{Stage, StageDeps};

/// The consumer stages, each started through the one signature (`stage::Start`) when its role
/// runs. The ingest role is not among them: it consumes nothing, and gives the HTTP edge its
/// actors (`ingest::Ingest`).
const CONSUMER_STAGES: [(Role, crate::stage::Start); 3] = [
    (Role::Persist, crate::persist::start),
    (Role::Notify, crate::notify::start),
    (Role::Archive, crate::archive::start),
];

pub struct Application {
    port: u16,
    server: Server,
    stages: Vec<Stage>,
    producers: Vec<Addr<KafkaProducerActor>>,
    draining: Arc<AtomicBool>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Starts the actors of the configured roles on the current actix System and binds the
    /// HTTP listener.
    pub async fn build(cfg: Config) -> anyhow::Result<Application> {
        // The recorder first: stages set gauges as they start.
        let metrics = crate::metrics::handle();
        if cfg.kafka.create_topics {
            spawn_topic_creation(cfg.kafka.clone(), topics_used(&cfg));
        }
        let ingest = cfg
            .server
            .runs(Role::Ingest)
            .then(|| crate::ingest::start(&cfg));
        let db = if cfg.server.runs(Role::Persist) || cfg.server.runs(Role::Notify) {
            Some(open_database(&cfg).await?)
        } else {
            None
        };
        // Every consumer stage keeps its poison messages the same way (kafka::poison), through
        // one producer for all of the process's dead letters (each librdkafka producer costs a
        // polling thread), made only when a consumer role runs.
        let consumes = CONSUMER_STAGES.iter().any(|(r, _)| cfg.server.runs(*r));
        // With the ingest role beside them, the stages yield to its acknowledgements.
        let foreground = (ingest.is_some() && consumes)
            .then(|| Arc::new(Foreground::new(cfg.ingest.ack_target())));
        let mut stages: Vec<Stage> = Vec::new();
        if consumes {
            let (kafka, topic) = (cfg.kafka.clone(), cfg.notify.dlq_topic.clone());
            let producer = Supervisor::start(move |_| KafkaProducerActor::new(kafka, topic, 64));
            let deps = StageDeps {
                db: db.clone(),
                poison: PoisonStore::new(producer, db.clone()),
                foreground: foreground.clone(),
            };
            for (role, start) in CONSUMER_STAGES {
                if cfg.server.runs(role) {
                    let stage = start(&cfg, &deps)
                        .with_context(|| format!("starting the {role:?} stage"))?;
                    stages.push(stage);
                }
            }
        }
        let healths: Vec<StageHealth> = stages.iter().map(|s| s.health.clone()).collect();
        let draining = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(AppState {
            ingress: ingest.as_ref().map(|i| i.ingress.clone()),
            producer: ingest.as_ref().map(|i| i.alerts.clone()),
            logs_producer: ingest.as_ref().map(|i| i.logs.clone()),
            push_budget: Budget::new(cfg.ingest.push_max_inflight_bytes, None),
            db,
            // The archive role also answers LogQL over its files (http::loki).
            archive: if cfg.server.runs(Role::Archive) {
                Some(crate::coldstore::storage::open_retrying(
                    &cfg.archive.root()?,
                )?)
            } else {
                None
            },
            stages: healths,
            auth: cfg.auth.clone(),
            body_limit: cfg.server.body_limit_bytes,
            retry_after_s: cfg.ingest.retry_after_s,
            ingest_timeout: crate::ingest::ingest_timeout(cfg.kafka.message_timeout_ms),
            alert_budget: Budget::new(
                cfg.ingest.max_inflight_alerts,
                Some(crate::metrics::INGEST_INFLIGHT),
            ),
            draining: draining.clone(),
            foreground,
            metrics,
        });
        let producers: Vec<_> = ingest.map(|i| vec![i.alerts, i.logs]).unwrap_or_default();

        let listener = TcpListener::bind(cfg.server.listen)
            .with_context(|| format!("cannot bind server.listen {}", cfg.server.listen))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(http::track))
                .configure(http::routes)
        })
        .workers(cfg.server.workers)
        .shutdown_timeout(cfg.server.shutdown_timeout_s)
        .disable_signals();
        let server = match &cfg.server.tls {
            None => server.listen(listener)?,
            Some(files) => {
                let certs = http::tls::Certificates::load(files)?;
                certs.watch(Duration::from_secs(5));
                server.listen_rustls_0_23(listener, certs.server_config()?)?
            }
        }
        .run();
        tracing::info!(port, tls = cfg.server.tls.is_some(), "alertpipe listening");
        Ok(Application {
            port,
            server,
            stages,
            producers,
            draining,
            shutdown_timeout: Duration::from_secs(cfg.server.shutdown_timeout_s),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (gracefully when `graceful`): what a test or a signal uses.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// SIGTERM / SIGINT: readiness goes false, new webhooks get 503, in-flight requests
    /// finish (up to the shutdown timeout), then queued Kafka messages are flushed.
    pub fn install_signal_handlers(&self) {
        let handle = self.server.handle();
        let draining = self.draining.clone();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; draining");
            draining.store(true, Ordering::Release);
            handle.stop(true).await;
        });
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        for producer in &self.producers {
            let _ = producer
                .send(Flush {
                    timeout: self.shutdown_timeout,
                })
                .await;
        }
        // Each consumer stage finishes the batch in hand (written, recorded, committed) and
        // leaves its group, so its partitions move at once and nothing is done twice.
        for stage in &self.stages {
            stage.health.request_stop();
        }
        let all = futures_util::future::join_all(self.stages.iter().map(|s| s.health.stopped()));
        let deadline = actix_web::rt::time::Instant::now() + self.shutdown_timeout;
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!(
                "consumer stages did not finish their batches within the shutdown timeout"
            );
        }
        // Then what the stages finish after their consumers (notify: the sends in hand).
        for drain in self.stages.into_iter().filter_map(|s| s.drain) {
            if tokio::time::timeout_at(deadline, drain()).await.is_err() {
                tracing::warn!("a stage did not finish its work in hand within the shutdown timeout; what it holds is taken up by the next process");
            }
        }
        tracing::info!("alertpipe stopped");
        Ok(())
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers");
            std::future::pending::<()>().await;
        }
    }
}

/// The pool, after migrations when configured.
async fn open_database(cfg: &Config) -> anyhow::Result<PgPool> {
    let url = cfg.database.connect_url();
    if cfg.database.migrate_on_start {
        let u = url.clone();
        let applied = web::block(move || crate::db::migrate(u.expose()))
            .await?
            .context("running database migrations (database.migrate_on_start)")?;
        if !applied.is_empty() {
            tracing::info!(?applied, "database migrations applied");
        }
    }
    Ok(crate::db::pool(url.expose(), cfg.database.pool_size))
}

/// The topics this process's roles produce to or consume from.
fn topics_used(cfg: &Config) -> Vec<String> {
    let k = &cfg.kafka;
    let mut t = Vec::new();
    let runs = |r| cfg.server.runs(r);
    if runs(Role::Ingest) || runs(Role::Persist) || runs(Role::Notify) {
        t.push(k.alerts_topic.clone());
    }
    if runs(Role::Persist) || runs(Role::Notify) {
        t.push(dlq_topic(&k.alerts_topic));
    }
    if runs(Role::Ingest) || runs(Role::Archive) {
        t.push(k.logs_topic.clone());
    }
    if runs(Role::Archive) {
        t.push(dlq_topic(&k.logs_topic));
    }
    if runs(Role::Notify) {
        t.push(cfg.notify.dlq_topic.clone());
    }
    t.sort();
    t.dedup();
    t
}

/// The broker may start after us or lack the topic: keep trying until the topic exists.
fn spawn_topic_creation(kafka: crate::config::KafkaConfig, topics: Vec<String>) {
    actix_web::rt::spawn(async move {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut delay = Duration::from_millis(200);
        loop {
            match crate::kafka::ensure_topics(&kafka, &names, Duration::from_secs(5)).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, ?topics, "topic creation failed; retrying"),
            }
            actix_web::rt::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

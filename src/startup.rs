//! Builds the whole application in one place: actors under supervision, then the HTTP server.
//! `main` and the integration tests both call `Application::build`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Supervisor, SyncArbiter};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::actors::archive::{ArchiveActor, ArchiveBatch, ArchiveSettings};
use crate::actors::dead_letter::DeadLetterActor;
use crate::actors::dedup::DedupActor;
use crate::actors::ingress::IngressActor;
use crate::actors::kafka_producer::{Flush, KafkaProducerActor};
use crate::actors::mail::MailActor;
use crate::actors::persist::{PersistActor, PersistBatch};
use crate::actors::teams::TeamsActor;
use crate::actors::throttle::{Rate, ThrottleActor};
use crate::config::{Config, Role};
use crate::db::PgPool;
use crate::http::budget::Budget;
use crate::http::{self, AppState};
use crate::kafka::consumer::{self, Commit, ConsumerSettings, StageHealth};
use crate::notify::retry::RetryPolicy;

pub struct Application {
    port: u16,
    server: Server,
    producers: Vec<Addr<KafkaProducerActor>>,
    draining: Arc<AtomicBool>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Starts the actors of the configured roles on the current actix System and binds the
    /// HTTP listener.
    pub async fn build(cfg: Config) -> anyhow::Result<Application> {
        if cfg.kafka.create_topics {
            spawn_topic_creation(cfg.kafka.clone(), topics_used(&cfg));
        }
        let ingest = cfg.server.runs(Role::Ingest).then(|| start_ingest(&cfg));
        let mut stages = Vec::new();
        let db = if cfg.server.runs(Role::Persist) || cfg.server.runs(Role::Notify) {
            Some(open_database(&cfg).await?)
        } else {
            None
        };
        if let (true, Some(pool)) = (cfg.server.runs(Role::Persist), &db) {
            stages.push(start_persist(&cfg, pool.clone()));
        }
        if let (true, Some(pool)) = (cfg.server.runs(Role::Notify), &db) {
            stages.push(start_notify(&cfg, pool.clone())?);
        }
        if cfg.server.runs(Role::Archive) {
            stages.push(start_archive(&cfg)?);
        }
        let draining = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(AppState {
            ingress: ingest.as_ref().map(|i| i.ingress.clone()),
            producer: ingest.as_ref().map(|i| i.alerts.clone()),
            logs_producer: ingest.as_ref().map(|i| i.logs.clone()),
            push_budget: Budget::new(cfg.ingest.push_max_inflight_bytes, None),
            db,
            stages,
            auth: cfg.auth.clone(),
            body_limit: cfg.server.body_limit_bytes,
            retry_after_s: cfg.ingest.retry_after_s,
            ingest_timeout: http::alerts::ingest_timeout(cfg.kafka.message_timeout_ms),
            alert_budget: Budget::new(
                cfg.ingest.max_inflight_alerts,
                Some(crate::metrics::INGEST_INFLIGHT),
            ),
            draining: draining.clone(),
            metrics: crate::metrics::handle(),
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
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, "alertpipe listening");
        Ok(Application {
            port,
            server,
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

struct Ingest {
    ingress: Addr<IngressActor>,
    alerts: Addr<KafkaProducerActor>,
    logs: Addr<KafkaProducerActor>,
}

/// IngressActor -> DedupActor -> KafkaProducerActor (alerts), and the logs topic's producer
/// for the push endpoint; each under a supervisor.
fn start_ingest(cfg: &Config) -> Ingest {
    let topic = cfg.kafka.alerts_topic.clone();
    let (window, max, cap) = (
        Duration::from_secs(cfg.dedup.window_s),
        cfg.dedup.max_entries,
        cfg.ingest.mailbox_capacity,
    );
    let dedup = Supervisor::start(move |_| DedupActor::new(window, max, cap));
    let kafka_cfg = cfg.kafka.clone();
    let producer = Supervisor::start(move |_| KafkaProducerActor::new(kafka_cfg, topic, cap));
    let timeout = http::alerts::ingest_timeout(cfg.kafka.message_timeout_ms);
    let p = producer.clone();
    let ingress = Supervisor::start(move |_| IngressActor::new(dedup, p, cap, timeout));
    let (kafka_cfg, logs_topic) = (cfg.kafka.clone(), cfg.kafka.logs_topic.clone());
    let logs = Supervisor::start(move |_| KafkaProducerActor::new(kafka_cfg, logs_topic, cap));
    Ingest {
        ingress,
        alerts: producer,
        logs,
    }
}

/// ArchiveActor on a thread of its own (Parquet encoding is CPU work), fed by the
/// `alertpipe-archive` consumer, which commits only what is in closed files.
fn start_archive(cfg: &Config) -> anyhow::Result<StageHealth> {
    let storage = crate::archive::storage::operator(&cfg.archive.root, cfg.archive.webhdfs_port)?;
    let settings = ArchiveSettings {
        default_env: cfg.archive.default_env.clone(),
        max_file_bytes: cfg.archive.max_file_bytes,
        max_age: Duration::from_secs(cfg.archive.max_age_s),
    };
    let archive = ArchiveActor::start_in_arbiter(&actix::Arbiter::new().handle(), move |_| {
        ArchiveActor::new(settings, storage)
    });
    let health = StageHealth::new("archive");
    let consumer = ConsumerSettings {
        // Idle ticks let age-based flushes happen when no logs arrive.
        tick: Some(Duration::from_millis(500).min(Duration::from_secs(cfg.archive.max_age_s))),
        ..ConsumerSettings::new(
            &cfg.kafka,
            &cfg.archive.group,
            &cfg.kafka.logs_topic,
            cfg.archive.batch_size,
            Duration::from_millis(50),
        )
    };
    consumer::spawn(consumer, health.clone(), move |batch| {
        let archive = archive.clone();
        async move {
            loop {
                let progress = archive
                    .send(ArchiveBatch {
                        messages: batch.clone(),
                    })
                    .await
                    .map_err(|e| format!("archive actor: {e}"))??;
                if !progress.more {
                    return Ok(progress.commit);
                }
            }
        }
    });
    Ok(health)
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

/// PersistActor on a SyncArbiter, and the `alertpipe-persist` consumer feeding it one awaited
/// batch at a time.
fn start_persist(cfg: &Config, pool: PgPool) -> StageHealth {
    let p = pool.clone();
    let persist = SyncArbiter::start(cfg.persist.workers, move || PersistActor::new(p.clone()));
    let health = StageHealth::new("persist");
    let settings = ConsumerSettings::new(
        &cfg.kafka,
        &cfg.persist.group,
        &cfg.kafka.alerts_topic,
        cfg.persist.batch_size,
        Duration::from_millis(cfg.persist.linger_ms),
    );
    consumer::spawn(settings, health.clone(), move |batch| {
        let persist = persist.clone();
        async move {
            match persist.send(PersistBatch::decode(&batch)).await {
                Ok(Ok(_)) => Ok(Commit::Batch),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("persist actor: {e}")),
            }
        }
    });
    health
}

/// DeadLetterActor, MailActor, TeamsActor, ThrottleActor, and the `alertpipe-notify` consumer:
/// route each alert, skip notifications already done, send through the throttle, record.
fn start_notify(cfg: &Config, pool: PgPool) -> anyhow::Result<StageHealth> {
    let n = cfg.notify.clone();
    let (kafka_cfg, dlq_topic) = (cfg.kafka.clone(), n.dlq_topic.clone());
    let dlq = Supervisor::start(move |_| KafkaProducerActor::new(kafka_cfg, dlq_topic, 64));
    let dead = DeadLetterActor::new(pool.clone(), dlq).start();
    let policy = RetryPolicy {
        max_attempts: n.max_attempts,
        base: Duration::from_millis(n.backoff_base_ms),
        max: Duration::from_millis(n.backoff_max_ms),
    };
    let from = n
        .smtp
        .from
        .parse()
        .map_err(|e| anyhow::anyhow!("notify.smtp.from {:?}: {e}", n.smtp.from))?;
    let transport = crate::notify::mail::transport(&n.smtp).context("notify.smtp")?;
    let mail = MailActor::new(transport, from, n.grafana_url.clone(), policy, dead.clone()).start();
    let teams = TeamsActor::new(n.grafana_url.clone(), policy, dead, n.teams_max_per_s).start();
    let throttle = ThrottleActor::new(
        n.receivers.clone(),
        mail.recipient(),
        teams.recipient(),
        Rate {
            burst: n.receiver_burst,
            per_minute: n.receiver_per_minute,
        },
        Rate {
            burst: n.rate_burst,
            per_minute: n.rate_per_minute,
        },
        Duration::from_secs(n.digest_window_s),
    )
    .start();
    let health = StageHealth::new("notify");
    let settings = ConsumerSettings::new(
        &cfg.kafka,
        &n.group,
        &cfg.kafka.alerts_topic,
        n.batch_size,
        Duration::from_millis(n.linger_ms),
    );
    let routes = Arc::new(n.routes);
    consumer::spawn(settings, health.clone(), move |batch| {
        crate::notify::notify_batch(batch, routes.clone(), pool.clone(), throttle.clone())
    });
    Ok(health)
}

/// The topics this process's roles produce to or consume from.
fn topics_used(cfg: &Config) -> Vec<String> {
    let k = &cfg.kafka;
    let mut t = Vec::new();
    let runs = |r| cfg.server.runs(r);
    if runs(Role::Ingest) || runs(Role::Persist) || runs(Role::Notify) {
        t.push(k.alerts_topic.clone());
    }
    if runs(Role::Ingest) || runs(Role::Archive) {
        t.push(k.logs_topic.clone());
    }
    if runs(Role::Notify) {
        t.push(cfg.notify.dlq_topic.clone());
    }
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

//! Builds the whole application in one place: actors under supervision, then the HTTP server.
//! `main` and the integration tests both call `Application::build`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Supervisor};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::actors::dedup::DedupActor;
use crate::actors::ingress::IngressActor;
use crate::actors::kafka_producer::{Flush, KafkaProducerActor};
use crate::config::Config;
use crate::http::{self, AppState};

pub struct Application {
    port: u16,
    server: Server,
    producer: Addr<KafkaProducerActor>,
    draining: Arc<AtomicBool>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Starts the actors on the current actix System and binds the HTTP listener.
    pub async fn build(cfg: Config) -> anyhow::Result<Application> {
        let ingest = &cfg.ingest;
        let topic = cfg.kafka.alerts_topic.clone();

        if cfg.kafka.create_topics {
            spawn_topic_creation(cfg.kafka.clone(), vec![topic.clone()]);
        }

        let (window, max, cap) = (
            Duration::from_secs(cfg.dedup.window_s),
            cfg.dedup.max_entries,
            ingest.mailbox_capacity,
        );
        let dedup = Supervisor::start(move |_| DedupActor::new(window, max, cap));
        let kafka_cfg = cfg.kafka.clone();
        let producer = Supervisor::start(move |_| KafkaProducerActor::new(kafka_cfg, topic, cap));
        let ingest_timeout = http::alerts::ingest_timeout(cfg.kafka.message_timeout_ms);
        let (d, p) = (dedup.clone(), producer.clone());
        let ingress = Supervisor::start(move |_| IngressActor::new(d, p, cap, ingest_timeout));

        let draining = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(AppState {
            ingress,
            producer: producer.clone(),
            auth: cfg.auth.clone(),
            body_limit: cfg.server.body_limit_bytes,
            max_inflight: ingest.max_inflight_alerts,
            retry_after_s: ingest.retry_after_s,
            ingest_timeout,
            inflight: Arc::new(AtomicUsize::new(0)),
            draining: draining.clone(),
            metrics: crate::metrics::handle(),
        });

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
            producer,
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
        let _ = self
            .producer
            .send(Flush {
                timeout: self.shutdown_timeout,
            })
            .await;
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

//! HTTP surface (actix-web): routes, shared state, request metrics.

pub mod alerts;
pub mod auth;
pub mod body;
pub mod budget;
pub mod error;
pub mod health;
pub mod history;
pub mod loki;
pub mod otlp;
pub mod push;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::AuthConfig;
use crate::db::PgPool;
use crate::ingest::ingress::IngressActor;
use crate::kafka::consumer::StageHealth;
use crate::kafka::producer::KafkaProducerActor;
use crate::metrics as m;

/// What every handler can reach. Cheap to clone (addresses and Arcs).
pub struct AppState {
    /// Present when the process runs the ingest role.
    pub ingress: Option<Addr<IngressActor>>,
    pub producer: Option<Addr<KafkaProducerActor>>,
    /// Producer of the `logs` topic (ingest role).
    pub logs_producer: Option<Addr<KafkaProducerActor>>,
    /// Raw log bytes pushed and not yet acknowledged by Kafka.
    pub push_budget: budget::Budget,
    /// Present when the process runs the persist role.
    pub db: Option<PgPool>,
    /// Present when the process runs the archive role: the store LogQL queries read.
    pub archive: Option<opendal::Operator>,
    /// Consumer stages whose failures make the process not ready.
    pub stages: Vec<StageHealth>,
    pub auth: AuthConfig,
    pub body_limit: usize,

    pub retry_after_s: u64,
    pub ingest_timeout: Duration,
    /// Alerts accepted and not yet acknowledged by Kafka.
    pub alert_budget: budget::Budget,
    pub draining: Arc<AtomicBool>,
    /// Told how long each webhook acknowledgement took, when consumer stages yield to them.
    pub foreground: Option<Arc<crate::kafka::priority::Foreground>>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let (get, post) = (web::get, web::post);
    cfg.service(resource("/api/v1/alerts", "POST").route(post().to(alerts::post_alerts)))
        // Probes also answer HEAD: some load balancers' health checks send it.
        .service(
            resource("/healthz", "GET, HEAD")
                .route(get().to(health::healthz))
                .route(web::head().to(health::healthz)),
        )
        .service(
            resource("/readyz", "GET, HEAD")
                .route(get().to(health::readyz))
                .route(web::head().to(health::readyz)),
        )
        .service(resource("/metrics", "GET").route(get().to(health::metrics)))
        .service(resource("/loki/api/v1/push", "POST").route(post().to(push::push)))
        .service(resource("/otlp/v1/logs", "POST").route(post().to(otlp::logs)))
        .service(resource("/api/v1/incidents", "GET").route(get().to(history::incidents)))
        .service(resource("/api/v1/sla", "GET").route(get().to(history::sla)))
        // Loki's query API over the archive (Grafana's "Loki cold archive", logcli).
        .service(get_and_post("/loki/api/v1/query_range", loki::query_range))
        .service(get_and_post("/loki/api/v1/query", loki::query_instant))
        .service(resource("/loki/api/v1/labels", "GET").route(get().to(loki::labels)))
        .service(resource("/loki/api/v1/label", "GET").route(get().to(loki::labels)))
        .service(
            resource("/loki/api/v1/label/{name}/values", "GET").route(get().to(loki::label_values)),
        )
        .service(get_and_post("/loki/api/v1/series", loki::series))
        .service(resource("/loki/api/v1/index/stats", "GET").route(get().to(loki::index_stats)))
        .service(resource("/loki/api/v1/status/buildinfo", "GET").route(get().to(loki::buildinfo)))
        .default_service(web::to(|| async {
            HttpResponse::NotFound().json(serde_json::json!({"error": "no such endpoint"}))
        }));
}

/// A path answering GET and POST with the same handler (Loki's query endpoints take the
/// query in the URL or in a form body).
fn get_and_post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    resource(path, "GET, POST")
        .route(web::get().to(handler.clone()))
        .route(web::post().to(handler))
}

/// One endpoint's path: a method it does not take gets 405, naming those it does (`allow`).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(serde_json::json!({"error": format!("method not allowed here: use {allow}")}))
    }))
}

/// Counts requests and times them, labelled by route pattern (not raw path) and status.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let peer = req.peer_addr();
    let res = next.call(req).await?;
    let code = res.status().as_u16();
    let elapsed = started.elapsed();
    // The access log, at debug level (off by default: a storm would flood it).
    tracing::debug!(%method, %route, status = code, ms = elapsed.as_secs_f64() * 1e3,
        peer = %peer.map(|p| p.to_string()).unwrap_or_default(), "request");
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => code.to_string())
        .increment(1);
    metrics::histogram!(m::HTTP_SECONDS, "route" => route).record(elapsed.as_secs_f64());
    Ok(res)
}

//! Liveness, readiness and the Prometheus scrape endpoint.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::kafka::producer::Ping;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready to take traffic: not draining, the broker answers a metadata request (ingest), the
/// database answers (persist), and every consumer stage is working: its sink does not fail,
/// it holds partitions (after `kafka.unassigned_grace_s`), and it has no lag it has stopped
/// working through (`kafka.stall_timeout_s`).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.is_draining() {
        return not_ready("draining");
    }
    if let Some(producer) = &state.producer {
        let ping = producer.send(Ping {
            timeout: Duration::from_secs(2),
        });
        match ping.timeout(Duration::from_secs(3)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return not_ready(&e.to_string()),
            Err(e) => return not_ready(&format!("kafka probe: {e}")),
        }
    }
    if let Some(pool) = state.db.clone() {
        match web::block(move || crate::db::ping(&pool)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return not_ready(&e.to_string()),
            Err(e) => return not_ready(&format!("database probe: {e}")),
        }
    }
    for stage in &state.stages {
        if let Some(e) = stage.problem() {
            return not_ready(&format!("{}: {e}", stage.name()));
        }
    }
    HttpResponse::Ok().json(json!({"status": "ready"}))
}

fn not_ready(reason: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
        .json(json!({"status": "not ready", "reason": reason}))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

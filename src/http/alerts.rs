//! `POST /api/v1/alerts`: the Alertmanager webhook (payload version 4).
//!
//! 200 only after Kafka acknowledged every new alert; 503 + Retry-After when it cannot (the
//! broker is down or the pipeline is full: Alertmanager retries only 5xx); 400 naming the bad
//! field; 401; 413 (for the body as sent and as inflated); 415 for a Content-Encoding other than
//! identity, gzip or deflate.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, Refused};
use super::{auth, body, AppState};
use crate::domain::parse_webhook;
use crate::ingest::ingress::{IngestAlerts, IngestError};
use crate::metrics as m;

pub async fn post_alerts(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check(&req, &state.auth, crate::config::EndpointGroup::Webhook)?;
    let started = std::time::Instant::now();
    // Alertmanager retries only 5xx: a full pipeline answers 503 here.
    let refused = |r: Refused| r.answer(StatusCode::SERVICE_UNAVAILABLE, state.retry_after_s);
    if state.is_draining() {
        return Err(refused(Refused::Draining));
    }
    let coding = match body::Coding::of(&req) {
        Ok(body::Coding::Snappy) => Err("Content-Encoding \"snappy\" not supported".to_owned()),
        other => other,
    }
    .map_err(unsupported_coding)?;
    let raw = body::read_limited(&req, payload, state.body_limit).await?;
    let limit = state.body_limit;
    let body = if coding == body::Coding::Identity {
        raw.freeze()
    } else {
        // Inflating is CPU work: off the HTTP worker's event loop.
        web::block(move || body::inflate(&raw, coding, limit).map(|b| b.into_owned()))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
            .into()
    };
    let alerts = parse_webhook(&body).map_err(|e| {
        metrics::counter!(m::REJECTED, "reason" => "invalid").increment(1);
        // A gzip body sent without its Content-Encoding reads as bad UTF-8: say what it is.
        if coding == body::Coding::Identity && body.starts_with(&[0x1f, 0x8b]) {
            return ApiError::bad_request(
                "body is gzip-compressed but Content-Encoding does not say so",
                None,
            );
        }
        ApiError::bad_request(e.message, e.field)
    })?;
    let n = alerts.len();
    let _slot = state.alert_budget.take(n).ok_or_else(|| {
        metrics::counter!(m::REJECTED, "reason" => "full").increment(n as u64);
        refused(Refused::Full("alert pipeline"))
    })?;
    // Await `send`: a full mailbox makes this wait (backpressure), bounded by the timeout.
    let ingress = state
        .ingress
        .as_ref()
        .ok_or_else(|| ApiError::not_here("ingest"))?;
    let sent = ingress
        .send(IngestAlerts { alerts })
        .timeout(state.ingest_timeout)
        .await;
    // Failures count too: a timed-out ack is the slowest of all.
    if let Some(fg) = &state.foreground {
        fg.observe(started.elapsed());
    }
    let report = match sent {
        Ok(Ok(report)) => report,
        Ok(Err(IngestError::Unavailable(reason))) => {
            tracing::warn!(%reason, alerts = n, "webhook refused with 503");
            return Err(refused(Refused::Unavailable(reason)));
        }
        Err(e) => return Err(refused(Refused::Mailbox("alert pipeline", e))),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "received": report.received,
        "duplicates": report.duplicates,
        "produced": report.produced,
    })))
}

/// 415 for a Content-Encoding the webhook does not read (`message` names it), naming those it
/// does.
fn unsupported_coding(message: String) -> ApiError {
    metrics::counter!(m::REJECTED, "reason" => "invalid").increment(1);
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("{message}: send identity, gzip or deflate"),
    )
}

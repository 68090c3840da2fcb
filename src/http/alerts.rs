//! `POST /api/v1/alerts`: the Alertmanager webhook (payload version 4).
//!
//! 200 only after Kafka acknowledged every new alert; 503 + Retry-After when it cannot (the
//! broker is down or the pipeline is full: Alertmanager retries only 5xx); 400 naming the bad
//! field; 401; 413 (for the body as sent and as inflated); 415 for a Content-Encoding other than
//! identity, gzip or deflate.

use actix::MailboxError;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
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
    let retry_after = state.retry_after_s;
    if state.is_draining() {
        return Err(ApiError::unavailable("shutting down", retry_after));
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
            .map_err(|e| {
                ApiError::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                )
            })??
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
        ApiError::unavailable("alert pipeline is full; retry later", retry_after)
    })?;
    // Await `send`: a full mailbox makes this wait (backpressure), bounded by the timeout.
    let ingress = state.ingress.as_ref().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "this process does not run the ingest role",
        )
    })?;
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
            return Err(ApiError::unavailable(reason, retry_after));
        }
        Err(MailboxError::Timeout) => {
            return Err(ApiError::unavailable(
                "alert pipeline timed out",
                retry_after,
            ))
        }
        Err(MailboxError::Closed) => {
            return Err(ApiError::unavailable(
                "alert pipeline restarting",
                retry_after,
            ))
        }
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
        actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("{message}: send identity, gzip or deflate"),
    )
}

//! Every endpoint's error, [`ApiError`] (status, message, field, Retry-After), and the one
//! mapping of what stops an ingest request ([`Refused`]) to it. The webhook and the query API
//! answer it as JSON (`{"error": "...", "field": "..."}`); Loki's push API as Loki's text
//! (`text_response`); OTLP as its `Status` (`http::otlp`).

use actix::MailboxError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    pub fn bad_request(message: impl Into<String>, field: Option<String>) -> Self {
        ApiError {
            field,
            ..ApiError::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 503 with Retry-After: the sender (Alertmanager, Promtail) retries 5xx.
    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 404: the endpoint belongs to a role this process does not run.
    pub fn not_here(role: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("this process does not run the {role} role"),
        )
    }

    /// Loki's answer: the message as text/plain, with Retry-After when it has one.
    pub fn text_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.content_type("text/plain; charset=utf-8");
        if let Some(s) = self.retry_after_s {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        r.body(format!("{}\n", self.message))
    }
}

/// What stopped an ingest request (webhook, Loki push, OTLP) before Kafka acknowledged it.
/// Every one is worth retrying, so every answer carries `Retry-After: ingest.retry_after_s`.
#[derive(Debug)]
pub enum Refused {
    /// The process is draining (SIGTERM).
    Draining,
    /// The in-flight budget is spent (`what`: the alert or log pipeline).
    Full(&'static str),
    /// Kafka did not acknowledge (down, or no longer enough in-sync replicas).
    Unavailable(String),
    /// The producer actor did not answer in time, or is restarting.
    Mailbox(&'static str, MailboxError),
}

impl Refused {
    /// The answer: 503, except a full pipeline, which answers `full` (Alertmanager retries only
    /// 5xx, so the webhook says 503; Promtail and OTLP exporters back off on 429).
    pub fn answer(self, full: StatusCode, retry_after_s: u64) -> ApiError {
        let (status, message) = match self {
            Refused::Draining => (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned()),
            Refused::Full(what) => (full, format!("{what} is full; retry later")),
            Refused::Unavailable(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
            Refused::Mailbox(what, MailboxError::Timeout) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("{what} timed out"))
            }
            Refused::Mailbox(what, MailboxError::Closed) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what} restarting"),
            ),
        };
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(status, message)
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_s {
            resp.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer, Basic realm=\"alertpipe\"",
            ));
        }
        resp.json(Body {
            error: &self.message,
            field: self.field.as_deref(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_says_when_to_retry_and_only_a_full_pipeline_varies_its_status() {
        let refusals = || {
            vec![
                Refused::Draining,
                Refused::Full("log pipeline"),
                Refused::Unavailable("broker down".into()),
                Refused::Mailbox("log pipeline", MailboxError::Timeout),
                Refused::Mailbox("log pipeline", MailboxError::Closed),
            ]
        };
        for full in [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            for r in refusals() {
                let is_full = matches!(r, Refused::Full(_));
                let e = r.answer(full, 7);
                assert_eq!(e.retry_after_s, Some(7), "{e:?}");
                let want = if is_full {
                    full
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                assert_eq!(e.status, want, "{e:?}");
                let text = e.text_response();
                assert_eq!(text.headers().get(header::RETRY_AFTER).unwrap(), "7");
            }
        }
        assert_eq!(
            Refused::Full("alert pipeline")
                .answer(StatusCode::SERVICE_UNAVAILABLE, 2)
                .message,
            "alert pipeline is full; retry later"
        );
    }
}

//! `POST /otlp/v1/logs`: OTLP/HTTP logs (the path Loki 3 serves them at), from the
//! OpenTelemetry Collector's `otlphttp` exporter or Grafana Alloy. Protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), optionally gzip or deflate; behind
//! the push group's credentials; mapped by `archive::otlp` onto the same streams, `logs` topic
//! and archive stage as Loki pushes. 200 with an `ExportLogsServiceResponse` only after Kafka
//! acknowledged every record (with OTLP's partial success when some records were refused
//! alone); 400 for a malformed body (the exporter drops it), 413 oversized, 415 an unknown
//! encoding or media type, 429 full and 503 Kafka down, both with `Retry-After` (the exporter
//! retries them). Error bodies are a `google.rpc.Status` in the request's encoding.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use prost::Message;

use super::error::{ApiError, Refused};
use super::{auth, body, push, AppState};
use crate::archive::otlp::{self, Decoded};
use crate::archive::otlp_proto::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use crate::metrics as m;

/// `google.rpc.Status`, the body of OTLP/HTTP error answers.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// An error as OTLP answers it: a `Status` (protobuf or JSON, as the request), with the gRPC
/// code for its HTTP status and the Retry-After it carries.
fn answer(format: Format, e: &ApiError) -> HttpResponse {
    // gRPC codes: INVALID_ARGUMENT 3, RESOURCE_EXHAUSTED 8, UNAVAILABLE 14, UNAUTHENTICATED 16.
    let code = match e.status.as_u16() {
        401 => 16,
        429 => 8,
        503 => 14,
        404 => 12,
        _ => 3,
    };
    let message = e.message.clone();
    let mut r = HttpResponse::build(e.status);
    r.content_type(format.content_type());
    if let Some(s) = e.retry_after_s {
        r.insert_header((header::RETRY_AFTER, s.to_string()));
    }
    match format {
        Format::Protobuf => r.body(Status { code, message }.encode_to_vec()),
        Format::Json => r.body(serde_json::json!({"code": code, "message": message}).to_string()),
    }
}

fn success(format: Format, d: &Decoded) -> HttpResponse {
    let partial = (d.rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: d.rejected as i64,
        error_message: d.reject_reason.clone().unwrap_or_default(),
    });
    let body = match format {
        Format::Protobuf => ExportLogsServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Format::Json => match partial {
            Some(p) => serde_json::json!({"partialSuccess": {
                "rejectedLogRecords": p.rejected_log_records.to_string(),
                "errorMessage": p.error_message}})
            .to_string()
            .into_bytes(),
            None => b"{}".to_vec(),
        },
    };
    HttpResponse::Ok()
        .content_type(format.content_type())
        .body(body)
}

pub async fn logs(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        other => {
            metrics::counter!(m::LOG_PUSHES_REJECTED, "reason" => "invalid").increment(1);
            let e = ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {other:?}: OTLP/HTTP logs are application/x-protobuf or application/json"
                ),
            );
            return answer(Format::Json, &e);
        }
    };
    match take(&req, payload, &state, format).await {
        Ok(decoded) => success(format, &decoded),
        Err(e) => answer(format, &e),
    }
}

async fn take(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    format: Format,
) -> Result<Decoded, ApiError> {
    let producer = state
        .logs_producer
        .clone()
        .ok_or_else(|| ApiError::not_here("ingest"))?;
    auth::check(req, &state.auth, crate::config::EndpointGroup::Push)
        .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong credentials"))?;
    if state.is_draining() {
        return Err(Refused::Draining.answer(StatusCode::TOO_MANY_REQUESTS, state.retry_after_s));
    }
    let coding = body::Coding::of(req).map_err(|message| {
        metrics::counter!(m::LOG_PUSHES_REJECTED, "reason" => "invalid").increment(1);
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    })?;
    let body = body::read_limited(req, payload, state.body_limit).await?;
    // Decoding is CPU work: off the HTTP worker's event loop.
    let limit = state.body_limit * 8;
    let decoded = web::block(move || {
        let body = body::inflate(&body, coding, limit)?;
        let d = match format {
            Format::Protobuf => otlp::decode_protobuf(&body),
            Format::Json => otlp::decode_json(&body),
        };
        d.map_err(|e| ApiError::bad_request(e.message, None))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .inspect_err(|_| {
        metrics::counter!(m::LOG_PUSHES_REJECTED, "reason" => "invalid").increment(1);
    })?;
    if decoded.rejected > 0 {
        metrics::counter!(m::LOG_RECORDS_REJECTED).increment(decoded.rejected as u64);
    }
    if !decoded.streams.is_empty() {
        push::produce(state, &producer, &decoded.streams).await?;
    }
    Ok(decoded)
}

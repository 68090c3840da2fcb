//! `POST /loki/api/v1/push`: Loki's push API, for Promtail / Alloy listing alertpipe as a
//! second client. Protobuf (snappy block) or JSON, either of them optionally gzip or deflate.
//! 204 only after Kafka acknowledged every entry (topic `logs`, key = the stream's labels);
//! 400/422 as Loki answers them (text/plain); 413; 429 when the pipeline is full and 503 when
//! Kafka is unreachable (Promtail retries 429, 5xx and connection errors); 401 without the
//! configured credentials (Promtail's `bearer_token_file`).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, Refused};
use super::{auth, body, AppState};
use crate::archive::push::{decode_json, decode_protobuf, encode_stream, PushError, Stream};
use crate::kafka::producer::{Produce, Record};
use crate::metrics as m;

/// Largest Kafka record the push path writes (a long stream is split).
const MAX_RECORD_BYTES: usize = 512 * 1024;

/// The Kafka records for a push: one or more per stream, each under MAX_RECORD_BYTES of lines.
pub fn records(streams: &[Stream]) -> Vec<Record> {
    let mut out = Vec::new();
    for s in streams {
        let key = s.selector();
        let mut start = 0;
        while start < s.entries.len() {
            let mut end = start;
            let mut size = 0;
            while end < s.entries.len()
                && (end == start || size + s.entries[end].line.len() <= MAX_RECORD_BYTES)
            {
                size += s.entries[end].line.len();
                end += 1;
            }
            out.push(Record {
                key: key.clone(),
                payload: encode_stream(s, &s.entries[start..end]),
                headers: Vec::new(),
            });
            start = end;
        }
    }
    out
}

pub async fn push(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    match take(&req, payload, &state).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => e.text_response(),
    }
}

async fn take(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<(), ApiError> {
    let producer = state
        .logs_producer
        .clone()
        .ok_or_else(|| ApiError::not_here("ingest"))?;
    auth::check(req, &state.auth, crate::config::EndpointGroup::Push)
        .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong credentials"))?;
    if state.is_draining() {
        return Err(Refused::Draining.answer(StatusCode::TOO_MANY_REQUESTS, state.retry_after_s));
    }
    let body = body::read_limited(req, payload, state.body_limit).await?;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    // As Loki: gzip and deflate around either format, `snappy` said of a protobuf body (which
    // is snappy-framed anyway), anything else a 400 in Loki's words.
    let coding = body::Coding::of(req).map_err(|message| {
        metrics::counter!(m::LOG_PUSHES_REJECTED, "reason" => "invalid").increment(1);
        ApiError::bad_request(message, None)
    })?;
    // Decoding is CPU work: off the HTTP worker's event loop.
    let limit = state.body_limit * 8;
    let decoded = web::block(move || {
        let body = body::inflate(&body, coding, limit).map_err(|e| PushError {
            status: e.status.as_u16(),
            message: e.message,
        })?;
        if is_json {
            decode_json(&body)
        } else {
            decode_protobuf(&body)
        }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let streams = decoded.map_err(|e| {
        metrics::counter!(m::LOG_PUSHES_REJECTED, "reason" => "invalid").increment(1);
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, e.message)
    })?;
    produce(state, &producer, &streams).await
}

/// Decoded streams onto the `logs` topic within the push budget: Ok once Kafka acknowledged
/// every record; else what to answer (429 full, 503 Kafka down or slow, with Retry-After).
/// Shared by Loki's push API and OTLP.
pub(super) async fn produce(
    state: &AppState,
    producer: &actix::Addr<crate::kafka::producer::KafkaProducerActor>,
    streams: &[Stream],
) -> Result<(), ApiError> {
    let refused = |r: Refused| r.answer(StatusCode::TOO_MANY_REQUESTS, state.retry_after_s);
    let raw: usize = streams.iter().map(Stream::raw_bytes).sum();
    let lines: usize = streams.iter().map(|s| s.entries.len()).sum();
    // The in-flight budget, in raw bytes of lines.
    let Some(_slot) = state.push_budget.take(raw) else {
        metrics::counter!(m::LOG_PUSHES_REJECTED, "reason" => "full").increment(1);
        return Err(refused(Refused::Full("log pipeline")));
    };
    let sent = producer
        .send(Produce {
            records: records(streams),
            topic: None,
        })
        .timeout(state.ingest_timeout)
        .await;
    match sent {
        Ok(Ok(())) => {
            metrics::counter!(m::LOG_PUSHES).increment(1);
            metrics::counter!(m::LOG_LINES_RECEIVED).increment(lines as u64);
            Ok(())
        }
        Ok(Err(e)) => Err(refused(Refused::Unavailable(e.to_string()))),
        Err(e) => Err(refused(Refused::Mailbox("log pipeline", e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::push::tests::fixture;

    #[test]
    fn a_gzip_json_push_decodes_as_its_plain_twin() {
        let plain = decode_json(&fixture("json-push-gzip.json")).unwrap();
        let gz = fixture("json-push-gzip.json.gz");
        let inflated = body::inflate(&gz, body::Coding::Gzip, 1 << 20).unwrap();
        assert_eq!(decode_json(&inflated).unwrap(), plain);
    }
}

//! OTLP/HTTP logs (`POST /otlp/v1/logs`, what the OpenTelemetry Collector's `otlphttp`
//! exporter and Grafana Alloy's `otelcol.exporter.otlphttp` send): protobuf or JSON
//! `ExportLogsServiceRequest`, mapped onto the archive's streams by the label contract
//! (ARCHITECTURE.md, "The whole system and its labels"):
//!
//! | OTLP | archive |
//! | --- | --- |
//! | resource `service.name` | `service`, `service_name`, `job` = `<service>-service` |
//! | resource `deployment.environment.name`, `deployment.environment`, `k8s.cluster.name`, `cluster` | `cluster` (first found) |
//! | resource `host.name` | `hostname` |
//! | record `log.file.path`, else `log.file.name` | `filename` |
//! | record severity text, else severity number, else attribute `level` | `level` (`debug`/`info`/`warn`/`error`/`fatal`) |
//! | record trace and span ids (else attributes `trace_id`, `span_id`) | structured metadata `trace_id`, `span_id` (hex) |
//! | other scalar attributes | structured metadata, dots as underscores |
//! | body | the line (a string as is; other values as JSON) |
//!
//! A record that cannot be archived (a line over `MAX_LINE_BYTES`) is refused alone: the
//! answer is OTLP's partial success naming how many and why.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value;

use super::otlp_proto::{any_value, AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord};
use super::otlp_proto::{ArrayValue, KeyValueList, Resource, ResourceLogs, ScopeLogs};
use super::push::{Entry, PushError, Stream};

/// Longest line archived (Loki's default `max_line_size`); longer records are refused alone.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// What a request became: streams to archive, and the records refused alone.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub streams: Vec<Stream>,
    pub rejected: usize,
    /// Why the first refused record was refused (OTLP's `error_message`).
    pub reject_reason: Option<String>,
}

fn bad(message: impl Into<String>) -> PushError {
    PushError {
        status: 400,
        message: message.into(),
    }
}

/// A protobuf `ExportLogsServiceRequest` (Content-Encoding already undone).
pub fn decode_protobuf(body: &[u8]) -> Result<Decoded, PushError> {
    let req = ExportLogsServiceRequest::decode(body)
        .map_err(|e| bad(format!("malformed protobuf ExportLogsServiceRequest: {e}")))?;
    Ok(map_request(req, now_ns()))
}

/// An OTLP/JSON `ExportLogsServiceRequest` (lowerCamelCase or snake_case field names, ids in
/// hex, 64-bit integers as strings or numbers, as the OTLP specification allows).
pub fn decode_json(body: &[u8]) -> Result<Decoded, PushError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed OTLP/JSON body: {e}")))?;
    let req = json::request(&v)?;
    Ok(map_request(req, now_ns()))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The archive's streams for a request: records grouped by their labels, in arrival order.
pub fn map_request(req: ExportLogsServiceRequest, now_ns: i64) -> Decoded {
    let mut out = Decoded::default();
    let mut streams: BTreeMap<BTreeMap<String, String>, Vec<Entry>> = BTreeMap::new();
    for rl in req.resource_logs {
        let (base, resource_md) = resource_labels(rl.resource.as_ref());
        // A resource's records differ only by file and level: group by those (a handful per
        // request) and build each stream's labels once, not per record.
        let mut groups: Vec<(Option<String>, Option<&'static str>, Vec<Entry>)> = Vec::new();
        for mut record in rl.scope_logs.into_iter().flat_map(|s| s.log_records) {
            let file = attr(&record.attributes, "log.file.path")
                .or_else(|| attr(&record.attributes, "log.file.name"))
                .and_then(str_value);
            let level = record_level(&record);
            let at = groups
                .iter()
                .position(|(f, l, _)| f.as_deref() == file && *l == level);
            let file = file.map(str::to_owned);
            match map_record(&mut record, &resource_md, now_ns) {
                Ok(entry) => match at {
                    Some(i) => groups[i].2.push(entry),
                    None => groups.push((file, level, vec![entry])),
                },
                Err(reason) => {
                    out.rejected += 1;
                    out.reject_reason.get_or_insert(reason);
                }
            }
        }
        for (file, level, entries) in groups {
            let mut labels = base.clone();
            if let Some(f) = file.filter(|f| !f.is_empty()) {
                labels.insert("filename".to_owned(), f);
            }
            if let Some(l) = level {
                labels.insert("level".to_owned(), l.to_owned());
            }
            streams.entry(labels).or_default().extend(entries);
        }
    }
    out.streams = streams
        .into_iter()
        .map(|(labels, entries)| Stream { labels, entries })
        .collect();
    out
}

fn str_value(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Severity text, else number, else a `level` attribute, in the contract's spelling.
fn record_level(r: &LogRecord) -> Option<&'static str> {
    normalise_level(&r.severity_text)
        .or_else(|| level_of_number(r.severity_number))
        .or_else(|| attr_str(&r.attributes, "level").and_then(|l| normalise_level(&l)))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    attr(attrs, key).map(scalar_text).filter(|s| !s.is_empty())
}

const SERVICE_KEY: &str = "service.name";
const CLUSTER_KEYS: [&str; 4] = [
    "deployment.environment.name",
    "deployment.environment",
    "k8s.cluster.name",
    "cluster",
];
const HOST_KEY: &str = "host.name";

/// The labels a resource gives every record of it, and its other attributes as metadata.
fn resource_labels(res: Option<&Resource>) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let attrs: &[KeyValue] = res.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
    let mut labels = BTreeMap::new();
    let service = attr_str(attrs, SERVICE_KEY).unwrap_or_else(|| "unknown_service".to_owned());
    labels.insert("job".to_owned(), format!("{service}-service"));
    labels.insert("service_name".to_owned(), service.clone());
    labels.insert("service".to_owned(), service);
    if let Some(c) = CLUSTER_KEYS.iter().find_map(|k| attr_str(attrs, k)) {
        labels.insert("cluster".to_owned(), c);
    }
    if let Some(h) = attr_str(attrs, HOST_KEY) {
        labels.insert("hostname".to_owned(), h);
    }
    let used = |k: &str| k == SERVICE_KEY || k == HOST_KEY || CLUSTER_KEYS.contains(&k);
    let md = attrs
        .iter()
        .filter(|kv| !used(&kv.key))
        .filter_map(metadata_pair)
        .collect();
    (labels, md)
}

fn metadata_pair(kv: &KeyValue) -> Option<(String, String)> {
    let v = kv.value.as_ref()?;
    match v.value {
        Some(any_value::Value::ArrayValue(_)) | Some(any_value::Value::KvlistValue(_)) | None => {
            None
        }
        _ => Some((kv.key.replace(['.', '-'], "_"), scalar_text(v))),
    }
}

/// One record's entry (its body taken), or why it is refused.
fn map_record(
    r: &mut LogRecord,
    resource_md: &[(String, String)],
    now_ns: i64,
) -> Result<Entry, String> {
    let line = match r.body.take() {
        None => Vec::new(),
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        }) => s.into_bytes(),
        Some(AnyValue {
            value: Some(any_value::Value::BytesValue(b)),
        }) => b,
        Some(v) => to_json(&v).to_string().into_bytes(),
    };
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "a log record's body is {} bytes, over the {MAX_LINE_BYTES}-byte line limit",
            line.len()
        ));
    }
    let ts = [r.time_unix_nano, r.observed_time_unix_nano]
        .into_iter()
        .find(|&t| t != 0)
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX))
        .unwrap_or(now_ns);
    let mut metadata: Vec<(String, String)> = resource_md.to_vec();
    let trace = (!r.trace_id.is_empty() && r.trace_id.iter().any(|&b| b != 0))
        .then(|| hex(&r.trace_id))
        .or_else(|| attr_str(&r.attributes, "trace_id"));
    let span = (!r.span_id.is_empty() && r.span_id.iter().any(|&b| b != 0))
        .then(|| hex(&r.span_id))
        .or_else(|| attr_str(&r.attributes, "span_id"));
    const MAPPED: [&str; 5] = [
        "log.file.path",
        "log.file.name",
        "level",
        "trace_id",
        "span_id",
    ];
    metadata.extend(
        r.attributes
            .iter()
            .filter(|kv| !MAPPED.contains(&kv.key.as_str()))
            .filter_map(metadata_pair),
    );
    if let Some(t) = trace {
        metadata.push(("trace_id".to_owned(), t));
    }
    if let Some(s) = span {
        metadata.push(("span_id".to_owned(), s));
    }
    Ok(Entry {
        ts_ns: ts,
        line,
        metadata,
    })
}

/// The label contract's spelling of a level: `debug`, `info`, `warn`, `error`, `fatal`.
pub fn normalise_level(text: &str) -> Option<&'static str> {
    let l = text.trim().to_ascii_lowercase();
    Some(match l.as_str() {
        "" => return None,
        "trace" | "debug" | "dbug" => "debug",
        "info" | "information" | "notice" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" => "error",
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => "fatal",
        _ => return None,
    })
}

/// OTLP's severity numbers: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR,
/// 21-24 FATAL; 0 is unspecified.
fn level_of_number(n: i32) -> Option<&'static str> {
    Some(match n {
        1..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn scalar_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(_) => to_json(v).to_string(),
        None => String::new(),
    }
}

fn to_json(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::from(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::BytesValue(b)) => Value::from(hex(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(to_json).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(to_json).unwrap_or(Value::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
    }
}

mod json;

#[cfg(test)]
mod tests;

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

/// OTLP/JSON into the protobuf types, with the path of the first bad field in the error.
mod json {
    use super::*;

    type R<T> = Result<T, PushError>;

    /// A field by its lowerCamelCase name or its snake_case one.
    fn field<'a>(o: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
        o.get(camel)
            .or_else(|| o.get(snake))
            .filter(|v| !v.is_null())
    }

    fn obj<'a>(v: &'a Value, path: &str) -> R<&'a serde_json::Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| bad(format!("{path}: expected an object, got {}", kind(v))))
    }

    fn arr<'a>(o: &'a Value, camel: &str, snake: &str, path: &str) -> R<&'a [Value]> {
        match field(o, camel, snake) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(bad(format!(
                "{path}.{camel}: expected an array, got {}",
                kind(v)
            ))),
        }
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    fn string(o: &Value, camel: &str, snake: &str, path: &str) -> R<String> {
        match field(o, camel, snake) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(bad(format!(
                "{path}.{camel}: expected a string, got {}",
                kind(v)
            ))),
        }
    }

    /// A 64-bit integer: a decimal string or a JSON number.
    fn int(o: &Value, camel: &str, snake: &str, path: &str) -> R<i128> {
        match field(o, camel, snake) {
            None => Ok(0),
            Some(Value::String(s)) => s
                .parse::<i128>()
                .map_err(|_| bad(format!("{path}.{camel}: {s:?} is not an integer"))),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .ok_or_else(|| bad(format!("{path}.{camel}: {n} is not an integer"))),
            Some(v) => Err(bad(format!(
                "{path}.{camel}: expected an integer, got {}",
                kind(v)
            ))),
        }
    }

    fn u64_field(o: &Value, camel: &str, snake: &str, path: &str) -> R<u64> {
        let i = int(o, camel, snake, path)?;
        u64::try_from(i).map_err(|_| bad(format!("{path}.{camel}: {i} is out of range")))
    }

    fn hex_id(o: &Value, camel: &str, snake: &str, path: &str, len: usize) -> R<Vec<u8>> {
        let s = string(o, camel, snake, path)?;
        if s.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>();
        match bytes {
            Some(b) if b.len() == len => Ok(b),
            _ => Err(bad(format!(
                "{path}.{camel}: {s:?} is not {len} bytes of hex"
            ))),
        }
    }

    pub(super) fn request(v: &Value) -> R<ExportLogsServiceRequest> {
        obj(v, "body")?;
        let resource_logs = arr(v, "resourceLogs", "resource_logs", "body")?
            .iter()
            .enumerate()
            .map(|(i, rl)| resource_logs(rl, &format!("resourceLogs[{i}]")))
            .collect::<R<_>>()?;
        Ok(ExportLogsServiceRequest { resource_logs })
    }

    fn resource_logs(v: &Value, path: &str) -> R<ResourceLogs> {
        obj(v, path)?;
        let resource = match field(v, "resource", "resource") {
            None => None,
            Some(r) => {
                let p = format!("{path}.resource");
                obj(r, &p)?;
                Some(Resource {
                    attributes: attributes(r, &p)?,
                })
            }
        };
        let scope_logs = arr(v, "scopeLogs", "scope_logs", path)?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = format!("{path}.scopeLogs[{i}]");
                obj(s, &p)?;
                let log_records = arr(s, "logRecords", "log_records", &p)?
                    .iter()
                    .enumerate()
                    .map(|(j, r)| record(r, &format!("{p}.logRecords[{j}]")))
                    .collect::<R<_>>()?;
                Ok(ScopeLogs { log_records })
            })
            .collect::<R<_>>()?;
        Ok(ResourceLogs {
            resource,
            scope_logs,
        })
    }

    fn attributes(o: &Value, path: &str) -> R<Vec<KeyValue>> {
        arr(o, "attributes", "attributes", path)?
            .iter()
            .enumerate()
            .map(|(i, kv)| key_value(kv, &format!("{path}.attributes[{i}]")))
            .collect()
    }

    fn key_value(v: &Value, path: &str) -> R<KeyValue> {
        obj(v, path)?;
        Ok(KeyValue {
            key: string(v, "key", "key", path)?,
            value: field(v, "value", "value")
                .map(|x| any(x, &format!("{path}.value")))
                .transpose()?,
        })
    }

    fn any(v: &Value, path: &str) -> R<AnyValue> {
        let o = obj(v, path)?;
        use any_value::Value as V;
        let value = if let Some(s) = field(v, "stringValue", "string_value") {
            let s = s.as_str().ok_or_else(|| {
                bad(format!(
                    "{path}.stringValue: expected a string, got {}",
                    kind(s)
                ))
            })?;
            Some(V::StringValue(s.to_owned()))
        } else if let Some(b) = field(v, "boolValue", "bool_value") {
            let b = b.as_bool().ok_or_else(|| {
                bad(format!(
                    "{path}.boolValue: expected a boolean, got {}",
                    kind(b)
                ))
            })?;
            Some(V::BoolValue(b))
        } else if field(v, "intValue", "int_value").is_some() {
            let i = int(v, "intValue", "int_value", path)?;
            Some(V::IntValue(i64::try_from(i).map_err(|_| {
                bad(format!("{path}.intValue: {i} is out of range"))
            })?))
        } else if let Some(d) = field(v, "doubleValue", "double_value") {
            let d = d.as_f64().ok_or_else(|| {
                bad(format!(
                    "{path}.doubleValue: expected a number, got {}",
                    kind(d)
                ))
            })?;
            Some(V::DoubleValue(d))
        } else if let Some(a) = field(v, "arrayValue", "array_value") {
            let p = format!("{path}.arrayValue");
            obj(a, &p)?;
            let values = arr(a, "values", "values", &p)?
                .iter()
                .enumerate()
                .map(|(i, x)| any(x, &format!("{p}.values[{i}]")))
                .collect::<R<_>>()?;
            Some(V::ArrayValue(ArrayValue { values }))
        } else if let Some(l) = field(v, "kvlistValue", "kvlist_value") {
            let p = format!("{path}.kvlistValue");
            obj(l, &p)?;
            let values = arr(l, "values", "values", &p)?
                .iter()
                .enumerate()
                .map(|(i, x)| key_value(x, &format!("{p}.values[{i}]")))
                .collect::<R<_>>()?;
            Some(V::KvlistValue(KeyValueList { values }))
        } else if let Some(b) = field(v, "bytesValue", "bytes_value") {
            use base64::Engine;
            let s = b.as_str().ok_or_else(|| {
                bad(format!(
                    "{path}.bytesValue: expected base64 text, got {}",
                    kind(b)
                ))
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| bad(format!("{path}.bytesValue: not base64 ({e})")))?;
            Some(V::BytesValue(bytes))
        } else if o.is_empty() {
            None
        } else {
            return Err(bad(format!(
                "{path}: not an OTLP AnyValue (keys {:?})",
                o.keys().collect::<Vec<_>>()
            )));
        };
        Ok(AnyValue { value })
    }

    fn record(v: &Value, path: &str) -> R<LogRecord> {
        obj(v, path)?;
        let severity_number = match field(v, "severityNumber", "severity_number") {
            None => 0,
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| bad(format!("{path}.severityNumber: {n} is out of range")))?,
            // The enum's name, as some encoders write it.
            Some(Value::String(s)) => severity_by_name(s)
                .ok_or_else(|| bad(format!("{path}.severityNumber: unknown severity {s:?}")))?,
            Some(x) => {
                return Err(bad(format!(
                    "{path}.severityNumber: expected a number, got {}",
                    kind(x)
                )))
            }
        };
        Ok(LogRecord {
            time_unix_nano: u64_field(v, "timeUnixNano", "time_unix_nano", path)?,
            observed_time_unix_nano: u64_field(
                v,
                "observedTimeUnixNano",
                "observed_time_unix_nano",
                path,
            )?,
            severity_number,
            severity_text: string(v, "severityText", "severity_text", path)?,
            body: field(v, "body", "body")
                .map(|b| any(b, &format!("{path}.body")))
                .transpose()?,
            attributes: attributes(v, path)?,
            trace_id: hex_id(v, "traceId", "trace_id", path, 16)?,
            span_id: hex_id(v, "spanId", "span_id", path, 8)?,
        })
    }

    fn severity_by_name(s: &str) -> Option<i32> {
        let base = |name: &str| match name {
            "TRACE" => Some(1),
            "DEBUG" => Some(5),
            "INFO" => Some(9),
            "WARN" => Some(13),
            "ERROR" => Some(17),
            "FATAL" => Some(21),
            _ => None,
        };
        let name = s.strip_prefix("SEVERITY_NUMBER_")?;
        let (word, n) = match name.find(|c: char| c.is_ascii_digit()) {
            Some(i) => (&name[..i], name[i..].parse::<i32>().ok()?),
            None => (name, 1),
        };
        if name == "UNSPECIFIED" {
            return Some(0);
        }
        (1..=4).contains(&n).then_some(base(word)? + n - 1)
    }
}

#[cfg(test)]
mod tests;

//! OTLP/JSON into the protobuf types, with the path of the first bad field in the error.

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

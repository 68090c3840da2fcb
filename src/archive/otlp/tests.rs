use super::*;
use crate::archive::otlp_proto::{ExportLogsServiceRequest, ResourceLogs, ScopeLogs};

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_owned())),
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: s(v),
    }
}

fn request(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
            }],
        }],
    }
}

fn record(line: &str, severity: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_765_000_000_000_000_001,
        severity_text: severity.to_owned(),
        body: s(line),
        attributes: vec![kv("log.file.path", "/var/log/payment/app.log")],
        ..Default::default()
    }
}

fn payment() -> Vec<KeyValue> {
    vec![
        kv("service.name", "payment"),
        kv("deployment.environment", "prod"),
        kv("host.name", "web-1"),
        kv("os.type", "linux"),
    ]
}

#[test]
fn resource_and_record_attributes_follow_the_label_contract() {
    let mut r = record("DB connection failed", "ERROR");
    r.trace_id = vec![0xab; 16];
    r.span_id = vec![0x01; 8];
    let d = map_request(request(payment(), vec![r]), 7);
    assert_eq!(d.rejected, 0);
    assert_eq!(d.streams.len(), 1);
    let st = &d.streams[0];
    let want: BTreeMap<String, String> = [
        ("cluster", "prod"),
        ("filename", "/var/log/payment/app.log"),
        ("hostname", "web-1"),
        ("job", "payment-service"),
        ("level", "error"),
        ("service", "payment"),
        ("service_name", "payment"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(st.labels, want);
    let e = &st.entries[0];
    assert_eq!(e.ts_ns, 1_765_000_000_000_000_001);
    assert_eq!(e.line, b"DB connection failed");
    assert!(e.metadata.contains(&("trace_id".into(), "ab".repeat(16))));
    assert!(e.metadata.contains(&("span_id".into(), "01".repeat(8))));
    assert!(e.metadata.contains(&("os_type".into(), "linux".into())));
}

#[test]
fn levels_come_from_text_then_number_then_the_level_attribute() {
    let by_text = record("a", "Warning");
    let mut by_number = record("b", "");
    by_number.severity_number = 21;
    let mut by_attr = record("c", "");
    by_attr.attributes.push(kv("level", "ERR"));
    let none = record("d", "");
    let d = map_request(
        request(payment(), vec![by_text, by_number, by_attr, none]),
        7,
    );
    let level_of = |line: &[u8]| {
        d.streams
            .iter()
            .find(|s| s.entries.iter().any(|e| e.line == line))
            .map(|s| s.labels.get("level").cloned())
            .expect("line archived")
    };
    assert_eq!(level_of(b"a").as_deref(), Some("warn"));
    assert_eq!(level_of(b"b").as_deref(), Some("fatal"));
    assert_eq!(level_of(b"c").as_deref(), Some("error"));
    assert_eq!(level_of(b"d"), None);
}

#[test]
fn a_record_without_time_gets_observed_time_then_now_and_no_service_is_unknown() {
    let mut observed = record("o", "info");
    observed.time_unix_nano = 0;
    observed.observed_time_unix_nano = 42;
    let mut neither = record("n", "info");
    neither.time_unix_nano = 0;
    let d = map_request(request(vec![], vec![observed, neither]), 99);
    let st = &d.streams[0];
    assert_eq!(
        st.labels.get("service").map(String::as_str),
        Some("unknown_service")
    );
    assert_eq!(
        st.labels.get("job").map(String::as_str),
        Some("unknown_service-service")
    );
    let ts: Vec<i64> = st.entries.iter().map(|e| e.ts_ns).collect();
    assert_eq!(ts, vec![42, 99]);
}

#[test]
fn structured_bodies_become_json_lines_and_bytes_are_kept_exactly() {
    let mut structured = record("", "info");
    structured.body = Some(AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("msg", "hi"),
                KeyValue {
                    key: "n".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(3)),
                    }),
                },
            ],
        })),
    });
    let mut raw = record("", "info");
    raw.body = Some(AnyValue {
        value: Some(any_value::Value::BytesValue(vec![0xff, 0xfe, b'x'])),
    });
    let d = map_request(request(payment(), vec![structured, raw]), 1);
    let lines: Vec<&[u8]> = d.streams[0]
        .entries
        .iter()
        .map(|e| e.line.as_slice())
        .collect();
    assert_eq!(
        lines,
        vec![br#"{"msg":"hi","n":3}"#.as_slice(), &[0xff, 0xfe, b'x']]
    );
}

#[test]
fn an_oversized_record_is_refused_alone() {
    let big = "x".repeat(MAX_LINE_BYTES + 1);
    let d = map_request(
        request(
            payment(),
            vec![
                record("ok 1", "info"),
                record(&big, "info"),
                record("ok 2", "info"),
            ],
        ),
        1,
    );
    assert_eq!(d.rejected, 1);
    assert!(d.reject_reason.unwrap().contains("line limit"));
    let n: usize = d.streams.iter().map(|s| s.entries.len()).sum();
    assert_eq!(n, 2);
}

#[test]
fn json_and_protobuf_of_the_same_request_decode_alike() {
    let mut r = record("DB connection failed", "ERROR");
    r.trace_id = (0u8..16).collect();
    r.severity_number = 17;
    let proto = request(payment(), vec![r]).encode_to_vec();
    let json = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "payment"}},
            {"key": "deployment.environment", "value": {"stringValue": "prod"}},
            {"key": "host.name", "value": {"stringValue": "web-1"}},
            {"key": "os.type", "value": {"stringValue": "linux"}}]},
        "scopeLogs": [{"scope": {"name": "x"}, "logRecords": [{
            "timeUnixNano": "1765000000000000001",
            "severityNumber": 17,
            "severityText": "ERROR",
            "body": {"stringValue": "DB connection failed"},
            "attributes": [{"key": "log.file.path", "value": {"stringValue": "/var/log/payment/app.log"}}],
            "traceId": "000102030405060708090a0b0c0d0e0f"}]}]}]});
    let a = decode_protobuf(&proto).unwrap();
    let b = decode_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(a, b);
    // snake_case names and numbers for 64-bit integers are OTLP/JSON too.
    let snake = json
        .to_string()
        .replace("resourceLogs", "resource_logs")
        .replace("\"1765000000000000001\"", "1765000000000000001");
    assert_eq!(decode_json(snake.as_bytes()).unwrap(), a);
}

#[test]
fn malformed_bodies_are_refused_with_the_path_of_the_fault() {
    let cases: [(&str, &str); 6] = [
        ("not json", "malformed OTLP/JSON"),
        ("[]", "body: expected an object"),
        (r#"{"resourceLogs": {}}"#, "resourceLogs: expected an array"),
        (
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}"#,
            "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano",
        ),
        (
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}"#,
            "traceId",
        ),
        (
            r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": 5}}]}]}]}"#,
            "body.stringValue: expected a string",
        ),
    ];
    for (body, want) in cases {
        let e = decode_json(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains(want), "{body}: {}", e.message);
    }
    let e = decode_protobuf(b"\x0a\xff\xff\xff\xff\x0f").unwrap_err();
    assert!(e.message.contains("malformed protobuf"), "{}", e.message);
}

#[test]
fn mutated_protobuf_bodies_never_panic() {
    let body = request(payment(), vec![record("DB connection failed", "ERROR")]).encode_to_vec();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let mut b = body.clone();
        for _ in 0..rng.usize(1..4) {
            let i = rng.usize(..b.len());
            b[i] = rng.u8(..);
        }
        b.truncate(rng.usize(..=b.len()));
        let _ = decode_protobuf(&b);
    }
}

#[test]
fn severity_names_are_read_as_numbers() {
    let body = r#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"severityNumber": "SEVERITY_NUMBER_WARN2", "body": {"stringValue": "w"}}]}]}]}"#;
    let d = decode_json(body.as_bytes()).unwrap();
    assert_eq!(
        d.streams[0].labels.get("level").map(String::as_str),
        Some("warn")
    );
}

//! Decoding Loki push bodies: protobuf in snappy *block* format (what Promtail and Alloy send,
//! with no Content-Encoding header) and JSON (optionally gzip). Stream labels arrive as a
//! selector string `{job="payment-service", level="error"}` that is parsed and checked.

use std::collections::BTreeMap;

use prost::Message;
use serde::Deserialize;

use super::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

/// Why a push was refused; `status` is Loki's for the same fault (400, or 422 for no streams).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PushError {
    pub status: u16,
    pub message: String,
}

fn bad(message: impl Into<String>) -> PushError {
    PushError {
        status: 400,
        message: message.into(),
    }
}

/// One decoded log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts_ns: i64,
    /// The line's exact bytes (UTF-8 almost always; never altered).
    pub line: Vec<u8>,
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub labels: BTreeMap<String, String>,
    pub entries: Vec<Entry>,
}

impl Stream {
    /// Canonical selector string: labels sorted by name, `", "` separated, values escaped.
    pub fn selector(&self) -> String {
        format_selector(&self.labels)
    }

    pub fn raw_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.line.len()).sum()
    }
}

pub fn format_selector(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::with_capacity(64);
    s.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// Prometheus's label names (`crate::logql::parse_labels` checks the same for selectors).
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a stream's labels `{a="b", c="d"}` as Promtail writes them (`crate::logql`, the one
/// parser of LogQL selectors).
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, PushError> {
    crate::logql::parse_labels(s).map_err(|e| bad(format!("couldn't parse labels {s:?}: {e}")))
}

fn ts_ns(t: Option<Timestamp>) -> Result<i64, PushError> {
    let t = t.ok_or_else(|| bad("entry without a timestamp"))?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(bad(format!("timestamp nanos out of range: {}", t.nanos)));
    }
    t.seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(t.nanos as i64))
        .ok_or_else(|| bad(format!("timestamp out of range: {}s", t.seconds)))
}

fn finish(streams: Vec<Stream>) -> Result<Vec<Stream>, PushError> {
    if streams.is_empty() {
        return Err(PushError {
            status: 422,
            message: "at least one valid stream is required for ingestion".into(),
        });
    }
    Ok(streams)
}

/// Snappy-block-compressed `PushRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<Stream>, PushError> {
    if body.is_empty() {
        return Err(bad("empty body"));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| bad(format!("snappy: corrupt input ({e})")))?;
    let req = PushRequest::decode(raw.as_slice())
        .map_err(|e| bad(format!("malformed protobuf PushRequest: {e}")))?;
    let streams = req
        .streams
        .into_iter()
        .map(stream_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    finish(streams)
}

pub fn stream_from_proto(s: StreamAdapter) -> Result<Stream, PushError> {
    let labels = parse_selector(&s.labels)?;
    let entries = s
        .entries
        .into_iter()
        .map(|e| {
            Ok(Entry {
                ts_ns: ts_ns(e.timestamp)?,
                line: e.line,
                metadata: e
                    .structured_metadata
                    .into_iter()
                    .map(|p| (p.name, p.value))
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, PushError>>()?;
    Ok(Stream { labels, entries })
}

/// The same stream as a `StreamAdapter` (what goes on the `logs` topic).
pub fn stream_to_proto(s: &Stream, entries: &[Entry]) -> StreamAdapter {
    StreamAdapter {
        labels: s.selector(),
        entries: entries
            .iter()
            .map(|e| EntryAdapter {
                timestamp: Some(Timestamp {
                    seconds: e.ts_ns.div_euclid(1_000_000_000),
                    nanos: e.ts_ns.rem_euclid(1_000_000_000) as i32,
                }),
                line: e.line.clone(),
                structured_metadata: e
                    .metadata
                    .iter()
                    .map(|(n, v)| LabelPairAdapter {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            })
            .collect(),
        hash: 0,
    }
}

/// `stream_to_proto(s, entries).encode_to_vec()` without building it: the push path writes
/// the `logs` record straight from the decoded stream, so each line is copied once, not
/// cloned into an adapter and then copied again. Byte for byte what prost writes.
pub fn encode_stream(s: &Stream, entries: &[Entry]) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    fn field_len(len: usize) -> usize {
        1 + encoded_len_varint(len as u64) + len
    }
    fn put_len(tag: u32, len: usize, buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    }
    fn put_bytes(tag: u32, b: &[u8], buf: &mut Vec<u8>) {
        if !b.is_empty() {
            put_len(tag, b.len(), buf);
            buf.extend_from_slice(b);
        }
    }
    let nonempty = |len: usize| if len == 0 { 0 } else { field_len(len) };
    let ts = |e: &Entry| {
        let (sec, nanos) = (
            e.ts_ns.div_euclid(1_000_000_000),
            e.ts_ns.rem_euclid(1_000_000_000),
        );
        let len = if sec == 0 {
            0
        } else {
            1 + encoded_len_varint(sec as u64)
        } + if nanos == 0 {
            0
        } else {
            1 + encoded_len_varint(nanos as u64)
        };
        (sec, nanos, len)
    };
    let pair_len = |n: &str, v: &str| nonempty(n.len()) + nonempty(v.len());
    let entry_len = |e: &Entry| {
        field_len(ts(e).2)
            + nonempty(e.line.len())
            + e.metadata
                .iter()
                .map(|(n, v)| field_len(pair_len(n, v)))
                .sum::<usize>()
    };
    let labels = s.selector();
    let total = nonempty(labels.len())
        + entries
            .iter()
            .map(|e| field_len(entry_len(e)))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(total);
    put_bytes(1, labels.as_bytes(), &mut buf);
    for e in entries {
        put_len(2, entry_len(e), &mut buf);
        let (sec, nanos, len) = ts(e);
        put_len(1, len, &mut buf);
        if sec != 0 {
            encode_key(1, WireType::Varint, &mut buf);
            encode_varint(sec as u64, &mut buf);
        }
        if nanos != 0 {
            encode_key(2, WireType::Varint, &mut buf);
            encode_varint(nanos as u64, &mut buf);
        }
        put_bytes(2, &e.line, &mut buf);
        for (n, v) in &e.metadata {
            put_len(3, pair_len(n, v), &mut buf);
            put_bytes(1, n.as_bytes(), &mut buf);
            put_bytes(2, v.as_bytes(), &mut buf);
        }
    }
    buf
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    stream: BTreeMap<String, String>,
    values: Vec<JsonValue>,
}

/// `["<unix ns>", "<line>"]` or with a third element of structured metadata.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonValue {
    Plain((String, String)),
    WithMetadata((String, String, BTreeMap<String, String>)),
}

/// JSON push body (its Content-Encoding already undone by the HTTP layer).
pub fn decode_json(body: &[u8]) -> Result<Vec<Stream>, PushError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("empty body"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let push: JsonPush = serde_path_to_error::deserialize(de).map_err(|e| {
        bad(format!(
            "malformed JSON push at {}: {}",
            e.path(),
            e.inner()
        ))
    })?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for (i, s) in push.streams.into_iter().enumerate() {
        if let Some(name) = s.stream.keys().find(|k| !valid_label_name(k)) {
            return Err(bad(format!(
                "streams[{i}].stream: invalid label name {name:?}"
            )));
        }
        let entries = s
            .values
            .into_iter()
            .enumerate()
            .map(|(j, v)| {
                let (ts, line, md) = match v {
                    JsonValue::Plain((t, l)) => (t, l, BTreeMap::new()),
                    JsonValue::WithMetadata((t, l, m)) => (t, l, m),
                };
                let ts_ns = ts.parse::<i64>().map_err(|_| {
                    bad(format!(
                        "streams[{i}].values[{j}]: timestamp {ts:?} is not unix nanoseconds"
                    ))
                })?;
                Ok(Entry {
                    ts_ns,
                    line: line.into_bytes(),
                    metadata: md.into_iter().collect(),
                })
            })
            .collect::<Result<Vec<_>, PushError>>()?;
        streams.push(Stream {
            labels: s.stream,
            entries,
        });
    }
    finish(streams)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file of `tests/fixtures/promtail/` (real Promtail bodies and their decodings).
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/promtail/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn real_promtail_bodies_decode_like_the_reference_decoder() {
        for name in [
            "push-multistream",
            "push-single-error",
            "push-structured-metadata",
        ] {
            let streams = decode_protobuf(&fixture(&format!("{name}.pb.snappy"))).unwrap();
            let want: serde_json::Value =
                serde_json::from_slice(&fixture(&format!("{name}.decoded.json"))).unwrap();
            let want = want["streams"].as_array().unwrap();
            assert_eq!(streams.len(), want.len(), "{name}");
            for (got, want) in streams.iter().zip(want) {
                assert_eq!(got.selector(), want["labels"].as_str().unwrap(), "{name}");
                let we = want["entries"].as_array().unwrap();
                assert_eq!(got.entries.len(), we.len());
                for (g, w) in got.entries.iter().zip(we) {
                    assert_eq!(g.ts_ns.to_string(), w["ts_ns"].as_str().unwrap());
                    assert_eq!(g.line, w["line"].as_str().unwrap().as_bytes());
                    let md = w["structuredMetadata"].as_array().map_or(0, Vec::len);
                    assert_eq!(g.metadata.len(), md);
                }
            }
        }
    }

    #[test]
    fn json_pushes_decode_with_metadata() {
        let s = decode_json(&fixture("json-push-structured-metadata.json")).unwrap();
        assert_eq!(s[0].entries[0].metadata.len(), 2);
    }

    #[test]
    fn selector_round_trips_escapes() {
        let l = parse_selector(r#"{a="x \"q\" \\ y", b_2="", _c="ünï"}"#).unwrap();
        assert_eq!(l["a"], r#"x "q" \ y"#);
        assert_eq!(parse_selector(&format_selector(&l)).unwrap(), l);
        assert_eq!(parse_selector("{}").unwrap().len(), 0);
    }

    #[test]
    fn loki_error_cases() {
        assert_eq!(
            decode_protobuf(b"this is not snappy protobuf")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(decode_protobuf(b"").unwrap_err().status, 400);
        let empty = snap::raw::Encoder::new().compress_vec(&[]).unwrap();
        assert_eq!(decode_protobuf(&empty).unwrap_err().status, 422);
        // Snappy fine, protobuf garbage.
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 10]).unwrap();
        assert_eq!(decode_protobuf(&junk).unwrap_err().status, 400);
        assert_eq!(decode_json(br#"{"streams":[]}"#).unwrap_err().status, 422);
        assert_eq!(decode_json(b"").unwrap_err().status, 400);
        let bad_ts = br#"{"streams":[{"stream":{"job":"x"},"values":[["abc","bad ts"]]}]}"#;
        assert!(decode_json(bad_ts)
            .unwrap_err()
            .message
            .contains("values[0]"));
        let bad_label = br#"{"streams":[{"stream":{"1bad":"x"},"values":[["1","l"]]}]}"#;
        assert_eq!(decode_json(bad_label).unwrap_err().status, 400);
    }

    #[test]
    fn non_utf8_lines_are_kept_exactly() {
        let s = Stream {
            labels: BTreeMap::from([("job".into(), "x".into())]),
            entries: vec![Entry {
                ts_ns: 1,
                line: vec![0xff, b'a', 0xfe],
                metadata: vec![],
            }],
        };
        let req = PushRequest {
            streams: vec![stream_to_proto(&s, &s.entries)],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        assert_eq!(decode_protobuf(&body).unwrap(), vec![s]);
    }

    #[test]
    fn mutated_bodies_never_panic() {
        let base = fixture("push-multistream.pb.snappy");
        let raw = snap::raw::Decoder::new().decompress_vec(&base).unwrap();
        let mut state: u32 = 0x1234_5678;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut b = raw.clone();
            let i = state as usize % b.len();
            b[i] = (state >> 8) as u8;
            let body = snap::raw::Encoder::new().compress_vec(&b).unwrap();
            let _ = decode_protobuf(&body);
            let mut c = base.clone();
            let j = (state >> 3) as usize % c.len();
            c[j] ^= 0x5a;
            let _ = decode_protobuf(&c);
        }
    }

    #[test]
    fn encode_stream_writes_what_prost_writes() {
        let s = Stream {
            labels: BTreeMap::from([("job".into(), "x".into()), ("level".into(), "er\"r".into())]),
            entries: vec![
                Entry {
                    ts_ns: 1_750_680_000_123_456_789,
                    line: b"DB connection failed".to_vec(),
                    metadata: vec![
                        ("trace_id".into(), "abc".into()),
                        ("empty".into(), String::new()),
                    ],
                },
                Entry {
                    ts_ns: 0,
                    line: Vec::new(),
                    metadata: Vec::new(),
                },
                Entry {
                    ts_ns: -1_500_000_000,
                    line: vec![0xff, b'a', 0xfe],
                    metadata: Vec::new(),
                },
            ],
        };
        assert_eq!(
            encode_stream(&s, &s.entries),
            stream_to_proto(&s, &s.entries).encode_to_vec()
        );
        assert_eq!(
            encode_stream(&s, &s.entries[1..2]),
            stream_to_proto(&s, &s.entries[1..2]).encode_to_vec()
        );
    }
}

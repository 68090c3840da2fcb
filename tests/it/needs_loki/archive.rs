//! The push endpoint's Content-Encoding answers compared with real Loki's for the same bytes.

use crate::archive::pb_body;
use crate::support::app::archive;
use crate::support::parquet::{all_rows, wait_rows};
use crate::support::{spawn_app, unique, Stack};

/// Content-Encoding on a push gets the answer real Loki gives the same bytes: gzip and raw
/// deflate around JSON or protobuf accepted, `snappy` said of a protobuf body accepted, and
/// an encoding it does not read (br) a 400 naming it. Where HTTP and Loki part, alertpipe
/// takes what HTTP defines and Loki refuses (`identity`; `deflate` in its zlib form).
#[actix_web::test]
async fn push_content_encodings_get_the_answers_real_loki_gives() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(archive(dir.path())).await;
    let loki = Stack::get().var("STACK_LOKI_URL").to_owned();
    let job = unique("encodings");
    let level = flate2::Compression::default();
    let gzip = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let raw_deflate = |b: &[u8]| {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let zlib = |b: &[u8]| {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let json = |line: &str| {
        let ns = chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap()
            .to_string();
        serde_json::to_vec(&serde_json::json!({"streams": [{
            "stream": {"job": job, "env": "test"}, "values": [[ns, line]]}]}))
        .unwrap()
    };
    let pb = |line: &str| {
        pb_body(
            &format!("{{job=\"{job}\", env=\"test\"}}"),
            &[line.as_bytes()],
        )
    };
    let js = "application/json";
    let proto = "application/x-protobuf";
    let post = |url: String, body: Vec<u8>, ct: &'static str, enc: Option<&'static str>| async move {
        let mut req = awc::Client::default()
            .post(url)
            .insert_header(("content-type", ct));
        if let Some(e) = enc {
            req = req.insert_header(("content-encoding", e));
        }
        let mut resp = req.send_body(body).await.expect("push reaches the server");
        let text = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
        (resp.status().as_u16(), text)
    };
    let same: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        ("json", json("plain json"), js, None),
        ("gzip json", gzip(&json("gzip json")), js, Some("gzip")),
        (
            "deflate json",
            raw_deflate(&json("deflate json")),
            js,
            Some("deflate"),
        ),
        (
            "gzip protobuf",
            gzip(&pb("gzip protobuf")),
            proto,
            Some("gzip"),
        ),
        (
            "snappy protobuf",
            pb("snappy protobuf"),
            proto,
            Some("snappy"),
        ),
        ("br json", json("br json"), js, Some("br")),
        ("bad gzip", b"not gzip".to_vec(), js, Some("gzip")),
    ];
    for (name, body, ct, enc) in same {
        let push = "/loki/api/v1/push";
        let (theirs, their_text) = post(format!("{loki}{push}"), body.clone(), ct, enc).await;
        let (ours, our_text) = post(format!("{}{push}", app.url), body, ct, enc).await;
        assert_eq!(
            ours, theirs,
            "{name}: alertpipe {ours} {our_text:?}, Loki {theirs} {their_text:?}"
        );
        if name == "br json" {
            assert_eq!(our_text.trim(), their_text.trim(), "Loki's words");
        }
    }
    for (name, body, enc) in [
        ("identity json", json("identity json"), "identity"),
        (
            "zlib deflate json",
            zlib(&json("zlib deflate json")),
            "deflate",
        ),
    ] {
        let (status, text) =
            post(format!("{}/loki/api/v1/push", app.url), body, js, Some(enc)).await;
        assert_eq!(status, 204, "{name}: {text}");
    }
    let rows = all_rows(&wait_rows(dir.path(), 7).await);
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| r["line"].as_str().unwrap_or_default().to_owned())
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "deflate json",
            "gzip json",
            "gzip protobuf",
            "identity json",
            "plain json",
            "snappy protobuf",
            "zlib deflate json"
        ],
        "every accepted push archived once, nothing refused"
    );
}

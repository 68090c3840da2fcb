//! The webhook edge: contract fields in Kafka, dedup, every bad input, auth, probes, metrics.

use std::time::Duration;

use alertpipe::config::{AuthMode, Secret};
use base64::Engine;
use serde_json::Value;

use crate::support::{fixture, spawn_app};

const IDLE: Duration = Duration::from_secs(3);

#[actix_web::test]
async fn a_real_webhook_becomes_one_kafka_message_per_alert_with_the_contract_fields() {
    let app = spawn_app(|_| {}).await;
    let (status, _, body) = app
        .post_alerts(fixture("alertmanager/firing-critical-group.json"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["received"], 2);
    assert_eq!(body["produced"], 2);

    let mut msgs = app.topic_messages(2, IDLE).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    msgs.sort_by_key(|m| {
        m["labels"]["instance"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    let m = &msgs[0];
    assert_eq!(m["_key"], m["fingerprint"], "keyed by fingerprint");
    assert_eq!(m["service"], "payment");
    assert_eq!(m["severity"], "critical");
    assert_eq!(m["status"], "firing");
    assert_eq!(m["alertname"], "PaymentDBDown");
    assert_eq!(m["cluster"], "prod");
    assert_eq!(m["labels"]["instance"], "db-1");
    assert_eq!(m["ends_at"], Value::Null, "0001-01-01 endsAt means none");
    assert_eq!(m["timestamp"], m["starts_at"]);
    assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        m["timestamp"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );
    for k in ["annotations", "generator_url"] {
        assert!(m.get(k).is_some(), "missing {k}");
    }
}

#[actix_web::test]
async fn the_same_delivery_twice_produces_each_alert_state_once() {
    let app = spawn_app(|_| {}).await;
    let body = fixture("alertmanager/firing-critical-group.json");
    let (s1, _, r1) = app.post_alerts(body.clone(), None).await;
    let (s2, _, r2) = app.post_alerts(body, None).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(r1["produced"], 2);
    assert_eq!(r2["duplicates"], 2);
    assert_eq!(r2["produced"], 0);
    // A new state (resolved) of the same alerts is not a duplicate.
    let (s3, _, r3) = app
        .post_alerts(fixture("alertmanager/resolved-critical.json"), None)
        .await;
    assert_eq!(s3, 200);
    assert_eq!(r3["produced"], 2, "{r3}");

    let msgs = app.topic_messages(5, IDLE).await;
    assert_eq!(msgs.len(), 4, "2 firing + 2 resolved: {msgs:?}");
    let resolved: Vec<_> = msgs.iter().filter(|m| m["status"] == "resolved").collect();
    assert_eq!(resolved.len(), 2);
    assert!(resolved
        .iter()
        .all(|m| m["ends_at"].is_string() && m["timestamp"] == m["ends_at"]));
}

#[actix_web::test]
async fn bad_inputs_get_clear_errors_and_the_service_keeps_serving() {
    let app = spawn_app(|c| c.server.body_limit_bytes = 64 * 1024).await;
    let good = String::from_utf8(fixture("alertmanager/firing-critical.json")).unwrap();
    let mut non_utf8 = good.clone().into_bytes();
    let i = good.find("DB").unwrap_or(40);
    non_utf8[i] = 0xff;
    // Valid JSON (trailing whitespace) but over the limit: size alone decides.
    let oversize = format!("{good}{}", " ".repeat(70 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        (
            "malformed json",
            b"{\"version\":\"4\",\"alerts\":[".to_vec(),
            400,
            None,
        ),
        ("empty body", Vec::new(), 400, None),
        ("not an object", b"[1,2,3]".to_vec(), 400, None),
        (
            "wrong version",
            good.replace("\"version\": \"4\"", "\"version\": \"3\"")
                .into(),
            400,
            Some("version"),
        ),
        (
            "missing alerts",
            good.replace("\"alerts\"", "\"alertz\"").into(),
            400,
            None,
        ),
        (
            "wrong type",
            good.replace("\"labels\": {", "\"labels\": 7, \"l\": {")
                .into(),
            400,
            Some("alerts[0].labels"),
        ),
        (
            "empty fingerprint",
            regex_free_replace_fingerprint(&good).into(),
            400,
            Some("alerts[0].fingerprint"),
        ),
        ("non-utf8", non_utf8, 400, None),
        ("oversize", oversize.into(), 413, None),
    ];
    for (name, body, want, field) in cases {
        let (status, _, json) = app.post_alerts(body, None).await;
        assert_eq!(status, want, "{name}: {json}");
        let err = json["error"].as_str().unwrap_or_default();
        assert!(
            !err.is_empty(),
            "{name}: error body names the problem: {json}"
        );
        if let Some(f) = field {
            assert_eq!(json["field"], f, "{name}: {json}");
        }
    }
    let (status, _, json) = app.post_alerts(good, None).await;
    assert_eq!(status, 200, "still serving: {json}");
    assert_eq!(
        app.topic_messages(2, IDLE).await.len(),
        1,
        "only the valid alert landed"
    );
}

fn regex_free_replace_fingerprint(body: &str) -> String {
    let start = body.find("\"fingerprint\": \"").unwrap() + "\"fingerprint\": \"".len();
    let end = start + body[start..].find('"').unwrap();
    format!("{}{}", &body[..start], &body[end..])
}

#[actix_web::test]
async fn bearer_auth_refuses_missing_and_wrong_tokens() {
    let app = spawn_app(|c| {
        c.auth.mode = AuthMode::Bearer;
        c.auth.secret = Secret::new("s3cret-token");
    })
    .await;
    let body = fixture("alertmanager/firing-custom.json");
    for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0LXRva2Vu")] {
        let (status, _, json) = app.post_alerts(body.clone(), auth).await;
        assert_eq!(status, 401, "{auth:?}: {json}");
    }
    assert!(app
        .topic_messages(1, Duration::from_secs(2))
        .await
        .is_empty());
    let (status, _, _) = app.post_alerts(body, Some("Bearer s3cret-token")).await;
    assert_eq!(status, 200);
    // The history API takes the same credentials: nothing without them.
    for path in ["/api/v1/incidents", "/api/v1/sla"] {
        for auth in [None, Some("Bearer wrong")] {
            let mut req = app.client.get(format!("{}{path}", app.url));
            if let Some(a) = auth {
                req = req.insert_header(("authorization", a));
            }
            let status = req.send().await.expect("answers").status().as_u16();
            assert_eq!(status, 401, "{path} {auth:?}");
        }
        let status = app
            .client
            .get(format!("{}{path}", app.url))
            .insert_header(("authorization", "Bearer s3cret-token"))
            .send()
            .await
            .expect("answers")
            .status()
            .as_u16();
        assert_ne!(status, 401, "{path} with the token");
    }
}

#[actix_web::test]
async fn basic_auth_accepts_only_the_configured_user() {
    let app = spawn_app(|c| {
        c.auth.mode = AuthMode::Basic;
        c.auth.username = "alertmanager".into();
        c.auth.secret = Secret::new("pw");
    })
    .await;
    let enc = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let body = fixture("alertmanager/firing-custom.json");
    let (status, _, _) = app
        .post_alerts(body.clone(), Some(&enc("alertmanager:nope")))
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = app.post_alerts(body, Some(&enc("alertmanager:pw"))).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn probes_and_metrics_answer() {
    let app = spawn_app(|_| {}).await;
    let (status, _, _) = app
        .post_alerts(fixture("alertmanager/firing-custom.json"), None)
        .await;
    assert_eq!(status, 200);
    let mut health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let _ = health.body().await;
    for probe in ["/healthz", "/readyz"] {
        let head = app
            .client
            .head(format!("{}{probe}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status().as_u16(), 200, "HEAD {probe}");
    }
    let mut metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = String::from_utf8(metrics.body().await.unwrap().to_vec()).unwrap();
    for family in [
        "alertpipe_ingest_alerts_received_total",
        "alertpipe_kafka_produced_total",
        "alertpipe_http_requests_total",
        "alertpipe_kafka_produce_seconds_bucket",
    ] {
        assert!(
            text.contains(family),
            "{family} missing from /metrics:\n{text}"
        );
    }
}

#[actix_web::test]
async fn every_endpoint_group_takes_its_own_credentials_and_no_other() {
    use alertpipe::config::{EndpointGroup, Role};
    let app = crate::support::TestApp::builder()
        .with_roles(&[Role::Ingest, Role::Archive, Role::Persist])
        .configure(|c| {
            c.auth.mode = AuthMode::Bearer;
            c.auth.secret = Secret::new("hook-token");
            c.auth
                .set_group(EndpointGroup::Push, AuthMode::Basic, "promtail", "push-pw");
            c.auth
                .set_group(EndpointGroup::Query, AuthMode::Bearer, "", "read-token");
            c.auth
                .set_group(EndpointGroup::History, AuthMode::Bearer, "", "read-token");
        })
        .spawn()
        .await;
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let push = fixture("promtail/push-single-error.pb.snappy");
    let alerts = fixture("alertmanager/firing-custom.json");
    // (method, path, body, content type, the right credential)
    let endpoints: Vec<(&str, &str, Vec<u8>, &str, String)> = vec![
        (
            "POST",
            "/api/v1/alerts",
            alerts,
            "application/json",
            "Bearer hook-token".into(),
        ),
        (
            "POST",
            "/loki/api/v1/push",
            push,
            "application/x-protobuf",
            basic("promtail:push-pw"),
        ),
        (
            "GET",
            "/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D",
            vec![],
            "",
            "Bearer read-token".into(),
        ),
        (
            "GET",
            "/loki/api/v1/labels",
            vec![],
            "",
            "Bearer read-token".into(),
        ),
        (
            "GET",
            "/loki/api/v1/series?match[]=%7Bjob%3D%22x%22%7D",
            vec![],
            "",
            "Bearer read-token".into(),
        ),
        (
            "GET",
            "/api/v1/incidents",
            vec![],
            "",
            "Bearer read-token".into(),
        ),
        ("GET", "/api/v1/sla", vec![], "", "Bearer read-token".into()),
    ];
    let send = |method: &str, path: &str, body: Vec<u8>, ct: &str, auth: Option<String>| {
        let mut req = match method {
            "POST" => app.client.post(format!("{}{path}", app.url)),
            _ => app.client.get(format!("{}{path}", app.url)),
        };
        if !ct.is_empty() {
            req = req.insert_header(("content-type", ct.to_owned()));
        }
        if let Some(a) = auth {
            req = req.insert_header(("authorization", a));
        }
        async move {
            req.send_body(body)
                .await
                .expect("answers")
                .status()
                .as_u16()
        }
    };
    for (method, path, body, ct, right) in &endpoints {
        // No credential, wrong ones, and the other groups' right ones.
        let mut wrong = vec![
            None,
            Some("Bearer wrong".to_owned()),
            Some(basic("promtail:wrong")),
        ];
        for other in [
            "Bearer hook-token".to_owned(),
            "Bearer read-token".to_owned(),
            basic("promtail:push-pw"),
        ] {
            if other != *right {
                wrong.push(Some(other));
            }
        }
        for auth in wrong {
            let status = send(method, path, body.clone(), ct, auth.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
        }
        let status = send(method, path, body.clone(), ct, Some(right.clone())).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} with its credential: {status}"
        );
    }
    // Probes and metrics need none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = send("GET", path, vec![], "", None).await;
        assert!(status == 200 || status == 503, "{path}: {status}");
    }
}

#[actix_web::test]
async fn at_debug_level_every_request_gets_an_access_log_line() {
    use crate::support::{eventually, free_port, Proc, Stack};
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("alertpipe.log");
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_alertpipe"))
        .args(["serve", "--roles", "ingest"])
        .env("ALERTPIPE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "ALERTPIPE__KAFKA__BROKERS",
            Stack::get().var("STACK_KAFKA_BROKERS"),
        )
        .env("ALERTPIPE__TELEMETRY__LOG_FORMAT", "json")
        .env(
            "ALERTPIPE__TELEMETRY__LOG_LEVEL",
            "info,alertpipe::http=debug",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("alertpipe binary starts");
    let mut proc = Proc { child };
    let client = awc::Client::default();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(30), "alertpipe answers", || {
        let (c, url) = (client.clone(), format!("{base}/healthz"));
        async move { c.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let bad = client
        .post(format!("{base}/api/v1/alerts"))
        .insert_header(("content-type", "application/json"))
        .send_body("{not json")
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let lines: Vec<Value> = eventually(Duration::from_secs(10), "access log lines", || {
        let path = log_path.clone();
        async move {
            let lines: Vec<Value> = std::fs::read_to_string(path)
                .ok()?
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["message"] == "request")
                .collect();
            lines
                .iter()
                .any(|v| v["route"] == "/api/v1/alerts")
                .then_some(lines)
        }
    })
    .await;
    proc.kill9();
    let alerts = lines
        .iter()
        .find(|v| v["route"] == "/api/v1/alerts")
        .unwrap();
    assert_eq!(alerts["method"], "POST");
    assert_eq!(alerts["status"], 400);
    assert_eq!(alerts["level"], "DEBUG");
    assert!(
        alerts["ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{alerts}"
    );
    assert!(
        alerts["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{alerts}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["route"] == "/healthz" && v["status"] == 200),
        "{lines:?}"
    );
}

/// `alertpipe tail` (the README's way to look at a topic) prints what the webhook produced,
/// and says so, exiting 1, when the topic does not exist or the broker does not answer: an
/// empty output means an empty topic, never a typo or a dead broker.
#[actix_web::test]
async fn alertpipe_tail_prints_the_topic_and_names_a_missing_topic_or_dead_broker() {
    let app = spawn_app(|_| {}).await;
    let (status, _, _) = app
        .post_alerts(fixture("alertmanager/firing-critical-group.json"), None)
        .await;
    assert_eq!(status, 200);
    let tail = |brokers: String, topic: String| async move {
        let out = actix_web::rt::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_alertpipe"))
                .args(["tail", "--topic", &topic, "--idle-ms", "1500"])
                .env("ALERTPIPE__KAFKA__BROKERS", brokers)
                .output()
                .expect("alertpipe runs")
        })
        .await
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = tail(app.brokers.clone(), app.topic.clone()).await;
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines.iter().all(
        |l| l["value"]["alertname"] == "PaymentDBDown" && l["key"] == l["value"]["fingerprint"]
    ));

    let missing = crate::support::unique("no-such-topic");
    let (code, stdout, stderr) = tail(app.brokers.clone(), missing.clone()).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stderr.contains(&format!("topic {missing} does not exist")),
        "{stderr}"
    );
    let (code, _, stderr) = tail(app.brokers.clone(), missing.clone()).await;
    assert_eq!(code, Some(1), "looking did not create it: {stderr}");

    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let (code, _, stderr) = tail(dead.clone(), app.topic.clone()).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("kafka at {dead} did not answer")),
        "{stderr}"
    );
}

/// A compressed webhook is inflated (gzip, and deflate in both its zlib and raw forms) within
/// the body limit; an encoding the webhook does not read is a 415 naming it; a gzip body sent
/// without its header is told so. Nothing bad lands.
#[actix_web::test]
async fn compressed_webhooks_are_inflated_and_unknown_encodings_refused() {
    use std::io::Write;
    let app = spawn_app(|c| c.server.body_limit_bytes = 64 * 1024).await;
    let compress = |form: &str, body: &[u8]| -> Vec<u8> {
        let level = flate2::Compression::default();
        let mut out = Vec::new();
        match form {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(&mut out, level);
                e.write_all(body).unwrap();
                e.finish().unwrap();
            }
            "zlib" => {
                let mut e = flate2::write::ZlibEncoder::new(&mut out, level);
                e.write_all(body).unwrap();
                e.finish().unwrap();
            }
            _ => {
                let mut e = flate2::write::DeflateEncoder::new(&mut out, level);
                e.write_all(body).unwrap();
                e.finish().unwrap();
            }
        }
        out
    };
    let app = &app;
    let post = |body: Vec<u8>, encoding: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = encoding
            .map(|e| ("content-encoding", e))
            .into_iter()
            .collect();
        let (status, _, json) = app.post_alerts_with(body, &headers).await;
        (status, json)
    };
    let alerts = [
        "alertmanager/firing-critical.json",
        "alertmanager/firing-custom.json",
        "alertmanager/resolved-critical.json",
    ];
    let mut produced = 0;
    for (fixture_name, (form, header)) in
        alerts
            .iter()
            .zip([("gzip", "gzip"), ("zlib", "deflate"), ("raw", "deflate")])
    {
        let plain = fixture(fixture_name);
        let want = serde_json::from_slice::<Value>(&plain).unwrap()["alerts"]
            .as_array()
            .unwrap()
            .len();
        let (status, json) = post(compress(form, &plain), Some(header)).await;
        assert_eq!(status, 200, "{form} as {header}: {json}");
        assert_eq!(json["produced"], want, "{form} as {header}: {json}");
        produced += want;
    }

    let good = fixture("alertmanager/firing-critical-group.json");
    let (status, json) = post(good.clone(), Some("br")).await;
    assert_eq!(status, 415, "{json}");
    assert!(json["error"].as_str().unwrap().contains("\"br\""), "{json}");
    let (status, json) = post(compress("gzip", &good), None).await;
    assert_eq!(status, 400, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("gzip-compressed but Content-Encoding does not say so"),
        "{json}"
    );
    let (status, json) = post(b"not gzip".to_vec(), Some("gzip")).await;
    assert_eq!(status, 400, "{json}");
    // Small on the wire, past the limit inflated: valid JSON padded with 200 KB of spaces.
    let mut padded = good.clone();
    padded.extend(std::iter::repeat_n(b' ', 200 * 1024));
    let bomb = compress("gzip", &padded);
    assert!(bomb.len() < 64 * 1024);
    let (status, json) = post(bomb, Some("gzip")).await;
    assert_eq!(status, 413, "{json}");

    let landed = app.topic_messages(produced + 1, IDLE).await;
    assert_eq!(
        landed.len(),
        produced,
        "the inflated alerts only: {landed:?}"
    );
}

/// A known path asked with a method it does not take is a 405 naming the methods it does
/// (the `Allow` header and the error body), counted under its route; an unknown path is a
/// 404.
#[actix_web::test]
async fn a_wrong_method_is_a_405_naming_the_right_ones() {
    let app = spawn_app(|_| {}).await;
    for (method, path, allow) in [
        (awc::http::Method::GET, "/api/v1/alerts", "POST"),
        (awc::http::Method::GET, "/loki/api/v1/push", "POST"),
        (awc::http::Method::POST, "/readyz", "GET, HEAD"),
        (
            awc::http::Method::DELETE,
            "/loki/api/v1/query_range",
            "GET, POST",
        ),
    ] {
        let mut resp = app
            .client
            .request(method.clone(), format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_eq!(
            resp.headers().get("allow").unwrap(),
            allow,
            "{method} {path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .ends_with(&format!("use {allow}")),
            "{body}"
        );
    }
    let (status, body) = app.get("/api/v1/nothing-here").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"route="/api/v1/alerts",method="GET",status="405""#),
        "{metrics}"
    );
}

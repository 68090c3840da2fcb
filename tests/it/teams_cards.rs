//! Every kind of Teams card alertpipe sends (alert, resolved, digest, truncated), checked with
//! Microsoft's own Adaptive Cards renderer (npm `adaptivecards`, installed by the stack) in
//! headless Chromium: it parses each card for the schema version the card declares, reports
//! no parse or validation event, and renders it, with the service and message on the card.
//!
//! Screenshots next to the mails': `MAIL_SCREENSHOTS=docs/mails cargo test --test it
//! teams_cards` writes `card-<kind>.png` there.

use std::path::Path;

use alertpipe::domain::{parse_webhook, AlertEvent, AlertStatus};
use alertpipe::notify::card::{message, message_with, MAX_BODY_BYTES};
use alertpipe::notify::context::LogContext;
use serde_json::Value;

use crate::support::{chromium, fixture, Stack};

fn event(i: usize) -> AlertEvent {
    let mut e = parse_webhook(&fixture("alertmanager/firing-critical.json"))
        .unwrap()
        .remove(0);
    e.service = format!("payment-{}", i % 3);
    e.message = format!("DB connection failed on shard {i}");
    e
}

/// The cards, by kind: what `notify::card::message` builds for Teams.
fn cards() -> Vec<(&'static str, Value)> {
    let firing = event(0);
    let mut resolved = event(0);
    resolved.status = AlertStatus::Resolved;
    let digest: Vec<AlertEvent> = (0..40).map(event).collect();
    let mut huge = event(1);
    huge.annotations.insert(
        "description".into(),
        format!(
            "stack trace {}",
            "frame at payment.rs:42 <x> & \"y\"\n".repeat(3000)
        ),
    );
    let g = "https://grafana.example.com";
    let lines = LogContext {
        query: r#"{service="payment-0"} |= "DB connection failed""#.into(),
        lines: (0..10)
            .map(|i| {
                (
                    format!("12:00:0{i}.000"),
                    format!("ERROR [payment] DB connection failed <attempt {i}> & \"retrying\""),
                )
            })
            .collect(),
    };
    let out = vec![
        ("alert", message(std::slice::from_ref(&firing), g)),
        (
            "alert-with-log-lines",
            message_with(&[firing], g, Some(&lines)),
        ),
        ("resolved", message(&[resolved], g)),
        ("digest", message(&digest, g)),
        ("truncated", message(&[huge], g)),
    ];
    let truncated = out[4].1.to_string();
    assert!(truncated.len() <= MAX_BODY_BYTES, "{}", truncated.len());
    assert!(truncated.contains("truncated"), "the card says it was cut");
    out
}

/// A page that parses and renders `card` with the renderer at `js` and writes what it found
/// into `<pre id="out">`.
fn page(js: &str, card: &Value) -> String {
    format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="file://{js}"></script></head>
<body style="margin:0;width:420px;font-family:sans-serif"><div id="card"></div><pre id="out">not run</pre>
<script>
var out = document.getElementById('out');
try {{
  var json = {card};
  var version = AdaptiveCards.Version.parse(json.version, new AdaptiveCards.SerializationContext());
  var ctx = new AdaptiveCards.SerializationContext(version);
  var card = new AdaptiveCards.AdaptiveCard();
  card.parse(json, ctx);
  var events = [];
  for (var i = 0; i < ctx.eventCount; i++) {{
    var e = ctx.getEventAt(i);
    events.push(e.message);
  }}
  var failures = [];
  card.validateProperties().validationEvents.forEach(function (e) {{
    failures.push(e.message);
  }});
  var el = card.render();
  document.getElementById('card').appendChild(el);
  out.textContent = JSON.stringify({{ version: version.toString(), events: events,
    failures: failures, text: el.innerText, actions: card.getActionCount() }});
}} catch (err) {{
  out.textContent = JSON.stringify({{ error: String(err) }});
}}
</script></body></html>"#,
        card = serde_json::to_string(card).unwrap()
    )
}

fn run(dir: &Path, kind: &str, js: &str, card: &Value) -> Value {
    let file = dir.join(format!("{kind}.html"));
    std::fs::write(&file, page(js, card)).unwrap();
    let out = chromium()
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap_or_else(|e| panic!("chromium: {e}; the stack installs it (apt chromium)"));
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"out\">").map(|i| i + 14);
    let end = dom.rfind("</pre>");
    let (Some(s), Some(e)) = (start, end) else {
        panic!("{kind}: no result in the page: {dom}")
    };
    let text = dom[s..e]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}: {text}"))
}

#[test]
fn microsofts_renderer_parses_validates_and_renders_every_kind_of_teams_card() {
    let js = Stack::get().var("STACK_ADAPTIVECARDS_JS").to_owned();
    assert!(
        Path::new(&js).exists(),
        "{js} missing: `bash deploy/local/stack.sh up` installs npm adaptivecards"
    );
    let dir = tempfile::tempdir().unwrap();
    let shots = std::env::var("MAIL_SCREENSHOTS").ok();
    for (kind, msg) in cards() {
        let card = &msg["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard", "{kind}");
        let r = run(dir.path(), kind, &js, card);
        assert!(r["error"].is_null(), "{kind}: the renderer threw: {r}");
        assert_eq!(r["version"], card["version"], "{kind}: {r}");
        assert_eq!(
            r["events"],
            serde_json::json!([]),
            "{kind}: parse events: {r}"
        );
        assert_eq!(
            r["failures"],
            serde_json::json!([]),
            "{kind}: validation: {r}"
        );
        let actions = if kind == "alert-with-log-lines" { 2 } else { 1 };
        assert_eq!(r["actions"], actions, "{kind}: the Grafana links: {r}");
        let text = r["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("payment-"),
            "{kind}: the service is on the card: {text}"
        );
        let expected: &[&str] = match kind {
            "alert" => &["DB connection failed"],
            "alert-with-log-lines" => &["Log lines (10", "<attempt 9> & \"retrying\""],
            "resolved" => &["DB connection failed", "resolved"],
            "digest" => &["Digest", "40"],
            _ => &["stack trace", "truncated"],
        };
        for want in expected {
            assert!(
                text.to_lowercase().contains(&want.to_lowercase()),
                "{kind}: {want:?} on the card: {text}"
            );
        }
        if let Some(d) = &shots {
            std::fs::create_dir_all(d).unwrap();
            let png = Path::new(d).join(format!("card-{kind}.png"));
            let status = chromium()
                .arg(format!(
                    "--user-data-dir={}",
                    dir.path().join("profile").display()
                ))
                .arg("--window-size=420,900")
                .arg(format!(
                    "--screenshot={}",
                    std::fs::canonicalize(d)
                        .unwrap()
                        .join(png.file_name().unwrap())
                        .display()
                ))
                .arg(format!(
                    "file://{}",
                    dir.path().join(format!("{kind}.html")).display()
                ))
                .status()
                .unwrap();
            assert!(status.success(), "screenshot of {kind}");
        }
    }
}

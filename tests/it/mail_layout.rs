//! Every kind of mail (alert, resolved, digest), with a long service name and a long unbroken
//! message, rendered by a real browser engine (Debian's headless `chromium`) inside a 375 px
//! frame (a phone) and a 900 px one: no horizontal scrolling, and the severity, the service
//! and the message are on the page.
//!
//! Screenshots of the six renderings: `MAIL_SCREENSHOTS=docs/mails cargo test --test it
//! mail_layout` writes `<kind>-<width>.png` there (the README shows them).

use std::path::Path;

use alertpipe::domain::{parse_webhook, AlertEvent, AlertStatus};
use alertpipe::notify::render::{alert_mail, digest_mail};

use crate::support::{chromium, fixture};

const SERVICE: &str = "payment-gateway-europe-west-production-cluster-blue";

fn long_event(i: usize) -> AlertEvent {
    let mut e = parse_webhook(&fixture("alertmanager/firing-critical.json"))
        .unwrap()
        .remove(0);
    e.service = SERVICE.into();
    e.message = format!("conn{i}refused-{}", "x".repeat(300));
    e.annotations.insert("summary".into(), e.message.clone());
    e
}

/// What the page measured: the document's scroll width, the frame's width, its text.
struct Measure {
    scroll_width: u64,
    inner_width: u64,
    text: String,
}

/// Renders `html` in a frame `width` px wide (a srcdoc frame: same origin, so the page can
/// measure it) and reads back what the page measured through `--dump-dom`.
fn measure(dir: &Path, name: &str, html: &str, width: u32) -> Measure {
    let page = format!(
        r#"<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" style="width:{width}px;height:4000px;border:0"></iframe><pre id="out"></pre>
<script>
var f = document.getElementById('f');
f.onload = function () {{
  var d = f.contentDocument;
  document.getElementById('out').textContent = JSON.stringify({{
    sw: d.documentElement.scrollWidth, iw: f.contentWindow.innerWidth, text: d.body.innerText }});
}};
f.srcdoc = {html};
</script></body></html>"#,
        html = serde_json::to_string(html).unwrap()
    );
    let file = dir.join(format!("{name}-{width}.html"));
    std::fs::write(&file, page).unwrap();
    let out = chromium()
        .args(["--window-size=1000,1000"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "headless chromium is needed for this test ({e}): `apt-get install chromium`, \
                 or run `bash deploy/local/stack.sh up`, which installs it"
            )
        });
    let dom = String::from_utf8_lossy(&out.stdout);
    let json = dom
        .split_once("<pre id=\"out\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(j, _)| {
            j.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} at {width}px: no measurement in chromium's DOM; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    if let Ok(shots) = std::env::var("MAIL_SCREENSHOTS") {
        screenshot(&file, Path::new(&shots), name, width);
    }
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name} at {width}px: {e}: {json}"));
    Measure {
        scroll_width: v["sw"].as_u64().unwrap_or(u64::MAX),
        inner_width: v["iw"].as_u64().unwrap_or(0),
        text: v["text"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The framed page as a PNG, as wide as the frame.
fn screenshot(page: &Path, into: &Path, name: &str, width: u32) {
    std::fs::create_dir_all(into).expect("screenshot directory");
    let png = std::fs::canonicalize(into)
        .expect("screenshot directory")
        .join(format!("{name}-{width}.png"));
    let dir = page.parent().expect("page directory");
    let out = chromium()
        .args(["--hide-scrollbars"])
        .arg(format!("--window-size={width},1300"))
        .arg(format!(
            "--user-data-dir={}",
            dir.join("profile-shot").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        png.exists(),
        "no screenshot at {}: {}",
        png.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_mail_fits_a_phone_and_a_desktop_without_scrolling_sideways() {
    let dir = tempfile::tempdir().unwrap();
    let firing = long_event(0);
    let mut resolved = long_event(1);
    resolved.status = AlertStatus::Resolved;
    resolved.ends_at = Some("2026-11-24T14:00:00Z".parse().unwrap());
    let burst: Vec<AlertEvent> = (0..80).map(long_event).collect();
    let mails = [
        (
            "alert",
            alert_mail(&firing, "https://grafana.example.com").unwrap(),
        ),
        (
            "resolved",
            alert_mail(&resolved, "https://grafana.example.com").unwrap(),
        ),
        (
            "digest",
            digest_mail(&burst, "outlook", "https://grafana.example.com").unwrap(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, mail) in &mails {
        for width in [375, 900] {
            let m = measure(dir.path(), name, &mail.html, width);
            if m.scroll_width > m.inner_width || m.inner_width != u64::from(width) {
                failures.push(format!(
                    "{name} at {width}px scrolls sideways: scrollWidth {} > innerWidth {}",
                    m.scroll_width, m.inner_width
                ));
            }
            let flat: String = m.text.split_whitespace().collect();
            for (what, needle) in [
                ("severity", "CRITICAL"),
                ("service", SERVICE),
                ("message", "refused-xxxxxxxxxx"),
            ] {
                if !flat.contains(needle) {
                    failures.push(format!("{name} at {width}px: {what} not on the page"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! Mail content from askama templates (`templates/`): HTML that Outlook renders (tables,
//! inline styles, no scripts or external CSS) and a plain-text alternative. All alert text is
//! escaped in HTML by askama; subjects have CR/LF removed so alert text cannot add headers.

use askama::Template;
use chrono::{DateTime, Utc};

use crate::domain::{AlertEvent, AlertStatus};

pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertHtml<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "alert.txt", escape = "none")]
struct AlertText<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "resolved.html")]
struct ResolvedHtml<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "resolved.txt", escape = "none")]
struct ResolvedText<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestHtml<'a> {
    subject: &'a str,
    total: usize,
    summary: &'a [DigestGroup],
    groups: &'a [DigestGroup],
    more: usize,
    grafana_link: &'a str,
    incidents_link: &'a str,
}

#[derive(Template)]
#[template(path = "digest.txt", escape = "none")]
struct DigestText<'a> {
    subject: &'a str,
    total: usize,
    summary: &'a [DigestGroup],
    groups: &'a [DigestGroup],
    more: usize,
    grafana_link: &'a str,
    incidents_link: &'a str,
}

/// Alerts a digest's HTML lists one by one (a phone screen's worth of reading); the rest are
/// counted, "and N more", with a link to the incidents view.
pub const DIGEST_HTML_LISTED: usize = 50;
/// The plain-text part lists more: it is the record a mail client can search.
pub const DIGEST_TEXT_LISTED: usize = 1000;

/// Alerts of one service, alert name and status in a digest: how many, and the ones listed
/// (newest first).
#[derive(Debug, Clone)]
pub struct DigestGroup {
    pub service: String,
    pub alertname: String,
    pub status: String,
    pub count: usize,
    pub items: Vec<View>,
}

/// Groups by (service, alert name, status), largest group first; lists at most `cap` alerts
/// over all groups, newest first within each. Returns the groups and how many are not listed.
pub fn digest_groups(
    events: &[AlertEvent],
    grafana_url: &str,
    cap: usize,
) -> (Vec<DigestGroup>, usize) {
    let mut by: std::collections::BTreeMap<(String, String, String), Vec<&AlertEvent>> =
        std::collections::BTreeMap::new();
    for e in events {
        by.entry((
            e.service.clone(),
            e.alertname.clone(),
            e.status.as_str().to_owned(),
        ))
        .or_default()
        .push(e);
    }
    let mut groups: Vec<_> = by.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let mut left = cap;
    let mut out = Vec::with_capacity(groups.len());
    for ((service, alertname, status), mut es) in groups {
        es.sort_by_key(|e| std::cmp::Reverse(e.timestamp));
        let listed = es.len().min(left);
        left -= listed;
        out.push(DigestGroup {
            service,
            alertname,
            status,
            count: es.len(),
            items: es[..listed].iter().map(|e| view(e, grafana_url)).collect(),
        });
    }
    let more = events.len() - (cap - left);
    (out, more)
}

/// What the templates show of one alert.
#[derive(Debug, Clone)]
pub struct View {
    pub subject: String,
    pub severity_upper: String,
    pub summary: String,
    pub service: String,
    pub time: String,
    pub started: String,
    pub duration: String,
    pub message: String,
    pub description: String,
    pub alertname: String,
    pub cluster: String,
    pub fingerprint: String,
    pub status: String,
    pub color: &'static str,
    pub grafana_link: String,
    /// The log lines behind the alert (time, line), when it came from a LogQL rule and Loki
    /// answered; `log_link` opens their full query in Grafana Explore.
    pub log_lines: Vec<(String, String)>,
    pub log_query: String,
    pub log_link: String,
}

/// One line, no control characters: safe in a header.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

/// Grafana Explore on the service's logs, around the alert.
pub fn grafana_link(base: &str, e: &AlertEvent) -> String {
    let expr = format!("{{service=\"{}\"}}", e.service.replace('"', "\\\""));
    explore_link(base, e, &expr)
}

/// Grafana Explore on a LogQL query, around the alert.
pub fn explore_link(base: &str, e: &AlertEvent, expr: &str) -> String {
    let from = (e.starts_at - chrono::Duration::minutes(30)).timestamp_millis();
    let to = e
        .ends_at
        .unwrap_or(e.timestamp)
        .timestamp_millis()
        .max(from)
        + 30 * 60 * 1000;
    let left = serde_json::json!({
        "datasource": "loki",
        "queries": [{"refId": "A", "expr": expr}],
        "range": {"from": from.to_string(), "to": to.to_string()},
    });
    let enc: String = left
        .to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{}/explore?orgId=1&left={enc}", base.trim_end_matches('/'))
}

pub fn view(e: &AlertEvent, grafana_url: &str) -> View {
    let severity_upper = one_line(&e.severity.as_str().to_uppercase());
    let summary = one_line(&e.message);
    let resolved = e.status == AlertStatus::Resolved;
    let subject = if resolved {
        format!("[{severity_upper}] RESOLVED: {summary}")
    } else {
        format!("[{severity_upper}] {summary}")
    };
    let duration = e
        .ends_at
        .map(|end| {
            let s = (end - e.starts_at).num_seconds().max(0);
            format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
        })
        .unwrap_or_default();
    View {
        subject,
        severity_upper,
        summary,
        service: e.service.clone(),
        time: fmt_time(e.timestamp),
        started: fmt_time(e.starts_at),
        duration,
        message: e
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_else(|| e.message.clone()),
        description: e
            .annotations
            .get("description")
            .cloned()
            .unwrap_or_default(),
        alertname: e.alertname.clone(),
        cluster: e.cluster.clone().unwrap_or_default(),
        fingerprint: e.fingerprint.as_str().to_owned(),
        status: e.status.as_str().to_owned(),
        color: match e.severity.as_str() {
            "critical" => "#c62828",
            "warning" => "#ef6c00",
            _ => "#1565c0",
        },
        grafana_link: grafana_link(grafana_url, e),
        log_lines: Vec::new(),
        log_query: String::new(),
        log_link: String::new(),
    }
}

/// A rendered mail: subject, HTML, plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub subject: String,
    pub html: String,
    pub text: String,
}

pub fn alert_mail(e: &AlertEvent, grafana_url: &str) -> Result<Mail, askama::Error> {
    alert_mail_with(e, grafana_url, None)
}

/// An alert's mail, with the log lines behind it when there are some.
pub fn alert_mail_with(
    e: &AlertEvent,
    grafana_url: &str,
    logs: Option<&super::context::LogContext>,
) -> Result<Mail, askama::Error> {
    let mut v = view(e, grafana_url);
    if let Some(ctx) = logs.filter(|c| !c.lines.is_empty()) {
        v.log_lines = ctx.lines.clone();
        v.log_query = ctx.query.clone();
        v.log_link = explore_link(grafana_url, e, &ctx.query);
    }
    let (html, text) = if e.status == AlertStatus::Resolved {
        (
            ResolvedHtml { v: &v }.render()?,
            ResolvedText { v: &v }.render()?,
        )
    } else {
        (AlertHtml { v: &v }.render()?, AlertText { v: &v }.render()?)
    };
    Ok(Mail {
        subject: v.subject.clone(),
        html,
        text,
    })
}

pub fn digest_mail(
    events: &[AlertEvent],
    receiver: &str,
    grafana_url: &str,
) -> Result<Mail, askama::Error> {
    let top = events
        .iter()
        .map(|e| e.severity.as_str())
        .find(|s| *s == "critical")
        .or_else(|| events.first().map(|e| e.severity.as_str()))
        .unwrap_or("none")
        .to_uppercase();
    let subject = one_line(&format!(
        "[{top}] Digest: {} alerts for {receiver}",
        events.len()
    ));
    let base = grafana_url.trim_end_matches('/');
    let link = format!("{base}/alerting/list");
    let incidents = format!("{base}/d/alertpipe-history");
    let (html_groups, html_more) = digest_groups(events, grafana_url, DIGEST_HTML_LISTED);
    let (text_groups, text_more) = digest_groups(events, grafana_url, DIGEST_TEXT_LISTED);
    Ok(Mail {
        html: DigestHtml {
            subject: &subject,
            total: events.len(),
            summary: &html_groups,
            groups: &html_groups,
            more: html_more,
            grafana_link: &link,
            incidents_link: &incidents,
        }
        .render()?,
        text: DigestText {
            subject: &subject,
            total: events.len(),
            summary: &text_groups,
            groups: &text_groups,
            more: text_more,
            grafana_link: &link,
            incidents_link: &incidents,
        }
        .render()?,
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(summary: &str) -> AlertEvent {
        let body = include_str!("../../tests/fixtures/alertmanager/firing-critical.json");
        let mut e = crate::domain::parse_webhook(body.as_bytes())
            .unwrap()
            .remove(0);
        e.message = summary.into();
        e.annotations.insert("summary".into(), summary.into());
        e.timestamp = "2025-06-23T14:30:45Z".parse().unwrap();
        e.service = "payment-service".into();
        e
    }

    #[test]
    fn the_seed_mail() {
        let m = alert_mail(
            &event("Payment Service Failure"),
            "https://grafana.example.com",
        )
        .unwrap();
        assert_eq!(m.subject, "[CRITICAL] Payment Service Failure");
        for want in [
            "Service: payment-service",
            "Time: 2025-06-23 14:30:45 UTC",
            "Message: Payment Service Failure",
            "View in Grafana: https://grafana.example.com/explore?",
        ] {
            assert!(m.text.contains(want), "{want} missing from:\n{}", m.text);
        }
        assert!(m.html.contains("2025-06-23 14:30:45 UTC"));
        assert!(m.html.contains("<table"));
        assert!(!m.html.to_lowercase().contains("<script"));
        assert!(
            !m.html.contains("<link") && !m.html.contains("<style"),
            "inline styles only"
        );
    }

    #[test]
    fn alert_text_is_escaped_and_subjects_stay_one_line() {
        let m = alert_mail(
            &event("<script>alert(1)</script>\r\nBcc: victim@example.com"),
            "https://g",
        )
        .unwrap();
        assert!(!m.html.contains("<script>alert"), "escaped in HTML");
        assert!(m.html.contains("&#60;script&#62;") || m.html.contains("&lt;script&gt;"));
        assert!(!m.subject.contains('\r') && !m.subject.contains('\n'));
        assert_eq!(
            m.subject,
            "[CRITICAL] <script>alert(1)</script> Bcc: victim@example.com"
        );
    }

    #[test]
    fn resolved_and_digest_mails() {
        let mut e = event("DB down");
        e.status = AlertStatus::Resolved;
        e.ends_at = Some("2025-06-23T15:00:00Z".parse().unwrap());
        let m = alert_mail(&e, "https://g").unwrap();
        assert!(
            m.subject.starts_with("[CRITICAL] RESOLVED:"),
            "{}",
            m.subject
        );
        assert!(m.text.contains("Duration:"));
        let d = digest_mail(
            &[event("a"), event("b"), event("c")],
            "outlook",
            "https://g",
        )
        .unwrap();
        assert_eq!(d.subject, "[CRITICAL] Digest: 3 alerts for outlook");
        for s in ["a", "b", "c"] {
            assert!(d.text.contains(&format!(": {s}\n")), "{}", d.text);
        }
    }

    #[test]
    fn a_digest_opens_with_counts_per_service_and_alert_then_groups_newest_first() {
        let mut events = Vec::new();
        for i in 0..5 {
            let mut e = event(&format!("db down {i}"));
            e.timestamp += chrono::Duration::seconds(i);
            events.push(e);
        }
        let mut other = event("checkout slow");
        other.service = "checkout".into();
        other.alertname = "Latency".into();
        events.push(other);
        let d = digest_mail(&events, "outlook", "https://g").unwrap();
        let payment = format!(
            "5 x {} / {} (firing)",
            events[0].service, events[0].alertname
        );
        let first = d
            .text
            .find(&payment)
            .unwrap_or_else(|| panic!("payment first:\n{}", d.text));
        let second = d
            .text
            .find("1 x checkout / Latency (firing)")
            .expect("checkout's count");
        assert!(first < second, "largest group first:\n{}", d.text);
        let newest = d.text.find("db down 4").unwrap();
        let oldest = d.text.find("db down 0").unwrap();
        assert!(newest < oldest, "newest first:\n{}", d.text);
        assert!(d.html.contains("5&times;"), "{}", d.html);
        assert_eq!(d.html.matches(">View</a>").count(), 6, "a link per alert");
        assert!(!d.html.contains("<th"), "no repeated columns");
        assert!(!d.text.contains("more:"));
    }

    #[test]
    fn a_long_digest_is_capped_with_and_n_more_and_a_link_to_the_incidents() {
        let events: Vec<_> = (0..(DIGEST_HTML_LISTED + 7))
            .map(|i| event(&format!("alert number {i}")))
            .collect();
        let d = digest_mail(&events, "outlook", "https://g/").unwrap();
        assert_eq!(
            d.html.matches(">View</a>").count(),
            DIGEST_HTML_LISTED,
            "HTML lists the cap"
        );
        assert!(d.html.contains("and 7 more"), "{}", d.html);
        assert!(d.html.contains("https://g/d/alertpipe-history"));
        assert!(!d.text.contains("more:"), "the text part lists them all");
        assert_eq!(d.text.matches("] firing ").count(), DIGEST_HTML_LISTED + 7);
    }

    #[test]
    fn grafana_link_is_an_explore_url_for_the_service() {
        let l = grafana_link("https://grafana.example.com/", &event("x"));
        assert!(l.starts_with("https://grafana.example.com/explore?orgId=1&left=%7B"));
        assert!(l.contains("service%3D"));
        assert!(!l.contains(' ') && !l.contains('"'));
    }
}

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
    items: &'a [View],
    grafana_link: &'a str,
}

#[derive(Template)]
#[template(path = "digest.txt", escape = "none")]
struct DigestText<'a> {
    subject: &'a str,
    items: &'a [View],
    grafana_link: &'a str,
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
    let from = (e.starts_at - chrono::Duration::minutes(30)).timestamp_millis();
    let to = e
        .ends_at
        .unwrap_or(e.timestamp)
        .timestamp_millis()
        .max(from)
        + 30 * 60 * 1000;
    let left = serde_json::json!({
        "datasource": "loki",
        "queries": [{"refId": "A", "expr": format!("{{service=\"{}\"}}", e.service.replace('"', "\\\""))}],
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
    let v = view(e, grafana_url);
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
    let items: Vec<View> = events.iter().map(|e| view(e, grafana_url)).collect();
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
    let link = format!("{}/alerting/list", grafana_url.trim_end_matches('/'));
    Ok(Mail {
        html: DigestHtml {
            subject: &subject,
            items: &items,
            grafana_link: &link,
        }
        .render()?,
        text: DigestText {
            subject: &subject,
            items: &items,
            grafana_link: &link,
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
    fn grafana_link_is_an_explore_url_for_the_service() {
        let l = grafana_link("https://grafana.example.com/", &event("x"));
        assert!(l.starts_with("https://grafana.example.com/explore?orgId=1&left=%7B"));
        assert!(l.contains("service%3D"));
        assert!(!l.contains(' ') && !l.contains('"'));
    }
}

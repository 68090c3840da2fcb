//! The Microsoft Teams message: an Adaptive Card for a Teams Workflows webhook, kept under
//! Teams' 28 KB body limit by truncating long text (and saying so in the card).

use serde_json::{json, Value};

use super::render::{view, View};
use crate::domain::AlertEvent;

/// Teams refuses bodies over 28 KB; stay clear of it.
pub const MAX_BODY_BYTES: usize = 27 * 1024;

/// Log lines behind an alert, for its card: (time, line) pairs and the Explore link.
type Lines<'a> = Option<(&'a [(String, String)], &'a str)>;

fn card(
    title: &str,
    color: &str,
    facts: Vec<(String, String)>,
    text: &str,
    link: &str,
    note: Option<&str>,
    lines: Lines<'_>,
) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true, "color": color}),
        json!({"type": "FactSet", "facts": facts.iter().map(|(t, v)| json!({"title": t, "value": v})).collect::<Vec<_>>()}),
        json!({"type": "TextBlock", "text": text, "wrap": true}),
    ];
    let mut actions =
        vec![json!({"type": "Action.OpenUrl", "title": "View in Grafana", "url": link})];
    if let Some((lines, explore)) = lines.filter(|(l, _)| !l.is_empty()) {
        body.push(json!({"type": "TextBlock", "text": format!("Log lines ({}, newest last)", lines.len()), "weight": "Bolder", "size": "Small", "spacing": "Medium", "wrap": true}));
        // One block per line, monospace (Adaptive Cards 1.4 has no code block).
        for (time, line) in lines {
            body.push(json!({"type": "TextBlock", "text": format!("{time} {line}"), "fontType": "Monospace", "size": "Small", "spacing": "None", "wrap": true}));
        }
        actions.push(
            json!({"type": "Action.OpenUrl", "title": "Log query in Explore", "url": explore}),
        );
    }
    if let Some(n) = note {
        body.push(json!({"type": "TextBlock", "text": n, "isSubtle": true, "size": "Small", "wrap": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            }
        }]
    })
}

fn facts(v: &View) -> Vec<(String, String)> {
    vec![
        ("Service".into(), v.service.clone()),
        ("Time".into(), v.time.clone()),
        ("Severity".into(), v.severity_upper.clone()),
        ("Status".into(), v.status.clone()),
    ]
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The card for one alert, or for a digest of several; truncated to fit.
pub fn message(events: &[AlertEvent], grafana_url: &str) -> Value {
    message_with(events, grafana_url, None)
}

/// [`message`], with the log lines behind a single firing alert (`notify::context`).
pub fn message_with(
    events: &[AlertEvent],
    grafana_url: &str,
    logs: Option<&super::context::LogContext>,
) -> Value {
    let views: Vec<View> = events.iter().map(|e| view(e, grafana_url)).collect();
    let explore = match (events, logs) {
        ([e], Some(ctx)) if !ctx.lines.is_empty() => {
            Some(super::render::explore_link(grafana_url, e, &ctx.query))
        }
        _ => None,
    };
    let lines: Lines<'_> = logs
        .zip(explore.as_deref())
        .map(|(c, x)| (c.lines.as_slice(), x));
    let build = |limit: usize, note: Option<&str>| -> Value {
        match views.as_slice() {
            [v] => {
                let text = if v.description.is_empty() {
                    v.message.clone()
                } else {
                    format!("{}\n\n{}", v.message, v.description)
                };
                let color = if v.status == "resolved" {
                    "Good"
                } else {
                    "Attention"
                };
                card(
                    &cut(&v.subject, 200),
                    color,
                    facts(v),
                    &cut(&text, limit),
                    &v.grafana_link,
                    note,
                    lines,
                )
            }
            many => {
                // As the digest mail: counts per (service, alert, status) first, then each
                // group's alerts newest first, at most DIGEST_HTML_LISTED of them.
                let (groups, more) = super::render::digest_groups(
                    events,
                    grafana_url,
                    super::render::DIGEST_HTML_LISTED,
                );
                let counts: Vec<(String, String)> = groups
                    .iter()
                    .take(10)
                    .map(|g| {
                        (
                            cut(
                                &format!("{} · {} · {}", g.service, g.alertname, g.status),
                                120,
                            ),
                            g.count.to_string(),
                        )
                    })
                    .collect();
                let mut lines = Vec::new();
                for g in groups.iter().filter(|g| !g.items.is_empty()) {
                    lines.push(format!(
                        "**{} / {} ({}), {}**",
                        g.service, g.alertname, g.status, g.count
                    ));
                    for v in &g.items {
                        lines.push(format!("- {}: {}", v.time, cut(&v.summary, 200)));
                    }
                }
                let base = grafana_url.trim_end_matches('/');
                if more > 0 {
                    lines.push(format!(
                        "and {more} more: [all incidents]({base}/d/alertpipe-history)"
                    ));
                }
                let title = format!("Digest: {} alerts (sending was throttled)", many.len());
                let link = format!("{base}/alerting/list");
                card(
                    &title,
                    "Attention",
                    counts,
                    &cut(&lines.join("\n"), limit),
                    &link,
                    note,
                    None,
                )
            }
        }
    };
    let full = build(usize::MAX, None);
    if full.to_string().len() <= MAX_BODY_BYTES {
        return full;
    }
    let mut limit = 20_000;
    loop {
        let c = build(
            limit,
            Some("Text truncated to fit Teams' message size limit; see Grafana for the rest."),
        );
        if c.to_string().len() <= MAX_BODY_BYTES || limit < 100 {
            return c;
        }
        limit = limit * 3 / 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AlertEvent {
        let body = include_str!("../../tests/fixtures/alertmanager/firing-custom.json");
        crate::domain::parse_webhook(body.as_bytes())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn card_has_the_adaptive_card_envelope() {
        let m = message(&[event()], "https://g");
        assert_eq!(m["type"], "message");
        let a = &m["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["actions"][0]["type"], "Action.OpenUrl");
    }

    #[test]
    fn a_digest_card_counts_per_service_and_alert_and_caps_the_list() {
        let mut events = vec![event(); 60];
        events[0].service = "checkout".into();
        let c = message(&events, "https://g").to_string();
        assert!(c.contains("\"value\":\"59\""), "{c}");
        assert!(c.contains("\"value\":\"1\""), "{c}");
        assert!(c.contains("and 10 more"), "{c}");
        assert!(c.contains("https://g/d/alertpipe-history"));
        assert!(c.len() <= MAX_BODY_BYTES);
    }

    #[test]
    fn long_text_is_truncated_under_the_limit_and_says_so() {
        let mut e = event();
        e.message = "x".repeat(1_000);
        // 300 alerts in 300 groups with long names: over the limit even with 50 listed.
        let many: Vec<_> = (0..300)
            .map(|i| {
                let mut x = e.clone();
                x.alertname = format!("{i}{}", "A".repeat(600));
                x
            })
            .collect();
        let digest = message(&many, "https://g").to_string();
        assert!(digest.len() <= MAX_BODY_BYTES, "{}", digest.len());
        assert!(digest.contains("truncated"));
        e.annotations
            .insert("description".into(), "y".repeat(100_000));
        let one = message(&[e], "https://g").to_string();
        assert!(one.len() <= MAX_BODY_BYTES, "{}", one.len());
        assert!(one.contains("truncated"));
    }
}

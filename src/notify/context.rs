//! The log lines behind an alert: for an alert born from a LogQL rule, the few lines that
//! matched around its start, read from Loki's HTTP API, for its mail (and a link to the full
//! query in Grafana Explore). The rule's expression comes from the `logql` annotation, else
//! from the generator URL's `g0.expr` (what Loki's ruler sends). When Loki does not answer,
//! the same query runs over the archive's files (`crate::query`, the engine behind the
//! archive's Loki API). Best effort: when neither answers in time, the mail goes without lines.

use chrono::{DateTime, Utc};

pub use crate::config::LogSource;
use crate::domain::AlertEvent;
use crate::logql::{self, MatchOp};

/// Lines ready for a template: time and text, each capped; and the query they answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogContext {
    pub query: String,
    pub lines: Vec<(String, String)>,
}

/// How far before the alert's start the lines are looked for (a rule's window is 5-10 min).
const BEFORE: chrono::Duration = chrono::Duration::minutes(10);
const AFTER: chrono::Duration = chrono::Duration::minutes(1);

/// The log query behind an alert, narrowed to its service, if it came from a LogQL rule.
pub fn log_query(e: &AlertEvent) -> Option<String> {
    let expr = e
        .annotations
        .get("logql")
        .cloned()
        .or_else(|| expr_from_url(&e.generator_url))?;
    let q = logql::log_query_in(&expr)?;
    if e.service.is_empty() {
        return Some(q.to_owned());
    }
    let Ok((selector, end)) = logql::selector_prefix(q) else {
        return Some(q.to_owned());
    };
    if selector
        .iter()
        .any(|m| m.name == "service" || m.name == "service_name")
    {
        return Some(q.to_owned());
    }
    let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let matchers: Vec<String> = std::iter::once(format!("service=\"{}\"", quote(&e.service)))
        .chain(selector.iter().map(|m| {
            let op = match m.op {
                MatchOp::Eq => "=",
                MatchOp::Ne => "!=",
                MatchOp::Re => "=~",
                MatchOp::Nre => "!~",
            };
            format!("{}{op}\"{}\"", m.name, quote(&m.value))
        }))
        .collect();
    let rest = q[end..].trim();
    let narrowed = format!("{{{}}}", matchers.join(", "));
    Some(if rest.is_empty() {
        narrowed
    } else {
        format!("{narrowed} {rest}")
    })
}

/// The expression in a generator URL: `g0.expr` of a Prometheus-style one (`/graph?g0.expr=`),
/// or the first query of a Grafana Explore one (`/explore?left={"queries":[{"expr":...}]}` as
/// Loki 3's ruler sends, or `panes=`), decoded.
fn expr_from_url(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if let Some(e) = param("g0.expr") {
        return Some(e);
    }
    let first_expr = |v: &serde_json::Value| {
        v["queries"][0]["expr"]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
    };
    if let Some(left) = param("left") {
        return first_expr(&serde_json::from_str(&left).ok()?);
    }
    let panes: serde_json::Value = serde_json::from_str(&param("panes")?).ok()?;
    panes.as_object()?.values().find_map(first_expr)
}

/// The newest `max_lines` lines matching `query` in [start - 10 min, start + 1 min], oldest
/// first, each cut to `max_chars` characters: from Loki, else from the archive.
pub async fn fetch(
    client: &awc::Client,
    src: &LogSource,
    query: &str,
    around: DateTime<Utc>,
) -> Result<LogContext, String> {
    let asked = match &src.loki_url {
        Some(url) => from_loki(client, url, src, query, around).await,
        None => Err("no Loki configured (notify.loki_url)".to_owned()),
    };
    let lines = match asked {
        Ok(lines) => lines,
        Err(loki) => {
            let Some(root) = &src.archive else {
                return Err(loki);
            };
            let lines = from_archive(root, src, query, around)
                .await
                .map_err(|e| format!("{loki}; archive: {e}"))?;
            tracing::info!(reason = %loki, lines = lines.len(),
                "the lines behind the alert come from the archive");
            lines
        }
    };
    Ok(context_of(query, lines, src))
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or_default()
}

/// (time in ns, line) from Loki's `query_range`.
async fn from_loki(
    client: &awc::Client,
    loki_url: &str,
    src: &LogSource,
    query: &str,
    around: DateTime<Utc>,
) -> Result<Vec<(i64, String)>, String> {
    let params = [
        ("query", query.to_owned()),
        ("start", ns(around - BEFORE).to_string()),
        ("end", ns(around + AFTER).to_string()),
        ("limit", src.max_lines.to_string()),
        ("direction", "backward".to_owned()),
    ];
    let url = format!("{}/loki/api/v1/query_range", loki_url.trim_end_matches('/'));
    let mut resp = client
        .get(&url)
        .query(&params)
        .map_err(|e| format!("query: {e}"))?
        .timeout(src.timeout)
        .send()
        .await
        .map_err(|e| format!("loki: {e}"))?;
    let body = resp
        .body()
        .limit(4 << 20)
        .await
        .map_err(|e| format!("loki body: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "loki answered {}: {}",
            resp.status(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("loki json: {e}"))?;
    Ok(v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|pair| {
            let ts = pair.get(0)?.as_str()?.parse::<i64>().ok()?;
            Some((ts, pair.get(1)?.as_str()?.to_owned()))
        })
        .collect())
}

/// (time in ns, line) from the archive's files, through the engine behind its Loki API.
async fn from_archive(
    root: &crate::config::ArchiveRoot,
    src: &LogSource,
    query: &str,
    around: DateTime<Utc>,
) -> Result<Vec<(i64, String)>, String> {
    use crate::query::{self, Answer, Direction, Window};
    let op = crate::coldstore::storage::open_retrying(root).map_err(|e| e.to_string())?;
    let expr = crate::logql::parse(query).map_err(|e| e.to_string())?;
    let w = Window {
        start_ns: ns(around - BEFORE),
        end_ns: ns(around + AFTER),
        step_ns: 1_000_000_000,
        limit: src.max_lines,
        direction: Direction::Backward,
    };
    let answer = actix_web::rt::time::timeout(src.timeout, query::query_range(&op, &expr, w))
        .await
        .map_err(|_| format!("no answer within {:?}", src.timeout))?
        .map_err(|e| e.to_string())?;
    match answer.0 {
        Answer::Streams(streams) => Ok(streams
            .into_iter()
            .flat_map(|s| s.entries)
            .map(|e| (e.ts_ns, e.line))
            .collect()),
        _ => Err("not a log query".into()),
    }
}

/// The newest `max_lines`, oldest first, timed and capped for a template.
fn context_of(query: &str, mut lines: Vec<(i64, String)>, src: &LogSource) -> LogContext {
    lines.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    lines.truncate(src.max_lines);
    lines.reverse();
    LogContext {
        query: query.to_owned(),
        lines: lines
            .into_iter()
            .map(|(t, l)| {
                let time = DateTime::<Utc>::from_timestamp_nanos(t)
                    .format("%H:%M:%S%.3f")
                    .to_string();
                (time, cap(&l, src.max_chars))
            })
            .collect(),
    }
}

/// At most `max` characters, control characters but tab shown as spaces, "…" when cut.
fn cap(line: &str, max: usize) -> String {
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_url_gives_the_expression() {
        assert_eq!(
            expr_from_url("http://loki:3100/graph?g0.expr=sum%28count_over_time%28%7Bjob%3D%22x%22%7D+%7C%3D+%22err%22+%5B5m%5D%29%29&g0.tab=1").as_deref(),
            Some(r#"sum(count_over_time({job="x"} |= "err" [5m]))"#)
        );
        assert_eq!(expr_from_url(""), None);
        // A broken escape stays as written (as browsers and Go do): no log query in it.
        let broken = expr_from_url("http://x/graph?g0.expr=%zz");
        assert_eq!(broken.as_deref().and_then(logql::log_query_in), None);
    }

    #[test]
    fn lokis_explore_generator_url_gives_the_expression() {
        // What Loki 3.4's ruler sent the demo's Alertmanager.
        let url = "/explore?left=%7B%22queries%22%3A%5B%7B%22expr%22%3A%22%28sum+by+%28cluster%2Cservice%29%28count_over_time%28%7Bjob%3D~%5C%22.%2B%5C%22%7D+%7C%3D+%5C%22DB+connection+failed%5C%22%5B5m%5D%29%29+%5Cu003e+2%29%22%2C%22queryType%22%3A%22range%22%7D%5D%7D";
        assert_eq!(
            expr_from_url(url).as_deref(),
            Some(
                r#"(sum by (cluster,service)(count_over_time({job=~".+"} |= "DB connection failed"[5m])) > 2)"#
            )
        );
        let panes = "/explore?schemaVersion=1&panes=%7B%22a%22%3A%7B%22queries%22%3A%5B%7B%22expr%22%3A%22rate%28%7Bjob%3D%5C%22x%5C%22%7D%5B1m%5D%29%22%7D%5D%7D%7D";
        assert_eq!(
            expr_from_url(panes).as_deref(),
            Some(r#"rate({job="x"}[1m])"#)
        );
        assert_eq!(expr_from_url("/explore?left=not-json"), None);
        let expr = expr_from_url(url).unwrap_or_default();
        assert_eq!(
            logql::log_query_in(&expr),
            Some(r#"{job=~".+"} |= "DB connection failed""#)
        );
    }

    #[test]
    fn the_service_narrows_the_selector() {
        let mut e: AlertEvent = serde_json::from_value(serde_json::json!({
            "service": "payment", "severity": "critical", "message": "m", "status": "firing",
            "alertname": "A", "fingerprint": "f", "starts_at": "2026-01-01T00:00:00Z",
            "timestamp": "2026-01-01T00:00:00Z", "labels": {}, "annotations": {},
            "generator_url": ""
        }))
        .unwrap();
        assert_eq!(log_query(&e), None);
        e.annotations.insert(
            "logql".into(),
            r#"count_over_time({job=~".+"} |= "x" [5m]) > 1"#.into(),
        );
        assert_eq!(
            log_query(&e).as_deref(),
            Some(r#"{service="payment", job=~".+"} |= "x""#)
        );
    }

    #[test]
    fn lines_are_capped_and_cleaned() {
        assert_eq!(cap("abc", 5), "abc");
        assert_eq!(cap("abcdef", 3), "abc…");
        assert_eq!(cap("a\u{1b}[31mb\r", 10), "a [31mb ");
    }
}

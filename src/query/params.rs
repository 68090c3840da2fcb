//! A query's parameters as Loki's API takes them (times in ns, s or RFC 3339; `since`; `step`
//! as seconds or a duration; `limit`; `direction`), parsed in one place for the HTTP API
//! (`http::loki`) and the CLI (`alertpipe archive query`), with Loki's defaults and limits.

use chrono::{DateTime, Utc};

use super::{Direction, Window};
use crate::logql::{self, parse_duration, Expr, Matcher};

/// Loki's defaults: the last hour, 100 lines, newest first.
pub const DEFAULT_RANGE_NS: i64 = 3_600_000_000_000;
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 5000;
/// Loki's default `max_query_length`: a metric query keeps a time per matching line, so an
/// unbounded range is unbounded memory.
pub const MAX_RANGE_NS: i64 = 721 * 3_600_000_000_000;

/// A parameter that cannot be used: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Name/value pairs (a query string, a form, command-line flags); a name may repeat.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Params(pairs)
    }

    /// The first non-empty value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter (`start`, `end`, `time`), or `default`.
    pub fn time(&self, name: &str, default: i64) -> Result<i64, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(s) => parse_time(s).ok_or_else(|| {
                bad(
                    name,
                    format!("{name}: cannot parse {s:?} as a timestamp (ns, s or RFC 3339)"),
                )
            }),
        }
    }

    /// (start, end) from `start` / `end` / `since`, at most `MAX_RANGE_NS` apart.
    pub fn range(&self, now_ns: i64) -> Result<(i64, i64), ParamError> {
        let end = self.time("end", now_ns)?;
        let since = match self.get("since") {
            Some(s) => duration_ns(s).ok_or_else(|| {
                bad(
                    "since",
                    format!("since: bad duration {s:?} (e.g. 30s, 5m, 6h, 7d)"),
                )
            })?,
            None => DEFAULT_RANGE_NS,
        };
        let start = self.time("start", end.saturating_sub(since))?;
        if end < start {
            return Err(bad("end", "end timestamp must not be before start time"));
        }
        if end - start > MAX_RANGE_NS {
            return Err(bad(
                "start",
                format!(
                    "the query time range exceeds the limit (query length: {}h, limit: 721h); \
                     split it or use DuckDB/Spark over the files",
                    (end - start) / 3_600_000_000_000
                ),
            ));
        }
        Ok((start, end))
    }

    pub fn limit(&self) -> Result<usize, ParamError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n <= MAX_LIMIT => Ok(n.max(1)),
                Ok(n) => Err(bad(
                    "limit",
                    format!("max entries limit per query exceeded, limit > max_entries_limit ({n} > {MAX_LIMIT})"),
                )),
                Err(_) => Err(bad("limit", format!("limit: not a number: {s:?}"))),
            },
        }
    }

    pub fn direction(&self) -> Result<Direction, ParamError> {
        match self
            .get("direction")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("backward") => Ok(Direction::Backward),
            Some("forward") => Ok(Direction::Forward),
            Some(d) => Err(bad(
                "direction",
                format!("direction: {d:?}, expected forward or backward"),
            )),
        }
    }

    /// `step`: seconds (float) or a duration; default as Loki: range / 250, at least 1 s.
    pub fn step(&self, start: i64, end: i64) -> Result<i64, ParamError> {
        match self.get("step") {
            None => Ok(((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .map(|f| (f * 1e9) as i64)
                .or_else(|| duration_ns(s))
                .ok_or_else(|| bad("step", format!("step: cannot parse {s:?}"))),
        }
    }

    /// The window of a range query: range, step, limit and direction.
    pub fn window(&self, now_ns: i64) -> Result<Window, ParamError> {
        let (start_ns, end_ns) = self.range(now_ns)?;
        Ok(Window {
            start_ns,
            end_ns,
            step_ns: self.step(start_ns, end_ns)?,
            limit: self.limit()?,
            direction: self.direction()?,
        })
    }

    /// The `query` parameter, parsed.
    pub fn expr(&self) -> Result<Expr, ParamError> {
        let q = self
            .get("query")
            .ok_or_else(|| bad("query", "query: missing"))?;
        logql::parse(q).map_err(|e| bad("query", e.to_string()))
    }

    /// The `query` parameter as a stream selector (none: every stream).
    pub fn selector(&self) -> Result<Vec<Matcher>, ParamError> {
        match self.get("query") {
            None => Ok(Vec::new()),
            Some(q) => logql::parse_selector(q).map_err(|e| bad("query", e.to_string())),
        }
    }

    /// The selectors of `match[]` (or `match`), which may repeat.
    pub fn matches(&self) -> Result<Vec<Vec<Matcher>>, ParamError> {
        let mut out = Vec::new();
        for name in ["match[]", "match"] {
            for m in self.all(name) {
                out.push(logql::parse_selector(m).map_err(|e| bad(name, e.to_string()))?);
            }
        }
        Ok(out)
    }
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn duration_ns(s: &str) -> Option<i64> {
    parse_duration(s).and_then(|d| i64::try_from(d.as_nanos()).ok())
}

/// Loki's time forms: integer ns (or s when 10 digits or fewer), float s, RFC 3339.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(if s.trim_start_matches('-').len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    if let Ok(f) = s.parse::<f64>() {
        return f.is_finite().then_some((f * 1e9) as i64);
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.with_timezone(&Utc).timestamp_nanos_opt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        Params(serde_urlencoded::from_str(q).unwrap())
    }

    #[test]
    fn times_parse_as_loki_does() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_time("1700000000123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn ranges_default_to_the_last_hour_and_are_bounded() {
        let now = 1_700_000_000_000_000_000;
        let (s, e) = p("end=1700000000").range(now).unwrap();
        assert_eq!(e - s, DEFAULT_RANGE_NS);
        let (s, e) = p("end=1700000000&since=6h").range(now).unwrap();
        assert_eq!(e - s, 6 * 3_600_000_000_000);
        assert!(p("start=1700000000&end=1600000000").range(now).is_err());
        let err = p("start=1600000000&end=1700000000").range(now).unwrap_err();
        assert!(err.message.contains("exceeds the limit"), "{}", err.message);
        assert_eq!(p("since=soon").range(now).unwrap_err().field, "since");
    }

    #[test]
    fn a_window_takes_loki_defaults_and_refuses_bad_values_by_name() {
        let now = 1_700_000_000_000_000_000;
        let w = p("since=250m").window(now).unwrap();
        assert_eq!(
            (w.end_ns, w.step_ns, w.limit),
            (now, 60_000_000_000, DEFAULT_LIMIT)
        );
        assert_eq!(w.direction, Direction::Backward);
        assert_eq!(p("step=15").window(now).unwrap().step_ns, 15_000_000_000);
        assert_eq!(p("step=1m").window(now).unwrap().step_ns, 60_000_000_000);
        assert_eq!(p("limit=9999").window(now).unwrap_err().field, "limit");
        assert_eq!(
            p("direction=up").window(now).unwrap_err().field,
            "direction"
        );
        assert_eq!(p("query=%7Bapp").expr().unwrap_err().field, "query");
    }
}

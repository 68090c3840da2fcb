//! Loki's query API over the Parquet archive (`coldstore::query`), for Grafana's Loki datasource
//! and `logcli`: `query_range`, `query`, `labels`, `label/{name}/values`, `series`,
//! `index/stats`, `status/buildinfo`. Parameters as Loki takes them (times in ns, s or
//! RFC 3339; `since`; `step` as seconds or a duration), in the query string or a POST form.
//! Served by processes with the archive role; credentials as for every endpoint.

use std::collections::HashMap;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{auth, AppState};
use crate::coldstore::logql::{self, parse_duration};
use crate::coldstore::query::{
    self, Answer, Direction, LabelSet, QueryError, ScanStats, Stream, Window,
};

/// Loki's defaults: the last hour, 100 lines, newest first.
const DEFAULT_RANGE_NS: i64 = 3_600_000_000_000;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 5000;
/// Loki's default `max_query_length`: a metric query keeps a time per matching line, so an
/// unbounded range is unbounded memory.
const MAX_RANGE_NS: i64 = 721 * 3_600_000_000_000;

/// Query-string and form parameters; `match[]` may repeat.
struct Params(Vec<(String, String)>);

impl Params {
    fn from(req: &HttpRequest, body: &[u8]) -> Result<Params, ApiError> {
        let mut v: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
            .map_err(|e| ApiError::bad_request(format!("bad query string: {e}"), None))?;
        if !body.is_empty() {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::bad_request(format!("bad form body: {e}"), None))?;
            v.extend(form);
        }
        Ok(Params(v))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg, Some(field.into()))
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
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

fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(name) {
        None => Ok(default),
        Some(s) => parse_time(s).ok_or_else(|| {
            bad(
                name,
                format!("{name}: cannot parse {s:?} as a timestamp (ns, s or RFC 3339)"),
            )
        }),
    }
}

/// (start, end) from `start` / `end` / `since`.
fn range(p: &Params) -> Result<(i64, i64), ApiError> {
    let end = time_param(p, "end", now_ns())?;
    let since = match p.get("since") {
        Some(s) => parse_duration(s)
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| bad("since", format!("since: bad duration {s:?}")))?,
        None => DEFAULT_RANGE_NS,
    };
    let start = time_param(p, "start", end.saturating_sub(since))?;
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

fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit") {
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

fn direction(p: &Params) -> Result<Direction, ApiError> {
    match p.get("direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("backward") => Ok(Direction::Backward),
        Some("forward") => Ok(Direction::Forward),
        Some(d) => Err(bad(
            "direction",
            format!("direction: {d:?}, expected forward or backward"),
        )),
    }
}

/// `step`: seconds (float) or a duration; default as Loki: range / 250, at least 1 s.
fn step(p: &Params, start: i64, end: i64) -> Result<i64, ApiError> {
    match p.get("step") {
        None => Ok(((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000),
        Some(s) => s
            .parse::<f64>()
            .ok()
            .map(|f| (f * 1e9) as i64)
            .or_else(|| parse_duration(s).and_then(|d| i64::try_from(d.as_nanos()).ok()))
            .ok_or_else(|| bad("step", format!("step: cannot parse {s:?}"))),
    }
}

fn parse_query(p: &Params) -> Result<logql::Expr, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| bad("query", "query: missing"))?;
    logql::parse(q).map_err(|e| bad("query", e.to_string()))
}

fn archive(state: &AppState) -> Result<&opendal::Operator, ApiError> {
    state.archive.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this process does not serve the archive (run it with the archive role)",
        )
    })
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::BadRequest(m) => bad("query", m),
        other => {
            tracing::error!(error = %other, "archive query failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}

/// Loki's `stats.summary`, filled with what the archive measures.
fn stats_json(s: &ScanStats, started: Instant, returned: usize) -> Value {
    let secs = started.elapsed().as_secs_f64();
    let per_s = |x: u64| {
        if secs > 0.0 {
            (x as f64 / secs) as u64
        } else {
            0
        }
    };
    json!({
        "summary": {
            "bytesProcessedPerSecond": per_s(s.line_bytes_scanned),
            "linesProcessedPerSecond": per_s(s.rows_scanned),
            "totalBytesProcessed": s.line_bytes_scanned,
            "totalLinesProcessed": s.rows_scanned,
            "execTime": secs,
            "totalEntriesReturned": returned,
        },
        "archive": {"files": s.files, "bytesRead": s.bytes_read},
    })
}

fn labels_json(l: &LabelSet) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<String, Value>>(),
    )
}

fn fmt_value(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        x.to_string()
    }
}

fn ts_secs(ns: i64) -> Value {
    // Loki answers seconds with millisecond precision, whole seconds without a fraction.
    let ms = ns.div_euclid(1_000_000);
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn answer_json(a: Answer, categorize: bool, direction: Direction) -> (Value, usize) {
    match a {
        Answer::Streams(streams) => {
            let sort = |entries: &mut Vec<query::Entry>| match direction {
                Direction::Backward => entries.sort_by_key(|e| std::cmp::Reverse(e.ts_ns)),
                Direction::Forward => entries.sort_by_key(|e| e.ts_ns),
            };
            let mut n = 0;
            let result: Vec<Value> = if categorize {
                streams
                    .into_iter()
                    .map(|mut s| {
                        sort(&mut s.entries);
                        n += s.entries.len();
                        let values: Vec<Value> = s
                            .entries
                            .iter()
                            .map(|e| {
                                let mut v = vec![json!(e.ts_ns.to_string()), json!(e.line)];
                                if !e.metadata.is_empty() || !e.parsed.is_empty() {
                                    let mut cat = Map::new();
                                    if !e.metadata.is_empty() {
                                        cat.insert(
                                            "structuredMetadata".into(),
                                            labels_json(&e.metadata),
                                        );
                                    }
                                    if !e.parsed.is_empty() {
                                        cat.insert("parsed".into(), labels_json(&e.parsed));
                                    }
                                    v.push(Value::Object(cat));
                                }
                                Value::Array(v)
                            })
                            .collect();
                        json!({"stream": labels_json(&s.labels), "values": values})
                    })
                    .collect()
            } else {
                Stream::merged(streams)
                    .into_iter()
                    .map(|(labels, mut entries)| {
                        sort(&mut entries);
                        n += entries.len();
                        let values: Vec<Value> = entries
                            .iter()
                            .map(|e| json!([e.ts_ns.to_string(), e.line]))
                            .collect();
                        json!({"stream": labels_json(&labels), "values": values})
                    })
                    .collect()
            };
            let mut data = json!({"resultType": "streams", "result": result});
            if categorize {
                data["encodingFlags"] = json!(["categorize-labels"]);
            }
            (data, n)
        }
        Answer::Matrix(series) => {
            let n = series.len();
            let result: Vec<Value> = series
                .into_iter()
                .map(|s| {
                    let values: Vec<Value> = s
                        .points
                        .iter()
                        .map(|(t, x)| json!([ts_secs(*t), fmt_value(*x)]))
                        .collect();
                    json!({"metric": labels_json(&s.labels), "values": values})
                })
                .collect();
            (json!({"resultType": "matrix", "result": result}), n)
        }
        Answer::Vector(series) => {
            let n = series.len();
            let result: Vec<Value> = series
                .into_iter()
                .filter_map(|s| {
                    let (t, x) = *s.points.first()?;
                    Some(json!({"metric": labels_json(&s.labels), "value": [ts_secs(t), fmt_value(x)]}))
                })
                .collect();
            (json!({"resultType": "vector", "result": result}), n)
        }
        Answer::Scalar(t, x) => (
            json!({"resultType": "scalar", "result": [ts_secs(t), fmt_value(x)]}),
            1,
        ),
    }
}

fn categorize(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("X-Loki-Response-Encoding-Flags")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "categorize-labels"))
}

/// What every handler starts with: the query group's credentials, the archive, the params.
fn prelude<'a>(
    req: &HttpRequest,
    body: &[u8],
    state: &'a AppState,
) -> Result<(&'a opendal::Operator, Params), ApiError> {
    auth::check(req, &state.auth, crate::config::EndpointGroup::Query)?;
    Ok((archive(state)?, Params::from(req, body)?))
}

fn success(data: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "success", "data": data}))
}

pub async fn query_range(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let expr = parse_query(&p)?;
    let (start, end) = range(&p)?;
    let w = Window {
        start_ns: start,
        end_ns: end,
        step_ns: step(&p, start, end)?,
        limit: limit(&p)?,
        direction: direction(&p)?,
    };
    let started = Instant::now();
    let r = query::query_range(op, &expr, w).await;
    respond(&req, r, started, w.direction)
}

/// An answer (or its error) as Loki's JSON, with the scan's statistics.
fn respond(
    req: &HttpRequest,
    r: Result<(Answer, ScanStats), QueryError>,
    started: Instant,
    direction: Direction,
) -> Result<HttpResponse, ApiError> {
    let (answer, stats) = r.map_err(query_error)?;
    let (mut data, n) = answer_json(answer, categorize(req), direction);
    data["stats"] = stats_json(&stats, started, n);
    Ok(success(data))
}

pub async fn query_instant(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let expr = parse_query(&p)?;
    let t = time_param(&p, "time", now_ns())?;
    let started = Instant::now();
    let r = query::query_instant(op, &expr, t).await;
    respond(&req, r, started, Direction::Backward)
}

fn selector(p: &Params) -> Result<Vec<logql::Matcher>, ApiError> {
    match p.get("query") {
        None => Ok(Vec::new()),
        Some(q) => logql::parse_selector(q).map_err(|e| bad("query", e.to_string())),
    }
}

pub async fn labels(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let (start, end) = range(&p)?;
    let names = query::labels(op, None, &selector(&p)?, start, end)
        .await
        .map_err(query_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "success", "data": names})))
}

pub async fn label_values(
    req: HttpRequest,
    body: web::Bytes,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let (start, end) = range(&p)?;
    let values = query::labels(op, Some(&name), &selector(&p)?, start, end)
        .await
        .map_err(query_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "success", "data": values})))
}

fn match_params(p: &Params) -> Result<Vec<Vec<logql::Matcher>>, ApiError> {
    let mut out = Vec::new();
    for name in ["match[]", "match"] {
        for m in p.all(name) {
            out.push(logql::parse_selector(m).map_err(|e| bad(name, e.to_string()))?);
        }
    }
    Ok(out)
}

pub async fn series(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let (start, end) = range(&p)?;
    let sets = query::series(op, &match_params(&p)?, start, end)
        .await
        .map_err(query_error)?
        .0;
    let data: Vec<Value> = sets.iter().map(labels_json).collect();
    Ok(HttpResponse::Ok().json(json!({"status": "success", "data": data})))
}

/// What Grafana asks before a query to estimate its size: streams, files, lines, bytes.
pub async fn index_stats(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let (start, end) = range(&p)?;
    let sels = match p.get("query") {
        None => Vec::new(),
        Some(q) => match logql::parse(q).map_err(|e| bad("query", e.to_string()))? {
            logql::Expr::Log(q) => vec![q.selector],
            logql::Expr::Metric(m) => m
                .log_queries()
                .into_iter()
                .map(|(q, _)| q.selector.clone())
                .collect(),
        },
    };
    let (sets, stats) = query::series(op, &sels, start, end)
        .await
        .map_err(query_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "streams": sets.len(),
        "chunks": stats.files,
        "entries": stats.rows_scanned,
        "bytes": stats.line_bytes_scanned,
    })))
}

/// Grafana reads the version to pick features; the API answered is Loki 3.4's.
pub async fn buildinfo(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check(&req, &state.auth, crate::config::EndpointGroup::Query)?;
    let mut v = HashMap::new();
    v.insert("version", "3.4.6");
    v.insert("revision", env!("CARGO_PKG_VERSION"));
    v.insert("branch", "alertpipe-archive");
    Ok(HttpResponse::Ok().json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = |q: &str| Params(serde_urlencoded::from_str(q).unwrap());
        let (s, e) = range(&p("end=1700000000")).unwrap();
        assert_eq!(e - s, DEFAULT_RANGE_NS);
        let (s, e) = range(&p("end=1700000000&since=6h")).unwrap();
        assert_eq!(e - s, 6 * 3_600_000_000_000);
        assert!(range(&p("start=1700000000&end=1600000000")).is_err());
        let err = range(&p("start=1600000000&end=1700000000")).unwrap_err();
        assert!(err.message.contains("exceeds the limit"), "{}", err.message);
        assert!(range(&p("since=soon")).is_err());
    }
}

//! Loki's query API over the Parquet archive (`crate::query`), for Grafana's Loki datasource
//! and `logcli`: `query_range`, `query`, `labels`, `label/{name}/values`, `series`,
//! `index/stats`, `status/buildinfo`. Parameters as Loki takes them (`query::Params`), in
//! the query string or a POST form.
//! Served by processes with the archive role; credentials as for every endpoint.

use std::collections::HashMap;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{auth, AppState};
use crate::logql;
use crate::query::{
    self, now_ns, Answer, Direction, LabelSet, ParamError, Params, QueryError, ScanStats, Stream,
};

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::bad_request(e.message, Some(e.field))
    }
}

/// The query string and, for a POST, the form body: one parameter list.
fn params(req: &HttpRequest, body: &[u8]) -> Result<Params, ApiError> {
    let mut v: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}"), None))?;
    if !body.is_empty() {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad_request(format!("bad form body: {e}"), None))?;
        v.extend(form);
    }
    Ok(Params::new(v))
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
        QueryError::BadRequest(m) => ApiError::bad_request(m, Some("query".into())),
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
    Ok((archive(state)?, params(req, body)?))
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
    let expr = p.expr()?;
    let w = p.window(now_ns())?;
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
    let expr = p.expr()?;
    let t = p.time("time", now_ns())?;
    let started = Instant::now();
    let r = query::query_instant(op, &expr, t).await;
    respond(&req, r, started, Direction::Backward)
}

pub async fn labels(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let (start, end) = p.range(now_ns())?;
    let names = query::labels(op, None, &p.selector()?, start, end)
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
    let (start, end) = p.range(now_ns())?;
    let values = query::labels(op, Some(&name), &p.selector()?, start, end)
        .await
        .map_err(query_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "success", "data": values})))
}

pub async fn series(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (op, p) = prelude(&req, &body, &state)?;
    let (start, end) = p.range(now_ns())?;
    let sets = query::series(op, &p.matches()?, start, end)
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
    let (start, end) = p.range(now_ns())?;
    let sels = match p.get("query") {
        None => Vec::new(),
        Some(_) => match p.expr()? {
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

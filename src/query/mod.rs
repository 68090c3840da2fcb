//! LogQL over the archive (`crate::logql` parses it): which files can match (path: day, and `service`
//! / `cluster` when the selector pins them; row groups by their time statistics), then a scan
//! of `timestamp_ns`, `line`, `labels` and `structured_metadata` through the query's
//! pipeline. Log queries answer streams (newest or oldest `limit` lines), metric queries a
//! matrix (range) or a vector (instant), as Loki's HTTP API does (`http::loki`).
//!
//! Each row goes through the query's pipeline (`pipeline`).

mod labels;
mod logs;
mod metric;
mod params;
pub mod pipeline;
mod plan;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use opendal::Operator;

use crate::logql::Expr;
use crate::metrics as m;
pub use labels::{labels, series};
use logs::log_query;
use metric::{eval, to_matrix, Value};
pub use params::{now_ns, parse_time, ParamError, Params};
pub use pipeline::{LabelSet, RowRef};
pub use scan::Filter;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("storage: {0}")]
    Storage(#[from] opendal::Error),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("query worker: {0}")]
    Worker(String),
}

/// What a query cost: files and bytes read, rows looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    pub files: u64,
    pub bytes_read: u64,
    pub rows_scanned: u64,
    /// Raw bytes of the lines scanned (what the speed benchmark compares).
    pub line_bytes_scanned: u64,
}

impl ScanStats {
    fn add(&mut self, o: &ScanStats) {
        self.files += o.files;
        self.bytes_read += o.bytes_read;
        self.rows_scanned += o.rows_scanned;
        self.line_bytes_scanned += o.line_bytes_scanned;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A line in an answer: time, text, and its labels split the way Loki categorises them.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts_ns: i64,
    pub line: String,
    pub metadata: LabelSet,
    pub parsed: LabelSet,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub labels: Arc<LabelSet>,
    pub entries: Vec<Entry>,
}

impl Stream {
    /// Stream labels, structured metadata and parsed labels in one set (Loki's answer when
    /// the client does not ask for categorised labels): one stream per distinct set.
    pub fn merged(streams: Vec<Stream>) -> Vec<(LabelSet, Vec<Entry>)> {
        let mut out: BTreeMap<LabelSet, Vec<Entry>> = BTreeMap::new();
        for s in streams {
            for e in s.entries {
                let mut l = (*s.labels).clone();
                l.extend(e.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
                l.extend(e.parsed.iter().map(|(k, v)| (k.clone(), v.clone())));
                out.entry(l).or_default().push(e);
            }
        }
        out.into_iter().collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: LabelSet,
    /// (time in ns, value) for the steps that have one.
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Streams(Vec<Stream>),
    Matrix(Vec<Series>),
    Vector(Vec<Series>),
    Scalar(i64, f64),
}

/// A query over [start, end]: `step` for metric queries, `limit` and `direction` for logs.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    pub limit: usize,
    pub direction: Direction,
}

/// Range query: log queries -> streams, metric queries -> matrix.
pub async fn query_range(
    op: &Operator,
    expr: &Expr,
    w: Window,
) -> Result<(Answer, ScanStats), QueryError> {
    let result = match expr {
        Expr::Log(q) => log_query(op, q, w).await,
        Expr::Metric(e) => {
            // As Loki's query frontend does for metric queries: start rounded down and end
            // rounded up to a multiple of the step.
            let step = w.step_ns.max(1);
            let start = w.start_ns - w.start_ns.rem_euclid(step);
            let end = match w.end_ns.rem_euclid(step) {
                0 => w.end_ns,
                r => w.end_ns.saturating_add(step - r),
            };
            let steps = steps(start, end, w.step_ns)?;
            let mut stats = ScanStats::default();
            let v = eval(op, e, &steps, &mut stats).await?;
            within_series_limit(&v)?;
            Ok((to_matrix(v, &steps), stats))
        }
    };
    count(&result);
    result
}

/// Instant query at `time`: metric queries only, as in Loki.
pub async fn query_instant(
    op: &Operator,
    expr: &Expr,
    time_ns: i64,
) -> Result<(Answer, ScanStats), QueryError> {
    let result = match expr {
        Expr::Log(_) => Err(QueryError::BadRequest(
            "log queries are not supported as an instant query type, please change your query \
             to a range query type"
                .into(),
        )),
        Expr::Metric(e) => {
            let mut stats = ScanStats::default();
            let v = eval(op, e, &[time_ns], &mut stats).await?;
            within_series_limit(&v)?;
            Ok((
                match v {
                    Value::Scalar(x) => Answer::Scalar(time_ns, x),
                    Value::Vector(series) => Answer::Vector(
                        series
                            .into_iter()
                            .filter_map(|(labels, vals)| {
                                vals[0].map(|x| Series {
                                    labels,
                                    points: vec![(time_ns, x)],
                                })
                            })
                            .collect(),
                    ),
                },
                stats,
            ))
        }
    };
    count(&result);
    result
}

/// Loki's `max_query_series`: a metric answer holds at most this many series.
pub const MAX_SERIES: usize = 500;

fn within_series_limit(v: &Value) -> Result<(), QueryError> {
    if let Value::Vector(series) = v {
        let n = series
            .iter()
            .filter(|(_, vals)| vals.iter().any(Option::is_some))
            .count();
        if n > MAX_SERIES {
            return Err(QueryError::BadRequest(format!(
                "maximum of series ({MAX_SERIES}) reached for a single query"
            )));
        }
    }
    Ok(())
}

fn count(r: &Result<(Answer, ScanStats), QueryError>) {
    match r {
        Ok((_, s)) => {
            metrics::counter!(m::ARCHIVE_QUERY_BYTES_READ).increment(s.bytes_read);
            metrics::counter!(m::ARCHIVE_QUERIES, "result" => "ok").increment(1);
        }
        Err(QueryError::BadRequest(_)) => {
            metrics::counter!(m::ARCHIVE_QUERIES, "result" => "bad_request").increment(1)
        }
        Err(_) => metrics::counter!(m::ARCHIVE_QUERIES, "result" => "error").increment(1),
    }
}

/// Evaluation times: start, start + step, ... up to end (Loki's query_range).
fn steps(start: i64, end: i64, step: i64) -> Result<Vec<i64>, QueryError> {
    if step <= 0 {
        return Err(QueryError::BadRequest(
            "zero or negative query resolution step widths are not accepted. Try a positive \
             integer"
                .into(),
        ));
    }
    if end < start {
        return Err(QueryError::BadRequest(
            "end timestamp must not be before start time".into(),
        ));
    }
    let n = (end - start) / step + 1;
    if n > 11_000 {
        return Err(QueryError::BadRequest(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the \
             query resolution (?step=XX)"
                .into(),
        ));
    }
    Ok((0..n).map(|i| start + i * step).collect())
}

//! LogQL over the archive (`logql` parses it): which files can match (path: day, and `service`
//! / `cluster` when the selector pins them; row groups by their time statistics), then a scan
//! of `timestamp_ns`, `line`, `labels` and `structured_metadata` through the query's
//! pipeline. Log queries answer streams (newest or oldest `limit` lines), metric queries a
//! matrix (range) or a vector (instant), as Loki's HTTP API does (`http::loki`).
//!
//! Each row goes through the query's pipeline (`coldstore::pipeline`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{Array, BooleanArray, Int64Array, MapArray, StringArray};
use futures_util::TryStreamExt;
use opendal::{EntryMode, Operator};
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;

use super::read::Parts;

use super::layout::segment;
use super::logql::{
    AggOp, BinOp, Expr, Grouping, LineFilter, LogQuery, MatchOp, Matcher, MetricExpr, RangeFn,
    Stage,
};
use super::pipeline::run_pipeline;
pub use super::pipeline::{LabelSet, RowRef};
use crate::metrics as m;

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

// ---- files ----

/// An archive file that may hold rows of a query: path parts and the compacted flag.
#[derive(Debug, Clone)]
struct Candidate {
    path: String,
    dir: String,
    name: String,
}

/// Files whose path can match: day within [from, to], and service / env equal to what an
/// equality matcher on `service` / `cluster` pins (the path is built from those labels
/// first, `coldstore::layout`). Compacted files (8 hex digits in the name) come first in each
/// directory, so the inputs they replace can be skipped.
async fn candidates(
    op: &Operator,
    selector: &[Matcher],
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<Candidate>, QueryError> {
    let pinned = |label: &str| {
        selector
            .iter()
            .find(|m| m.name == label && m.op == MatchOp::Eq)
            .map(|m| segment(&m.value))
    };
    let (service, env) = (pinned("service"), pinned("cluster"));
    let (from_day, to_day) = (super::layout::day_of(from_ns), super::layout::day_of(to_ns));
    let mut out = Vec::new();
    let mut lister = op.lister_with("").recursive(true).await?;
    while let Some(entry) = lister.try_next().await? {
        if entry.metadata().mode() != EntryMode::FILE {
            continue;
        }
        let path = entry.path().trim_start_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        let [e, s, y, mo, d, file] = parts.as_slice() else {
            continue;
        };
        if !(file.ends_with(".snappy.parquet") || file.ends_with(".zstd.parquet")) {
            continue;
        }
        let day = match (y.parse(), mo.parse(), d.parse()) {
            (Ok(y), Ok(mo), Ok(d)) => chrono::NaiveDate::from_ymd_opt(y, mo, d),
            _ => None,
        };
        let Some(day) = day else { continue };
        if day < from_day
            || day > to_day
            || service.as_deref().is_some_and(|x| x != *s)
            || env.as_deref().is_some_and(|x| x != *e)
        {
            continue;
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        out.push(Candidate {
            path: entry.path().to_owned(),
            dir: dir.to_owned(),
            name: name.to_owned(),
        });
    }
    let compacted = |c: &Candidate| {
        c.name
            .split('.')
            .next()
            .and_then(|stem| stem.split_once('-'))
            .is_some_and(|(_, hex)| hex.len() == 8)
    };
    out.sort_by(|a, b| (&a.dir, !compacted(a), &a.name).cmp(&(&b.dir, !compacted(b), &b.name)));
    Ok(out)
}

/// What a scan reads: the stream selector, and the line filters that come before any parser
/// (checked on the raw line first, before a row's labels are even decoded).
pub struct Filter {
    pub selector: Vec<Matcher>,
    pub lines: Vec<LineFilter>,
}

impl Filter {
    fn of(q: &LogQuery) -> Arc<Filter> {
        let lines = q
            .stages
            .iter()
            .map_while(|s| match s {
                Stage::Line(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        Arc::new(Filter {
            selector: q.selector.clone(),
            lines,
        })
    }

    fn selector(selector: Vec<Matcher>) -> Arc<Filter> {
        Arc::new(Filter {
            selector,
            lines: Vec::new(),
        })
    }
}

/// What a scan feeds rows to; it moves to a blocking thread for each file and back.
trait Visitor: Send + 'static {
    fn row(&mut self, r: &RowRef<'_>);
}

/// Reads every candidate file of `q`'s selector overlapping [from, to] (inclusive) and feeds
/// the rows whose stream matches and whose time is within to `v`.
async fn scan<V: Visitor>(
    op: &Operator,
    filter: Arc<Filter>,
    from_ns: i64,
    to_ns: i64,
    want_metadata: bool,
    mut v: V,
    stats: &mut ScanStats,
) -> Result<V, QueryError> {
    let mut superseded: HashSet<(String, String)> = HashSet::new();
    for c in candidates(op, &filter.selector, from_ns, to_ns).await? {
        if superseded.contains(&(c.dir.clone(), c.name.clone())) {
            continue;
        }
        // Footer first, then only the chunks of the columns read in the row groups whose
        // time statistics overlap: a file is never read whole.
        let mut wanted = vec!["timestamp_ns", "line", "labels"];
        if want_metadata {
            wanted.push("structured_metadata");
        }
        let keep =
            |rg: &RowGroupMetaData| overlaps(rg, from_ns, to_ns) && may_hold(rg, &filter.selector);
        let parts = Parts::fetch(op, &c.path, &wanted, keep)
            .await
            .map_err(|e| QueryError::File {
                path: c.path.clone(),
                msg: e.to_string(),
            })?;
        let Some(parts) = parts else {
            continue; // gone meanwhile (a compaction's delete)
        };
        stats.files += 1;
        stats.bytes_read += parts.bytes_read;
        let replaces = super::parquet::compacted_from(parts.meta.file_metadata());
        superseded.extend(replaces.into_iter().map(|n| (c.dir.clone(), n)));
        if parts.row_groups.is_empty() {
            continue;
        }
        let sel = filter.clone();
        let path = c.path.clone();
        let (back, s) = tokio::task::spawn_blocking(move || {
            let mut s = ScanStats::default();
            let r = scan_file(parts, &sel, from_ns, to_ns, want_metadata, &mut v, &mut s);
            r.map(|()| (v, s))
        })
        .await
        .map_err(|e| QueryError::Worker(e.to_string()))?
        .map_err(|msg| QueryError::File { path, msg })?;
        v = back;
        stats.add(&s);
    }
    Ok(v)
}

fn string_col<'a>(b: &'a arrow_array::RecordBatch, name: &str) -> Result<&'a StringArray, String> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| format!("no {name} column"))
}

fn map_col<'a>(b: &'a arrow_array::RecordBatch, name: &str) -> Option<&'a MapArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<MapArray>())
}

/// The entries of row `i` of a string -> string map column; None when it is not one.
fn map_entries(
    m: &MapArray,
    i: usize,
) -> Option<(std::ops::Range<usize>, &StringArray, &StringArray)> {
    let offs = m.value_offsets();
    let (a, b) = (offs[i] as usize, offs[i + 1] as usize);
    let keys = m.keys().as_any().downcast_ref::<StringArray>()?;
    let vals = m.values().as_any().downcast_ref::<StringArray>()?;
    Some((a..b, keys, vals))
}

/// One file: the row groups whose time range overlaps, rows matched by stream selector
/// (evaluated once per distinct label set). Returns the names this file replaces.
/// Whether a row group's time statistics overlap [from, to] (true without statistics).
fn overlaps(rg: &RowGroupMetaData, from_ns: i64, to_ns: i64) -> bool {
    let ts = rg
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "timestamp_ns");
    match ts.and_then(|c| c.statistics()) {
        Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
            (Some(min), Some(max)) => *max >= from_ns && *min <= to_ns,
            _ => true,
        },
        _ => true,
    }
}

/// Whether a row group can hold rows the selector's `=` matchers on `hostname` and `level`
/// accept, by those promoted columns' min/max statistics (the columns hold the labels'
/// values, so a value outside [min, max] is in no row). True without statistics. `label=""`
/// is never used to prune: it matches rows without the label, whose `level` column may still
/// hold a `detected_level`.
fn may_hold(rg: &RowGroupMetaData, selector: &[Matcher]) -> bool {
    selector
        .iter()
        .filter(|m| m.op == MatchOp::Eq && !m.value.is_empty())
        .filter(|m| m.name == "hostname" || m.name == "level")
        .all(|m| {
            let stats = rg
                .columns()
                .iter()
                .find(|c| c.column_path().string() == m.name)
                .and_then(|c| c.statistics());
            match stats {
                Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) => {
                        let v = m.value.as_bytes();
                        min.data() <= v && v <= max.data()
                    }
                    // Only nulls: no row has the label, so `label="v"` matches none.
                    _ => s.null_count_opt().is_none(),
                },
                _ => true,
            }
        })
}

fn scan_file<V: Visitor>(
    parts: Parts,
    filter: &Arc<Filter>,
    from_ns: i64,
    to_ns: i64,
    want_metadata: bool,
    v: &mut V,
    stats: &mut ScanStats,
) -> Result<(), String> {
    let builder = parts.builder().map_err(|e| e.to_string())?;
    let schema = builder.parquet_schema();
    let mut wanted = vec!["timestamp_ns", "line", "labels"];
    if want_metadata {
        wanted.push("structured_metadata");
    }
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(schema, roots);
    // With line filters, only `timestamp_ns` and `line` are decoded for every row (a row
    // filter); the labels and metadata maps only for the rows that pass. The filter counts
    // what it scanned.
    let scanned = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let prefiltered = !filter.lines.is_empty();
    let mut builder = builder.with_projection(mask).with_batch_size(8192);
    if prefiltered {
        let cols: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() == "timestamp_ns" || f.name() == "line")
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), cols);
        let (f, counts) = (filter.clone(), scanned.clone());
        let pred = ArrowPredicateFn::new(mask, move |batch: arrow_array::RecordBatch| {
            let missing = |c: &str| arrow_schema::ArrowError::SchemaError(format!("no {c} column"));
            let ts = batch
                .column_by_name("timestamp_ns")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| missing("timestamp_ns"))?;
            let line = batch
                .column_by_name("line")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| missing("line"))?;
            counts
                .0
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            counts
                .1
                .fetch_add(line.value_data().len() as u64, Ordering::Relaxed);
            Ok((0..batch.num_rows())
                .map(|i| {
                    let t = ts.value(i);
                    Some(
                        t >= from_ns && t <= to_ns && f.lines.iter().all(|l| l.keep(line.value(i))),
                    )
                })
                .collect::<BooleanArray>())
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(pred)]));
    }
    let reader = builder.build().map_err(|e| e.to_string())?;
    // Stream label sets seen in this file: their bytes -> (labels, selector matches).
    let mut streams: HashMap<Vec<u8>, (Arc<LabelSet>, bool)> = HashMap::new();
    let mut key = Vec::new();
    let mut md: Vec<(String, String)> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let ts = batch
            .column_by_name("timestamp_ns")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or("no timestamp_ns column")?;
        let line = string_col(&batch, "line")?;
        let labels = map_col(&batch, "labels").ok_or("no labels column")?;
        let metadata = map_col(&batch, "structured_metadata");
        if !prefiltered {
            stats.rows_scanned += batch.num_rows() as u64;
            stats.line_bytes_scanned += line.value_data().len() as u64;
        }
        for i in 0..batch.num_rows() {
            let t = ts.value(i);
            if t < from_ns || t > to_ns {
                continue;
            }
            let text = line.value(i);
            if !filter.lines.iter().all(|f| f.keep(text)) {
                continue;
            }
            let (range, k, val) = map_entries(labels, i).ok_or("labels is not a string map")?;
            key.clear();
            for j in range.clone() {
                key.extend_from_slice(k.value(j).as_bytes());
                key.push(0);
                key.extend_from_slice(val.value(j).as_bytes());
                key.push(1);
            }
            let (stream, ok) = match streams.get(&key) {
                Some(s) => s,
                None => {
                    let set: LabelSet = range
                        .map(|j| (k.value(j).to_owned(), val.value(j).to_owned()))
                        .collect();
                    let ok = filter
                        .selector
                        .iter()
                        .all(|m| m.matches(set.get(&m.name).map_or("", String::as_str)));
                    streams.entry(key.clone()).or_insert((Arc::new(set), ok))
                }
            };
            if !*ok {
                continue;
            }
            md.clear();
            if let Some((r, mk, mv)) = metadata.and_then(|mm| map_entries(mm, i)) {
                md.extend(r.map(|j| (mk.value(j).to_owned(), mv.value(j).to_owned())));
            }
            v.row(&RowRef {
                ts_ns: t,
                line: text,
                stream,
                metadata: &md,
            });
        }
    }
    if prefiltered {
        stats.rows_scanned += scanned.0.load(Ordering::Relaxed);
        stats.line_bytes_scanned += scanned.1.load(Ordering::Relaxed);
    }
    Ok(())
}

// ---- log queries ----

struct LogCollector {
    q: Arc<LogQuery>,
    limit: usize,
    direction: Direction,
    entries: Vec<(Arc<LabelSet>, Entry)>,
}

impl LogCollector {
    fn prune(&mut self) {
        match self.direction {
            Direction::Backward => self.entries.sort_by_key(|e| std::cmp::Reverse(e.1.ts_ns)),
            Direction::Forward => self.entries.sort_by_key(|e| e.1.ts_ns),
        }
        self.entries.truncate(self.limit);
    }
}

impl Visitor for LogCollector {
    fn row(&mut self, r: &RowRef<'_>) {
        let Some(p) = run_pipeline(&self.q, r) else {
            return;
        };
        self.entries.push((
            r.stream.clone(),
            Entry {
                ts_ns: r.ts_ns,
                line: p.line.unwrap_or_else(|| r.line.to_owned()),
                metadata: r.metadata.iter().cloned().collect(),
                parsed: p.parsed.into_iter().collect(),
            },
        ));
        if self.entries.len() >= self.limit.saturating_mul(4).max(4096) {
            self.prune();
        }
    }
}

async fn log_query(
    op: &Operator,
    q: &LogQuery,
    w: Window,
) -> Result<(Answer, ScanStats), QueryError> {
    let mut stats = ScanStats::default();
    let c = LogCollector {
        q: Arc::new(q.clone()),
        limit: w.limit.max(1),
        direction: w.direction,
        entries: Vec::new(),
    };
    // Loki's range for log queries: start inclusive, end exclusive.
    let mut c = scan(
        op,
        Filter::of(q),
        w.start_ns,
        w.end_ns - 1,
        true,
        c,
        &mut stats,
    )
    .await?;
    c.prune();
    let mut streams: BTreeMap<Arc<LabelSet>, Vec<Entry>> = BTreeMap::new();
    for (labels, e) in c.entries {
        streams.entry(labels).or_default().push(e);
    }
    Ok((
        Answer::Streams(
            streams
                .into_iter()
                .map(|(labels, entries)| Stream { labels, entries })
                .collect(),
        ),
        stats,
    ))
}

// ---- metric queries ----

enum Value {
    Scalar(f64),
    /// Series with one optional value per step.
    Vector(Vec<(LabelSet, Vec<Option<f64>>)>),
}

/// Per output label set, every (time, value) of matching lines: the line's bytes, or the
/// unwrapped label's number (lines whose label is missing or not a number give no sample).
struct MetricCollector {
    q: Arc<LogQuery>,
    series: HashMap<LabelSet, Vec<(i64, f64)>>,
    last: Option<(Arc<LabelSet>, LabelSet)>,
}

impl Visitor for MetricCollector {
    fn row(&mut self, r: &RowRef<'_>) {
        let Some(mut p) = run_pipeline(&self.q, r) else {
            return;
        };
        let value = match &self.q.unwrap {
            None => p.line.as_deref().unwrap_or(r.line).len() as f64,
            Some(name) => {
                let v = super::pipeline::label(r, &p.parsed, name);
                match v.and_then(|v| v.trim().parse::<f64>().ok()) {
                    Some(x) => x,
                    None => return,
                }
            }
        };
        let key = if p.parsed.is_empty() && r.metadata.is_empty() && self.q.unwrap.is_none() {
            // Most rows: the stream's own labels; skip rebuilding them per row.
            match &self.last {
                Some((arc, set)) if Arc::ptr_eq(arc, r.stream) => set.clone(),
                _ => {
                    let set = (**r.stream).clone();
                    self.last = Some((r.stream.clone(), set.clone()));
                    set
                }
            }
        } else {
            let mut set = (**r.stream).clone();
            set.extend(r.metadata.iter().cloned());
            if let Some(name) = &self.q.unwrap {
                // The unwrapped label is the sample, not a label of its series.
                p.parsed.retain(|(k, _)| k != name);
                set.remove(name);
            }
            set.extend(p.parsed);
            set
        };
        self.series.entry(key).or_default().push((r.ts_ns, value));
    }
}

/// Evaluates a metric expression at `steps` (boxed: it recurses).
fn eval<'a>(
    op: &'a Operator,
    e: &'a MetricExpr,
    steps: &'a [i64],
    stats: &'a mut ScanStats,
) -> futures_util::future::BoxFuture<'a, Result<Value, QueryError>> {
    Box::pin(async move {
        match e {
            MetricExpr::Number(x) => Ok(Value::Scalar(*x)),
            MetricExpr::Vector(x) => Ok(Value::Vector(vec![(
                LabelSet::new(),
                vec![Some(*x); steps.len()],
            )])),
            MetricExpr::Range {
                func,
                query,
                range,
                grouping,
            } => range_agg(op, *func, query, *range, grouping.as_ref(), steps, stats).await,
            MetricExpr::Agg {
                op: agg,
                grouping,
                k,
                inner,
            } => match eval(op, inner, steps, stats).await? {
                Value::Scalar(_) => Err(QueryError::BadRequest(
                    "aggregations take a vector, not a number".into(),
                )),
                Value::Vector(v) => {
                    Ok(Value::Vector(aggregate(*agg, grouping, *k, v, steps.len())))
                }
            },
            MetricExpr::Binary {
                op: bop,
                bool_,
                lhs,
                rhs,
            } => {
                let l = eval(op, lhs, steps, stats).await?;
                let r = eval(op, rhs, steps, stats).await?;
                Ok(binary(*bop, *bool_, l, r))
            }
        }
    })
}

async fn range_agg(
    op: &Operator,
    func: RangeFn,
    q: &LogQuery,
    range: std::time::Duration,
    grouping: Option<&Grouping>,
    steps: &[i64],
    stats: &mut ScanStats,
) -> Result<Value, QueryError> {
    let range_ns = i64::try_from(range.as_nanos()).unwrap_or(i64::MAX);
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    let want_metadata = true;
    let c = MetricCollector {
        q: Arc::new(q.clone()),
        series: HashMap::new(),
        last: None,
    };
    // Each step t counts the lines in (t - range, t].
    let c = scan(
        op,
        Filter::of(q),
        first.saturating_sub(range_ns).saturating_add(1),
        last,
        want_metadata,
        c,
        stats,
    )
    .await?;
    let mut series = c.series;
    if let Some(g) = grouping {
        // `quantile_over_time(...) by (level)`: one series of samples per group.
        let mut grouped: HashMap<LabelSet, Vec<(i64, f64)>> = HashMap::new();
        for (labels, pts) in series {
            grouped
                .entry(group_key(&labels, g))
                .or_default()
                .extend(pts);
        }
        series = grouped;
    }
    if func == RangeFn::AbsentOverTime {
        return Ok(Value::Vector(absent(q, range_ns, steps, series)));
    }
    let secs = range.as_secs_f64();
    let mut out = Vec::with_capacity(series.len());
    for (labels, mut pts) in series {
        pts.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut vals = Vec::with_capacity(steps.len());
        let (mut lo, mut hi) = (0usize, 0usize);
        let (mut n, mut bytes) = (0u64, 0f64);
        for &t in steps {
            while hi < pts.len() && pts[hi].0 <= t {
                n += 1;
                bytes += pts[hi].1;
                hi += 1;
            }
            while lo < hi && pts[lo].0 <= t - range_ns {
                n -= 1;
                bytes -= pts[lo].1;
                lo += 1;
            }
            if n == 0 {
                vals.push(None);
                continue;
            }
            let window = || pts[lo..hi].iter().map(|p| p.1);
            vals.push(Some(match func {
                RangeFn::CountOverTime => n as f64,
                RangeFn::Rate => n as f64 / secs,
                RangeFn::BytesOverTime => bytes.round(),
                RangeFn::BytesRate => bytes.round() / secs,
                RangeFn::SumOverTime => window().sum(),
                RangeFn::AvgOverTime => window().sum::<f64>() / n as f64,
                RangeFn::MinOverTime => window().fold(f64::INFINITY, f64::min),
                RangeFn::MaxOverTime => window().fold(f64::NEG_INFINITY, f64::max),
                RangeFn::FirstOverTime => pts[lo].1,
                RangeFn::LastOverTime => pts[hi - 1].1,
                RangeFn::StdvarOverTime => variance(window(), n),
                RangeFn::StddevOverTime => variance(window(), n).sqrt(),
                RangeFn::QuantileOverTime(phi) => quantile(phi, window().collect()),
                RangeFn::AbsentOverTime => 1.0,
            }));
        }
        out.push((labels, vals));
    }
    Ok(Value::Vector(out))
}

/// Population variance, as Prometheus' `stdvar_over_time`.
fn variance(values: impl Iterator<Item = f64> + Clone, n: u64) -> f64 {
    let mean = values.clone().sum::<f64>() / n as f64;
    values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64
}

/// Prometheus' φ-quantile with linear interpolation between the closest ranks; φ outside
/// [0, 1] gives -Inf / +Inf.
fn quantile(phi: f64, mut v: Vec<f64>) -> f64 {
    if phi.is_nan() || v.is_empty() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    v.sort_by(f64::total_cmp);
    let rank = phi * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let w = rank - lo as f64;
    v[lo] * (1.0 - w) + v[hi] * w
}

/// `absent_over_time`: 1 at the steps whose range holds no line at all, one series labelled
/// by the selector's equality matchers (Loki's answer).
fn absent(
    q: &LogQuery,
    range_ns: i64,
    steps: &[i64],
    series: HashMap<LabelSet, Vec<(i64, f64)>>,
) -> Vec<(LabelSet, Vec<Option<f64>>)> {
    let mut times: Vec<i64> = series.into_values().flatten().map(|p| p.0).collect();
    times.sort_unstable();
    let vals: Vec<Option<f64>> = steps
        .iter()
        .map(|&t| {
            let from = times.partition_point(|&x| x <= t - range_ns);
            let to = times.partition_point(|&x| x <= t);
            (from == to).then_some(1.0)
        })
        .collect();
    if vals.iter().all(Option::is_none) {
        return Vec::new();
    }
    let labels = q
        .selector
        .iter()
        .filter(|m| m.op == super::logql::MatchOp::Eq)
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    vec![(labels, vals)]
}

fn group_key(labels: &LabelSet, g: &Grouping) -> LabelSet {
    match g {
        Grouping::All => LabelSet::new(),
        Grouping::By(names) => names
            .iter()
            .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
        Grouping::Without(names) => labels
            .iter()
            .filter(|(k, _)| !names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn aggregate(
    op: AggOp,
    g: &Grouping,
    k: usize,
    input: Vec<(LabelSet, Vec<Option<f64>>)>,
    n: usize,
) -> Vec<(LabelSet, Vec<Option<f64>>)> {
    if matches!(op, AggOp::Topk | AggOp::Bottomk) {
        // Per step and group, keep the k largest (smallest) series; series keep their labels.
        let mut keep = vec![vec![false; n]; input.len()];
        let mut groups: BTreeMap<LabelSet, Vec<usize>> = BTreeMap::new();
        for (i, (l, _)) in input.iter().enumerate() {
            groups.entry(group_key(l, g)).or_default().push(i);
        }
        for members in groups.values() {
            // `s` indexes each member's values and `keep` alike.
            #[allow(clippy::needless_range_loop)]
            for s in 0..n {
                let mut vals: Vec<(f64, usize)> = members
                    .iter()
                    .filter_map(|&i| input[i].1[s].map(|v| (v, i)))
                    .collect();
                // Ties go to the later label set: Loki breaks them by its series order,
                // which on the corpus of tests/fixtures/loki-answers is that one.
                vals.sort_by(|a, b| {
                    let o = a.0.total_cmp(&b.0);
                    let o = if op == AggOp::Topk { o.reverse() } else { o };
                    o.then_with(|| input[b.1].0.cmp(&input[a.1].0))
                });
                for (_, i) in vals.into_iter().take(k) {
                    keep[i][s] = true;
                }
            }
        }
        return input
            .into_iter()
            .enumerate()
            .map(|(i, (l, vals))| {
                let v = vals
                    .into_iter()
                    .enumerate()
                    .map(|(s, v)| v.filter(|_| keep[i][s]))
                    .collect();
                (l, v)
            })
            .filter(|(_, v): &(LabelSet, Vec<Option<f64>>)| v.iter().any(Option::is_some))
            .collect();
    }
    // (sum, count, min, max) per group and step.
    // (sum, count, min, max)
    type Acc = Option<(f64, f64, f64, f64)>;
    let mut acc: BTreeMap<LabelSet, Vec<Acc>> = BTreeMap::new();
    for (l, vals) in input {
        let slot = acc.entry(group_key(&l, g)).or_insert_with(|| vec![None; n]);
        for (s, v) in vals.into_iter().enumerate() {
            if let Some(x) = v {
                slot[s] = Some(match slot[s] {
                    None => (x, 1.0, x, x),
                    Some((sum, c, mn, mx)) => (sum + x, c + 1.0, mn.min(x), mx.max(x)),
                });
            }
        }
    }
    acc.into_iter()
        .map(|(l, vals)| {
            let v = vals
                .into_iter()
                .map(|a| {
                    a.map(|(sum, c, mn, mx)| match op {
                        AggOp::Sum => sum,
                        AggOp::Count => c,
                        AggOp::Min => mn,
                        AggOp::Max => mx,
                        _ => sum / c,
                    })
                })
                .collect();
            (l, v)
        })
        .collect()
}

fn apply(op: BinOp, bool_: bool, a: f64, b: f64) -> Option<f64> {
    match op {
        BinOp::Add => Some(a + b),
        BinOp::Sub => Some(a - b),
        BinOp::Mul => Some(a * b),
        BinOp::Div => Some(a / b),
        BinOp::Cmp(c) => {
            let t = c.test(a, b);
            if bool_ {
                Some(if t { 1.0 } else { 0.0 })
            } else {
                t.then_some(a)
            }
        }
    }
}

/// Vector op vector matches series with equal labels (one to one); vector op number applies
/// to every value; comparisons without `bool` filter.
fn binary(op: BinOp, bool_: bool, l: Value, r: Value) -> Value {
    match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            let x = match op {
                BinOp::Cmp(c) => {
                    if c.test(a, b) {
                        1.0
                    } else {
                        0.0
                    }
                }
                _ => apply(op, false, a, b).unwrap_or(f64::NAN),
            };
            Value::Scalar(x)
        }
        (Value::Vector(v), Value::Scalar(b)) => Value::Vector(
            v.into_iter()
                .map(|(l, vals)| {
                    let vals = vals
                        .into_iter()
                        .map(|a| a.and_then(|a| apply(op, bool_, a, b)))
                        .collect();
                    (l, vals)
                })
                .collect(),
        ),
        (Value::Scalar(a), Value::Vector(v)) => Value::Vector(
            v.into_iter()
                .map(|(l, vals)| {
                    let vals = vals
                        .into_iter()
                        .map(|b| {
                            b.and_then(|b| {
                                // `2 < v` filters on v's value, keeping v.
                                match op {
                                    BinOp::Cmp(c) if !bool_ => c.test(a, b).then_some(b),
                                    _ => apply(op, bool_, a, b),
                                }
                            })
                        })
                        .collect();
                    (l, vals)
                })
                .collect(),
        ),
        (Value::Vector(lv), Value::Vector(rv)) => {
            let rmap: HashMap<LabelSet, Vec<Option<f64>>> = rv.into_iter().collect();
            Value::Vector(
                lv.into_iter()
                    .filter_map(|(l, vals)| {
                        let r = rmap.get(&l)?;
                        let vals = vals
                            .into_iter()
                            .zip(r)
                            .map(|(a, b)| match (a, b) {
                                (Some(a), Some(b)) => apply(op, bool_, a, *b),
                                _ => None,
                            })
                            .collect();
                        Some((l, vals))
                    })
                    .collect(),
            )
        }
    }
}

fn to_matrix(v: Value, steps: &[i64]) -> Answer {
    let series = match v {
        Value::Scalar(x) => vec![Series {
            labels: LabelSet::new(),
            points: steps.iter().map(|&t| (t, x)).collect(),
        }],
        Value::Vector(v) => v
            .into_iter()
            .map(|(labels, vals)| Series {
                labels,
                points: steps
                    .iter()
                    .zip(vals)
                    .filter_map(|(&t, v)| v.map(|x| (t, x)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect(),
    };
    Answer::Matrix(series)
}

// ---- labels and series ----

/// Distinct stream label sets in [from, to] matching any of `selectors` (all when empty).
pub async fn series(
    op: &Operator,
    selectors: &[Vec<Matcher>],
    from_ns: i64,
    to_ns: i64,
) -> Result<(Vec<LabelSet>, ScanStats), QueryError> {
    struct Sets(HashSet<Arc<LabelSet>>, Option<Arc<LabelSet>>);
    impl Visitor for Sets {
        fn row(&mut self, r: &RowRef<'_>) {
            if self.1.as_ref().is_some_and(|l| Arc::ptr_eq(l, r.stream)) {
                return;
            }
            self.1 = Some(r.stream.clone());
            self.0.insert(r.stream.clone());
        }
    }
    let mut stats = ScanStats::default();
    let mut all: HashSet<Arc<LabelSet>> = HashSet::new();
    let sels: Vec<Vec<Matcher>> = if selectors.is_empty() {
        vec![Vec::new()]
    } else {
        selectors.to_vec()
    };
    for sel in sels {
        let s = scan(
            op,
            Filter::selector(sel),
            from_ns,
            to_ns,
            false,
            Sets(HashSet::new(), None),
            &mut stats,
        )
        .await?;
        all.extend(s.0);
    }
    let mut out: Vec<LabelSet> = all.into_iter().map(|a| (*a).clone()).collect();
    out.sort();
    Ok((out, stats))
}

/// Label names, or one label's values, of the streams in [from, to] (matching `selector`).
pub async fn labels(
    op: &Operator,
    name: Option<&str>,
    selector: &[Matcher],
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<String>, QueryError> {
    let sels = if selector.is_empty() {
        Vec::new()
    } else {
        vec![selector.to_vec()]
    };
    let (sets, _) = series(op, &sels, from_ns, to_ns).await?;
    let mut out: Vec<String> = match name {
        None => sets.into_iter().flat_map(|s| s.into_keys()).collect(),
        Some(n) => sets.into_iter().filter_map(|mut s| s.remove(n)).collect(),
    };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coldstore::logql::Cmp;
    use crate::coldstore::parquet::{FileEncoder, Promoted, Provenance, Row};

    /// 2026-06-21T00:00:00Z, the test files' day.
    const DAY: i64 = 1_782_000_000_000_000_000;

    /// The lines of a log query's answer, in order.
    fn lines_of(answer: Answer) -> Vec<String> {
        let Answer::Streams(streams) = answer else {
            panic!("a log query answers streams");
        };
        streams
            .into_iter()
            .flat_map(|s| s.entries.into_iter().map(|e| e.line))
            .collect()
    }

    /// Writes `groups` as one file of service `payment`, a row group each (as the archive
    /// stage streams them); returns an operator on it and the file's size.
    async fn write_groups(dir: &std::path::Path, groups: Vec<Vec<Row>>) -> (Operator, u64) {
        let op = crate::coldstore::storage::operator(dir.to_str().unwrap(), 9870).unwrap();
        let promoted = Promoted {
            service: "payment",
            env: "prod",
        };
        let mut enc = FileEncoder::new(Default::default()).unwrap();
        let mut file = Vec::new();
        let last = groups.iter().map(Vec::len).sum::<usize>() as i64 - 1;
        for mut rows in groups {
            file.extend(enc.row_group(&mut rows, &promoted).unwrap());
        }
        file.extend(
            enc.finish(Provenance {
                partition: 0,
                first_offset: 0,
                last_offset: last,
            })
            .unwrap(),
        );
        let size = file.len() as u64;
        let path = crate::coldstore::layout::file_path(
            "prod",
            "payment",
            DAY,
            0,
            0,
            0,
            Default::default(),
        );
        op.write(&path, file).await.unwrap();
        (op, size)
    }

    #[actix_web::test]
    async fn a_level_selector_skips_row_groups_whose_level_statistics_exclude_it() {
        let dir = tempfile::tempdir().unwrap();
        let labels = |level: &str| {
            Arc::new(BTreeMap::from([
                ("service".to_owned(), "payment".to_owned()),
                ("level".to_owned(), level.to_owned()),
            ]))
        };
        // Row groups: all info; info with two errors; all warn.
        let mut mixed = ["info"; 100];
        mixed[10] = "error";
        mixed[90] = "error";
        let groups = [["info"; 100], mixed, ["warn"; 100]]
            .iter()
            .enumerate()
            .map(|(g, levels)| {
                levels
                    .iter()
                    .enumerate()
                    .map(|(i, level)| Row {
                        ts_ns: DAY + (g * 100 + i) as i64 * 1_000_000,
                        line: format!("group {g} row {i} {level}").into_bytes(),
                        labels: labels(level),
                        metadata: Vec::new(),
                        partition: 0,
                        offset: (g * 100 + i) as i64,
                    })
                    .collect()
            })
            .collect();
        let (op, _) = write_groups(dir.path(), groups).await;
        let w = Window {
            start_ns: DAY,
            end_ns: DAY + 3_600_000_000_000,
            step_ns: 1_000_000_000,
            limit: 100,
            direction: Direction::Forward,
        };
        let expr = crate::coldstore::logql::parse(r#"{service="payment", level="error"}"#).unwrap();
        let (answer, stats) = query_range(&op, &expr, w).await.unwrap();
        let lines = lines_of(answer);
        assert_eq!(lines, ["group 1 row 10 error", "group 1 row 90 error"]);
        assert_eq!(
            stats.rows_scanned, 100,
            "only the row group that can hold errors"
        );
        // Without the level matcher every row group is read.
        let expr = crate::coldstore::logql::parse(r#"{service="payment"} |= "error""#).unwrap();
        let (_, stats) = query_range(&op, &expr, w).await.unwrap();
        assert_eq!(stats.rows_scanned, 300);
    }

    #[actix_web::test]
    async fn a_narrow_query_reads_the_footer_and_the_row_groups_it_needs_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let labels = Arc::new(BTreeMap::from([(
            "service".to_owned(),
            "payment".to_owned(),
        )]));
        // 20 row groups of a minute each, 5000 lines apiece.
        let groups = (0..20i64)
            .map(|g| {
                (0..5000i64)
                    .map(|i| Row {
                        ts_ns: DAY + g * 60_000_000_000 + i * 10_000_000,
                        line: format!("minute {g} line {i} payment {} accepted", i * 7919 % 1000)
                            .into_bytes(),
                        labels: labels.clone(),
                        metadata: Vec::new(),
                        partition: 0,
                        offset: g * 5000 + i,
                    })
                    .collect()
            })
            .collect();
        let (op, size) = write_groups(dir.path(), groups).await;
        let expr = crate::coldstore::logql::parse(r#"{service="payment"} |= "line 42 ""#).unwrap();
        // Minute 7 only.
        let w = Window {
            start_ns: DAY + 7 * 60_000_000_000,
            end_ns: DAY + 8 * 60_000_000_000 - 1,
            step_ns: 1_000_000_000,
            limit: 100,
            direction: Direction::Forward,
        };
        let (answer, stats) = query_range(&op, &expr, w).await.unwrap();
        let lines = lines_of(answer);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("minute 7 line 42 "), "{lines:?}");
        assert_eq!(stats.files, 1);
        assert_eq!(stats.rows_scanned, 5000, "one row group scanned");
        assert!(
            stats.bytes_read * 5 < size,
            "read {} of {size} bytes",
            stats.bytes_read
        );
    }

    #[test]
    fn range_windows_and_aggregations() {
        let steps = [10, 20, 30];
        let v = vec![
            (
                LabelSet::from([("a".into(), "1".into())]),
                vec![Some(1.0), None, Some(3.0)],
            ),
            (
                LabelSet::from([("a".into(), "2".into())]),
                vec![Some(2.0), Some(5.0), None],
            ),
        ];
        let sum = aggregate(AggOp::Sum, &Grouping::All, 0, v.clone(), 3);
        assert_eq!(sum[0].1, vec![Some(3.0), Some(5.0), Some(3.0)]);
        let top = aggregate(AggOp::Topk, &Grouping::All, 1, v.clone(), 3);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].1, vec![None, None, Some(3.0)]);
        let Value::Vector(f) = binary(
            BinOp::Cmp(Cmp::Gt),
            false,
            Value::Vector(v),
            Value::Scalar(1.5),
        ) else {
            panic!()
        };
        assert_eq!(f[0].1, vec![None, None, Some(3.0)]);
        let Answer::Matrix(m) = to_matrix(Value::Vector(f), &steps) else {
            panic!()
        };
        assert_eq!(m[1].points, vec![(10, 2.0), (20, 5.0)]);
        assert!(steps_ok());
    }

    fn steps_ok() -> bool {
        super::steps(0, 100, 25).unwrap() == vec![0, 25, 50, 75, 100]
            && super::steps(0, 100, 0).is_err()
            && super::steps(100, 0, 1).is_err()
    }
}

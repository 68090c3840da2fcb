//! Reading the candidate files: row groups that can match, rows through the selector and the
//! raw-line filters, fed to a [`Visitor`] (log lines, metric samples, label sets).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, Int64Array, MapArray, StringArray};
use opendal::Operator;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::RowGroupMetaData;

use super::pipeline::{LabelSet, RowRef};
use super::plan::{candidates, may_hold, overlaps};
use super::{QueryError, ScanStats};
use crate::coldstore::read::Parts;
use crate::logql::{LineFilter, LogQuery, Matcher, Stage};

/// What a scan reads: the stream selector, and the line filters that come before any parser
/// (checked on the raw line first, before a row's labels are even decoded).
pub struct Filter {
    pub selector: Vec<Matcher>,
    pub lines: Vec<LineFilter>,
}

impl Filter {
    pub(super) fn of(q: &LogQuery) -> Arc<Filter> {
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

    pub(super) fn selector(selector: Vec<Matcher>) -> Arc<Filter> {
        Arc::new(Filter {
            selector,
            lines: Vec::new(),
        })
    }
}

/// What a scan feeds rows to; it moves to a blocking thread for each file and back.
pub(super) trait Visitor: Send + 'static {
    fn row(&mut self, r: &RowRef<'_>);
}

/// Reads every candidate file of `q`'s selector overlapping [from, to] (inclusive) and feeds
/// the rows whose stream matches and whose time is within to `v`.
pub(super) async fn scan<V: Visitor>(
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
        let replaces = crate::coldstore::parquet::compacted_from(parts.meta.file_metadata());
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

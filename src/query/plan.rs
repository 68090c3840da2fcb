//! Which files and row groups can hold a query's rows: path (day, and the `service` /
//! `cluster` a selector pins), row-group time and promoted-column statistics.

use opendal::Operator;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;

use super::QueryError;
use crate::coldstore::layout::{self, segment};
use crate::coldstore::read::is_data_file;
use crate::coldstore::walk;
use crate::logql::{MatchOp, Matcher};

/// An archive file that may hold rows of a query: path parts and the compacted flag.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) path: String,
    pub(super) dir: String,
    pub(super) name: String,
}

/// Files whose path can match: day within [from, to], and service / env equal to what an
/// equality matcher on `service` / `cluster` pins (the path is built from those labels
/// first, `coldstore::layout`). Compacted files (8 hex digits in the name) come first in each
/// directory, so the inputs they replace can be skipped.
pub(super) async fn candidates(
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
    let scope = walk::Scope {
        env: pinned("cluster"),
        service: pinned("service"),
        days: Some(layout::day_of(from_ns)..=layout::day_of(to_ns)),
    };
    let mut out: Vec<Candidate> = walk::files(op, &scope)
        .await?
        .into_iter()
        .filter(|f| is_data_file(f.name()))
        .map(|f| Candidate {
            dir: f.dir().to_owned(),
            name: f.name().to_owned(),
            path: f.path,
        })
        .collect();
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

/// Whether a row group's time statistics overlap [from, to] (true without statistics).
pub(super) fn overlaps(rg: &RowGroupMetaData, from_ns: i64, to_ns: i64) -> bool {
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
pub(super) fn may_hold(rg: &RowGroupMetaData, selector: &[Matcher]) -> bool {
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

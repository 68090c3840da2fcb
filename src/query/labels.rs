//! Label names, label values and series: distinct stream label sets in a window.

use std::collections::HashSet;
use std::sync::Arc;

use opendal::Operator;

use super::pipeline::{LabelSet, RowRef};
use super::scan::{scan, Filter, Visitor};
use super::{QueryError, ScanStats};
use crate::logql::Matcher;

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

//! Log queries: the newest (or oldest) `limit` lines per query, as streams.

use std::collections::BTreeMap;
use std::sync::Arc;

use opendal::Operator;

use super::pipeline::{run_pipeline, LabelSet, RowRef};
use super::scan::{scan, Filter, Visitor};
use super::{Answer, Direction, Entry, QueryError, ScanStats, Stream, Window};
use crate::logql::LogQuery;

struct LogCollector {
    q: Arc<LogQuery>,
    limit: usize,
    direction: Direction,
    entries: Vec<(Arc<LabelSet>, Entry)>,
}

impl LogCollector {
    /// Keeps the first `limit` entries in the query's direction, each (stream, time, line)
    /// once: as Loki answers, which drops a line pushed again with the same timestamp (a
    /// sender retrying a push whose first try was stored but not acknowledged) and merges
    /// replicas' copies of an entry.
    fn prune(&mut self) {
        let same_time = |a: &(Arc<LabelSet>, Entry), b: &(Arc<LabelSet>, Entry)| {
            a.0.cmp(&b.0).then_with(|| a.1.line.cmp(&b.1.line))
        };
        match self.direction {
            Direction::Backward => self
                .entries
                .sort_by(|a, b| b.1.ts_ns.cmp(&a.1.ts_ns).then_with(|| same_time(a, b))),
            Direction::Forward => self
                .entries
                .sort_by(|a, b| a.1.ts_ns.cmp(&b.1.ts_ns).then_with(|| same_time(a, b))),
        }
        self.entries
            .dedup_by(|a, b| a.1.ts_ns == b.1.ts_ns && a.1.line == b.1.line && a.0 == b.0);
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

pub(super) async fn log_query(
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

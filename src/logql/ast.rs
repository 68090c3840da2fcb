//! What a parsed LogQL query is.

use std::time::Duration;

use regex::Regex;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("parse error at position {pos}: {msg}")]
    Syntax { pos: usize, msg: String },
    #[error("not supported by the archive's query engine: {0}")]
    Unsupported(String),
}

pub(super) fn syntax<T>(pos: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError::Syntax {
        pos,
        msg: msg.into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    Nre,
}

/// `name op "value"`; regexes are anchored at both ends, as in Loki and Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        let re = match op {
            MatchOp::Re | MatchOp::Nre => Some(
                Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| format!("bad regex {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Against a label's value ("" when the label is absent, as in Loki).
    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::Nre, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }

    /// True when an empty value matches: the matcher then selects streams without the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

/// A line filter; substrings are searched with a prebuilt SIMD searcher (the scan's hot loop).
#[derive(Debug, Clone)]
pub enum LineFilter {
    Contains(Box<memchr::memmem::Finder<'static>>),
    NotContains(Box<memchr::memmem::Finder<'static>>),
    Matches(Regex),
    NotMatches(Regex),
}

impl LineFilter {
    pub fn keep(&self, line: &str) -> bool {
        match self {
            LineFilter::Contains(f) => f.find(line.as_bytes()).is_some(),
            LineFilter::NotContains(f) => f.find(line.as_bytes()).is_none(),
            LineFilter::Matches(r) => r.is_match(line),
            LineFilter::NotMatches(r) => !r.is_match(line),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    pub fn test(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
        }
    }
}

#[derive(Debug, Clone)]
pub enum LabelPred {
    Str(Matcher),
    Num { name: String, cmp: Cmp, value: f64 },
    And(Box<LabelPred>, Box<LabelPred>),
    Or(Box<LabelPred>, Box<LabelPred>),
}

/// One piece of a `line_format` template: text, or `{{.label}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Label(String),
}

/// One piece of a `pattern` expression: literal text, or `<name>` (`<_>`: matched, not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternPart {
    Lit(String),
    Capture(Option<String>),
}

#[derive(Debug, Clone)]
pub enum Stage {
    Line(LineFilter),
    Json,
    Logfmt,
    /// `| regexp "..."`: its named groups become labels.
    Regexp(Regex),
    /// `| pattern "<a> <_> [<b>]"`.
    Pattern(Vec<PatternPart>),
    Labels(LabelPred),
    LineFormat(Vec<Piece>),
}

#[derive(Debug, Clone)]
pub struct LogQuery {
    pub selector: Vec<Matcher>,
    pub stages: Vec<Stage>,
    /// `| unwrap label`, last in a range function's query: the samples are that label's
    /// numeric values instead of the lines.
    pub unwrap: Option<String>,
}

impl LogQuery {
    /// True when a stage adds labels (the output labels are not only the stream's own).
    pub fn parses(&self) -> bool {
        self.stages.iter().any(|s| {
            matches!(
                s,
                Stage::Json | Stage::Logfmt | Stage::Regexp(_) | Stage::Pattern(_)
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeFn {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
    /// 1 at the steps whose range holds no line, labelled by the selector's `=` matchers.
    AbsentOverTime,
    // Over unwrapped values:
    SumOverTime,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    FirstOverTime,
    LastOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime(f64),
}

impl RangeFn {
    /// Whether the function reads unwrapped values (`| unwrap label`) rather than lines.
    pub fn unwraps(self) -> bool {
        !matches!(
            self,
            RangeFn::CountOverTime
                | RangeFn::Rate
                | RangeFn::BytesOverTime
                | RangeFn::BytesRate
                | RangeFn::AbsentOverTime
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Count,
    Min,
    Max,
    Avg,
    Topk,
    Bottomk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    All,
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Cmp(Cmp),
}

#[derive(Debug, Clone)]
pub enum MetricExpr {
    Range {
        func: RangeFn,
        query: LogQuery,
        range: Duration,
        /// `by|without (...)` after an unwrapped range function: samples of a group are one
        /// series before the function applies.
        grouping: Option<Grouping>,
    },
    Agg {
        op: AggOp,
        grouping: Grouping,
        k: usize,
        inner: Box<MetricExpr>,
    },
    Binary {
        op: BinOp,
        /// `bool` modifier on a comparison: 0/1 instead of filtering.
        bool_: bool,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    Number(f64),
    /// `vector(n)`: one series without labels, `n` at every step (Grafana's "Save & test"
    /// of a Loki data source asks `vector(1)+vector(1)`).
    Vector(f64),
}

impl MetricExpr {
    /// Every log query inside, for planning which files to read.
    pub fn log_queries(&self) -> Vec<(&LogQuery, Duration)> {
        match self {
            MetricExpr::Range { query, range, .. } => vec![(query, *range)],
            MetricExpr::Agg { inner, .. } => inner.log_queries(),
            MetricExpr::Binary { lhs, rhs, .. } => {
                let mut v = lhs.log_queries();
                v.extend(rhs.log_queries());
                v
            }
            MetricExpr::Number(_) | MetricExpr::Vector(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Expr {
    Log(LogQuery),
    Metric(MetricExpr),
}

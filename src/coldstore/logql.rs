//! The LogQL the archive answers (`coldstore::query` evaluates it): log queries — a stream
//! selector (`= != =~ !~`), line filters (`|= != |~ !~`), `json` / `logfmt` / `regexp` /
//! `pattern`, label filters (string matchers, numeric comparisons, `and` / `or` / `,`),
//! `line_format` with `{{.label}}` — and metric queries: `count_over_time`, `rate`,
//! `bytes_over_time`, `bytes_rate`, `absent_over_time`; over `| unwrap label`: `sum_`, `avg_`,
//! `min_`, `max_`, `first_`, `last_`, `stddev_`, `stdvar_` and `quantile_over_time`, with an
//! optional `by|without (...)`; `sum / count / min / max / avg by|without (...)`,
//! `topk / bottomk`; arithmetic and comparisons between vectors and numbers. Anything else is
//! refused with an error naming the construct (the HTTP API answers 400 with it).

use std::time::Duration;

use regex::Regex;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("parse error at position {pos}: {msg}")]
    Syntax { pos: usize, msg: String },
    #[error("not supported by the archive's query engine: {0}")]
    Unsupported(String),
}

fn syntax<T>(pos: usize, msg: impl Into<String>) -> Result<T, ParseError> {
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

/// Parses a LogQL expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        i: 0,
    };
    let e = p.expr(0)?;
    if let Some(t) = p.peek() {
        return syntax(
            t.pos,
            format!("unexpected {:?} after the expression", t.kind),
        );
    }
    Ok(match e {
        Node::Log(q) => Expr::Log(q),
        Node::Metric(m) => Expr::Metric(m),
    })
}

/// Parses a stream selector alone (`/series?match[]=`).
pub fn parse_selector(src: &str) -> Result<Vec<Matcher>, ParseError> {
    match parse(src)? {
        Expr::Log(q) if q.stages.is_empty() => Ok(q.selector),
        _ => Err(ParseError::Unsupported(format!(
            "{src:?} is not a stream selector"
        ))),
    }
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    /// The raw text between `[` and `]`.
    Range(String),
    P(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    pos: usize,
}

const PUNCT: [&str; 21] = [
    "|=", "|~", "!=", "!~", "=~", "==", ">=", "<=", "{", "}", "(", ")", ",", "|", "=", ">", "<",
    "+", "-", "*", "/",
];

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let pos = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'`' {
            let (s, next) = string(src, i)?;
            out.push(Token {
                kind: Tok::Str(s),
                pos,
            });
            i = next;
        } else if c == b'[' {
            let end = src[i..].find(']').ok_or(ParseError::Syntax {
                pos,
                msg: "unclosed [".into(),
            })?;
            out.push(Token {
                kind: Tok::Range(src[i + 1..i + end].trim().to_owned()),
                pos,
            });
            i += end + 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            let text = &src[start..i];
            // `10s`, `5KB`: durations and sizes, for the parser to name (or refuse).
            let kind = match text.parse::<f64>() {
                Ok(n) => Tok::Num(n),
                Err(_) => Tok::Ident(text.to_owned()),
            };
            out.push(Token { kind, pos });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push(Token {
                kind: Tok::Ident(src[start..i].to_owned()),
                pos,
            });
        } else if let Some(p) = PUNCT.iter().find(|p| src[i..].starts_with(**p)) {
            out.push(Token {
                kind: Tok::P(p),
                pos,
            });
            i += p.len();
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return syntax(pos, format!("unexpected character {ch:?}"));
        }
    }
    Ok(out)
}

/// A double-quoted string with Go escapes, or a raw backquoted one; (value, next index).
fn string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = src.as_bytes()[start];
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        if c as u32 == u32::from(quote) {
            return Ok((out, at + 1));
        }
        if c == '\\' && quote == b'"' {
            let Some((_, e)) = chars.next() else { break };
            let ch = match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '"' => '"',
                '\\' => '\\',
                '`' => '`',
                'u' => {
                    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or(ParseError::Syntax {
                            pos: at,
                            msg: format!("bad escape \\u{hex}"),
                        })?
                }
                // Regexes keep their own escapes: `\.` stays `\.`.
                other => {
                    out.push('\\');
                    other
                }
            };
            out.push(ch);
        } else {
            out.push(c);
        }
    }
    syntax(start, "unclosed string")
}

/// A Prometheus duration: `5m`, `1h30m`, `250ms`, `2d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    (total > 0.0).then(|| Duration::from_secs_f64(total))
}

// ---- parser ----

enum Node {
    Log(LogQuery),
    Metric(MetricExpr),
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
}

/// Binary operators by precedence (Prometheus's): comparisons < + - < * /.
fn binop(t: &Tok) -> Option<(BinOp, u8)> {
    Some(match t {
        Tok::P("==") => (BinOp::Cmp(Cmp::Eq), 1),
        Tok::P("!=") => (BinOp::Cmp(Cmp::Ne), 1),
        Tok::P(">") => (BinOp::Cmp(Cmp::Gt), 1),
        Tok::P(">=") => (BinOp::Cmp(Cmp::Ge), 1),
        Tok::P("<") => (BinOp::Cmp(Cmp::Lt), 1),
        Tok::P("<=") => (BinOp::Cmp(Cmp::Le), 1),
        Tok::P("+") => (BinOp::Add, 2),
        Tok::P("-") => (BinOp::Sub, 2),
        Tok::P("*") => (BinOp::Mul, 3),
        Tok::P("/") => (BinOp::Div, 3),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    fn pos(&self) -> usize {
        self.peek()
            .map_or_else(|| self.toks.last().map_or(0, |t| t.pos + 1), |t| t.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.kind.clone());
        self.i += 1;
        t
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Token { kind: Tok::P(q), .. }) if *q == p) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) {
            Ok(())
        } else {
            syntax(self.pos(), format!("expected {p:?}"))
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            _ => syntax(self.pos(), "expected a name"),
        }
    }

    fn str_lit(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            _ => syntax(self.pos(), "expected a string"),
        }
    }

    /// Precedence climbing over metric expressions.
    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = self.peek().and_then(|t| binop(&t.kind)) {
            if prec < min_prec.max(1) {
                break;
            }
            self.i += 1;
            let bool_ = matches!(op, BinOp::Cmp(_))
                && matches!(self.peek(), Some(Token { kind: Tok::Ident(s), .. }) if s == "bool");
            if bool_ {
                self.i += 1;
            }
            if let Some(Token {
                kind: Tok::Ident(s),
                ..
            }) = self.peek()
            {
                if matches!(s.as_str(), "on" | "ignoring" | "group_left" | "group_right") {
                    return Err(ParseError::Unsupported(format!("vector matching `{s}`")));
                }
            }
            let rhs = self.expr(prec + 1)?;
            let (Node::Metric(l), Node::Metric(r)) = (lhs, rhs) else {
                return syntax(self.pos(), "binary operators take metric expressions");
            };
            lhs = Node::Metric(MetricExpr::Binary {
                op,
                bool_,
                lhs: Box::new(l),
                rhs: Box::new(r),
            });
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let pos = self.pos();
        match self.peek().map(|t| t.kind.clone()) {
            Some(Tok::P("{")) => Ok(Node::Log(self.log_query()?)),
            Some(Tok::P("(")) => {
                self.i += 1;
                let n = self.expr(0)?;
                self.expect(")")?;
                Ok(n)
            }
            Some(Tok::P("-")) => {
                self.i += 1;
                match self.next() {
                    Some(Tok::Num(n)) => Ok(Node::Metric(MetricExpr::Number(-n))),
                    _ => syntax(pos, "expected a number after -"),
                }
            }
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(Node::Metric(MetricExpr::Number(n)))
            }
            Some(Tok::Ident(name)) => {
                self.i += 1;
                self.function(&name, pos).map(Node::Metric)
            }
            Some(t) => syntax(pos, format!("unexpected {t:?}")),
            None => syntax(pos, "unexpected end of query"),
        }
    }

    fn function(&mut self, name: &str, pos: usize) -> Result<MetricExpr, ParseError> {
        if name == "vector" {
            self.expect("(")?;
            let sign = if self.peek().map(|t| &t.kind) == Some(&Tok::P("-")) {
                self.i += 1;
                -1.0
            } else {
                1.0
            };
            let n = match self.next() {
                Some(Tok::Num(n)) => n,
                _ => return syntax(self.pos(), "vector takes a number, like vector(1)"),
            };
            self.expect(")")?;
            return Ok(MetricExpr::Vector(sign * n));
        }
        let range_fn = match name {
            "count_over_time" => Some(RangeFn::CountOverTime),
            "rate" => Some(RangeFn::Rate),
            "bytes_over_time" => Some(RangeFn::BytesOverTime),
            "bytes_rate" => Some(RangeFn::BytesRate),
            "absent_over_time" => Some(RangeFn::AbsentOverTime),
            "sum_over_time" => Some(RangeFn::SumOverTime),
            "avg_over_time" => Some(RangeFn::AvgOverTime),
            "min_over_time" => Some(RangeFn::MinOverTime),
            "max_over_time" => Some(RangeFn::MaxOverTime),
            "first_over_time" => Some(RangeFn::FirstOverTime),
            "last_over_time" => Some(RangeFn::LastOverTime),
            "stddev_over_time" => Some(RangeFn::StddevOverTime),
            "stdvar_over_time" => Some(RangeFn::StdvarOverTime),
            "quantile_over_time" => Some(RangeFn::QuantileOverTime(0.0)),
            _ => None,
        };
        if let Some(mut func) = range_fn {
            self.expect("(")?;
            if let RangeFn::QuantileOverTime(_) = func {
                let phi = match self.next() {
                    Some(Tok::Num(n)) => n,
                    _ => return syntax(self.pos(), "quantile_over_time takes a number first"),
                };
                self.expect(",")?;
                func = RangeFn::QuantileOverTime(phi);
            }
            let query = self.log_query()?;
            match (func.unwraps(), &query.unwrap) {
                (true, None) => {
                    return syntax(
                        pos,
                        format!("{name} needs an unwrapped label: `| unwrap <label>`"),
                    )
                }
                (false, Some(_)) => {
                    return Err(ParseError::Unsupported(format!("`| unwrap` in {name}")))
                }
                _ => {}
            }
            let range = match self.next() {
                Some(Tok::Range(r)) => parse_duration(&r).ok_or(ParseError::Syntax {
                    pos,
                    msg: format!("bad range [{r}]"),
                })?,
                _ => return syntax(self.pos(), format!("{name} needs a range, like [5m]")),
            };
            if let Some(Token {
                kind: Tok::Ident(s),
                ..
            }) = self.peek()
            {
                if s == "offset" {
                    return Err(ParseError::Unsupported("`offset`".into()));
                }
            }
            self.expect(")")?;
            let grouping = match self.grouping()? {
                Grouping::All => None,
                g if func.unwraps() => Some(g),
                _ => return syntax(self.pos(), format!("{name} takes no grouping")),
            };
            return Ok(MetricExpr::Range {
                func,
                query,
                range,
                grouping,
            });
        }
        let op = match name {
            "sum" => AggOp::Sum,
            "count" => AggOp::Count,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "avg" => AggOp::Avg,
            "topk" => AggOp::Topk,
            "bottomk" => AggOp::Bottomk,
            other => return Err(ParseError::Unsupported(format!("function `{other}`"))),
        };
        let mut grouping = self.grouping()?;
        self.expect("(")?;
        let mut k = 0;
        if matches!(op, AggOp::Topk | AggOp::Bottomk) {
            k = match self.next() {
                Some(Tok::Num(n)) if n >= 1.0 && n.fract() == 0.0 => n as usize,
                _ => return syntax(self.pos(), format!("{name} needs a whole k >= 1")),
            };
            self.expect(",")?;
        }
        let inner = match self.expr(0)? {
            Node::Metric(m) => m,
            Node::Log(_) => return syntax(pos, format!("{name} takes a metric expression")),
        };
        self.expect(")")?;
        if grouping == Grouping::All {
            grouping = self.grouping()?;
        }
        Ok(MetricExpr::Agg {
            op,
            grouping,
            k,
            inner: Box::new(inner),
        })
    }

    fn grouping(&mut self) -> Result<Grouping, ParseError> {
        let by = match self.peek() {
            Some(Token {
                kind: Tok::Ident(s),
                ..
            }) if s == "by" || s == "without" => s == "by",
            _ => return Ok(Grouping::All),
        };
        self.i += 1;
        self.expect("(")?;
        let mut names = Vec::new();
        while !self.eat(")") {
            names.push(self.ident()?);
            if !self.eat(",") {
                self.expect(")")?;
                break;
            }
        }
        Ok(if by {
            Grouping::By(names)
        } else {
            Grouping::Without(names)
        })
    }

    fn match_op(&mut self) -> Result<MatchOp, ParseError> {
        match self.next() {
            Some(Tok::P("=")) => Ok(MatchOp::Eq),
            Some(Tok::P("!=")) => Ok(MatchOp::Ne),
            Some(Tok::P("=~")) => Ok(MatchOp::Re),
            Some(Tok::P("!~")) => Ok(MatchOp::Nre),
            _ => syntax(self.pos(), "expected = != =~ or !~"),
        }
    }

    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let pos = self.pos();
        let name = self.ident()?;
        let op = self.match_op()?;
        let value = self.str_lit()?;
        Matcher::new(&name, op, &value).map_err(|msg| ParseError::Syntax { pos, msg })
    }

    fn log_query(&mut self) -> Result<LogQuery, ParseError> {
        let pos = self.pos();
        self.expect("{")?;
        let mut selector = Vec::new();
        while !self.eat("}") {
            selector.push(self.matcher()?);
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        if !selector.iter().any(|m| !m.matches_empty()) {
            return syntax(
                pos,
                "queries require at least one matcher that does not match the empty string",
            );
        }
        let mut stages = Vec::new();
        let mut unwrap = None;
        loop {
            let pos = self.pos();
            if unwrap.is_some() && self.peek().is_some_and(|t| t.kind == Tok::P("|")) {
                return Err(ParseError::Unsupported("stages after `| unwrap`".into()));
            }
            let filter = match self.peek().map(|t| &t.kind) {
                Some(Tok::P("|=")) => Some(MatchOp::Eq),
                Some(Tok::P("!=")) => Some(MatchOp::Ne),
                Some(Tok::P("|~")) => Some(MatchOp::Re),
                Some(Tok::P("!~")) => Some(MatchOp::Nre),
                Some(Tok::P("|")) => None,
                _ => break,
            };
            self.i += 1;
            if let Some(op) = filter {
                let text = self.str_lit()?;
                if matches!(self.peek(), Some(Token { kind: Tok::Ident(s), .. }) if s == "or") {
                    return Err(ParseError::Unsupported("`or` between line filters".into()));
                }
                let re = |t: &str| {
                    Regex::new(t).map_err(|e| ParseError::Syntax {
                        pos,
                        msg: format!("bad regex {t:?}: {e}"),
                    })
                };
                stages.push(Stage::Line(match op {
                    MatchOp::Eq => LineFilter::Contains(finder(&text)),
                    MatchOp::Ne => LineFilter::NotContains(finder(&text)),
                    MatchOp::Re => LineFilter::Matches(re(&text)?),
                    MatchOp::Nre => LineFilter::NotMatches(re(&text)?),
                }));
                continue;
            }
            let name = self.ident()?;
            match name.as_str() {
                "json" | "logfmt" => {
                    if matches!(
                        self.peek(),
                        Some(Token {
                            kind: Tok::Ident(_),
                            ..
                        })
                    ) || matches!(
                        self.peek(),
                        Some(Token {
                            kind: Tok::P("-"),
                            ..
                        })
                    ) {
                        return Err(ParseError::Unsupported(format!(
                            "`{name}` with parameters or flags"
                        )));
                    }
                    stages.push(if name == "json" {
                        Stage::Json
                    } else {
                        Stage::Logfmt
                    });
                }
                "line_format" => {
                    let t = self.str_lit()?;
                    stages.push(Stage::LineFormat(template(&t)?));
                }
                "regexp" => {
                    let t = self.str_lit()?;
                    let re = Regex::new(&t).map_err(|e| ParseError::Syntax {
                        pos,
                        msg: format!("bad regexp {t:?}: {e}"),
                    })?;
                    if re.capture_names().flatten().next().is_none() {
                        return syntax(pos, "regexp needs at least one named group (?P<name>...)");
                    }
                    stages.push(Stage::Regexp(re));
                }
                "pattern" => {
                    let t = self.str_lit()?;
                    stages.push(Stage::Pattern(
                        pattern(&t).map_err(|msg| ParseError::Syntax { pos, msg })?,
                    ));
                }
                "unwrap" => {
                    let label = self.ident()?;
                    if self.peek().is_some_and(|t| t.kind == Tok::P("(")) {
                        return Err(ParseError::Unsupported(format!(
                            "`| unwrap {label}(...)` conversions"
                        )));
                    }
                    unwrap = Some(label);
                }
                "unpack" | "label_format" | "drop" | "keep" | "decolorize" | "distinct" => {
                    return Err(ParseError::Unsupported(format!("`| {name}`")));
                }
                _ => {
                    self.i -= 1;
                    stages.push(Stage::Labels(self.label_pred()?));
                }
            }
        }
        Ok(LogQuery {
            selector,
            stages,
            unwrap,
        })
    }

    /// `a="x" and b>=5 or c!~"y"`, `,` meaning `and`; `and` binds tighter than `or`.
    fn label_pred(&mut self) -> Result<LabelPred, ParseError> {
        let mut lhs = self.label_and()?;
        while matches!(self.peek(), Some(Token { kind: Tok::Ident(s), .. }) if s == "or") {
            self.i += 1;
            lhs = LabelPred::Or(Box::new(lhs), Box::new(self.label_and()?));
        }
        Ok(lhs)
    }

    fn label_and(&mut self) -> Result<LabelPred, ParseError> {
        let mut lhs = self.label_atom()?;
        loop {
            let and = matches!(self.peek(), Some(Token { kind: Tok::Ident(s), .. }) if s == "and")
                || matches!(
                    self.peek(),
                    Some(Token {
                        kind: Tok::P(","),
                        ..
                    })
                );
            if !and {
                break;
            }
            self.i += 1;
            lhs = LabelPred::And(Box::new(lhs), Box::new(self.label_atom()?));
        }
        Ok(lhs)
    }

    fn label_atom(&mut self) -> Result<LabelPred, ParseError> {
        if self.eat("(") {
            let p = self.label_pred()?;
            self.expect(")")?;
            return Ok(p);
        }
        let pos = self.pos();
        let name = self.ident()?;
        let cmp = match self.next() {
            Some(Tok::P("=")) => {
                return self.label_str(pos, &name, MatchOp::Eq);
            }
            Some(Tok::P("=~")) => return self.label_str(pos, &name, MatchOp::Re),
            Some(Tok::P("!~")) => return self.label_str(pos, &name, MatchOp::Nre),
            Some(Tok::P("!=")) => {
                if matches!(
                    self.peek(),
                    Some(Token {
                        kind: Tok::Str(_),
                        ..
                    })
                ) {
                    return self.label_str(pos, &name, MatchOp::Ne);
                }
                Cmp::Ne
            }
            Some(Tok::P("==")) => Cmp::Eq,
            Some(Tok::P(">")) => Cmp::Gt,
            Some(Tok::P(">=")) => Cmp::Ge,
            Some(Tok::P("<")) => Cmp::Lt,
            Some(Tok::P("<=")) => Cmp::Le,
            _ => return syntax(pos, format!("expected a label filter on {name}")),
        };
        match self.next() {
            Some(Tok::Num(value)) => Ok(LabelPred::Num { name, cmp, value }),
            Some(Tok::Ident(s)) if parse_duration(&s).is_some() || s.ends_with('B') => Err(
                ParseError::Unsupported(format!("duration or bytes label filter ({name} {s})")),
            ),
            _ => syntax(pos, format!("expected a number to compare {name} with")),
        }
    }

    fn label_str(&mut self, pos: usize, name: &str, op: MatchOp) -> Result<LabelPred, ParseError> {
        let v = self.str_lit()?;
        Matcher::new(name, op, &v)
            .map(LabelPred::Str)
            .map_err(|msg| ParseError::Syntax { pos, msg })
    }
}

fn finder(text: &str) -> Box<memchr::memmem::Finder<'static>> {
    Box::new(memchr::memmem::Finder::new(text.as_bytes()).into_owned())
}

/// `line_format` templates: text and `{{.label}}` / `{{ .label }}`; Go template functions
/// and pipelines are refused.
/// A `pattern` expression: literals and `<name>` captures, no two captures side by side.
fn pattern(t: &str) -> Result<Vec<PatternPart>, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while !rest.is_empty() {
        let capture = rest.strip_prefix('<').and_then(|r| {
            let end = r.find('>')?;
            let name = &r[..end];
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then_some((name, &r[end + 1..]))
        });
        match capture {
            Some((name, after)) => {
                if !lit.is_empty() {
                    parts.push(PatternPart::Lit(std::mem::take(&mut lit)));
                } else if matches!(parts.last(), Some(PatternPart::Capture(_))) {
                    return Err(format!(
                        "pattern {t:?}: two captures need text between them"
                    ));
                }
                parts.push(PatternPart::Capture((name != "_").then(|| name.to_owned())));
                rest = after;
            }
            None => {
                let c = rest.chars().next().unwrap_or(' ');
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !lit.is_empty() {
        parts.push(PatternPart::Lit(lit));
    }
    if !parts
        .iter()
        .any(|p| matches!(p, PatternPart::Capture(Some(_))))
    {
        return Err(format!("pattern {t:?} names no capture"));
    }
    Ok(parts)
}

fn template(t: &str) -> Result<Vec<Piece>, ParseError> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find("}}")
            .ok_or_else(|| ParseError::Unsupported("unclosed {{ in line_format".into()))?;
        let inner = rest[open + 2..open + close].trim();
        let label = inner
            .strip_prefix('.')
            .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match label {
            Some(l) => out.push(Piece::Label(l.to_owned())),
            None => {
                return Err(ParseError::Unsupported(format!(
                    "line_format template {{{{{inner}}}}} (only {{{{.label}}}})"
                )))
            }
        }
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(s: &str) -> MetricExpr {
        match parse(s).unwrap_or_else(|e| panic!("{s}: {e}")) {
            Expr::Metric(m) => m,
            Expr::Log(_) => panic!("{s}: a log query"),
        }
    }

    #[test]
    fn log_queries_parse_with_every_stage() {
        let Expr::Log(q) = parse(
            r#"{job=~".+", level!="debug"} |= "DB" != `timeout` |~ "fail(ed)?" | json | status >= 500 and method="GET" | line_format "{{.method}} {{ .status }}""#,
        )
        .unwrap() else {
            panic!("not a log query")
        };
        assert_eq!(q.selector.len(), 2);
        assert!(q.selector[0].matches("payment-service"));
        assert!(!q.selector[0].matches(""));
        assert!(q.selector[1].matches("error"));
        assert_eq!(q.stages.len(), 6);
        assert!(
            matches!(&q.stages[5], Stage::LineFormat(p) if p == &vec![Piece::Label("method".into()), Piece::Text(" ".into()), Piece::Label("status".into())])
        );
        assert!(q.parses());
    }

    #[test]
    fn the_shipped_rules_parse() {
        let m = metric(
            r#"(sum by (cluster, service) (rate({job=~".+", level="error"}[5m])) / sum by (cluster, service) (rate({job=~".+"}[5m]))) > 0.05"#,
        );
        assert!(matches!(
            m,
            MetricExpr::Binary {
                op: BinOp::Cmp(Cmp::Gt),
                ..
            }
        ));
        assert_eq!(m.log_queries().len(), 2);
        let m = metric(r#"sum(count_over_time({job="a"} |= "x" [10m])) by (level)"#);
        assert!(
            matches!(m, MetricExpr::Agg { grouping: Grouping::By(ref g), .. } if g == &["level"])
        );
        let m = metric(r#"topk(3, sum by (service) (bytes_over_time({job="a"}[1h])))"#);
        assert!(matches!(
            m,
            MetricExpr::Agg {
                op: AggOp::Topk,
                k: 3,
                ..
            }
        ));
    }

    #[test]
    fn unsupported_constructs_are_named() {
        for (q, needle) in [
            (
                r#"sum_over_time({a="b"} | unwrap duration(x) [5m])"#,
                "conversions",
            ),
            (r#"count_over_time({a="b"} | unwrap x [5m])"#, "unwrap"),
            (
                r#"sum_over_time({a="b"} | unwrap x | json [5m])"#,
                "after `| unwrap`",
            ),
            (r#"{a="b"} | label_format x="y""#, "label_format"),
            (r#"{a="b"} | line_format "{{ToUpper .x}}""#, "line_format"),
            (r#"count_over_time({a="b"}[5m] offset 1h)"#, "offset"),
            (
                r#"sum(rate({a="b"}[1m])) / on(x) sum(rate({a="b"}[1m]))"#,
                "on",
            ),
        ] {
            match parse(q) {
                Err(ParseError::Unsupported(m)) => assert!(m.contains(needle), "{q}: {m}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn parsers_unwrap_and_range_functions_parse() {
        let q =
            parse(r#"{a="b"} | pattern "<d> <_> [<svc>] <msg>" | regexp "(?P<n>[0-9]+)""#).unwrap();
        let Expr::Log(q) = q else {
            panic!("a log query")
        };
        assert!(q.parses());
        match &q.stages[0] {
            Stage::Pattern(p) => assert_eq!(
                p,
                &vec![
                    PatternPart::Capture(Some("d".into())),
                    PatternPart::Lit(" ".into()),
                    PatternPart::Capture(None),
                    PatternPart::Lit(" [".into()),
                    PatternPart::Capture(Some("svc".into())),
                    PatternPart::Lit("] ".into()),
                    PatternPart::Capture(Some("msg".into())),
                ]
            ),
            other => panic!("{other:?}"),
        }
        let m = parse(r#"quantile_over_time(0.99, {a="b"} | json | unwrap ms [5m]) by (level)"#)
            .unwrap();
        match m {
            Expr::Metric(MetricExpr::Range {
                func: RangeFn::QuantileOverTime(phi),
                query,
                grouping: Some(Grouping::By(g)),
                ..
            }) => {
                assert_eq!(phi, 0.99);
                assert_eq!(query.unwrap.as_deref(), Some("ms"));
                assert_eq!(g, vec!["level".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"max_over_time({a="b"}[5m])"#,
            r#"{a="b"} | pattern "<a><b>""#,
            r#"{a="b"} | pattern "no captures""#,
            r#"{a="b"} | regexp "no groups""#,
            r#"count_over_time({a="b"}[5m]) by (x)"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Syntax { .. })),
                "{bad}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn bad_queries_are_syntax_errors() {
        for q in [
            "",
            "{",
            r#"{a="b""#,
            r#"{a=~""}"#,
            r#"{a="b"} |= "#,
            r#"count_over_time({a="b"})"#,
            r#"{a="("} |~ "(""#,
            r#"{a="b"} | json | x > "y""#,
            "{a=\"\u{0}\"} ||",
            "vector(x)",
            "vector(1",
            "vector()",
        ] {
            assert!(
                matches!(parse(q), Err(ParseError::Syntax { .. })),
                "{q}: {:?}",
                parse(q)
            );
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }
}

//! Tokens to a query: precedence climbing for binary operators, a stage list for pipelines.

use super::ast::*;
use super::lexer::{lex, parse_duration, Tok, Token};

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

enum Node {
    Log(LogQuery),
    Metric(MetricExpr),
}

pub(super) struct Parser {
    pub(super) toks: Vec<Token>,
    pub(super) i: usize,
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
    pub(super) fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    pub(super) fn pos(&self) -> usize {
        self.peek()
            .map_or_else(|| self.toks.last().map_or(0, |t| t.pos + 1), |t| t.pos)
    }

    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.kind.clone());
        self.i += 1;
        t
    }

    pub(super) fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Token { kind: Tok::P(q), .. }) if *q == p) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) {
            Ok(())
        } else {
            syntax(self.pos(), format!("expected {p:?}"))
        }
    }

    pub(super) fn ident(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            _ => syntax(self.pos(), "expected a name"),
        }
    }

    pub(super) fn str_lit(&mut self) -> Result<String, ParseError> {
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

    pub(super) fn function(&mut self, name: &str, pos: usize) -> Result<MetricExpr, ParseError> {
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

    pub(super) fn grouping(&mut self) -> Result<Grouping, ParseError> {
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
}

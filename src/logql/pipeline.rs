//! The log half of LogQL: selectors, line filters, parsers, label filters, `line_format`.

use regex::Regex;

use super::ast::*;
use super::lexer::{parse_duration, Tok, Token};
use super::parser::Parser;

impl Parser {
    pub(super) fn match_op(&mut self) -> Result<MatchOp, ParseError> {
        match self.next() {
            Some(Tok::P("=")) => Ok(MatchOp::Eq),
            Some(Tok::P("!=")) => Ok(MatchOp::Ne),
            Some(Tok::P("=~")) => Ok(MatchOp::Re),
            Some(Tok::P("!~")) => Ok(MatchOp::Nre),
            _ => syntax(self.pos(), "expected = != =~ or !~"),
        }
    }

    pub(super) fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let pos = self.pos();
        let name = self.ident()?;
        let op = self.match_op()?;
        let value = self.str_lit()?;
        Matcher::new(&name, op, &value).map_err(|msg| ParseError::Syntax { pos, msg })
    }

    /// `{name op "value", ...}`.
    pub(super) fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        self.expect("{")?;
        let mut selector = Vec::new();
        while !self.eat("}") {
            selector.push(self.matcher()?);
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        Ok(selector)
    }

    pub(super) fn log_query(&mut self) -> Result<LogQuery, ParseError> {
        let pos = self.pos();
        let selector = self.selector()?;
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
    pub(super) fn label_pred(&mut self) -> Result<LabelPred, ParseError> {
        let mut lhs = self.label_and()?;
        while matches!(self.peek(), Some(Token { kind: Tok::Ident(s), .. }) if s == "or") {
            self.i += 1;
            lhs = LabelPred::Or(Box::new(lhs), Box::new(self.label_and()?));
        }
        Ok(lhs)
    }

    pub(super) fn label_and(&mut self) -> Result<LabelPred, ParseError> {
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

    pub(super) fn label_atom(&mut self) -> Result<LabelPred, ParseError> {
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

    pub(super) fn label_str(
        &mut self,
        pos: usize,
        name: &str,
        op: MatchOp,
    ) -> Result<LabelPred, ParseError> {
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

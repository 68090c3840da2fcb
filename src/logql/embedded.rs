//! LogQL met outside a query request, read with the same lexer and matcher rules: the label
//! set of a pushed stream (`{a="b", c="d"}`, as Promtail writes it) and the log query inside an
//! alert rule's expression (the lines a mail shows).

use std::collections::BTreeMap;

use super::ast::{syntax, MatchOp, Matcher, ParseError};
use super::lexer::{lex, Tok};
use super::parser::Parser;

/// A stream's labels as Promtail and Loki write them: `{a="b", c="d"}`, equality only, each
/// name once, `{}` allowed.
pub fn parse_labels(src: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        i: 0,
    };
    let matchers = p.selector()?;
    if p.peek().is_some() {
        return syntax(p.pos(), "expected the end after '}'");
    }
    let mut labels = BTreeMap::new();
    for m in matchers {
        if m.op != MatchOp::Eq {
            return syntax(0, format!("{}: a stream's labels take '=' only", m.name));
        }
        if !valid_label_name(&m.name) {
            return syntax(0, format!("invalid label name {:?}", m.name));
        }
        if labels.insert(m.name.clone(), m.value).is_some() {
            return syntax(0, format!("duplicate label name {:?}", m.name));
        }
    }
    Ok(labels)
}

/// Prometheus's label names: `[a-zA-Z_][a-zA-Z0-9_]*` (the lexer's names may hold dots).
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The log query inside a LogQL expression: from its stream selector (a `{` that does not
/// follow a metric name, which would make it PromQL) up to its range `[...]`, the `)` that
/// closes it, or the end. Works on expressions the archive's engine cannot evaluate too, as
/// long as they lex.
pub fn log_query_in(expr: &str) -> Option<&str> {
    let toks = lex(expr).ok()?;
    let start = toks.iter().enumerate().position(|(i, t)| {
        t.kind == Tok::P("{") && (i == 0 || !matches!(toks[i - 1].kind, Tok::Ident(_)))
    })?;
    let mut depth = 0i32;
    let mut end = expr.len();
    for t in &toks[start..] {
        match t.kind {
            Tok::P("(") => depth += 1,
            Tok::P(")") if depth == 0 => {
                end = t.pos;
                break;
            }
            Tok::P(")") => depth -= 1,
            Tok::Range(_) => {
                end = t.pos;
                break;
            }
            _ => {}
        }
    }
    let q = expr[toks[start].pos..end].trim();
    (!q.is_empty()).then_some(q)
}

/// The stream selector at the start of a log query, and where it ends.
pub fn selector_prefix(query: &str) -> Result<(Vec<Matcher>, usize), ParseError> {
    let mut p = Parser {
        toks: lex(query)?,
        i: 0,
    };
    let matchers = p.selector()?;
    let end = p.peek().map_or(query.len(), |t| t.pos);
    Ok((matchers, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_labels_round_trip_escapes() {
        let l = parse_labels(r#"{a="x \"q\" \\ y", b_2="", _c="ünï"}"#).unwrap();
        assert_eq!(l["a"], r#"x "q" \ y"#);
        assert_eq!(l["b_2"], "");
        assert_eq!(l["_c"], "ünï");
        assert_eq!(parse_labels("{}").unwrap().len(), 0);
    }

    #[test]
    fn bad_stream_labels_are_refused() {
        for s in [
            "",
            "job=\"x\"",
            "{1bad=\"x\"}",
            "{a.b=\"x\"}",
            "{a=x}",
            "{a=\"x\"",
            "{a=\"x\" b=\"y\"}",
            "{a=~\"x\"}",
            "{a=\"x\", a=\"y\"}",
            "{a=\"unterminated}",
            "{a=\"x\"} |= \"y\"",
        ] {
            assert!(parse_labels(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn the_log_query_is_found_inside_metric_expressions() {
        assert_eq!(
            log_query_in(
                r#"(sum by (cluster, service) (count_over_time({job=~".+"} |= "DB connection failed" [5m]))) > 2"#
            ),
            Some(r#"{job=~".+"} |= "DB connection failed""#)
        );
        assert_eq!(
            log_query_in(r#"{service="payment"} |~ "a[0-9]\"(" | json"#),
            Some(r#"{service="payment"} |~ "a[0-9]\"(" | json"#)
        );
        assert_eq!(log_query_in(r#"up{job="payment-db"} == 0"#), None, "PromQL");
        assert_eq!(log_query_in("vector(1)"), None);
    }

    #[test]
    fn the_selector_prefix_ends_where_the_pipeline_starts() {
        let q = r#"{job=~".+", service="a"} |= "x""#;
        let (m, end) = selector_prefix(q).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(&q[end..], r#"|= "x""#);
    }
}

//! A LogQL pipeline on one archived row: line filters, `json` / `logfmt` / `regexp` /
//! `pattern`, label filters, `line_format`. Labels of a line, as in Loki 3: the stream's
//! labels, then its structured metadata, then what the parsers extract (a name the stream has
//! already gets `_extracted`; one equal to structured metadata is kept once; an empty value is
//! no label).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::logql::{Cmp, LabelPred, LogQuery, PatternPart, Piece, Stage};

/// A set of labels, ordered by name.
pub type LabelSet = BTreeMap<String, String>;

/// A row as the pipeline sees it.
pub struct RowRef<'a> {
    pub ts_ns: i64,
    pub line: &'a str,
    pub stream: &'a Arc<LabelSet>,
    pub metadata: &'a [(String, String)],
}

/// A line after the pipeline: its text (changed by `line_format`) and extracted labels.
pub struct Processed {
    pub line: Option<String>,
    pub parsed: Vec<(String, String)>,
}

/// Runs `q`'s stages on a row; None when a filter drops it.
pub fn run_pipeline(q: &LogQuery, r: &RowRef<'_>) -> Option<Processed> {
    let mut line: Option<String> = None;
    let mut parsed: Vec<(String, String)> = Vec::new();
    for stage in &q.stages {
        let cur = line.as_deref().unwrap_or(r.line);
        match stage {
            Stage::Line(f) => {
                if !f.keep(cur) {
                    return None;
                }
            }
            Stage::Json => extract(r, &mut parsed, json_fields(cur), "JSONParserErr"),
            Stage::Logfmt => extract(r, &mut parsed, logfmt_fields(cur), "LogfmtParserErr"),
            // A line the expression does not match gets no labels, and no error (as Loki).
            Stage::Regexp(re) => {
                if let Some(c) = re.captures(cur) {
                    let fields = re
                        .capture_names()
                        .enumerate()
                        .filter_map(|(i, n)| Some((n?.to_owned(), c.get(i)?.as_str().to_owned())))
                        .collect();
                    extract(r, &mut parsed, Some(fields), "");
                }
            }
            Stage::Pattern(parts) => {
                if let Some(fields) = pattern_fields(parts, cur) {
                    extract(r, &mut parsed, Some(fields), "");
                }
            }
            Stage::Labels(p) => {
                let mut err = false;
                if !label_pred(p, r, &parsed, &mut err) {
                    return None;
                }
                if err && label(r, &parsed, "__error__").is_none() {
                    parsed.push(("__error__".into(), "LabelFilterErr".into()));
                }
            }
            Stage::LineFormat(pieces) => {
                let mut out = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Label(l) => out.push_str(label(r, &parsed, l).unwrap_or("")),
                    }
                }
                line = Some(out);
            }
        }
    }
    Some(Processed { line, parsed })
}

/// A label's value: parsed last wins, then structured metadata, then the stream.
pub fn label<'a>(r: &'a RowRef<'_>, parsed: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parsed
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .or_else(|| {
            r.metadata
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        })
        .or_else(|| r.stream.get(name).map(String::as_str))
}

fn label_pred(p: &LabelPred, r: &RowRef<'_>, parsed: &[(String, String)], err: &mut bool) -> bool {
    match p {
        LabelPred::Str(m) => m.matches(label(r, parsed, &m.name).unwrap_or("")),
        LabelPred::Num { name, cmp, value } => {
            match label(r, parsed, name).map(|v| v.trim().parse::<f64>()) {
                Some(Ok(x)) => cmp.test(x, *value),
                // Loki keeps a line whose label is not a number, marked with __error__...
                Some(Err(_)) => {
                    *err = true;
                    true
                }
                // ... and one without the label only for `!=`.
                None => *cmp == Cmp::Ne,
            }
        }
        LabelPred::And(a, b) => label_pred(a, r, parsed, err) && label_pred(b, r, parsed, err),
        LabelPred::Or(a, b) => label_pred(a, r, parsed, err) || label_pred(b, r, parsed, err),
    }
}

/// Adds extracted fields under sanitised names; a name the stream has already gets
/// `_extracted`, as in Loki.
fn extract(
    r: &RowRef<'_>,
    parsed: &mut Vec<(String, String)>,
    fields: Option<Vec<(String, String)>>,
    err: &str,
) {
    let Some(fields) = fields else {
        parsed.push(("__error__".into(), err.into()));
        return;
    };
    for (k, v) in fields {
        let mut k = sanitize(&k);
        if k.is_empty() || v.is_empty() {
            continue;
        }
        if r.stream.contains_key(&k) {
            k.push_str("_extracted");
        } else if r.metadata.iter().any(|(m, mv)| *m == k && *mv == v) {
            // Loki keeps one copy, the structured metadata's.
            continue;
        }
        parsed.retain(|(p, _)| *p != k);
        parsed.push((k, v));
    }
}

fn sanitize(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Top-level JSON fields, nested objects flattened with `_`; arrays skipped. None: not JSON.
/// As Loki's parser, it reads the first JSON value and ignores what follows it.
fn json_fields(line: &str) -> Option<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::Deserializer::from_str(line)
        .into_iter()
        .next()?
        .ok()?;
    let obj = v.as_object()?;
    let mut out = Vec::new();
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        use serde_json::Value as J;
        match v {
            J::Object(o) => {
                for (k, v) in o {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}_{k}")
                    };
                    walk(&name, v, out);
                }
            }
            J::Array(_) => {}
            J::String(s) => out.push((prefix.to_owned(), s.clone())),
            J::Null => out.push((prefix.to_owned(), String::new())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    for (k, v) in obj {
        walk(k, v, &mut out);
    }
    Some(out)
}

/// What a `pattern` captures from `line`: literals must appear in order (the first at the
/// start when the pattern starts with one); a capture runs to the next literal, the last one
/// to the end of the line. None when a literal is missing.
fn pattern_fields(parts: &[PatternPart], line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = line;
    let mut i = 0;
    while i < parts.len() {
        match &parts[i] {
            PatternPart::Lit(l) => rest = rest.strip_prefix(l.as_str())?,
            PatternPart::Capture(name) => {
                let (value, after) = match parts.get(i + 1) {
                    Some(PatternPart::Lit(l)) => {
                        let at = rest.find(l.as_str())?;
                        (&rest[..at], &rest[at..])
                    }
                    _ => (rest, ""),
                };
                if let Some(n) = name {
                    out.push((n.clone(), value.to_owned()));
                }
                rest = after;
            }
        }
        i += 1;
    }
    Some(out)
}

/// `key=value key="quoted value" flag` pairs. None when a quote is left open.
fn logfmt_fields(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = line.char_indices().peekable();
    while let Some(&(start, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let mut key_end = line.len();
        while let Some(&(i, c)) = it.peek() {
            if c == '=' || c.is_whitespace() {
                key_end = i;
                break;
            }
            it.next();
        }
        let key = &line[start..key_end];
        if it.peek().map(|&(_, c)| c) != Some('=') {
            out.push((key.to_owned(), String::new()));
            continue;
        }
        it.next();
        let mut value = String::new();
        if it.peek().map(|&(_, c)| c) == Some('"') {
            it.next();
            let mut closed = false;
            // An escape Go's strconv.Unquote refuses makes the value empty (Loki's decoder
            // drops it and goes on with the next pair).
            let mut valid = true;
            while let Some((_, c)) = it.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match it.next() {
                        Some((_, e)) => match e {
                            'n' => value.push('\n'),
                            't' => value.push('\t'),
                            'r' => value.push('\r'),
                            'a' => value.push('\u{7}'),
                            'b' => value.push('\u{8}'),
                            'f' => value.push('\u{c}'),
                            'v' => value.push('\u{b}'),
                            '\\' | '"' => value.push(e),
                            _ => valid = false,
                        },
                        None => return None,
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
            if !valid {
                value.clear();
            }
        } else {
            while let Some(&(_, c)) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                it.next();
            }
        }
        if !key.is_empty() {
            out.push((key.to_owned(), value));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{parse, Expr};

    fn row_labels() -> Arc<LabelSet> {
        Arc::new(LabelSet::from([
            ("job".to_owned(), "api".to_owned()),
            ("level".to_owned(), "info".to_owned()),
        ]))
    }

    fn run(q: &str, line: &str) -> Option<Processed> {
        let Ok(Expr::Log(q)) = parse(q) else {
            panic!("{q}")
        };
        let stream = row_labels();
        let md = vec![("trace_id".to_owned(), "t1".to_owned())];
        run_pipeline(
            &q,
            &RowRef {
                ts_ns: 1,
                line,
                stream: &stream,
                metadata: &md,
            },
        )
    }

    #[test]
    fn the_pipeline_filters_parses_and_formats() {
        let line = r#"{"level":"error","status":503,"req":{"method":"GET"},"msg":"DB down"}"#;
        assert!(run(r#"{job="api"} |= "DB""#, line).is_some());
        assert!(run(r#"{job="api"} != "DB""#, line).is_none());
        assert!(run(r#"{job="api"} |~ "st.tus""#, line).is_some());
        let p = run(
            r#"{job="api"} | json | status >= 500 and req_method="GET" | line_format "{{.req_method}} {{.level_extracted}} {{.trace_id}}""#,
            line,
        )
        .unwrap();
        assert_eq!(p.line.as_deref(), Some("GET error t1"));
        assert!(p.parsed.contains(&("status".into(), "503".into())));
        assert!(run(r#"{job="api"} | json | status < 500"#, line).is_none());
        // Not JSON: marked, and a filter on the marker drops it.
        let p = run(r#"{job="api"} | json"#, "plain text").unwrap();
        assert!(p
            .parsed
            .contains(&("__error__".into(), "JSONParserErr".into())));
        assert!(run(r#"{job="api"} | json | __error__="""#, "plain text").is_none());
        let p = run(
            r#"{job="api"} | logfmt | duration_ms > 10"#,
            r#"ts=1 msg="slow query" duration_ms=25 flag"#,
        )
        .unwrap();
        assert!(p.parsed.contains(&("msg".into(), "slow query".into())));
        // A bare key has an empty value: no label (as Loki).
        assert!(!p.parsed.iter().any(|(k, _)| k == "flag"));
        // A quoted value with an escape Go does not know is dropped; the rest is parsed.
        let p = run(r#"{job="api"} | logfmt"#, r#"msg="C:	emp \ x" n=1 t="a	b""#).unwrap();
        assert!(!p.parsed.iter().any(|(k, _)| k == "msg"), "{:?}", p.parsed);
        assert!(p.parsed.contains(&("n".into(), "1".into())));
        assert!(p.parsed.contains(&("t".into(), "a\tb".into())));
    }

    #[test]
    fn json_reads_the_first_value_and_ignores_what_follows() {
        let p = run(r#"{job="api"} | json"#, r#"{"status": 500} xxxx"#).unwrap();
        assert!(p.parsed.contains(&("status".into(), "500".into())));
    }

    #[test]
    fn regexp_and_pattern_extract_labels() {
        let line = "2026-12-07 01:09:30,081 ERROR [auth] slow query (attempt 3)";
        let p = run(
            r#"{job="api"} | regexp "(?P<lvl>[A-Z]+) \[(?P<svc>[a-z]+)\] (?P<msg>.*) \(attempt (?P<attempt>\d)\)""#,
            line,
        )
        .unwrap();
        for (k, v) in [
            ("lvl", "ERROR"),
            ("svc", "auth"),
            ("msg", "slow query"),
            ("attempt", "3"),
        ] {
            assert!(
                p.parsed.contains(&(k.into(), v.into())),
                "{k}: {:?}",
                p.parsed
            );
        }
        let p = run(
            r#"{job="api"} | pattern "<date> <time> <lvl> [<svc>] <_>""#,
            line,
        )
        .unwrap();
        for (k, v) in [
            ("date", "2026-12-07"),
            ("time", "01:09:30,081"),
            ("lvl", "ERROR"),
            ("svc", "auth"),
        ] {
            assert!(
                p.parsed.contains(&(k.into(), v.into())),
                "{k}: {:?}",
                p.parsed
            );
        }
        assert_eq!(p.parsed.len(), 4, "`<_>` is not kept");
        // No match: the line stays, without labels and without an error.
        let p = run(r#"{job="api"} | pattern "<a> [<b>]""#, "no brackets").unwrap();
        assert!(p.parsed.is_empty());
    }
}

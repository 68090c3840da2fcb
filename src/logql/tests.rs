use std::time::Duration;

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
    assert!(matches!(m, MetricExpr::Agg { grouping: Grouping::By(ref g), .. } if g == &["level"]));
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
    let q = parse(r#"{a="b"} | pattern "<d> <_> [<svc>] <msg>" | regexp "(?P<n>[0-9]+)""#).unwrap();
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
    let m =
        parse(r#"quantile_over_time(0.99, {a="b"} | json | unwrap ms [5m]) by (level)"#).unwrap();
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

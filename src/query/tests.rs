use super::metric::{aggregate, binary};
use super::*;
use crate::coldstore::parquet::{FileEncoder, Promoted, Provenance, Row};
use crate::logql::{AggOp, BinOp, Cmp, Grouping};

/// 2026-06-21T00:00:00Z, the test files' day.
const DAY: i64 = 1_782_000_000_000_000_000;

/// The lines of a log query's answer, in order.
fn lines_of(answer: Answer) -> Vec<String> {
    let Answer::Streams(streams) = answer else {
        panic!("a log query answers streams");
    };
    streams
        .into_iter()
        .flat_map(|s| s.entries.into_iter().map(|e| e.line))
        .collect()
}

/// Writes `groups` as one file of service `payment`, a row group each (as the archive
/// stage streams them); returns an operator on it and the file's size.
async fn write_groups(dir: &std::path::Path, groups: Vec<Vec<Row>>) -> (Operator, u64) {
    let op = crate::coldstore::storage::operator(dir.to_str().unwrap(), 9870).unwrap();
    let promoted = Promoted {
        service: "payment",
        env: "prod",
    };
    let mut enc = FileEncoder::new(Default::default()).unwrap();
    let mut file = Vec::new();
    let last = groups.iter().map(Vec::len).sum::<usize>() as i64 - 1;
    for mut rows in groups {
        file.extend(enc.row_group(&mut rows, &promoted).unwrap());
    }
    file.extend(
        enc.finish(Provenance {
            partition: 0,
            first_offset: 0,
            last_offset: last,
        })
        .unwrap(),
    );
    let size = file.len() as u64;
    let path =
        crate::coldstore::layout::file_path("prod", "payment", DAY, 0, 0, 0, Default::default());
    op.write(&path, file).await.unwrap();
    (op, size)
}

#[actix_web::test]
async fn a_level_selector_skips_row_groups_whose_level_statistics_exclude_it() {
    let dir = tempfile::tempdir().unwrap();
    let labels = |level: &str| {
        Arc::new(BTreeMap::from([
            ("service".to_owned(), "payment".to_owned()),
            ("level".to_owned(), level.to_owned()),
        ]))
    };
    // Row groups: all info; info with two errors; all warn.
    let mut mixed = ["info"; 100];
    mixed[10] = "error";
    mixed[90] = "error";
    let groups = [["info"; 100], mixed, ["warn"; 100]]
        .iter()
        .enumerate()
        .map(|(g, levels)| {
            levels
                .iter()
                .enumerate()
                .map(|(i, level)| Row {
                    ts_ns: DAY + (g * 100 + i) as i64 * 1_000_000,
                    line: format!("group {g} row {i} {level}").into_bytes(),
                    labels: labels(level),
                    metadata: Vec::new(),
                    partition: 0,
                    offset: (g * 100 + i) as i64,
                })
                .collect()
        })
        .collect();
    let (op, _) = write_groups(dir.path(), groups).await;
    let w = Window {
        start_ns: DAY,
        end_ns: DAY + 3_600_000_000_000,
        step_ns: 1_000_000_000,
        limit: 100,
        direction: Direction::Forward,
    };
    let expr = crate::logql::parse(r#"{service="payment", level="error"}"#).unwrap();
    let (answer, stats) = query_range(&op, &expr, w).await.unwrap();
    let lines = lines_of(answer);
    assert_eq!(lines, ["group 1 row 10 error", "group 1 row 90 error"]);
    assert_eq!(
        stats.rows_scanned, 100,
        "only the row group that can hold errors"
    );
    // Without the level matcher every row group is read.
    let expr = crate::logql::parse(r#"{service="payment"} |= "error""#).unwrap();
    let (_, stats) = query_range(&op, &expr, w).await.unwrap();
    assert_eq!(stats.rows_scanned, 300);
}

#[actix_web::test]
async fn a_narrow_query_reads_the_footer_and_the_row_groups_it_needs_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let labels = Arc::new(BTreeMap::from([(
        "service".to_owned(),
        "payment".to_owned(),
    )]));
    // 20 row groups of a minute each, 5000 lines apiece.
    let groups = (0..20i64)
        .map(|g| {
            (0..5000i64)
                .map(|i| Row {
                    ts_ns: DAY + g * 60_000_000_000 + i * 10_000_000,
                    line: format!("minute {g} line {i} payment {} accepted", i * 7919 % 1000)
                        .into_bytes(),
                    labels: labels.clone(),
                    metadata: Vec::new(),
                    partition: 0,
                    offset: g * 5000 + i,
                })
                .collect()
        })
        .collect();
    let (op, size) = write_groups(dir.path(), groups).await;
    let expr = crate::logql::parse(r#"{service="payment"} |= "line 42 ""#).unwrap();
    // Minute 7 only.
    let w = Window {
        start_ns: DAY + 7 * 60_000_000_000,
        end_ns: DAY + 8 * 60_000_000_000 - 1,
        step_ns: 1_000_000_000,
        limit: 100,
        direction: Direction::Forward,
    };
    let (answer, stats) = query_range(&op, &expr, w).await.unwrap();
    let lines = lines_of(answer);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("minute 7 line 42 "), "{lines:?}");
    assert_eq!(stats.files, 1);
    assert_eq!(stats.rows_scanned, 5000, "one row group scanned");
    assert!(
        stats.bytes_read * 5 < size,
        "read {} of {size} bytes",
        stats.bytes_read
    );
}

#[test]
fn range_windows_and_aggregations() {
    let steps = [10, 20, 30];
    let v = vec![
        (
            LabelSet::from([("a".into(), "1".into())]),
            vec![Some(1.0), None, Some(3.0)],
        ),
        (
            LabelSet::from([("a".into(), "2".into())]),
            vec![Some(2.0), Some(5.0), None],
        ),
    ];
    let sum = aggregate(AggOp::Sum, &Grouping::All, 0, v.clone(), 3);
    assert_eq!(sum[0].1, vec![Some(3.0), Some(5.0), Some(3.0)]);
    let top = aggregate(AggOp::Topk, &Grouping::All, 1, v.clone(), 3);
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].1, vec![None, None, Some(3.0)]);
    let Value::Vector(f) = binary(
        BinOp::Cmp(Cmp::Gt),
        false,
        Value::Vector(v),
        Value::Scalar(1.5),
    ) else {
        panic!()
    };
    assert_eq!(f[0].1, vec![None, None, Some(3.0)]);
    let Answer::Matrix(m) = to_matrix(Value::Vector(f), &steps) else {
        panic!()
    };
    assert_eq!(m[1].points, vec![(10, 2.0), (20, 5.0)]);
    assert!(steps_ok());
}

fn steps_ok() -> bool {
    super::steps(0, 100, 25).unwrap() == vec![0, 25, 50, 75, 100]
        && super::steps(0, 100, 0).is_err()
        && super::steps(100, 0, 1).is_err()
}

/// A line stored twice with the same timestamp (a push retried after its first try was
/// stored but not acknowledged) is answered and counted once, as Loki answers; two different
/// lines at the same time both stay, and so does the same line at another time.
#[actix_web::test]
async fn a_line_stored_twice_at_the_same_time_is_answered_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let labels = Arc::new(BTreeMap::from([(
        "service".to_owned(),
        "payment".to_owned(),
    )]));
    let row = |ts: i64, line: &str, offset: i64| Row {
        ts_ns: DAY + ts,
        line: line.as_bytes().to_vec(),
        labels: labels.clone(),
        metadata: Vec::new(),
        partition: 0,
        offset,
    };
    let first = vec![
        row(1, "retried", 0),
        row(1, "beside it", 1),
        row(2, "retried", 2),
    ];
    let again = vec![row(1, "retried", 3), row(1, "beside it", 4)];
    let (op, _) = write_groups(dir.path(), vec![first, again]).await;
    let w = Window {
        start_ns: DAY,
        end_ns: DAY + 60_000_000_000,
        step_ns: 60_000_000_000,
        limit: 100,
        direction: Direction::Forward,
    };
    let logs = crate::logql::parse(r#"{service="payment"}"#).unwrap();
    let (answer, stats) = query_range(&op, &logs, w).await.unwrap();
    assert_eq!(stats.rows_scanned, 5, "both copies were read");
    assert_eq!(lines_of(answer), ["beside it", "retried", "retried"]);
    let backward = Window {
        direction: Direction::Backward,
        limit: 2,
        ..w
    };
    let (answer, _) = query_range(&op, &logs, backward).await.unwrap();
    assert_eq!(lines_of(answer), ["retried", "beside it"], "the newest two");

    let count = crate::logql::parse(r#"count_over_time({service="payment"}[1m])"#).unwrap();
    let at = Window {
        start_ns: DAY + 60_000_000_000,
        end_ns: DAY + 60_000_000_000,
        ..w
    };
    let (answer, _) = query_range(&op, &count, at).await.unwrap();
    let Answer::Matrix(m) = answer else {
        panic!("a metric query answers a matrix");
    };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].points, vec![(DAY + 60_000_000_000, 3.0)]);
}

//! Where Loki is absent, its answers still hold: real Loki 3.4.6's answers to 39 LogQL queries
//! over a fixed 24,000-line corpus (`tests/fixtures/loki-answers/`, README there) against the
//! archive's engine. The corpus is pushed through alertpipe's push API into Kafka and Parquet,
//! each query asked with Loki's exact parameters, and the answers compared: log queries by
//! their (labels, timestamp, line) entries (under a limit the same ones), metric queries by
//! series labels and values per step; Loki's refusals must be refusals here too.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::app::archive;
use crate::support::parquet::wait_rows;
use crate::support::{fixture, spawn_app_with, TestApp};

type Labels = BTreeMap<String, String>;

fn labels(v: &Value) -> Labels {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A log answer as its entries: (labels, timestamp, line), sorted.
fn entries(v: &Value) -> Vec<(Labels, String, String)> {
    let mut out: Vec<_> = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let l = labels(&s["stream"]);
            s["values"].as_array().into_iter().flatten().map(move |e| {
                (
                    l.clone(),
                    e[0].as_str().unwrap_or("").to_owned(),
                    e[1].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// A metric answer as series: labels -> [(time, value)], vectors as one-point series.
fn series(v: &Value) -> BTreeMap<Labels, Vec<(i64, f64)>> {
    let point = |p: &Value| {
        let t = p[0].as_f64().unwrap_or(f64::NAN) as i64;
        let x = p[1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        (t, x)
    };
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let pts: Vec<(i64, f64)> = match s.get("values") {
            Some(vals) => vals.as_array().into_iter().flatten().map(point).collect(),
            None => vec![point(&s["value"])],
        };
        out.insert(labels(&s["metric"]), pts);
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Why alertpipe's answer differs from Loki's, if it does.
fn difference(loki: &Value, loki_status: u16, ours: &Value, status: u16) -> Option<String> {
    if loki_status != 200 || status != 200 {
        return (loki_status != status).then(|| {
            format!(
                "status {status} ({}) where Loki answers {loki_status} ({loki})",
                short(ours)
            )
        });
    }
    let kind = loki["data"]["resultType"].as_str().unwrap_or("");
    let our_kind = ours["data"]["resultType"].as_str().unwrap_or("");
    if kind != our_kind {
        return Some(format!(
            "resultType {our_kind:?} where Loki answers {kind:?}"
        ));
    }
    if kind == "streams" {
        let (want, got) = (entries(loki), entries(ours));
        if want != got {
            let missing = want.iter().filter(|e| !got.contains(e)).count();
            let extra = got.iter().filter(|e| !want.contains(e)).count();
            let first_missing = want.iter().find(|e| !got.contains(e));
            let first_extra = got.iter().find(|e| !want.contains(e));
            return Some(format!(
                "{} entries where Loki has {}: {missing} missing, {extra} extra; \
                 e.g. missing {first_missing:?}, extra {first_extra:?}",
                got.len(),
                want.len(),
            ));
        }
        return None;
    }
    let (want, got) = (series(loki), series(ours));
    if want.keys().ne(got.keys()) {
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(2)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(2)
            .collect();
        return Some(format!(
            "{} series where Loki has {}; missing {missing:?}, extra {extra:?}",
            got.len(),
            want.len()
        ));
    }
    for (k, w) in &want {
        let g = &got[k];
        let same = w.len() == g.len()
            && w.iter()
                .zip(g)
                .all(|(a, b)| a.0 == b.0 && same_value(a.1, b.1));
        if !same {
            return Some(format!("series {k:?}: {g:?} where Loki has {w:?}"));
        }
    }
    None
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(200).collect()
}

/// GET as Grafana and logcli ask by default: without categorised labels, so a log answer's
/// streams carry stream labels, structured metadata and parsed labels in one set (as the
/// recorded answers do).
async fn get(base: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .finish();
    let mut resp = client
        .get(format!("{base}{path}"))
        .query(&params)
        .expect("query string")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
    let body = resp.body().limit(64 << 20).await.expect("answer body");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (resp.status().as_u16(), v)
}

/// An app with the corpus archived (pushed through Loki's push API, as Promtail would).
async fn corpus_app(root: &std::path::Path) -> TestApp {
    let app = spawn_app_with(None, archive(root)).await;
    let (status, body) = app
        .push_logs(
            fixture("loki-answers/corpus.push.json.gz"),
            "application/json",
            true,
        )
        .await;
    assert_eq!(status, 204, "corpus push: {body}");
    wait_rows(root, 24_000).await;
    app
}

#[actix_web::test]
async fn the_archive_answers_lokis_39_corpus_queries_as_loki_does() {
    let answers: Value =
        serde_json::from_slice(&fixture("loki-answers/answers.json")).expect("answers.json");
    let results = answers["results"].as_array().expect("results");
    assert_eq!(results.len(), 39);
    let root = tempfile::tempdir().expect("archive root");
    let app = corpus_app(root.path()).await;
    let mut report = Vec::new();
    for r in results {
        let query = r["query"].as_str().expect("query");
        let mut params: Vec<(&str, &str)> = vec![("query", query)];
        for (k, v) in r["params"].as_object().expect("params") {
            params.push((k.as_str(), v.as_str().expect("param")));
        }
        let (status, ours) = get(&app.url, r["path"].as_str().expect("path"), &params).await;
        let loki_status = r["status"].as_u64().unwrap_or(0) as u16;
        if let Some(why) = difference(&r["answer"], loki_status, &ours, status) {
            report.push(format!("{} {query}\n    {why}", r["kind"]));
        }
    }
    assert!(
        report.is_empty(),
        "{} of 39 answers differ from Loki 3.4.6's:\n{}",
        report.len(),
        report.join("\n")
    );
}

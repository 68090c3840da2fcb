//! What the shipped Prometheus rules, Grafana dashboards and the demo's report name,
//! `/metrics` exposes: a process with every role, from its start (each stage starts its series
//! at zero), and every name follows the one scheme.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::app::{archive, notify, persist};
use crate::support::smtp::Smtp;
use crate::support::{spawn_app, TestDb};

/// `alertpipe_*` names in the files under `dir` with extension `ext`, histogram series
/// reduced to their family.
fn referenced(dir: &str, ext: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"alertpipe_[a-z_]+").unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some(ext) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for m in re.find_iter(&text) {
            out.insert(family(m.as_str()).to_owned());
        }
    }
    assert!(!out.is_empty(), "no metric named under {dir}");
    out
}

fn family(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .unwrap_or(series)
}

/// Families in a scrape, from its `# TYPE` lines, with their kind.
fn exposed(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .collect()
}

#[actix_web::test]
async fn every_metric_the_rules_and_dashboards_name_is_exposed_from_the_start() {
    let (db, smtp) = (TestDb::new(), Smtp::start());
    let root = tempfile::tempdir().unwrap();
    let app = spawn_app(|c| {
        persist(&db)(c);
        notify(&db, smtp.port, None)(c);
        archive(root.path())(c);
    })
    .await;
    let mut wanted = referenced("config/prometheus/rules", "yml");
    wanted.extend(referenced("config/grafana/dashboards", "json"));
    // The demo's report greps its figures by name.
    wanted.extend(referenced("deploy/local", "sh"));
    let scrape = || async {
        let mut r = app
            .client
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .unwrap();
        String::from_utf8(r.body().limit(8 << 20).await.unwrap().to_vec()).unwrap()
    };
    // Lag per partition comes with the stages' first statistics, a second after they join.
    let missing = |text: &str| -> Vec<String> {
        let have: BTreeSet<String> = exposed(text).into_iter().map(|(n, _)| n).collect();
        wanted.difference(&have).cloned().collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape().await;
        let gone = missing(&text);
        if gone.is_empty() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "named by a rule or dashboard, never exposed: {gone:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    };
    let families = exposed(&text);
    // One scheme: alertpipe_<family>_..., counters end in _total, durations in _seconds.
    const FAMILIES: &[&str] = &[
        "http", "ingest", "kafka", "persist", "notify", "archive", "consumer", "dead", "actor",
    ];
    for (name, kind) in &families {
        let Some(rest) = name.strip_prefix("alertpipe_") else {
            continue;
        };
        assert!(
            FAMILIES.iter().any(|f| rest.starts_with(&format!("{f}_"))),
            "{name}: not in a stage family"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}: a counter without _total");
        }
        if kind == "histogram" {
            assert!(
                name.ends_with("_seconds"),
                "{name}: a histogram of what unit?"
            );
        }
    }
}

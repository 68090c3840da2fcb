//! Queries of the shipped dashboards and rules on a real Loki, and logcli reading it.

use std::process::Command;
use std::time::Duration;

use alertpipe::config::{Config, Role};
use chrono::{SecondsFormat, Utc};

use crate::queries::{dashboard_targets, expand_range_vars, rule_expressions};
use crate::support::logs::{loki_get, Loki, Promtail};
use crate::support::{eventually, spawn_app_with, unique, Stack};

#[actix_web::test]
async fn every_logql_query_of_the_dashboards_and_rules_answers_on_loki_with_data() {
    let app = spawn_app_with(None, |c: &mut Config| {
        c.server.roles = vec![Role::Ingest];
        c.kafka.logs_topic = unique("logs");
    })
    .await;
    // The seed's service: logs/payment/ -> job="payment-service", service="payment". Enough
    // lines of each kind that every rule's threshold is crossed: in a Loki of the test's own,
    // or the stack's ruler would alert the demo about them.
    let loki = Loki::start_without_ruler();
    let promtail = Promtail::start(&loki.url, &app.url);
    let now = Utc::now();
    let mut text = String::new();
    for i in 0..160 {
        let ts =
            (now + chrono::Duration::microseconds(i)).to_rfc3339_opts(SecondsFormat::Nanos, true);
        let (level, msg) = match i % 4 {
            0 => ("error", "DB connection failed"),
            1 => ("warn", "slow query"),
            _ => ("warn", "retrying"),
        };
        text.push_str(&format!(
            "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"message\":\"{msg}\",\"trace_id\":\"{i}\"}}\n"
        ));
    }
    let file = format!("{}.log", unique("queries"));
    promtail.append("payment", &file, text.as_bytes());
    let file_sel = format!("{{job=\"payment-service\", filename=~\".*{file}\"}}");
    eventually(Duration::from_secs(60), "the lines in Loki", || async {
        (loki.lines(&file_sel).await.len() >= 160).then_some(())
    })
    .await;

    let mut queries = dashboard_targets("loki", "expr");
    queries.extend(rule_expressions());
    let (start, end) = (
        (now - chrono::Duration::minutes(30))
            .timestamp()
            .to_string(),
        (Utc::now() + chrono::Duration::minutes(1))
            .timestamp()
            .to_string(),
    );
    let mut failures = Vec::new();
    for (name, q) in &queries {
        let q = expand_range_vars(q);
        let (status, v) = loki_get(
            &loki.url,
            "/loki/api/v1/query_range",
            &[
                ("query", q.as_str()),
                ("start", start.as_str()),
                ("end", end.as_str()),
                ("step", "15"),
            ],
        )
        .await;
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        if status != 200 || n == 0 {
            failures.push(format!("{name}: {q}\n  -> HTTP {status}, {n} series: {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(queries.len() >= 9, "{queries:?}");
}

#[actix_web::test]
async fn logcli_reads_what_promtail_shipped() {
    let app = spawn_app_with(None, |c: &mut Config| {
        c.kafka.logs_topic = unique("logs");
    })
    .await;
    let loki = Loki::stack();
    let promtail = Promtail::start(&loki.url, &app.url);
    let svc = unique("cli");
    promtail.append(
        &svc,
        "app.log",
        format!("{{\"level\":\"error\",\"message\":\"{svc} via logcli\"}}\n").as_bytes(),
    );
    let sel = format!("{{service=\"{svc}\", level=\"error\"}}");
    eventually(Duration::from_secs(60), "line in Loki", || async {
        (!loki.lines(&sel).await.is_empty()).then_some(())
    })
    .await;
    let out = Command::new(Stack::get().var("STACK_LOGCLI_BIN"))
        .arg(format!("--addr={}", loki.url))
        .args(["query", "--since=1h", "--quiet", "-o", "raw", &sel])
        .output()
        .expect("logcli runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{svc} via logcli")));
}

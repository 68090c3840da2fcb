//! `config/loki/loki-distributed.yml` as the split deployment runs it: separate real Loki
//! processes for the distributor, ingester, querier and compactor (the querier needs the
//! compactor for delete filtering), one memberlist ring. Only addresses, ports, paths, the
//! store type (filesystem for S3) and the replication factor (1 ingester) are set here.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::support::logs::{loki_get, try_loki_process};
use crate::support::{eventually, free_port, unique, Proc};

type Split = (tempfile::TempDir, Vec<Proc>, Vec<u16>);

fn start_split() -> Result<Split, String> {
    let dir = tempfile::tempdir().unwrap();
    let ml: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let join = format!("127.0.0.1:{}", ml[0]);
    let compactor = format!("http://127.0.0.1:{}", http[3]);
    let mut procs: Vec<Proc> = Vec::new();
    for (i, target) in ["ingester", "distributor", "querier", "compactor"]
        .iter()
        .enumerate()
    {
        let env = [
            ("LOKI_OBJECT_STORE", "filesystem".to_owned()),
            ("LOKI_REPLICATION_FACTOR", "1".to_owned()),
            ("LOKI_MEMBERLIST_ADDR", "127.0.0.1".to_owned()),
            ("LOKI_MEMBERLIST_PORT", ml[i].to_string()),
            ("LOKI_MEMBERLIST_JOIN", join.clone()),
            ("LOKI_COMPACTOR_ADDRESS", compactor.clone()),
            (
                "LOKI_RULES_DIR",
                dir.path().join("rules").display().to_string(),
            ),
        ];
        // One data directory: the filesystem object store the processes share.
        procs.push(try_loki_process(
            "config/loki/loki-distributed.yml",
            dir.path(),
            target,
            http[i],
            &env,
            Some(target),
        )?);
    }
    Ok((dir, procs, http))
}

#[actix_web::test]
async fn push_through_the_distributor_and_read_back_through_the_querier() {
    // Ports are picked free, then bound by Loki a moment later: another test may take one in
    // between. Start the four again on fresh ports when one of them cannot start.
    let mut attempt = 0;
    let (dir, procs, http) = loop {
        attempt += 1;
        match start_split() {
            Ok(started) => break started,
            Err(e) if attempt < 3 => eprintln!("split Loki did not start ({e}); again"),
            Err(e) => panic!("split Loki did not start: {e}"),
        }
    };
    let distributor = format!("http://127.0.0.1:{}", http[1]);
    let querier = format!("http://127.0.0.1:{}", http[2]);
    let svc = unique("split");
    let now = Utc::now().timestamp_nanos_opt().unwrap();
    let body = json!({"streams": [{
        "stream": {"job": format!("{svc}-service"), "service": svc, "cluster": "prod"},
        "values": [[now.to_string(), format!("{svc} one")], [(now + 1).to_string(), format!("{svc} two")]]
    }]});
    let client = awc::Client::default();
    // The ingester joins the ring a moment after it says ready: retry until it takes the push.
    eventually(Duration::from_secs(60), "a push accepted", || async {
        let resp = client
            .post(format!("{distributor}/loki/api/v1/push"))
            .send_json(&body)
            .await
            .ok()?;
        (resp.status().as_u16() == 204).then_some(())
    })
    .await;
    let query = format!("{{service=\"{svc}\"}}");
    let lines = eventually(
        Duration::from_secs(30),
        "lines from the querier",
        || async {
            let (status, v) = loki_get(
                &querier,
                "/loki/api/v1/query_range",
                &[("query", query.as_str()), ("since", "10m")],
            )
            .await;
            let lines = crate::support::logs::result_lines(&v);
            (status == 200 && lines.len() == 2).then_some(lines)
        },
    )
    .await;
    let mut lines = lines;
    lines.sort();
    assert_eq!(lines, vec![format!("{svc} one"), format!("{svc} two")]);
    // The querier is a querier: it does not take pushes.
    let resp = client
        .post(format!("{querier}/loki/api/v1/push"))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "the querier serves no push API"
    );
    drop(procs);
    drop(dir);
}

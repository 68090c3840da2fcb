//! Real Loki 3.4.6 for the benchmarks (the project's config, a data dir of its own) and the
//! corpus the size and query benchmarks share: `bash benches/corpus.sh` builds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alertpipe::coldstore::parquet::{encode_with, Codec, Promoted, Provenance, Row};

/// An hour ago: Loki refuses samples older than its `reject_old_samples_max_age`.
pub fn base_ns() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        now - 3_600_000_000_000
    })
}
pub const STEP_NS: i64 = 10_000;

pub fn labels(source: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cluster".into(), "prod".into()),
        ("service".into(), source.into()),
        ("service_name".into(), source.into()),
        ("job".into(), format!("{source}-service")),
        ("hostname".into(), "bench-host".into()),
        ("filename".into(), format!("/var/log/{source}/{source}.log")),
    ])
}

pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

pub struct Loki {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Loki {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn loki_bin() -> String {
    if let Ok(p) = which("loki") {
        return p;
    }
    let tools = std::env::var("ALERTPIPE_TOOLS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/alertpipe/tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let p = format!("{tools}/grafana-3.4.6/loki");
    assert!(
        Path::new(&p).exists(),
        "{p} missing: run `bash deploy/local/stack.sh up` (it unpacks Loki from ALERTPIPE_PEERS_DIR)"
    );
    p
}

pub fn which(name: &str) -> Result<String, ()> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map_err(|_| ())?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !p.is_empty() {
        Ok(p)
    } else {
        Err(())
    }
}

pub fn start_loki(encoding: &str) -> Loki {
    let dir = std::env::temp_dir().join(format!("bench-loki-{encoding}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(loki_bin())
        .arg(format!(
            "-config.file={}/config/loki/loki.yml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("-config.expand-env=true")
        .env("LOKI_LISTEN_ADDRESS", "127.0.0.1")
        .env("LOKI_INSTANCE_ADDR", "127.0.0.1")
        .env("LOKI_HTTP_PORT", http.to_string())
        .env("LOKI_GRPC_PORT", grpc.to_string())
        .env("LOKI_DATA_DIR", &dir)
        .env("LOKI_RULES_DIR", &dir)
        .env("LOKI_LOG_LEVEL", "warn")
        .env("LOKI_CHUNK_ENCODING", encoding)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("loki.log")).unwrap())
        .spawn()
        .expect("loki starts");
    let loki = Loki {
        child,
        port: http,
        dir,
    };
    let started = Instant::now();
    while curl(&["-fs", &format!("http://127.0.0.1:{http}/ready")]).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "loki not ready"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    loki
}

pub fn curl(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("curl")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Pushes one source as one stream, in ~1 MiB JSON batches (Promtail's batch size).
pub fn push(loki: &Loki, source: &str, lines: &[Vec<u8>]) {
    let stream = serde_json::to_value(labels(source)).unwrap();
    let body_file = loki.dir.join("body.json");
    let mut i = 0;
    while i < lines.len() {
        let mut values = Vec::new();
        let mut size = 0;
        while i < lines.len() && size < 1 << 20 {
            let ts = base_ns() + i as i64 * STEP_NS;
            values.push(serde_json::json!([
                ts.to_string(),
                String::from_utf8_lossy(&lines[i])
            ]));
            size += lines[i].len();
            i += 1;
        }
        let body = serde_json::json!({"streams": [{"stream": stream, "values": values}]});
        std::fs::write(&body_file, serde_json::to_vec(&body).unwrap()).unwrap();
        curl(&[
            "-sS",
            "--fail-with-body",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body_file.display()),
            &format!("http://127.0.0.1:{}/loki/api/v1/push", loki.port),
        ])
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(loki.dir.join("loki.log")).unwrap_or_default();
            panic!("push to loki: {e}\n{log}")
        });
    }
}

pub fn dir_bytes(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len() as usize).unwrap_or(0)
            }
        })
        .sum()
}

/// One source's lines as the archive stage writes them: one Parquet file, lines STEP_NS apart
/// from base_ns(), the source's labels.
pub fn archive_file(source: &str, lines: &[Vec<u8>], codec: Codec) -> Vec<u8> {
    let l = std::sync::Arc::new(labels(source));
    let mut rows: Vec<Row> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| Row {
            ts_ns: base_ns() + i as i64 * STEP_NS,
            line: line.clone(),
            labels: l.clone(),
            metadata: Vec::new(),
            partition: 0,
            offset: i as i64,
        })
        .collect();
    let promoted = Promoted {
        service: source,
        env: "prod",
    };
    let provenance = Provenance {
        partition: 0,
        first_offset: 0,
        last_offset: lines.len() as i64,
    };
    encode_with(&mut rows, &promoted, provenance, codec).expect("encodes")
}

/// One source of the corpus: its name and lines.
pub type Source = (String, Vec<Vec<u8>>);

/// The corpus's sources: (name, lines), from `$CORPUS` (default `.state/corpus`).
pub fn corpus() -> (String, Vec<Source>) {
    let corpus = std::env::var("CORPUS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.state/corpus").into());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{corpus}: {e}; build it with `bash benches/corpus.sh`"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let sources = files
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, lines(p))
        })
        .filter(|(_, l)| !l.is_empty())
        .collect();
    (corpus, sources)
}

/// Waits until Loki's chunk directory stops growing after a `POST /flush`; its bytes.
pub fn flush(loki: &Loki, before: usize) -> usize {
    let chunks = loki.dir.join("chunks");
    curl(&[
        "-fsS",
        "-X",
        "POST",
        &format!("http://127.0.0.1:{}/flush", loki.port),
    ])
    .expect("flush");
    // The flush is asynchronous: wait until the chunk directory stops growing.
    let (mut last, mut stable) = (before, 0);
    let started = Instant::now();
    while stable < 4 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        let now = dir_bytes(&chunks);
        if now == last && now > before {
            stable += 1;
        } else {
            stable = 0;
        }
        last = now;
    }
    last
}

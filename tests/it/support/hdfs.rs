//! A private HDFS (`deploy/local/hdfs.sh`: a NameNode and a DataNode, two processes) for tests
//! that kill its DataNode; its data directory is kept across restarts of either process.

use std::process::{Command, Stdio};

use super::{free_port, Proc, Stack};

pub struct Hdfs {
    dir: tempfile::TempDir,
    pub http: u16,
    namenode: Option<Proc>,
    datanode: Option<Proc>,
}

impl Hdfs {
    pub fn start() -> Hdfs {
        let dir = tempfile::tempdir().expect("hdfs dir");
        let http = free_port();
        let ports = [free_port(), http, free_port(), free_port(), free_port()];
        let status = Command::new("bash")
            .arg(Stack::get().var("STACK_HDFS_SH"))
            .arg("conf")
            .arg(dir.path())
            .args(ports.map(|p| p.to_string()))
            .status()
            .expect("hdfs.sh conf runs");
        assert!(status.success(), "hdfs.sh conf");
        let mut h = Hdfs {
            dir,
            http,
            namenode: None,
            datanode: None,
        };
        let _turn = super::JvmTurn::take();
        h.namenode = Some(h.spawn("namenode"));
        h.start_datanode_now();
        h
    }

    fn spawn(&self, role: &str) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{role}.log")))
            .expect("log");
        let child = Command::new("bash")
            .arg(Stack::get().var("STACK_HDFS_SH"))
            .arg(role)
            .arg(self.dir.path())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("an HDFS process starts");
        Proc { child }
    }

    /// Starts the DataNode (again) and waits until the NameNode counts it live.
    pub fn start_datanode(&mut self) {
        let _turn = super::JvmTurn::take();
        self.start_datanode_now();
    }

    fn start_datanode_now(&mut self) {
        self.datanode = Some(self.spawn("datanode"));
        let ready = Command::new("bash")
            .arg(Stack::get().var("STACK_HDFS_SH"))
            .args(["ready", &self.http.to_string(), "90"])
            .status()
            .expect("hdfs.sh ready runs");
        assert!(ready.success(), "private HDFS not ready: {}", self.logs());
    }

    pub fn kill_datanode(&mut self) {
        if let Some(mut p) = self.datanode.take() {
            p.kill9();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// A directory for user `user`, made by the superuser; its `webhdfs://` root.
    pub fn root_for(&self, path: &str, user: &str) -> String {
        for op in ["MKDIRS".to_owned(), format!("SETOWNER&owner={user}")] {
            let url = format!("{}/webhdfs/v1{path}?op={op}&user.name=root", self.url());
            let ok = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "-X", "PUT", &url])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "{url}");
        }
        format!("webhdfs://{user}@127.0.0.1:{}{path}", self.http)
    }

    fn logs(&self) -> String {
        ["namenode", "datanode"]
            .iter()
            .map(|r| {
                let log = self.dir.path().join(format!("{r}.log"));
                format!("{r}:\n{}", super::log_tail(&log, 10))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

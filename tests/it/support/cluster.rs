//! A private Apache Kafka cluster of three KRaft nodes (each broker and controller, three
//! processes of `deploy/local/kafka.sh`), replicated as production runs it: internal topics
//! and defaults at replication factor 3, `min.insync.replicas` 2. Nodes can be killed,
//! stopped and started again on their own ports and data.

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::logs::terminate;
use super::{free_port, Proc, Stack};

pub struct KafkaCluster {
    dir: tempfile::TempDir,
    /// (broker port, controller port) per node; node ids are index + 1.
    ports: Vec<(u16, u16)>,
    cluster_id: String,
    procs: Vec<Option<Proc>>,
}

const REPLICATED: &str = "\
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
";

impl KafkaCluster {
    pub fn start(nodes: usize) -> KafkaCluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        std::fs::write(dir.path().join("replicated.properties"), REPLICATED).expect("props");
        let ports = (0..nodes).map(|_| (free_port(), free_port())).collect();
        // A cluster id is 16 bytes, base64url without padding: one for every node.
        let cluster_id = format!("alertpipeTst{:010}", std::process::id());
        let mut c = KafkaCluster {
            dir,
            ports,
            cluster_id,
            procs: (0..nodes).map(|_| None).collect(),
        };
        let _turn = super::JvmTurn::take();
        for i in 0..nodes {
            c.spawn(i);
        }
        for i in 0..nodes {
            c.wait_ready(i);
        }
        c
    }

    fn voters(&self) -> String {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, (_, cp))| format!("{}@127.0.0.1:{cp}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn brokers(&self) -> String {
        self.ports
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{}.log", i + 1))
    }

    fn spawn(&mut self, i: usize) {
        let (port, cport) = self.ports[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .expect("node log");
        let child = Command::new("bash")
            .arg(Stack::get().var("STACK_KAFKA_SH"))
            .arg("run")
            .arg(self.dir.path().join(format!("node-{}", i + 1)))
            .args([port.to_string(), cport.to_string(), (i + 1).to_string()])
            .arg(self.voters())
            .arg(self.dir.path().join("replicated.properties"))
            .env("KAFKA_CLUSTER_ID", &self.cluster_id)
            .env("KAFKA_HEAP", "256m")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("a kafka node starts");
        self.procs[i] = Some(Proc { child });
    }

    fn wait_ready(&self, i: usize) {
        let ready = Command::new("bash")
            .arg(Stack::get().var("STACK_KAFKA_SH"))
            .args(["ready", &self.ports[i].0.to_string(), "90"])
            .status()
            .expect("kafka.sh ready runs");
        assert!(
            ready.success(),
            "kafka node {} did not answer within 90 s; its log ends:\n{}",
            i + 1,
            super::log_tail(&self.log(i), 40)
        );
    }

    /// SIGKILL node `i` (index from 0).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill9();
        }
    }

    /// SIGTERM node `i` and wait for it to leave (a controlled shutdown).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            terminate(&mut p, Duration::from_secs(60));
        }
    }

    /// Starts node `i` again on its ports and data, and waits until it answers.
    pub fn restart(&mut self, i: usize) {
        let _turn = super::JvmTurn::take();
        self.spawn(i);
        self.wait_ready(i);
    }

    /// The node index that leads `topic`'s `partition`, from the cluster's metadata.
    pub fn leader_of(&self, topic: &str, partition: i32) -> usize {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("metadata client");
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("cluster metadata");
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .expect("the topic");
        let p = t
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .expect("the partition");
        assert_eq!(
            p.replicas().len(),
            3,
            "alertpipe created it with 3 replicas"
        );
        usize::try_from(p.leader() - 1).expect("a leader")
    }
}

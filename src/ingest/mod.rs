//! The ingest stage: Alertmanager's webhook -> IngressActor -> DedupActor ->
//! KafkaProducerActor (`alerts`), and the `logs` producer behind the Loki push endpoint.
//! The HTTP handlers that feed it are in `crate::http` (`alerts.rs`, `push.rs`).

pub mod dedup;
pub mod ingress;

use std::time::Duration;

use actix::{Addr, Supervisor};

use crate::config::Config;
use crate::kafka::producer::KafkaProducerActor;
use dedup::DedupActor;
use ingress::IngressActor;

/// Upper bound a webhook waits: the producer's own timeout plus queueing slack.
pub fn ingest_timeout(message_timeout_ms: u64) -> Duration {
    Duration::from_millis(message_timeout_ms) + Duration::from_secs(2)
}

pub struct Ingest {
    pub ingress: Addr<IngressActor>,
    /// Producer of the `alerts` topic.
    pub alerts: Addr<KafkaProducerActor>,
    /// Producer of the `logs` topic (the push endpoint).
    pub logs: Addr<KafkaProducerActor>,
}

/// IngressActor -> DedupActor -> KafkaProducerActor (alerts), and the logs topic's producer
/// for the push endpoint; each under a supervisor, all on an arbiter (thread) of their own:
/// the acknowledgement path never queues behind the consumer stages on the System thread.
pub fn start(cfg: &Config) -> Ingest {
    crate::metrics::init_ingest(&[&cfg.kafka.alerts_topic, &cfg.kafka.logs_topic]);
    let arbiter = actix::Arbiter::new().handle();
    let topic = cfg.kafka.alerts_topic.clone();
    let (window, max, cap) = (
        cfg.dedup.window(),
        cfg.dedup.max_entries,
        cfg.ingest.mailbox_capacity,
    );
    let dedup = Supervisor::start_in_arbiter(&arbiter, move |_| DedupActor::new(window, max, cap));
    let kafka_cfg = cfg.kafka.clone();
    let producer = Supervisor::start_in_arbiter(&arbiter, move |_| {
        KafkaProducerActor::new(kafka_cfg, topic, cap)
    });
    let timeout = ingest_timeout(cfg.kafka.message_timeout_ms);
    let p = producer.clone();
    let ingress =
        Supervisor::start_in_arbiter(&arbiter, move |_| IngressActor::new(dedup, p, cap, timeout));
    let (kafka_cfg, logs_topic) = (cfg.kafka.clone(), cfg.kafka.logs_topic.clone());
    let logs = Supervisor::start_in_arbiter(&arbiter, move |_| {
        KafkaProducerActor::new(kafka_cfg, logs_topic, cap)
    });
    Ingest {
        ingress,
        alerts: producer,
        logs,
    }
}

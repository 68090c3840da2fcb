//! `alertpipe tail`: a topic's messages from the beginning, as JSON lines (a dead-letter
//! record's headers say why it is there).

use std::time::Duration;

use alertpipe::config::Config;
use alertpipe::kafka::{read_topic, topic_partitions};

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Topic to read (default: the alerts topic from the config).
    #[arg(long)]
    pub topic: Option<String>,
    /// Stop after this many messages.
    #[arg(long, default_value_t = usize::MAX)]
    pub max: usize,
    /// Stop when nothing arrived for this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub idle_ms: u64,
}

/// `alertpipe tail`: prints `{"partition","offset","key","value"}` JSON lines. A broker that
/// does not answer, or a topic that does not exist, is an error, not an empty topic.
pub fn run(cfg: &Config, args: &TailArgs) -> anyhow::Result<()> {
    let cfg = &cfg.kafka;
    let topic = args.topic.as_deref().unwrap_or(&cfg.alerts_topic);
    topic_partitions(cfg, topic, Duration::from_secs(10))?;
    let msgs = read_topic(cfg, topic, args.max, Duration::from_millis(args.idle_ms))?;
    for m in msgs {
        let value: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&m.payload).into_owned())
        });
        let mut line = serde_json::json!({"partition": m.partition, "offset": m.offset, "key": m.key, "value": value});
        if !m.headers.is_empty() {
            line["headers"] = m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into()))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        println!("{line}");
    }
    Ok(())
}

//! Tests that need Loki, Promtail or logcli 3.4.6: AGPL or Grafana programs that no package
//! registry here ships, so they run only where a user installed them (README, "Loki and
//! Promtail"). `deploy/local/test.sh` runs this module when the stack found them, and
//! otherwise counts its tests as "not run", never as passed.

mod archive;
mod archive_query;
mod chain;
mod loki_distributed;
mod notify;
mod promtail;
mod queries;

//! Integration tests against the local stack's real peers (`deploy/local/stack.sh up`).
//! One binary, one module per concern; every test has its own topic and app instance.
//! `needs_loki` holds the tests that need Loki, Promtail or logcli (installed by users only).

mod alertmanager;
mod archive;
mod cluster;
mod hdfs;
mod kafka_security;
mod loki_answers;
mod mail_layout;
mod metrics;
mod needs_loki;
mod notify;
mod otelcol;
mod outage;
mod persist;
mod postgres_tls;
mod queries;
mod recovery;
mod secrets;
mod server_tls;
mod smtp_tls;
mod support;
mod teams_cards;
mod webhook;

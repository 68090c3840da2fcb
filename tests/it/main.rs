//! Integration tests against the local stack's real peers (`deploy/local/stack.sh up`).
//! One binary, one module per concern; every test has its own topic and app instance.

mod alertmanager;
mod archive;
mod archive_query;
mod chain;
mod loki_distributed;
mod mail_layout;
mod notify;
mod outage;
mod persist;
mod promtail;
mod queries;
mod recovery;
mod support;
mod teams_cards;
mod webhook;

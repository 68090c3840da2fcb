//! alertpipe: every custom link of the alerting and cold-log pipeline, as one actix service.
//! Start at `startup::Application`; ARCHITECTURE.md maps the rest.

pub mod alloc;
pub mod archive;
pub mod coldstore;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod logql;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod query;
pub mod stage;
pub mod startup;
pub mod telemetry;

//! One actor per file, its messages beside it. See ARCHITECTURE.md for the flow.

pub mod archive;
pub mod dead_letter;
pub mod dedup;
pub mod ingress;
pub mod kafka_producer;
pub mod mail;
pub mod persist;
pub mod teams;
pub mod throttle;

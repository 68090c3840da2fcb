//! Domain types, parsed at the edge so the core never re-validates.

pub mod alert;
pub mod labels;
pub mod webhook;

pub use alert::{AlertEvent, AlertStatus, Fingerprint, Severity};
pub use webhook::{parse_webhook, PayloadError};

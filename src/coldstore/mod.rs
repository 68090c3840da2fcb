//! The cold archive's files, below the stages: `layout` names them, `parquet` is their format
//! (and the encoder the archive stage streams with), `storage` opens the configured store
//! (OpenDAL), `read` serves `alertpipe archive ls/cat`, `compact` merges a closed day's files;
//! `crate::logql` and `crate::query` answer LogQL over them. Writers: the archive stage and
//! `compact`; readers: `http::loki` (Loki's query API), the CLI, and the notify stage (the
//! lines behind an alert when Loki does not answer).

pub mod compact;
pub mod layout;
pub mod parquet;
pub mod read;
pub mod storage;
pub mod walk;

//! The cold log archive: Loki push bodies in, snappy Parquet files out.
//! `push` decodes what Promtail sends, `parquet` encodes files, `layout` names them,
//! `storage` opens the configured store, `read` serves `alertpipe archive ls/cat`.

pub mod layout;
pub mod parquet;
pub mod proto;
pub mod push;
pub mod read;
pub mod storage;

//! The persist stage's sink: an `alerts` message decodes to an alert event; a batch is one
//! transaction on the PersistActor (one row per occurrence; rows PostgreSQL refuses are
//! dead-lettered inside the same transaction).

use std::future::Future;
use std::sync::Arc;

use actix::{Addr, MailboxError};

use super::actor::{PersistActor, PersistBatch};
use crate::db::alerts::Inbound;
use crate::db::DbError;
use crate::kafka::consumer::{Commit, RawMessage};
use crate::kafka::consumer::{Decoded, Retryable, Sink, Undecodable};

pub struct PersistSink {
    pub actor: Addr<PersistActor>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("persist actor: {0}")]
    Mailbox(#[from] MailboxError),
}

impl Retryable for PersistError {
    /// The database down or refusing a connection is transient; data PostgreSQL refuses is
    /// handled row by row inside the write, so what reaches here is worth retrying.
    fn is_transient(&self) -> bool {
        !matches!(self, PersistError::Db(DbError::Migration(_)))
    }
}

impl Sink for PersistSink {
    type Item = Inbound;
    type Error = PersistError;
    const STAGE: &'static str = "persist";

    fn decode(&self, msg: &RawMessage) -> Result<Inbound, Undecodable> {
        let inbound = Inbound::decode(&msg.topic, msg.partition, msg.offset, msg.payload.clone());
        match &inbound.event {
            Ok(_) => Ok(inbound),
            Err(reason) => Err(Undecodable(reason.clone())),
        }
    }

    fn write(
        &self,
        batch: Arc<Vec<Decoded<Inbound>>>,
    ) -> impl Future<Output = Result<Commit, PersistError>> + 'static {
        let actor = self.actor.clone();
        async move {
            actor.send(PersistBatch { items: batch }).await??;
            Ok(Commit::Batch)
        }
    }
}

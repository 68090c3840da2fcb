//! The archive stage's sink: a `logs` message decodes to its stream; a batch goes to the
//! ArchiveActor until every stream of it is buffered; what may be committed is what lies in
//! closed files.

use std::future::Future;
use std::sync::Arc;

use actix::{Addr, MailboxError};
use prost::Message as _;

use super::actor::{ArchiveActor, ArchiveBatch, Forget};
use super::proto::StreamAdapter;
use super::push::{stream_from_proto, Stream};
use crate::kafka::consumer::TopicPartition;
use crate::kafka::consumer::{Commit, Offsets, RawMessage};
use crate::kafka::consumer::{Decoded, Retryable, Sink, Undecodable};

pub struct ArchiveSink {
    pub actor: Addr<ArchiveActor>,
    /// Numbers the batches handed to the actor.
    pub batches: std::cell::Cell<u64>,
}

/// The actor could not be reached (it restarts); its write failures come back as rewinds.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveSinkError {
    #[error("archive actor: {0}")]
    Mailbox(#[from] MailboxError),
}

impl Retryable for ArchiveSinkError {
    /// The actor restarting: worth retrying, and the buffered lines of earlier batches depend
    /// on it (a batch is never dropped here).
    fn is_transient(&self) -> bool {
        true
    }
}

impl Sink for ArchiveSink {
    type Item = Stream;
    type Error = ArchiveSinkError;
    const STAGE: &'static str = "archive";

    fn decode(&self, msg: &RawMessage) -> Result<Stream, Undecodable> {
        let adapter = StreamAdapter::decode(msg.payload.as_slice())
            .map_err(|e| Undecodable(format!("not a Loki stream (protobuf): {e}")))?;
        stream_from_proto(adapter)
            .map_err(|e| Undecodable(format!("not a Loki stream: {}", e.message)))
    }

    fn write(
        &self,
        batch: Arc<Vec<Decoded<Stream>>>,
    ) -> impl Future<Output = Result<Commit, ArchiveSinkError>> + 'static {
        let actor = self.actor.clone();
        let id = self.batches.get() + 1;
        self.batches.set(id);
        async move {
            let mut rewind = Offsets::new();
            let mut error = None;
            loop {
                let mut progress = actor
                    .send(ArchiveBatch {
                        id,
                        messages: batch.clone(),
                    })
                    .await?;
                rewind.extend(std::mem::take(&mut progress.rewind));
                error = progress.error.take().or(error);
                if !progress.more {
                    progress.rewind = rewind;
                    progress.error = error;
                    return Ok(progress.into_commit());
                }
            }
        }
    }

    fn forget(&self, partitions: Vec<TopicPartition>) -> impl Future<Output = ()> + 'static {
        let actor = self.actor.clone();
        async move {
            if let Err(e) = actor.send(Forget(partitions)).await {
                tracing::warn!(error = %e, "archive actor did not take the revocation");
            }
        }
    }
}

//! PersistActor: writes consumer batches of the `alerts` topic to PostgreSQL, one transaction
//! per batch (diesel on a SyncArbiter, r2d2 pool). SyncArbiter mailboxes are unbounded, so the
//! bound is the consumer: it awaits each batch before reading the next.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::db::alerts::{store_batch, Inbound, StoreReport};
use crate::db::{DbError, PgPool};
use crate::kafka::consumer::Decoded;
use crate::metrics as m;

#[derive(Message)]
#[rtype(result = "Result<StoreReport, DbError>")]
pub struct PersistBatch {
    /// The consumer loop's batch itself, shared (a retry sends the same one again).
    pub items: Arc<Vec<Decoded<Inbound>>>,
}

pub struct PersistActor {
    pool: PgPool,
}

impl PersistActor {
    pub fn new(pool: PgPool) -> Self {
        PersistActor { pool }
    }
}

impl Actor for PersistActor {
    type Context = SyncContext<Self>;
}

impl Handler<PersistBatch> for PersistActor {
    type Result = Result<StoreReport, DbError>;

    fn handle(&mut self, msg: PersistBatch, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let report = store_batch(&self.pool, &msg.items).inspect_err(|e| {
            metrics::counter!(m::PERSIST_FAILED).increment(1);
            tracing::warn!(error = %e, messages = msg.items.len(), "persist batch failed");
        })?;
        metrics::histogram!(m::PERSIST_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::PERSISTED).increment(report.rows as u64);
        if report.dead_lettered > 0 {
            metrics::counter!(m::DEAD_LETTERED, "stage" => "persist")
                .increment(report.dead_lettered as u64);
        }
        if report.truncated > 0 {
            metrics::counter!(m::PERSIST_TRUNCATED).increment(report.truncated as u64);
        }
        Ok(report)
    }
}

//! What every consumer stage (persist, notify, archive) gets at start and gives back: one
//! signature ([`Start`]), so `startup` starts them in a loop.

use std::sync::Arc;

use futures_util::future::LocalBoxFuture;

use crate::config::Config;
use crate::db::PgPool;
use crate::kafka::consumer::poison::PoisonStore;
use crate::kafka::consumer::StageHealth;
use crate::kafka::priority::Foreground;

/// What the process shares with its consumer stages.
#[derive(Clone)]
pub struct StageDeps {
    /// The pool, when a role that needs PostgreSQL runs.
    pub db: Option<PgPool>,
    /// Where every stage keeps its poison messages (`kafka::poison`).
    pub poison: PoisonStore,
    /// With the ingest role beside them, the stages yield to its acknowledgements.
    pub foreground: Option<Arc<Foreground>>,
}

impl StageDeps {
    pub fn db(&self, stage: &str) -> anyhow::Result<PgPool> {
        self.db
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the {stage} stage needs the database"))
    }
}

/// Work a stage finishes after its consumer has stopped (notify: the sends in hand).
pub type Drain = Box<dyn FnOnce() -> LocalBoxFuture<'static, ()>>;

/// A started stage.
pub struct Stage {
    pub health: StageHealth,
    pub drain: Option<Drain>,
}

impl From<StageHealth> for Stage {
    fn from(health: StageHealth) -> Self {
        Stage {
            health,
            drain: None,
        }
    }
}

/// How every consumer stage starts.
pub type Start = fn(&Config, &StageDeps) -> anyhow::Result<Stage>;

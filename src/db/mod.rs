//! PostgreSQL: pool, embedded migrations, alert history writes and reads.

pub mod alerts;
pub mod notifications;
pub mod outbox;
pub mod queries;
pub mod schema;

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// A pool that does not connect at creation: the service starts while PostgreSQL is down and
/// readiness says so.
pub fn pool(url: &str, size: u32) -> PgPool {
    Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(3))
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::new(url))
}

pub fn conn(pool: &PgPool) -> Result<PgConn, DbError> {
    pool.get().map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Applies pending migrations on one direct connection; returns the versions applied.
pub fn migrate(url: &str) -> Result<Vec<String>, DbError> {
    let mut c = PgConnection::establish(url).map_err(|e| DbError::Unavailable(e.to_string()))?;
    let applied = c
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// `SELECT 1` on a pooled connection: is the database there?
pub fn ping(pool: &PgPool) -> Result<(), DbError> {
    let mut c = conn(pool)?;
    diesel::sql_query("SELECT 1")
        .execute(&mut c)
        .map(|_| ())
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Text as PostgreSQL stores it: `text` and `jsonb` refuse the NUL character (valid in JSON
/// and in Rust strings), so each NUL becomes U+FFFD, the replacement character. Nothing else
/// changes; an alert whose text held NUL is stored, not dead-lettered.
pub fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_becomes_the_replacement_character_and_nothing_else_changes() {
        assert_eq!(super::pg_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert!(matches!(
            super::pg_text("plain é"),
            std::borrow::Cow::Borrowed("plain é")
        ));
    }
}

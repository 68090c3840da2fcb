//! Which notifications are done (sent or dead-lettered), and the dead letters to replay.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Text};

use super::{DbError, PgPool};
use diesel::pg::PgConnection;

/// What a send came to: (key, receiver, fingerprint, status, outcome).
pub type Outcome = (String, String, String, String, &'static str);

/// The subset of `keys` already done.
pub fn done(pool: &PgPool, keys: &[String]) -> Result<HashSet<String>, DbError> {
    #[derive(QueryableByName)]
    struct K {
        #[diesel(sql_type = Text)]
        key: String,
    }
    let mut c = super::conn(pool)?;
    let rows: Vec<K> = diesel::sql_query("SELECT key FROM notifications WHERE key = ANY($1)")
        .bind::<Array<Text>, _>(keys)
        .load(&mut c)?;
    Ok(rows.into_iter().map(|k| k.key).collect())
}

/// Records notifications as done: (key, receiver, fingerprint, status, outcome).
pub fn record(pool: &PgPool, rows: &[Outcome]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut c = super::conn(pool)?;
    record_on(&mut c, rows)?;
    Ok(())
}

/// [`record`] on a given connection (inside the caller's transaction).
pub fn record_on(c: &mut PgConnection, rows: &[Outcome]) -> QueryResult<usize> {
    let col = |f: fn(&Outcome) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    diesel::sql_query(
        "INSERT INTO notifications (key, receiver, fingerprint, status, outcome)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT (key) DO NOTHING",
    )
    .bind::<Array<Text>, _>(col(|r| &r.0))
    .bind::<Array<Text>, _>(col(|r| &r.1))
    .bind::<Array<Text>, _>(col(|r| &r.2))
    .bind::<Array<Text>, _>(col(|r| &r.3))
    .bind::<Array<Text>, _>(col(|r| r.4))
    .execute(c)
}

#[derive(QueryableByName, Debug, Clone)]
pub struct PendingDeadLetter {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Bytea)]
    pub payload: Vec<u8>,
}

/// Notification dead letters not replayed yet (all, or one id).
pub fn replayable(pool: &PgPool, id: Option<i64>) -> Result<Vec<PendingDeadLetter>, DbError> {
    let mut c = super::conn(pool)?;
    Ok(diesel::sql_query(
        "SELECT id, payload FROM dead_letters
         WHERE stage = 'notify' AND replayed_at IS NULL AND ($1::bigint IS NULL OR id = $1) ORDER BY id",
    )
    .bind::<diesel::sql_types::Nullable<BigInt>, _>(id)
    .load(&mut c)?)
}

pub fn mark_replayed(pool: &PgPool, id: i64, error: Option<&str>) -> Result<(), DbError> {
    let mut c = super::conn(pool)?;
    match error {
        None => diesel::sql_query("UPDATE dead_letters SET replayed_at = NOW() WHERE id = $1")
            .bind::<BigInt, _>(id)
            .execute(&mut c)?,
        Some(e) => diesel::sql_query(
            "UPDATE dead_letters SET attempts = attempts + 1, reason = $2 WHERE id = $1",
        )
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(e)
        .execute(&mut c)?,
    };
    Ok(())
}

//! Where notifications ended (sent or dead-lettered), and the dead letters to replay.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Text};

use super::{DbError, PgPool};
use diesel::pg::PgConnection;

/// Where a notification ended: the `outcome` column of `notifications`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The SMTP server or the webhook took it.
    Sent,
    /// Kept in the dead letters (replayable).
    DeadLettered,
}

impl Delivered {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivered::Sent => "sent",
            Delivered::DeadLettered => "dead_lettered",
        }
    }
}

/// What a send came to: a `notifications` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Receiver + alert state (`notify::sink::notification_key`).
    pub key: String,
    pub receiver: String,
    pub fingerprint: String,
    pub status: String,
    pub delivered: Delivered,
}

/// Records outcomes (inside the caller's transaction); a key already recorded stays as it is.
pub fn record_on(c: &mut PgConnection, rows: &[Outcome]) -> QueryResult<usize> {
    let col = |f: fn(&Outcome) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let delivered: Vec<&str> = rows.iter().map(|r| r.delivered.as_str()).collect();
    diesel::sql_query(
        "INSERT INTO notifications (key, receiver, fingerprint, status, outcome)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT (key) DO NOTHING",
    )
    .bind::<Array<Text>, _>(col(|r| &r.key))
    .bind::<Array<Text>, _>(col(|r| &r.receiver))
    .bind::<Array<Text>, _>(col(|r| &r.fingerprint))
    .bind::<Array<Text>, _>(col(|r| &r.status))
    .bind::<Array<Text>, _>(delivered)
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

//! The notification outbox (`notification_outbox`): notifications consumed and committed but
//! not sent yet. The notify consumer enqueues; delivery workers claim with a lease, and move
//! each row to `notifications` once its send has an outcome.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Double, Integer, Text};

use super::{DbError, PgPool};

/// One notification to send: its key (receiver + alert state), receiver, and the alert event
/// as JSON.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: String,
    pub receiver: String,
    pub event: Vec<u8>,
}

/// A claimed row.
#[derive(QueryableByName, Debug, Clone)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Text)]
    pub receiver: String,
    #[diesel(sql_type = Bytea)]
    pub event: Vec<u8>,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
}

/// What a send came to (a `notifications` row).
pub use super::notifications::Outcome;

/// Enqueues the notifications not done already and not queued already (a Kafka redelivery
/// adds nothing). Returns how many were new.
pub fn enqueue(pool: &PgPool, rows: &[Outgoing]) -> Result<usize, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut c = super::conn(pool)?;
    // `ord` keeps the batch's order in the ids, so claims go out in Kafka order.
    let n = diesel::sql_query(
        "INSERT INTO notification_outbox (key, receiver, event)
         SELECT x.k, x.r, x.e
         FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS x(k, r, e, ord)
         WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.key = x.k)
         ORDER BY x.ord
         ON CONFLICT (key) DO NOTHING",
    )
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.receiver.as_str()).collect::<Vec<_>>())
    .bind::<Array<Bytea>, _>(rows.iter().map(|r| r.event.as_slice()).collect::<Vec<_>>())
    .execute(&mut c)?;
    Ok(n)
}

/// Claims up to `limit` rows nobody holds (or whose holder's lease lapsed), oldest first.
pub fn claim(
    pool: &PgPool,
    owner: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, DbError> {
    let mut c = super::conn(pool)?;
    let mut rows: Vec<Claimed> = diesel::sql_query(
        "UPDATE notification_outbox o
         SET claimed_by = $1, claimed_until = NOW() + make_interval(secs => $3),
             attempts = o.attempts + 1
         WHERE o.id IN (
             SELECT id FROM notification_outbox
             WHERE claimed_until IS NULL OR claimed_until < NOW()
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING o.id, o.key, o.receiver, o.event, o.attempts",
    )
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind::<Double, _>(lease.as_secs_f64())
    .load(&mut c)?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Extends the lease of everything `owner` holds (a live worker renews well before it lapses).
pub fn renew(pool: &PgPool, owner: &str, lease: Duration) -> Result<usize, DbError> {
    let mut c = super::conn(pool)?;
    Ok(diesel::sql_query(
        "UPDATE notification_outbox SET claimed_until = NOW() + make_interval(secs => $2)
         WHERE claimed_by = $1",
    )
    .bind::<Text, _>(owner)
    .bind::<Double, _>(lease.as_secs_f64())
    .execute(&mut c)?)
}

/// Gives claimed rows back, to be claimed again after `delay` (a transient failure).
pub fn release(pool: &PgPool, keys: &[String], delay: Duration) -> Result<(), DbError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut c = super::conn(pool)?;
    diesel::sql_query(
        "UPDATE notification_outbox SET claimed_by = NULL,
             claimed_until = NOW() + make_interval(secs => $2)
         WHERE key = ANY($1)",
    )
    .bind::<Array<Text>, _>(keys)
    .bind::<Double, _>(delay.as_secs_f64())
    .execute(&mut c)?;
    Ok(())
}

/// Records outcomes in `notifications` and takes their rows out of the outbox, atomically.
pub fn finish(pool: &PgPool, done: &[Outcome]) -> Result<(), DbError> {
    if done.is_empty() {
        return Ok(());
    }
    let mut c = super::conn(pool)?;
    c.transaction(|c| {
        super::notifications::record_on(c, done)?;
        diesel::sql_query("DELETE FROM notification_outbox WHERE key = ANY($1)")
            .bind::<Array<Text>, _>(done.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
            .execute(c)
    })?;
    Ok(())
}

/// Rows waiting and the age of the oldest, in seconds (0 when empty).
pub fn backlog(pool: &PgPool) -> Result<(i64, f64), DbError> {
    #[derive(QueryableByName)]
    struct B {
        #[diesel(sql_type = BigInt)]
        n: i64,
        #[diesel(sql_type = Double)]
        age: f64,
    }
    let mut c = super::conn(pool)?;
    let b: B = diesel::sql_query(
        "SELECT COUNT(*) AS n,
                COALESCE(EXTRACT(EPOCH FROM NOW() - MIN(enqueued_at)), 0)::float8 AS age
         FROM notification_outbox",
    )
    .get_result(&mut c)?;
    Ok((b.n, b.age))
}

//! Reading alert history: incidents (filtered, paginated, newest first) and SLA figures, both
//! from the SQL views/functions of the migrations, so Grafana and the API agree.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Int4, Jsonb, Nullable, Text, Timestamptz};
use serde::Serialize;

use super::{DbError, PgPool};

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub service: Option<String>,
    pub severity: Option<String>,
    pub resolved: Option<bool>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Incident {
    #[diesel(sql_type = Int4)]
    pub id: i32,
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = Text)]
    pub severity: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub alertname: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub cluster: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub fingerprint: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub message: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Bool>)]
    pub resolved: Option<bool>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub starts_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub ends_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Double>)]
    pub resolve_seconds: Option<f64>,
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
}

pub fn incidents(pool: &PgPool, f: &IncidentFilter) -> Result<Vec<Incident>, DbError> {
    let mut c = super::conn(pool)?;
    // Optional filters as `$n IS NULL OR col = $n`: one prepared statement for all shapes.
    let rows = diesel::sql_query(
        "SELECT id, service::text AS service, severity::text AS severity, alertname, cluster,
                fingerprint, message, status, resolved, starts_at, ends_at, resolved_at,
                resolve_seconds::float8 AS resolve_seconds, labels
         FROM incidents
         WHERE ($1::text IS NULL OR service = $1)
           AND ($2::text IS NULL OR severity = $2)
           AND ($3::bool IS NULL OR COALESCE(resolved, false) = $3)
           AND ($4::timestamptz IS NULL OR starts_at >= $4)
           AND ($5::timestamptz IS NULL OR starts_at < $5)
         ORDER BY starts_at DESC, id DESC
         LIMIT $6 OFFSET $7",
    )
    .bind::<Nullable<Text>, _>(f.service.as_deref())
    .bind::<Nullable<Text>, _>(f.severity.as_deref())
    .bind::<Nullable<Bool>, _>(f.resolved)
    .bind::<Nullable<Timestamptz>, _>(f.from)
    .bind::<Nullable<Timestamptz>, _>(f.to)
    .bind::<BigInt, _>(f.limit)
    .bind::<BigInt, _>(f.offset)
    .load(&mut c)?;
    Ok(rows)
}

#[derive(Debug, Clone, Serialize, QueryableByName, PartialEq)]
pub struct SlaRow {
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = Text)]
    pub severity: String,
    #[diesel(sql_type = BigInt)]
    pub incidents: i64,
    #[diesel(sql_type = BigInt)]
    pub open_now: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub resolve_p50_s: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub resolve_p95_s: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub resolve_max_s: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub critical_open_minutes: Option<f64>,
}

pub fn sla(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<SlaRow>, DbError> {
    let mut c = super::conn(pool)?;
    Ok(diesel::sql_query("SELECT * FROM alert_sla($1, $2)")
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .load(&mut c)?)
}

#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct DeadLetterRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub stage: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub receiver: Option<String>,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub replayed_at: Option<DateTime<Utc>>,
}

pub fn dead_letters(pool: &PgPool, stage: Option<&str>) -> Result<Vec<DeadLetterRow>, DbError> {
    let mut c = super::conn(pool)?;
    Ok(diesel::sql_query(
        "SELECT id, created_at, stage, receiver, attempts, reason, replayed_at FROM dead_letters
         WHERE ($1::text IS NULL OR stage = $1) ORDER BY id",
    )
    .bind::<Nullable<Text>, _>(stage)
    .load(&mut c)?)
}

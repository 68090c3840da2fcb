//! Writing alert history: one row per occurrence (fingerprint + starts_at), idempotent under
//! redelivery, replays and duplicates; poison messages kept whole in `dead_letters`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::schema::{alerts, dead_letters};
use super::{DbError, PgPool};
use crate::domain::{AlertEvent, AlertStatus};

pub const SERVICE_MAX: usize = 50;
pub const SEVERITY_MAX: usize = 20;

/// A consumed message for the history: where it came from and what it decoded to.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub event: Result<AlertEvent, String>,
}

impl Inbound {
    pub fn decode(topic: &str, partition: i32, offset: i64, payload: Vec<u8>) -> Self {
        let event = serde_json::from_slice::<AlertEvent>(&payload)
            .map_err(|e| format!("not an alert event: {e}"));
        Inbound {
            topic: topic.to_owned(),
            partition,
            offset,
            payload,
            event,
        }
    }
}

impl AsRef<Inbound> for Inbound {
    fn as_ref(&self) -> &Inbound {
        self
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreReport {
    /// Occurrence rows the batch touched (inserted or resolved; replays count too).
    pub rows: usize,
    pub dead_lettered: usize,
    pub truncated: usize,
}

/// One occurrence row. `Insertable` only for the binary `COPY` fast path (every column given,
/// `None` is NULL); conflicts go through [`insert_unnest`].
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = alerts, treat_none_as_default_value = false)]
struct NewAlert {
    service: String,
    severity: String,
    message: Option<String>,
    resolved: Option<bool>,
    fingerprint: Option<String>,
    alertname: Option<String>,
    cluster: Option<String>,
    status: String,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    labels: JsonText,
    annotations: JsonText,
    generator_url: Option<String>,
    kafka_partition: Option<i32>,
    kafka_offset: Option<i64>,
    truncated: bool,
}

#[derive(Insertable)]
#[diesel(table_name = dead_letters)]
pub struct NewDeadLetter<'a> {
    pub stage: &'a str,
    pub topic: Option<&'a str>,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub receiver: Option<&'a str>,
    pub attempts: i32,
    pub reason: &'a str,
    pub payload: &'a [u8],
}

/// Dead letters of any stage, idempotent per (stage, topic, partition, offset).
pub fn insert_dead_letters(pool: &PgPool, rows: &[NewDeadLetter<'_>]) -> Result<(), DbError> {
    let mut c = super::conn(pool)?;
    diesel::insert_into(dead_letters::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(&mut c)?;
    Ok(())
}

/// Cuts to at most `max` characters (never inside a character). Whether it cut.
fn fit(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_owned(), true),
        None => (s.to_owned(), false),
    }
}

/// A JSON object already written as text, sent to a `jsonb` column as it is (PostgreSQL's
/// binary jsonb format: a version byte, then the text). A row's labels and annotations go
/// straight from their map to this text: no `serde_json::Value` tree in between.
#[derive(Debug, Clone, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Jsonb)]
struct JsonText(String);

impl diesel::serialize::ToSql<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonText {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write;
        out.write_all(&[1])?;
        out.write_all(self.0.as_bytes())?;
        Ok(diesel::serialize::IsNull::No)
    }
}

/// The map as a JSON object, keys and values made storable ([`super::pg_text`]).
fn to_json(map: &BTreeMap<String, String>) -> JsonText {
    struct Storable<'a>(&'a BTreeMap<String, String>);
    impl serde::Serialize for Storable<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(
                self.0
                    .iter()
                    .map(|(k, v)| (super::pg_text(k), super::pg_text(v))),
            )
        }
    }
    // Serialising strings into a String cannot fail.
    JsonText(serde_json::to_string(&Storable(map)).unwrap_or_else(|_| "{}".to_owned()))
}

/// See [`super::pg_text`].
fn text(s: &str) -> String {
    super::pg_text(s).into_owned()
}

impl NewAlert {
    /// The row for one event. A service or severity longer than its column keeps its first
    /// characters there; the full value stays in `labels` (the service also under
    /// `labels.service` when it came from `service_name` or `job`), and `truncated` is set.
    fn from_event(e: &AlertEvent, partition: i32, offset: i64) -> NewAlert {
        let (service, cut_service) = fit(&text(&e.service), SERVICE_MAX);
        let (severity, cut_severity) = fit(&text(e.severity.as_str()), SEVERITY_MAX);
        // Copied only when the service has to be added to them.
        let labels = if cut_service {
            let mut labels = e.labels.clone();
            labels
                .entry("service".to_owned())
                .or_insert_with(|| e.service.clone());
            std::borrow::Cow::Owned(labels)
        } else {
            std::borrow::Cow::Borrowed(&e.labels)
        };
        let resolved = e.status == AlertStatus::Resolved;
        NewAlert {
            service,
            severity,
            message: Some(text(&e.message)),
            resolved: Some(resolved),
            fingerprint: Some(text(e.fingerprint.as_str())),
            alertname: Some(text(&e.alertname)),
            cluster: e.cluster.as_deref().map(text),
            status: e.status.as_str().to_owned(),
            starts_at: Some(e.starts_at),
            ends_at: e.ends_at,
            resolved_at: resolved.then(Utc::now),
            labels: to_json(&labels),
            annotations: to_json(&e.annotations),
            generator_url: Some(text(&e.generator_url)),
            kafka_partition: Some(partition),
            kafka_offset: Some(offset),
            truncated: cut_service || cut_severity,
        }
    }
}

/// Firing rows first, then resolved; one entry per occurrence, resolved winning.
fn plan(rows: Vec<NewAlert>) -> (Vec<NewAlert>, Vec<NewAlert>) {
    let mut by_key: BTreeMap<(String, Option<DateTime<Utc>>), NewAlert> = BTreeMap::new();
    for r in rows {
        let key = (r.fingerprint.clone().unwrap_or_default(), r.starts_at);
        match by_key.get(&key) {
            Some(prev) if prev.status == "resolved" && r.status != "resolved" => {}
            _ => {
                by_key.insert(key, r);
            }
        }
    }
    by_key.into_values().partition(|r| r.status != "resolved")
}

/// Column arrays for one `INSERT ... SELECT FROM unnest(...)`: one bind per column instead
/// of one per value (about twice as fast as a multi-row VALUES at batch 1000).
fn insert_unnest(c: &mut PgConnection, rows: &[NewAlert], on_conflict: &str) -> QueryResult<usize> {
    use diesel::sql_types::{Array, Bool, Int4, Int8, Jsonb, Nullable, Text, Timestamptz};
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&NewAlert) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&NewAlert) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&NewAlert) -> Option<DateTime<Utc>>| rows.iter().map(f).collect::<Vec<_>>();
    diesel::sql_query(format!(
        "INSERT INTO alerts (service, severity, message, resolved, fingerprint, alertname, cluster,
             status, starts_at, ends_at, resolved_at, labels, annotations, generator_url,
             kafka_partition, kafka_offset, truncated)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
             $12::jsonb[], $13::jsonb[], $14::text[], $15::int4[], $16::int8[], $17::bool[])
         {on_conflict}"
    ))
    .bind::<Array<Text>, _>(col(|r| r.service.clone()))
    .bind::<Array<Text>, _>(col(|r| r.severity.clone()))
    .bind::<Array<Nullable<Text>>, _>(opt(|r| r.message.clone()))
    .bind::<Array<Nullable<Bool>>, _>(rows.iter().map(|r| r.resolved).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(opt(|r| r.fingerprint.clone()))
    .bind::<Array<Nullable<Text>>, _>(opt(|r| r.alertname.clone()))
    .bind::<Array<Nullable<Text>>, _>(opt(|r| r.cluster.clone()))
    .bind::<Array<Text>, _>(col(|r| r.status.clone()))
    .bind::<Array<Nullable<Timestamptz>>, _>(time(|r| r.starts_at))
    .bind::<Array<Nullable<Timestamptz>>, _>(time(|r| r.ends_at))
    .bind::<Array<Nullable<Timestamptz>>, _>(time(|r| r.resolved_at))
    .bind::<Array<Jsonb>, _>(rows.iter().map(|r| r.labels.clone()).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(rows.iter().map(|r| r.annotations.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(opt(|r| r.generator_url.clone()))
    .bind::<Array<Nullable<Int4>>, _>(rows.iter().map(|r| r.kafka_partition).collect::<Vec<_>>())
    .bind::<Array<Nullable<Int8>>, _>(rows.iter().map(|r| r.kafka_offset).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(rows.iter().map(|r| r.truncated).collect::<Vec<_>>())
    .execute(c)
}

/// New firing occurrences, the usual case, go in by binary `COPY` (about as fast as a bare
/// `COPY`); the first conflict — a replay, a redelivery, an occurrence already stored — rolls
/// that back to its savepoint and the same rows go through `INSERT ... ON CONFLICT DO NOTHING`.
/// Either way one row per occurrence.
fn insert_firing(c: &mut PgConnection, firing: &[NewAlert]) -> QueryResult<()> {
    use diesel::result::{DatabaseErrorKind, Error};
    if firing.is_empty() {
        return Ok(());
    }
    let copied = c.transaction(|c| {
        diesel::copy_from(alerts::table)
            .from_insertable(firing)
            .execute(c)
    });
    match copied {
        Ok(_) => Ok(()),
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            metrics::counter!(crate::metrics::PERSIST_COPY_CONFLICTS).increment(1);
            // A replayed or duplicate firing changes nothing (and never un-resolves).
            insert_unnest(c, firing, "ON CONFLICT (fingerprint, starts_at) DO NOTHING").map(|_| ())
        }
        Err(e) => Err(e),
    }
}

fn write_rows(c: &mut PgConnection, rows: Vec<NewAlert>) -> QueryResult<usize> {
    let (firing, resolved) = plan(rows);
    insert_firing(c, &firing)?;
    // Resolved without a seen firing inserts the occurrence; else marks it resolved.
    insert_unnest(
        c,
        &resolved,
        "ON CONFLICT (fingerprint, starts_at) DO UPDATE SET resolved = true, status = 'resolved',
             ends_at = excluded.ends_at,
             resolved_at = COALESCE(alerts.resolved_at, excluded.resolved_at)",
    )?;
    Ok(firing.len() + resolved.len())
}

fn dead_letter(c: &mut PgConnection, item: &Inbound, reason: &str) -> QueryResult<()> {
    diesel::insert_into(dead_letters::table)
        .values(NewDeadLetter {
            stage: "persist",
            topic: Some(&item.topic),
            kafka_partition: Some(item.partition),
            kafka_offset: Some(item.offset),
            receiver: None,
            attempts: 1,
            reason,
            payload: &item.payload,
        })
        .on_conflict_do_nothing()
        .execute(c)
        .map(|_| ())
}

/// Stores one consumer batch in one transaction. When the batch fails on its data (not on the
/// connection), each message is retried alone so only the poison ones are dead-lettered.
pub fn store_batch<I: AsRef<Inbound>>(pool: &PgPool, items: &[I]) -> Result<StoreReport, DbError> {
    let mut c = super::conn(pool)?;
    let mut report = StoreReport::default();
    let rows: Vec<NewAlert> = items
        .iter()
        .map(AsRef::as_ref)
        .filter_map(|i| i.event.as_ref().ok().map(|e| (i, e)))
        .map(|(i, e)| NewAlert::from_event(e, i.partition, i.offset))
        .collect();
    report.truncated = rows.iter().filter(|r| r.truncated).count();
    let whole = c.transaction(|c| -> QueryResult<(usize, usize)> {
        let mut dead = 0;
        for item in items.iter().map(AsRef::as_ref) {
            if let Err(reason) = &item.event {
                dead_letter(c, item, reason)?;
                dead += 1;
            }
        }
        Ok((write_rows(c, rows)?, dead))
    });
    match whole {
        Ok((n, dead)) => {
            report.rows = n;
            report.dead_lettered = dead;
            Ok(report)
        }
        Err(e) => {
            drop(c);
            // Is it the database that is gone, or this data?
            super::ping(pool)?;
            tracing::warn!(error = %e, "batch refused by the database; isolating messages");
            store_one_by_one(pool, items)
        }
    }
}

fn store_one_by_one<I: AsRef<Inbound>>(pool: &PgPool, items: &[I]) -> Result<StoreReport, DbError> {
    let mut c = super::conn(pool)?;
    let mut report = StoreReport::default();
    for item in items.iter().map(AsRef::as_ref) {
        let result = match &item.event {
            Err(reason) => Err(reason.clone()),
            Ok(e) => {
                let row = NewAlert::from_event(e, item.partition, item.offset);
                report.truncated += usize::from(row.truncated);
                c.transaction(|c| write_rows(c, vec![row]))
                    .map_err(|e| format!("database refused the row: {e}"))
            }
        };
        match result {
            Ok(n) => report.rows += n,
            Err(reason) => {
                if let Err(e) = dead_letter(&mut c, item, &reason) {
                    super::ping(pool)?;
                    return Err(DbError::Query(e));
                }
                report.dead_lettered += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_on_character_boundaries() {
        assert_eq!(fit("abc", 5), ("abc".into(), false));
        assert_eq!(fit("äöüäöü", 3), ("äöü".into(), true));
        assert!(!fit(&"x".repeat(50), 50).1);
    }

    fn row(fp: &str, status: &str) -> NewAlert {
        NewAlert {
            service: "s".into(),
            severity: "critical".into(),
            message: None,
            resolved: Some(status == "resolved"),
            fingerprint: Some(fp.into()),
            alertname: None,
            cluster: None,
            status: status.into(),
            starts_at: Some("2025-06-23T12:00:00Z".parse().unwrap()),
            ends_at: None,
            resolved_at: None,
            labels: JsonText("{}".into()),
            annotations: JsonText("{}".into()),
            generator_url: None,
            kafka_partition: None,
            kafka_offset: None,
            truncated: false,
        }
    }

    #[test]
    fn labels_become_json_text_with_nul_replaced_and_everything_else_kept() {
        let map: BTreeMap<String, String> = [
            ("a\0b".to_owned(), "quote \" back \\ nl \n é \0".to_owned()),
            ("z".to_owned(), String::new()),
        ]
        .into();
        let JsonText(text) = to_json(&map);
        let back: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        let want: BTreeMap<String, String> = [
            (
                "a\u{FFFD}b".to_owned(),
                "quote \" back \\ nl \n é \u{FFFD}".to_owned(),
            ),
            ("z".to_owned(), String::new()),
        ]
        .into();
        assert_eq!(back, want);
        assert_eq!(to_json(&BTreeMap::new()).0, "{}");
    }

    #[test]
    fn plan_merges_duplicates_and_resolved_wins() {
        let (firing, resolved) = plan(vec![
            row("a", "firing"),
            row("a", "resolved"),
            row("a", "firing"),
            row("b", "firing"),
            row("b", "firing"),
        ]);
        assert_eq!(firing.len(), 1);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].fingerprint.as_deref(), Some("a"));
    }
}

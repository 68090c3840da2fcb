//! `GET /api/v1/incidents` and `GET /api/v1/sla`: alert history from PostgreSQL.
//! Query parameters are validated into typed filters; anything wrong is a 400 naming it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::db::queries::{self, IncidentFilter};
use crate::db::{DbError, PgPool};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentParams {
    service: Option<String>,
    severity: Option<String>,
    resolved: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlaParams {
    from: Option<String>,
    to: Option<String>,
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}"), None))
}

fn time(name: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::bad_request(
                    format!("{name}: not an RFC 3339 time ({e}), e.g. 2025-06-23T12:00:00Z"),
                    Some(name.into()),
                )
            })
    })
    .transpose()
}

fn int(name: &str, v: Option<&str>, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    let Some(s) = v else { return Ok(default) };
    match s.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            format!("{name}: expected an integer from {min} to {max}, got {s:?}"),
            Some(name.into()),
        )),
    }
}

fn range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if f >= t => Err(ApiError::bad_request(
            "from must be before to",
            Some("from".into()),
        )),
        _ => Ok(()),
    }
}

fn pool(state: &AppState) -> Result<PgPool, ApiError> {
    state.db.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "alert history is not served by this process (role persist is off)",
        )
    })
}

fn db_error(e: DbError) -> ApiError {
    match e {
        DbError::Unavailable(m) => ApiError::unavailable(format!("database unavailable: {m}"), 5),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

pub async fn incidents(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The incident history is not public: the same credentials as the webhook.
    super::auth::check(&req, &state.auth, crate::config::EndpointGroup::History)?;
    let p: IncidentParams = query(&req)?;
    let resolved = match p.resolved.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("resolved: expected true or false, got {other:?}"),
                Some("resolved".into()),
            ))
        }
    };
    let filter = IncidentFilter {
        service: p.service.filter(|s| !s.is_empty()),
        severity: p.severity.filter(|s| !s.is_empty()),
        resolved,
        from: time("from", p.from.as_deref())?,
        to: time("to", p.to.as_deref())?,
        limit: int("limit", p.limit.as_deref(), 100, 1, 1000)?,
        offset: int("offset", p.offset.as_deref(), 0, 0, i64::MAX / 2)?,
    };
    range(filter.from, filter.to)?;
    let pool = pool(&state)?;
    // One row more than asked tells whether a next page exists.
    let f = IncidentFilter {
        limit: filter.limit + 1,
        ..filter.clone()
    };
    let mut items = web::block(move || queries::incidents(&pool, &f))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(db_error)?;
    let more = items.len() as i64 > filter.limit;
    items.truncate(filter.limit as usize);
    let next = more.then_some(filter.offset + filter.limit);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "items": items,
        "limit": filter.limit,
        "offset": filter.offset,
        "next_offset": next,
    })))
}

pub async fn sla(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    super::auth::check(&req, &state.auth, crate::config::EndpointGroup::History)?;
    let p: SlaParams = query(&req)?;
    let to = time("to", p.to.as_deref())?.unwrap_or_else(Utc::now);
    let from = time("from", p.from.as_deref())?.unwrap_or(to - Duration::days(7));
    range(Some(from), Some(to))?;
    let pool = pool(&state)?;
    let rows = web::block(move || queries::sla(&pool, from, to))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(db_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": from, "to": to, "services": rows,
    })))
}

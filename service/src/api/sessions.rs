//! Session listing and timelines for auditors and incident responders.

use std::collections::HashMap;

use airlock_wire::Decision;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::caller::Auditor;
use super::params::list_limit;
use super::state::SharedState;
use crate::error::ApiError;
use crate::store::sessions::SessionFilter;
use crate::time::rfc3339_ms;

/// Accepts Unix milliseconds or an RFC 3339 instant (`2026-11-22T10:00:00Z`).
fn instant_param(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| {
        ApiError::invalid(name, "must be Unix milliseconds or an RFC 3339 time such as 2026-11-22T10:00:00Z")
    })?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Ok(Some(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// A decision as audit records carry it (`allow`, `denied_by_rule`, …).
fn decision_param(value: Option<&String>) -> Result<Option<Decision>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    Decision::parse(v).map(Some).ok_or_else(|| {
        ApiError::invalid(
            "decision",
            "must be a decision audit records carry, such as allow, approved, denied_by_rule, denied_by_default",
        )
    })
}

/// The first non-empty value of the query parameters `names` (a name and its alias).
fn first<'a>(q: &'a HashMap<String, String>, names: &[&'static str]) -> Option<(&'static str, &'a String)> {
    names.iter().find_map(|&n| q.get(n).filter(|v| !v.is_empty()).map(|v| (n, v)))
}

fn text_param(q: &HashMap<String, String>, name: &str) -> Option<String> {
    q.get(name).filter(|s| !s.is_empty()).cloned()
}

/// `GET /v1/sessions?subject=&since=&until=&decision=&rule=&path=&limit=`: the session
/// search of the CLI and the console. `since`/`until` (aliases `from`/`to`) bound the
/// records counted; `decision`, `rule` and `path` (a prefix) keep sessions with at least
/// one matching record.
pub async fn list(
    _: Auditor,
    State(state): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = SessionFilter {
        subject: text_param(&q, "subject"),
        from_ms: match first(&q, &["since", "from"]) {
            Some((name, v)) => instant_param(name, Some(v))?,
            None => None,
        },
        to_ms: match first(&q, &["until", "to"]) {
            Some((name, v)) => instant_param(name, Some(v))?,
            None => None,
        },
        decision: decision_param(q.get("decision"))?,
        rule: text_param(&q, "rule"),
        path_prefix: text_param(&q, "path"),
        limit: list_limit(q.get("limit"))?,
    };
    let sessions = state.store.list_sessions(&filter).await?;
    let out: Vec<Value> = sessions
        .iter()
        .map(|s| {
            json!({
                "session_id": s.session_id, "subject": s.subject,
                "first_at": rfc3339_ms(s.first_ms), "first_ms": s.first_ms,
                "last_at": rfc3339_ms(s.last_ms), "last_ms": s.last_ms,
                "count": s.count, "decisions": s.decisions,
            })
        })
        .collect();
    Ok(Json(json!({"sessions": out})))
}

/// `GET /v1/sessions/{id}`: the session's records in order.
pub async fn show(
    _: Auditor,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let records = state.store.session_timeline(&id).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound { code: "session_not_found", what: "session".into() });
    }
    Ok(Json(json!({"session_id": id, "records": records})))
}

//! Audit ingestion (filter) and chain verification (auditor).

use airlock_wire::AuditBatch;
use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::caller::{Auditor, FilterCaller};
use super::state::SharedState;
use crate::alerts::Alert;
use crate::config::AlertEvent;
use crate::error::{truncate, ApiError};
use crate::store::audit::VerifyReport;
use crate::time::now_ms;
use crate::validate::{check_audit_batch, parse_json};

/// `POST /v1/audit/batch`: idempotent by record id; returns how many were new.
pub async fn ingest(_: FilterCaller, State(state): State<SharedState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let batch: AuditBatch = parse_json(&body)?;
    check_audit_batch(&batch)?;
    let outcome = state.store.append_audit(&batch.records, now_ms()).await?;
    for r in outcome.stored.iter().filter_map(|&i| batch.records.get(i)) {
        // A policy block (`denied_by_rule`, `denied_by_default`); other refusals (outages,
        // approvals, bad requests) have alerts of their own or none.
        if r.decision.is_denial() {
            state.alerter.raise(Alert {
                event: AlertEvent::RequestDenied,
                summary: format!(
                    "blocked {} {} by {} (rule {})",
                    r.method,
                    truncate(&r.path, 200),
                    r.subject,
                    r.rule.as_deref().unwrap_or("default")
                ),
                dedup_key: format!("airlock-denied-{}", r.id),
                link: None,
                details: json!({
                    "record_id": r.id, "subject": r.subject, "rule": r.rule, "method": r.method,
                    "path": r.path, "session_id": r.session_id, "status": r.status, "time_ms": r.time_ms,
                }),
            });
        }
    }
    Ok(Json(json!({"accepted": outcome.accepted, "duplicates": outcome.duplicates})))
}

/// `GET /v1/audit/verify`: walks the chain.
pub async fn verify(_: Auditor, State(state): State<SharedState>) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(state.store.verify_chain().await?))
}

//! Approval endpoints: create / wait / redeem for the filter, list / show / decide for
//! approvers.

use std::collections::HashMap;
use std::time::Duration;

use airlock_wire::{ApprovalErrorCode, ApprovalStatus, RedeemApproval};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::caller::{Approver, FilterCaller};
use super::params::{int_param, list_limit, status_filter};
use super::state::SharedState;
use crate::alerts::Alert;
use crate::auth::Principal;
use crate::auth::Role;
use crate::config::AlertEvent;
use crate::error::{truncate, ApiError};
use crate::ids::{is_approval_id, new_approval_id};
use crate::slack_bot::{spawn_post, spawn_update};
use crate::store::approvals::{Approval, DecideError, Decision, RedeemError, Verdict};
use crate::time::{now_ms, rfc3339_ms};
use crate::validate::{check_digest, new_approval, parse_json, DecisionRequest};

/// Default and maximum long-poll duration of `wait`.
const DEFAULT_WAIT_MS: i64 = 30_000;
const MAX_WAIT_MS: i64 = 60_000;

fn decisions_json(decisions: &[Decision]) -> Vec<Value> {
    decisions
        .iter()
        .map(|d| {
            json!({"approver": d.approver, "decision": d.decision, "reason": d.reason, "at": rfc3339_ms(d.at_ms),
            "at_ms": d.at_ms})
        })
        .collect()
}

/// Everything an approver needs to judge the request: exactly what will run, who asks,
/// under which rule, why, and until when.
fn full_view(state: &SharedState, a: &Approval, now: i64) -> Value {
    json!({
        "id": a.id,
        "status": a.status(now),
        "rule": a.rule,
        "subject": a.subject,
        "groups": a.groups,
        "method": a.method,
        "path": a.path,
        "body": a.body,
        "digest": a.digest,
        "reason": a.reason,
        "session_id": a.session_id,
        "mode": a.mode,
        "approvers": {"groups": a.approver_groups, "required": a.required},
        "created_at": rfc3339_ms(a.created_ms),
        "created_at_ms": a.created_ms,
        "expires_at": rfc3339_ms(a.expires_ms),
        "expires_at_ms": a.expires_ms,
        "used": a.used,
        "decisions": decisions_json(&a.decisions),
        "url": state.console_link(&a.id),
    })
}

fn status_view(a: &Approval, now: i64) -> Value {
    json!({"id": a.id, "status": a.status(now), "decisions": decisions_json(&a.decisions)})
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if is_approval_id(id) {
        Ok(())
    } else {
        Err(ApiError::approval_not_found(id))
    }
}

/// One line for humans about what `a` asks for; alerts and their Slack updates use it.
pub fn summary(a: &Approval) -> String {
    format!(
        "{} asks to run {} {} (rule {}){}; needs {} approval(s) from {} before {}",
        a.subject,
        a.method,
        truncate(&a.path, 200),
        a.rule,
        a.reason.as_deref().map(|r| format!(", reason: {}", truncate(r, 200))).unwrap_or_default(),
        a.required,
        a.approver_groups.join("/"),
        rfc3339_ms(a.expires_ms),
    )
}

/// `POST /v1/approvals` (filter): stores a pending approval and alerts approvers.
pub async fn create(
    _: FilterCaller,
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let new = new_approval(parse_json(&body)?)?;
    let id = new_approval_id().map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = now_ms();
    let a = state.store.create_approval(&id, &new, now).await?;
    let url = state.console_link(&a.id);
    state.alerter.raise(Alert {
        event: AlertEvent::ApprovalPending,
        summary: summary(&a),
        dedup_key: format!("airlock-approval-{}", a.id),
        link: Some(url.clone()),
        details: json!({
            "approval_id": a.id, "subject": a.subject, "rule": a.rule, "method": a.method,
            "path": a.path, "reason": a.reason, "session_id": a.session_id,
            "approver_groups": a.approver_groups, "required": a.required, "expires_at": rfc3339_ms(a.expires_ms),
        }),
    });
    spawn_post(&state, &a);
    tracing::info!(approval_id = %a.id, rule = %a.rule, subject = %a.subject, "approval requested");
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": a.id, "status": ApprovalStatus::Pending, "url": url, "expires_at": rfc3339_ms(a.expires_ms),
                "expires_at_ms": a.expires_ms})),
    ))
}

/// `GET /v1/approvals/{id}/wait?timeout_ms=N` (filter): long-poll until decided or timeout.
pub async fn wait(
    _: FilterCaller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    checked_id(&id)?;
    let timeout_ms = int_param("timeout_ms", q.get("timeout_ms"))?.unwrap_or(DEFAULT_WAIT_MS);
    if timeout_ms < 0 {
        return Err(ApiError::invalid("timeout_ms", "must not be negative"));
    }
    let timeout = Duration::from_millis(u64::try_from(timeout_ms.min(MAX_WAIT_MS)).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    let handle = state.waiters.subscribe(&id);
    loop {
        // Arm the wake-up before reading, so a decision landing in between is not lost.
        let notified = handle.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let a = state.store.get_approval(&id).await?.ok_or_else(|| ApiError::approval_not_found(&id))?;
        let now = now_ms();
        let status = a.status(now);
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if status != ApprovalStatus::Pending || remaining.is_zero() {
            return Ok(Json(status_view(&a, now)));
        }
        // Wake at the deadline, at expiry (to answer `expired` promptly), or to re-read.
        let to_expiry = Duration::from_millis(u64::try_from(a.expires_ms - now).unwrap_or(0) + 1);
        let mut nap = remaining.min(to_expiry);
        if let Some(p) = state.poll_interval {
            nap = nap.min(p);
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// `POST /v1/approvals/{id}/redeem` (filter, ticket mode): single-use consumption.
pub async fn redeem(
    _: FilterCaller,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: RedeemApproval = parse_json(&body)?;
    check_digest("digest", &req.digest)?;
    let outcome = if is_approval_id(&id) {
        state.store.redeem(&id, &req.digest, &req.subject, now_ms()).await?
    } else {
        Err(RedeemError::NotFound)
    };
    match outcome {
        Ok(()) => {
            tracing::info!(approval_id = %id, "approval redeemed");
            Ok(Json(json!({"status": ApprovalStatus::Approved})))
        }
        Err(e) => Err(ApiError::Conflict { code: e.code().as_str(), message: e.to_string() }),
    }
}

/// `GET /v1/approvals?status=pending&limit=N` (approver): approvals this caller may
/// decide; auditors see all.
pub async fn list(
    Approver(who): Approver,
    State(state): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let status = status_filter(q.get("status"), ApprovalStatus::parse, "pending, approved, denied, expired")?;
    let limit = list_limit(q.get("limit"))?;
    let now = now_ms();
    let all = state.store.list_approvals(status, now, limit).await?;
    let visible: Vec<Value> = all
        .iter()
        .filter(|a| who.has_role(Role::Auditor) || who.in_any(&a.approver_groups))
        .map(|a| full_view(&state, a, now))
        .collect();
    Ok(Json(json!({"approvals": visible})))
}

/// `GET /v1/approvals/{id}` (approver): the full request awaiting a decision.
pub async fn show(
    Approver(who): Approver,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_id(&id)?;
    let a = state.store.get_approval(&id).await?.ok_or_else(|| ApiError::approval_not_found(&id))?;
    if !(who.has_role(Role::Auditor) || who.in_any(&a.approver_groups)) {
        return Err(not_an_approver(&who.name));
    }
    Ok(Json(full_view(&state, &a, now_ms())))
}

fn not_an_approver(name: &str) -> ApiError {
    ApiError::Forbidden {
        code: "not_an_approver",
        message: format!("`{name}` is in none of the groups allowed to approve this request"),
    }
}

/// `POST /v1/approvals/{id}/decision` (approver): approve or deny, with a reason.
pub async fn decide(
    Approver(who): Approver,
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    checked_id(&id)?;
    let req: DecisionRequest = parse_json(&body)?;
    let verdict = req.validate()?;
    let decided = apply_decision(&state, &who, &id, verdict, req.reason.trim()).await?;
    Ok(Json(full_view(&state, &decided, now_ms())))
}

/// The one decision path of every channel (API, CLI, console, Slack): the approver must be
/// in one of the approval's groups, may not be its requester, and votes once; the store
/// applies the N-of-M quorum. Wakes the filter's long-poll on success.
pub async fn apply_decision(
    state: &SharedState,
    who: &Principal,
    id: &str,
    verdict: Verdict,
    reason: &str,
) -> Result<Approval, ApiError> {
    let a = state.store.get_approval(id).await?.ok_or_else(|| ApiError::approval_not_found(id))?;
    if !who.in_any(&a.approver_groups) {
        return Err(not_an_approver(&who.name));
    }
    if who.name == a.subject {
        return Err(ApiError::Forbidden {
            code: "self_approval",
            message: "the requester cannot decide on their own request".into(),
        });
    }
    let now = now_ms();
    let decided = match state.store.decide(id, &who.name, verdict, reason, now).await {
        Ok(a) => a,
        Err(DecideError::NotFound) => return Err(ApiError::approval_not_found(id)),
        Err(DecideError::NotPending(s)) => {
            return Err(ApiError::Conflict {
                code: ApprovalErrorCode::ApprovalNotPending.as_str(),
                message: format!("the approval is already {}", s.as_str()),
            })
        }
        Err(DecideError::AlreadyDecided) => {
            return Err(ApiError::Conflict {
                code: "already_decided",
                message: "you have already decided on this approval".into(),
            })
        }
        Err(DecideError::Store(e)) => return Err(e.into()),
    };
    state.waiters.wake(id);
    spawn_update(state, &decided);
    tracing::info!(approval_id = %id, approver = %who.name, decision = verdict.as_str(),
        status = decided.status(now).as_str(), "approval decision");
    Ok(decided)
}

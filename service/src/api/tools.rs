//! MCP tool-definition pins: filters report what `tools/list` answers showed and read the
//! pins back; approvers list the changes and accept them.

use std::collections::HashMap;

use airlock_wire::{ToolChangeStatus, ToolObservations, ToolPins};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::caller::{Approver, FilterCaller};
use super::params::{list_limit, status_filter};
use super::state::SharedState;
use crate::alerts::Alert;
use crate::config::AlertEvent;
use crate::error::{truncate, ApiError};
use crate::ids::{is_tool_change_id, new_tool_change_id};
use crate::store::tools::{AcceptError, ToolChange};
use crate::time::{now_ms, rfc3339_ms};
use crate::validate::{check_tool_observations, parse_json};

fn change_view(c: &ToolChange) -> Value {
    json!({
        "id": c.id, "upstream": c.upstream, "tool": c.tool, "status": c.status,
        "old_fingerprint": c.old_fingerprint, "new_fingerprint": c.new_fingerprint,
        "observed_at": rfc3339_ms(c.observed_ms), "observed_at_ms": c.observed_ms,
        "accepted_by": c.accepted_by, "decided_at": c.decided_ms.map(rfc3339_ms),
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound { code: "tool_change_not_found", what: format!("tool change `{}`", truncate(id, 64)) }
}

/// `POST /v1/mcp/tool-definitions` (filter): pins new tools, records changed ones (each
/// raising `tool_definition_changed`), and answers every pin, as `GET …/tool-pins` does.
pub async fn observe(
    _: FilterCaller,
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<Json<ToolPins>, ApiError> {
    let report: ToolObservations = parse_json(&body)?;
    check_tool_observations(&report)?;
    let mut observations = Vec::with_capacity(report.observations.len());
    for o in report.observations {
        let id = new_tool_change_id().map_err(|e| ApiError::Internal(e.to_string()))?;
        observations.push((o, id));
    }
    let changes = state.store.observe_tools(&observations, now_ms()).await?;
    for c in &changes {
        tracing::warn!(change_id = %c.id, upstream = %c.upstream, tool = %c.tool, "MCP tool definition changed");
        state.alerter.raise(Alert {
            event: AlertEvent::ToolDefinitionChanged,
            summary: format!(
                "MCP tool `{}` of upstream `{}` changed its definition since it was pinned; review and run \
                 `airlock tools accept {}`",
                truncate(&c.tool, 200),
                truncate(&c.upstream, 200),
                c.id
            ),
            dedup_key: format!("airlock-tool-change-{}", c.id),
            link: None,
            details: json!({
                "change_id": c.id, "upstream": c.upstream, "tool": c.tool,
                "old_fingerprint": c.old_fingerprint, "new_fingerprint": c.new_fingerprint,
            }),
        });
    }
    Ok(Json(ToolPins { pins: state.store.tool_pins().await? }))
}

/// `GET /v1/mcp/tool-pins` (filter): every pin, with its pending change.
pub async fn pins(_: FilterCaller, State(state): State<SharedState>) -> Result<Json<ToolPins>, ApiError> {
    Ok(Json(ToolPins { pins: state.store.tool_pins().await? }))
}

/// `GET /v1/mcp/tool-changes?status=pending&limit=N` (approver).
pub async fn changes(
    _: Approver,
    State(state): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let status = status_filter(q.get("status"), ToolChangeStatus::parse, "pending, accepted, superseded")?;
    let limit = list_limit(q.get("limit"))?;
    let changes = state.store.tool_changes(status, limit).await?;
    Ok(Json(json!({"changes": changes.iter().map(change_view).collect::<Vec<_>>()})))
}

/// `POST /v1/mcp/tool-changes/{id}/accept` (approver): the new definition becomes the pin;
/// filters take it at their next refresh.
pub async fn accept(
    Approver(who): Approver,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !is_tool_change_id(&id) {
        return Err(not_found(&id));
    }
    let change = match state.store.accept_tool_change(&id, &who.name, now_ms()).await {
        Ok(change) => change,
        Err(AcceptError::NotFound) => return Err(not_found(&id)),
        Err(AcceptError::NotPending(status)) => {
            return Err(ApiError::Conflict {
                code: "tool_change_not_pending",
                message: format!("the tool change is already {}", status.as_str()),
            })
        }
        Err(AcceptError::Store(e)) => return Err(e.into()),
    };
    tracing::info!(change_id = %id, approver = %who.name, upstream = %change.upstream, tool = %change.tool,
        "MCP tool definition accepted");
    Ok(Json(change_view(&change)))
}

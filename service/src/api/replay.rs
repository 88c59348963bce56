//! `POST /v1/sessions/{id}/replay` (auditor): the console's replay action. The target is
//! the service config's `[replay] target` only; the caller names a session, never a URL,
//! so the service cannot be made to send requests anywhere else.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::caller::Auditor;
use super::state::SharedState;
use crate::error::ApiError;
use crate::replay::{reached_upstream, replay_record};

pub async fn replay(
    Auditor(who): Auditor,
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (config, http) = state.replay.as_ref().ok_or(ApiError::NotFound {
        code: "replay_not_configured",
        what: "replay target (configure [replay])".into(),
    })?;
    let records = state.store.session_timeline(&id).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound { code: "session_not_found", what: "session".into() });
    }
    let headers = reqwest::header::HeaderMap::new();
    let (mut lines, mut skipped) = (Vec::new(), 0usize);
    for r in &records {
        let r = serde_json::to_value(r).map_err(|e| ApiError::Internal(e.to_string()))?;
        if !reached_upstream(r["decision"].as_str().unwrap_or_default()) {
            skipped += 1;
            continue;
        }
        let line = replay_record(http, &config.target, &headers, &r).await.map_err(ApiError::Internal)?;
        lines.push(json!({"differs": line.differs(), "line": line}));
    }
    let differing = lines.iter().filter(|l| l["differs"] == true).count();
    tracing::info!(session = %id, by = %who.name, replayed = lines.len(), differing, "session replayed");
    Ok(Json(json!({
        "session_id": id, "target": config.target, "replayed": lines, "differing": differing, "skipped_denied": skipped,
    })))
}

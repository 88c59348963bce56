//! `POST /v1/slack/interactions`: Slack's interactivity request URL. A click on Approve or
//! Deny in an alert message becomes a decision by the approver whose `slack_user_id` is the
//! clicking user, through the same [`apply_decision`] as every other channel; the original
//! message is then replaced (via the click's `response_url`) by who decided, when, and the
//! outcome. Slack requires no approver reason field, so the recorded reason is
//! "approved in Slack by NAME" / "denied in Slack by NAME".

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::approvals::{apply_decision, summary};
use super::state::SharedState;
use crate::auth::Role;
use crate::ids::is_approval_id;
use crate::slack::{self, APPROVE_ACTION, DENY_ACTION};
use crate::store::approvals::Verdict;
use crate::time::now_ms;

/// The parts of a `block_actions` payload Airlock reads.
#[derive(Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    actions: Vec<Action>,
    /// Where to post the replacement message; present on every button click.
    response_url: Option<String>,
}

#[derive(Deserialize)]
struct SlackUser {
    id: String,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: String,
}

fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// Tells only the clicking user why nothing happened: in the reply and via `response_url`.
fn ephemeral(state: &SharedState, response_url: Option<&str>, text: &str) -> Response {
    let message = slack::ephemeral(text);
    if let Some(url) = response_url {
        post_to_slack(state, url, message.clone());
    }
    (StatusCode::OK, Json(message)).into_response()
}

/// Posts `body` to a Slack `response_url` in the background (Slack wants the click answered
/// within 3 seconds). The URL is a capability: logs never show it.
fn post_to_slack(state: &SharedState, url: &str, body: Value) {
    let (http, url) = (state.http.clone(), url.to_string());
    tokio::spawn(async move {
        match http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => tracing::info!("Slack message updated"),
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "Slack refused the message update"),
            Err(e) => tracing::warn!(error = %e.without_url(), "Slack message update failed"),
        }
    });
}

pub async fn interactions(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &state.slack_signing_secret else {
        return refused(StatusCode::NOT_FOUND, "slack_not_configured", "Slack interactivity is not configured");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = now_ms();
    // Nothing of the body is read before the signature holds.
    if let Err(e) = slack::verify(
        secret.expose(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now / 1000,
    ) {
        tracing::warn!(reason = %e, "Slack interaction refused");
        return refused(StatusCode::UNAUTHORIZED, "bad_slack_signature", &e.to_string());
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some((_, payload)) = fields.iter().find(|(k, _)| k == "payload") else {
        return refused(StatusCode::BAD_REQUEST, "invalid_payload", "the form has no `payload` field");
    };
    let interaction: Interaction = match serde_json::from_str(payload) {
        Ok(i) => i,
        Err(e) => return refused(StatusCode::BAD_REQUEST, "invalid_payload", &format!("`payload`: {e}")),
    };
    let response_url = interaction.response_url.as_deref();
    if interaction.kind != "block_actions" {
        return refused(StatusCode::BAD_REQUEST, "unsupported_interaction", "only block_actions are handled");
    }
    // "Open in console" clicks arrive too; they need no answer.
    let Some((verdict, id)) = interaction.actions.iter().find_map(|a| match a.action_id.as_str() {
        APPROVE_ACTION => Some((Verdict::Approve, a.value.as_str())),
        DENY_ACTION => Some((Verdict::Deny, a.value.as_str())),
        _ => None,
    }) else {
        return (StatusCode::OK, Json(json!({}))).into_response();
    };
    let who = match state.approvers.by_slack_user(&interaction.user.id) {
        Some(p) if p.has_role(Role::Approver) => p,
        _ => {
            tracing::info!(slack_user = %interaction.user.id, "Slack click by a user who is no approver");
            let text = "Your Slack account is not linked to an Airlock approver (slack_user_id); nothing was decided.";
            return ephemeral(&state, response_url, text);
        }
    };
    if !is_approval_id(id) {
        return ephemeral(&state, response_url, "This button names no approval; nothing was decided.");
    }
    let verb = if verdict == Verdict::Approve { "approved" } else { "denied" };
    let reason = format!("{verb} in Slack by {}", who.name);
    match apply_decision(&state, &who, id, verdict, &reason).await {
        Ok(decided) => {
            let message = slack::outcome_message(&summary(&decided), &decided, &state.console_link(id), now_ms());
            if let Some(url) = response_url {
                post_to_slack(&state, url, message);
            }
            (StatusCode::OK, Json(json!({"status": decided.status(now_ms())}))).into_response()
        }
        Err(e) => ephemeral(&state, response_url, &format!("Nothing was decided: {e}")),
    }
}

//! Bot-token mode of the Slack integration: the service posts each pending approval itself
//! (`chat.postMessage`), remembers the message's channel + ts in the store, and rewrites it
//! (`chat.update`) on every decision, whichever channel it came from (Slack, console,
//! API, CLI), and when the approval expires undecided. The bot token is a credential: it
//! travels only in the `authorization` header and never reaches a log line.

use std::sync::Arc;
use std::time::Duration;

use airlock_filter::credentials::Secret;
use airlock_wire::ApprovalStatus;
use serde_json::{json, Value};

use crate::api::approvals::summary;
use crate::api::SharedState;
use crate::config::SlackConfig;
use crate::slack;
use crate::store::approvals::Approval;
use crate::store::slack_messages::SlackMessage;
use crate::time::now_ms;

/// How often expired approvals' messages are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct SlackBot {
    http: reqwest::Client,
    token: Secret,
    channel: String,
    api_url: String,
}

impl SlackBot {
    /// A bot when `[slack]` has `bot_token` and `channel`.
    pub fn from_config(cfg: &SlackConfig, http: reqwest::Client) -> Option<SlackBot> {
        let (token, channel) = (cfg.bot_token.clone()?, cfg.channel.clone()?);
        Some(SlackBot { http, token, channel, api_url: cfg.api_url.trim_end_matches('/').to_string() })
    }

    /// Calls a Web API method; Slack answers HTTP 200 with `ok: false` on errors.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}/{method}", self.api_url))
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|_| format!("HTTP {status}, not JSON"))?;
        if v["ok"] == true {
            Ok(v)
        } else {
            Err(format!("HTTP {status}, error {}", v["error"].as_str().unwrap_or("unknown")))
        }
    }

    /// Posts the pending approval with its buttons and records where it went.
    pub async fn post_pending(&self, state: &SharedState, a: &Approval) {
        let link = state.console_link(&a.id);
        let text = summary(a);
        let body = json!({"channel": self.channel, "text": text,
            "blocks": slack::pending_blocks(&text, Some(&a.id), Some(&link))});
        let posted = match self.call("chat.postMessage", &body).await {
            Ok(v) => v,
            Err(e) => return tracing::warn!(approval_id = %a.id, error = %e, "Slack chat.postMessage failed"),
        };
        let (Some(channel), Some(ts)) = (posted["channel"].as_str(), posted["ts"].as_str()) else {
            return tracing::warn!(approval_id = %a.id, "Slack chat.postMessage answer lacks channel or ts");
        };
        let m = SlackMessage { approval_id: a.id.clone(), channel: channel.into(), ts: ts.into() };
        if let Err(e) = state.store.put_slack_message(&m).await {
            tracing::warn!(approval_id = %a.id, error = %e, "cannot record the Slack message");
        }
    }

    /// Rewrites the approval's message to its current state; closes it once final.
    pub async fn update(&self, state: &SharedState, a: &Approval) {
        let m = match state.store.slack_message(&a.id).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => return tracing::warn!(approval_id = %a.id, error = %e, "cannot read the Slack message"),
        };
        let now = now_ms();
        let mut body = slack::outcome_message(&summary(a), a, &state.console_link(&a.id), now);
        body["channel"] = json!(m.channel);
        body["ts"] = json!(m.ts);
        if let Some(o) = body.as_object_mut() {
            o.remove("replace_original");
        }
        if let Err(e) = self.call("chat.update", &body).await {
            return tracing::warn!(approval_id = %a.id, error = %e, "Slack chat.update failed");
        }
        tracing::info!(approval_id = %a.id, "Slack message updated");
        if a.status(now) != ApprovalStatus::Pending {
            if let Err(e) = state.store.close_slack_message(&a.id).await {
                tracing::warn!(approval_id = %a.id, error = %e, "cannot close the Slack message");
            }
        }
    }
}

/// Posts the new approval in the background, when a bot is configured.
pub fn spawn_post(state: &SharedState, a: &Approval) {
    if state.slack_bot.is_some() {
        let (state, a) = (Arc::clone(state), a.clone());
        tokio::spawn(async move {
            if let Some(bot) = &state.slack_bot {
                bot.post_pending(&state, &a).await;
            }
        });
    }
}

/// Rewrites the approval's message in the background, when a bot is configured.
pub fn spawn_update(state: &SharedState, a: &Approval) {
    if state.slack_bot.is_some() {
        let (state, a) = (Arc::clone(state), a.clone());
        tokio::spawn(async move {
            if let Some(bot) = &state.slack_bot {
                bot.update(&state, &a).await;
            }
        });
    }
}

/// Rewrites the messages of approvals that expired undecided, forever.
pub async fn sweep_expired(state: SharedState) {
    let Some(bot) = &state.slack_bot else { return };
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let expired = match state.store.expired_open_slack_messages(now_ms()).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list expired Slack messages");
                continue;
            }
        };
        for m in expired {
            if let Ok(Some(a)) = state.store.get_approval(&m.approval_id).await {
                bot.update(&state, &a).await;
            }
        }
    }
}

//! What every handler shares: the store, the callers' credentials, alerting, long-poll
//! wake-ups and the public URL.

use std::sync::Arc;
use std::time::Duration;

use airlock_filter::credentials::Secret;

use crate::alerts::Alerter;
use crate::auth::login::Login;
use crate::auth::{Approvers, FilterKey};
use crate::credentials::SecretStore;
use crate::replay::ReplayConfig;
use crate::store::Store;
use crate::waiters::Waiters;

pub struct AppState {
    pub store: Store,
    pub filter_key: FilterKey,
    pub approvers: Approvers,
    pub alerter: Alerter,
    pub waiters: Waiters,
    /// Base URL for links in answers and alerts, without a trailing slash.
    pub public_url: String,
    /// How often a long-poll re-reads the store; `None` relies on in-process wake-ups only
    /// (enough for one SQLite-backed process; replicas on PostgreSQL need the re-read).
    pub poll_interval: Option<Duration>,
    /// The JWKS of the filter's `signed_request` keys, as published.
    pub jwks: serde_json::Value,
    /// The secrets filters fetch.
    pub secrets: SecretStore,
    /// Verifies Slack button clicks; `None` when `[slack]` is not configured.
    pub slack_signing_secret: Option<Secret>,
    /// Posts and rewrites approval messages with a bot token, when configured.
    pub slack_bot: Option<crate::slack_bot::SlackBot>,
    /// Outbound HTTP (Slack message updates).
    pub http: reqwest::Client,
    /// Console sign-in with the IdP (`[oidc.login]`), and its sessions.
    pub login: Option<Arc<Login>>,
    /// The console's replay target (`[replay]`), with its HTTP client.
    pub replay: Option<(ReplayConfig, reqwest::Client)>,
}

impl AppState {
    pub fn console_link(&self, approval_id: &str) -> String {
        format!("{}/console#/approvals/{approval_id}", self.public_url)
    }
}

pub type SharedState = Arc<AppState>;

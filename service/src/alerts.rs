//! Alert delivery. Handlers hand an [`Alert`] to [`Alerter::raise`], which never blocks:
//! it queues on a bounded channel (dropping, counted and logged, when full). A background
//! task fans each alert out to the sinks that subscribe to its event, each delivery in its
//! own task with retries and exponential backoff. Sink URLs and keys are secrets: log
//! lines name a sink by kind and index only, and reqwest errors are stripped of URLs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::config::{AlertEvent, AlertsConfig, SinkConfig};
use crate::slack;

/// Alerts waiting for the delivery task; beyond this, new alerts are dropped and counted.
const QUEUE: usize = 4096;
/// Deliveries in flight at once (each may be sleeping between retries).
const IN_FLIGHT: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Where PagerDuty sinks send events unless their config names another URL.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub event: AlertEvent,
    /// One line for humans, e.g. "agent-7 asks to run POST /sql (rule prod-writes)".
    pub summary: String,
    /// Stable key so a sink can group repeats (PagerDuty `dedup_key`).
    pub dedup_key: String,
    /// Where an approver can act, for pending approvals.
    pub link: Option<String>,
    /// Structured context: subject, rule, method, path, ids. Never bodies or tokens.
    pub details: Value,
}

impl Alert {
    fn event_name(&self) -> &'static str {
        match self.event {
            AlertEvent::ApprovalPending => "approval_pending",
            AlertEvent::RequestDenied => "request_denied",
            AlertEvent::ToolDefinitionChanged => "tool_definition_changed",
        }
    }
}

/// The JSON payload a sink receives for `alert`.
pub fn payload(sink: &SinkConfig, alert: &Alert) -> Value {
    match sink {
        SinkConfig::Slack { interactive, .. } => {
            let approval_id = match (interactive, alert.event) {
                (true, AlertEvent::ApprovalPending) => alert.details["approval_id"].as_str(),
                _ => None,
            };
            let blocks = slack::pending_blocks(&alert.summary, approval_id, alert.link.as_deref());
            json!({ "text": alert.summary, "blocks": blocks })
        }
        SinkConfig::Webhook { .. } => json!({
            "source": "airlock",
            "event": alert.event_name(),
            "summary": alert.summary,
            "dedup_key": alert.dedup_key,
            "link": alert.link,
            "details": alert.details,
        }),
        SinkConfig::Pagerduty { routing_key, severity, .. } => {
            let mut body = json!({
                "routing_key": routing_key.expose(),
                "event_action": "trigger",
                "dedup_key": alert.dedup_key,
                "payload": {
                    "summary": truncate_chars(&alert.summary, 1024),
                    "severity": severity,
                    "source": "airlock",
                    "component": "airlock-control-service",
                    "class": alert.event_name(),
                    "custom_details": alert.details,
                }
            });
            if let Some(link) = &alert.link {
                body["links"] = json!([{ "href": link, "text": "Review in Airlock console" }]);
            }
            body
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn sink_url(sink: &SinkConfig) -> &str {
    match sink {
        SinkConfig::Slack { url, .. } | SinkConfig::Webhook { url, .. } => url.expose(),
        SinkConfig::Pagerduty { url, .. } => url.as_ref().map_or(PAGERDUTY_EVENTS_URL, |u| u.expose()),
    }
}

/// Delay before retry number `retry` (1-based): initial × 2^(retry-1), capped.
pub fn backoff(initial_ms: u64, retry: u32) -> Duration {
    let factor = 1u64.checked_shl(retry.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_millis(initial_ms.saturating_mul(factor)).min(MAX_BACKOFF)
}

/// Handle used by request handlers to raise alerts.
pub struct Alerter {
    tx: Option<mpsc::Sender<Alert>>,
    dropped: AtomicU64,
}

impl Alerter {
    /// An alerter that discards everything (no sinks configured).
    pub fn disabled() -> Alerter {
        Alerter { tx: None, dropped: AtomicU64::new(0) }
    }

    /// Starts the delivery task on the current Tokio runtime.
    pub fn start(config: AlertsConfig, client: reqwest::Client) -> Alerter {
        if config.sinks.is_empty() {
            return Alerter::disabled();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(Arc::new(config), client, rx));
        Alerter { tx: Some(tx), dropped: AtomicU64::new(0) }
    }

    /// Queues `alert` without waiting.
    pub fn raise(&self, alert: Alert) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(alert).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped_total = n, "alert queue full or closed: alert dropped");
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn deliver_all(config: Arc<AlertsConfig>, client: reqwest::Client, mut rx: mpsc::Receiver<Alert>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(alert) = rx.recv().await {
        let alert = Arc::new(alert);
        for (index, sink) in config.sinks.iter().enumerate() {
            if !sink.events().contains(&alert.event) {
                continue;
            }
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (config, client, alert) = (Arc::clone(&config), client.clone(), Arc::clone(&alert));
            tokio::spawn(async move {
                if let Some(sink) = config.sinks.get(index) {
                    deliver_one(&client, sink, index, &alert, config.max_attempts, config.initial_backoff_ms).await;
                }
                drop(permit);
            });
        }
    }
}

/// Posts one alert to one sink, retrying network errors, 429 and 5xx answers.
async fn deliver_one(
    client: &reqwest::Client,
    sink: &SinkConfig,
    index: usize,
    alert: &Alert,
    max_attempts: u32,
    initial_ms: u64,
) {
    let body = payload(sink, alert);
    let kind = sink.kind();
    let event = alert.event_name();
    for attempt in 1..=max_attempts {
        let outcome = client.post(sink_url(sink)).json(&body).send().await;
        let retryable = match outcome {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!(sink = kind, sink_index = index, event, attempt, "alert delivered");
                return;
            }
            Ok(resp) => {
                let status = resp.status();
                let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                tracing::warn!(
                    sink = kind,
                    sink_index = index,
                    event,
                    attempt,
                    status = status.as_u16(),
                    "alert sink refused the alert"
                );
                retry
            }
            Err(e) => {
                // without_url: the URL of a webhook is itself a credential.
                tracing::warn!(sink = kind, sink_index = index, event, attempt, error = %e.without_url(),
                    "alert delivery failed");
                true
            }
        };
        if !retryable || attempt == max_attempts {
            break;
        }
        tokio::time::sleep(backoff(initial_ms, attempt)).await;
    }
    tracing::error!(sink = kind, sink_index = index, event, "alert not delivered; giving up");
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_filter::credentials::Secret;

    fn alert() -> Alert {
        Alert {
            event: AlertEvent::ApprovalPending,
            summary: "agent <x> asks to run POST /sql".into(),
            dedup_key: "airlock:apr_1".into(),
            link: Some("https://airlock.example/console#/approvals/apr_1".into()),
            details: json!({"rule": "prod-writes"}),
        }
    }

    #[test]
    fn slack_message_has_blocks_with_an_approve_link() {
        let sink = SinkConfig::Slack { url: Secret::new("https://hooks/x"), events: vec![], interactive: false };
        let p = payload(&sink, &alert());
        assert_eq!(p["blocks"][0]["type"], "section");
        assert!(p["blocks"][0]["text"]["text"].as_str().unwrap().contains("&lt;x&gt;"));
        assert_eq!(p["blocks"][1]["elements"][0]["url"], "https://airlock.example/console#/approvals/apr_1");
        assert_eq!(p["text"], "agent <x> asks to run POST /sql");
        assert_eq!(p["blocks"][1]["elements"].as_array().map(Vec::len), Some(1), "no decision buttons");
    }

    #[test]
    fn interactive_slack_message_has_approve_and_deny_buttons_for_the_approval() {
        let sink = SinkConfig::Slack { url: Secret::new("https://hooks/x"), events: vec![], interactive: true };
        let mut a = alert();
        a.details = json!({"approval_id": "apr_1"});
        let p = payload(&sink, &a);
        let e = &p["blocks"][1]["elements"];
        assert_eq!(e[0]["action_id"], slack::APPROVE_ACTION);
        assert_eq!(e[1]["action_id"], slack::DENY_ACTION);
        assert_eq!(e[1]["value"], "apr_1");
        assert_eq!(e[2]["url"], "https://airlock.example/console#/approvals/apr_1");
    }

    #[test]
    fn pagerduty_event_follows_events_api_v2() {
        let sink = SinkConfig::Pagerduty {
            routing_key: Secret::new("rk-1"),
            url: None,
            severity: "critical".into(),
            events: vec![],
        };
        let p = payload(&sink, &alert());
        assert_eq!(p["routing_key"], "rk-1");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "airlock:apr_1");
        assert_eq!(p["payload"]["severity"], "critical");
        assert_eq!(p["payload"]["source"], "airlock");
        assert!(p["payload"]["summary"].as_str().unwrap().contains("POST /sql"));
        assert_eq!(sink_url(&sink), PAGERDUTY_EVENTS_URL);
    }

    #[test]
    fn generic_webhook_carries_event_name_and_details() {
        let sink = SinkConfig::Webhook { url: Secret::new("http://h"), events: vec![] };
        let p = payload(&sink, &alert());
        assert_eq!(p["event"], "approval_pending");
        assert_eq!(p["details"]["rule"], "prod-writes");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(100, 1), Duration::from_millis(100));
        assert_eq!(backoff(100, 2), Duration::from_millis(200));
        assert_eq!(backoff(100, 4), Duration::from_millis(800));
        assert_eq!(backoff(100, 40), MAX_BACKOFF);
        assert_eq!(backoff(u64::MAX, 3), MAX_BACKOFF);
    }
}

//! Slack interactivity: checking that a button click really comes from Slack, and the
//! Block Kit messages for a pending approval (with Approve / Deny buttons) and for its
//! outcome (who decided, when, and how it ended), which replaces the original in place.

use serde_json::{json, Value};

use crate::store::approvals::Approval;
use crate::time::rfc3339_ms;
use airlock_wire::ApprovalStatus;

/// `action_id` of the Approve button; its `value` is the approval id.
pub const APPROVE_ACTION: &str = "airlock_approve";
/// `action_id` of the Deny button; its `value` is the approval id.
pub const DENY_ACTION: &str = "airlock_deny";
/// Requests signed longer ago (or further ahead) than this are refused as replays.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request is not accepted as coming from Slack. None of these says anything about
/// the expected signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing or unreadable header {0}")]
    MissingHeader(&'static str),
    #[error("X-Slack-Request-Timestamp is more than 5 minutes away from the server's clock (replayed request?)")]
    Stale,
    #[error("X-Slack-Signature does not match the body signed with the configured signing secret")]
    Mismatch,
}

/// `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`: Slack's request signature.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac_sha256::HMAC::new(secret.as_bytes());
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize()))
}

/// Checks Slack's signature headers against the raw body, before anything is parsed.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    given: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))?;
    let given = given.ok_or(SignatureError::MissingHeader("X-Slack-Signature"))?;
    let ts: i64 = timestamp.parse().map_err(|_| SignatureError::MissingHeader("X-Slack-Request-Timestamp"))?;
    // `abs_diff`: a timestamp near i64's ends must not overflow the subtraction.
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = signature(secret, timestamp, body);
    if constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Compares without stopping at the first differing byte (lengths are public: always 67).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Slack mrkdwn treats `<`, `>` and `&` as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn summary_section(summary: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Airlock*: {}", escape(summary))}})
}

fn console_button(link: &str) -> Value {
    json!({"type": "button", "action_id": "airlock_open", "text": {"type": "plain_text", "text": "Open in console"},
        "url": link})
}

fn decision_buttons(approval_id: &str) -> [Value; 2] {
    [
        json!({"type": "button", "action_id": APPROVE_ACTION, "value": approval_id, "style": "primary",
            "text": {"type": "plain_text", "text": "Approve"}}),
        json!({"type": "button", "action_id": DENY_ACTION, "value": approval_id, "style": "danger",
            "text": {"type": "plain_text", "text": "Deny"}}),
    ]
}

/// Blocks of a pending-approval alert: the summary, then Approve / Deny (when `approval_id`
/// is given: the sink is interactive) and a link to the console.
pub fn pending_blocks(summary: &str, approval_id: Option<&str>, link: Option<&str>) -> Vec<Value> {
    let mut blocks = vec![summary_section(summary)];
    let mut elements: Vec<Value> = approval_id.map(|id| decision_buttons(id).to_vec()).unwrap_or_default();
    if let Some(link) = link {
        if approval_id.is_some() {
            elements.push(console_button(link));
        } else {
            elements.push(json!({"type": "button", "text": {"type": "plain_text", "text": "Review and approve"},
                "url": link, "style": "primary"}));
        }
    }
    if !elements.is_empty() {
        blocks.push(json!({"type": "actions", "elements": elements}));
    }
    blocks
}

/// The message that replaces the alert once someone decided: every decision so far, and
/// while the quorum is not reached the buttons stay for the next approver.
pub fn outcome_message(summary: &str, a: &Approval, link: &str, now_ms: i64) -> Value {
    let status = a.status(now_ms);
    let mut lines: Vec<String> = a
        .decisions
        .iter()
        .map(|d| {
            let verb = if d.decision == "approve" { "approved" } else { "denied" };
            format!("{verb} by *{}* at {}: {}", escape(&d.approver), rfc3339_ms(d.at_ms), escape(&d.reason))
        })
        .collect();
    let headline = match status {
        ApprovalStatus::Pending => {
            let yes = a.decisions.iter().filter(|d| d.decision == "approve").count();
            format!(":hourglass: pending: {yes} of {} approval(s)", a.required)
        }
        ApprovalStatus::Approved => ":white_check_mark: *Approved*".to_string(),
        ApprovalStatus::Denied => ":no_entry: *Denied*".to_string(),
        ApprovalStatus::Expired => format!(":alarm_clock: *Expired* at {}", rfc3339_ms(a.expires_ms)),
    };
    lines.insert(0, headline.clone());
    let mut blocks = vec![
        summary_section(summary),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": lines.join("\n")}]}),
    ];
    let mut elements: Vec<Value> =
        if status == ApprovalStatus::Pending { decision_buttons(&a.id).to_vec() } else { Vec::new() };
    elements.push(console_button(link));
    blocks.push(json!({"type": "actions", "elements": elements}));
    json!({"replace_original": true, "text": format!("{summary} ({})", status.as_str()), "blocks": blocks})
}

/// A message only the clicking user sees, leaving the original untouched.
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "replace_original": false, "text": text})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_version_timestamp_and_body() {
        let sig = signature("secret", "1700000000", b"payload=%7B%7D");
        assert!(sig.starts_with("v0=") && sig.len() == 67, "{sig}");
        assert_eq!(verify("secret", Some("1700000000"), Some(&sig), b"payload=%7B%7D", 1_700_000_100), Ok(()));
    }

    #[test]
    fn a_timestamp_at_the_end_of_the_integers_is_stale_not_an_overflow() {
        for far in [i64::MIN, i64::MAX] {
            let far = far.to_string();
            let sig = signature("secret", &far, b"a=1");
            assert_eq!(verify("secret", Some(&far), Some(&sig), b"a=1", 1_700_000_000), Err(SignatureError::Stale));
        }
    }

    #[test]
    fn wrong_signature_stale_timestamp_and_missing_headers_are_refused() {
        let sig = signature("secret", "1700000000", b"a=1");
        let now = 1_700_000_000;
        assert_eq!(verify("other", Some("1700000000"), Some(&sig), b"a=1", now), Err(SignatureError::Mismatch));
        assert_eq!(verify("secret", Some("1700000000"), Some(&sig), b"a=2", now), Err(SignatureError::Mismatch));
        assert_eq!(verify("secret", Some("1700000000"), Some(&sig), b"a=1", now + 301), Err(SignatureError::Stale));
        assert!(matches!(verify("secret", None, Some(&sig), b"a=1", now), Err(SignatureError::MissingHeader(_))));
        assert!(matches!(verify("secret", Some("x"), Some(&sig), b"a=1", now), Err(SignatureError::MissingHeader(_))));
        assert!(matches!(
            verify("secret", Some("1700000000"), None, b"a=1", now),
            Err(SignatureError::MissingHeader(_))
        ));
    }

    #[test]
    fn pending_blocks_carry_approve_deny_and_console_buttons() {
        let b = pending_blocks("x <y>", Some("apr_1"), Some("https://a/console"));
        assert!(b[0]["text"]["text"].as_str().unwrap_or("").contains("&lt;y&gt;"));
        let e = &b[1]["elements"];
        assert_eq!(e[0]["action_id"], APPROVE_ACTION);
        assert_eq!(e[0]["value"], "apr_1");
        assert_eq!(e[1]["action_id"], DENY_ACTION);
        assert_eq!(e[2]["url"], "https://a/console");
    }
}

//! Slack interactivity against the real `airlock` binary: signed `block_actions` payloads
//! in Slack's format approve and deny through the same quorum and self-approval rules as
//! the API, forged / stale / unknown-user / self-approval clicks decide nothing, and the
//! original message is replaced through `response_url` (a local receiver standing in for
//! Slack).

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5-test";

fn slack_config(hook: &str) -> String {
    format!(
        r#"
[slack]
signing_secret = "${{SLACK_SIGNING_SECRET}}"

[[alerts.sinks]]
type = "slack"
url = "{hook}/services/hook"
events = ["approval_pending"]
interactive = true
"#
    )
}

fn start(hook: &str) -> Server {
    Server::start_with(ServerOptions {
        extra_config: slack_config(hook),
        env: vec![("SLACK_SIGNING_SECRET".into(), SIGNING_SECRET.into())],
        database: None,
    })
}

async fn approval(s: &Server, id: &str) -> Value {
    let (status, a) = call("GET", &s.at(&format!("/v1/approvals/{id}")), Some(CAROL), None).await;
    assert_eq!(status, 200, "{a}");
    a
}

/// The last message posted to `path` of the receiver standing in for `response_url`.
async fn message_at(slack: &Receiver, path: &str, n: usize) -> Value {
    let start = std::time::Instant::now();
    loop {
        let at: Vec<_> = slack.seen().into_iter().filter(|r| r.path == path).collect();
        if at.len() >= n {
            return at[n - 1].json();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "only {} messages at {path}", at.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_slack_clicks_approve_and_deny_and_replace_the_message() {
    let slack = Receiver::start(|_, _, _| 200).await;
    let s = start(&slack.url);

    // The alert carries Approve / Deny for this approval and a console link.
    let id = s.create_approval(&approval_request("agent-9", 2, 300, "hold")).await;
    let alert = message_at(&slack, "/services/hook", 1).await;
    let buttons = &alert["blocks"][1]["elements"];
    assert_eq!(buttons[0]["action_id"], "airlock_approve");
    assert_eq!(buttons[0]["value"], id.as_str());
    assert_eq!(buttons[1]["action_id"], "airlock_deny");
    assert_eq!(buttons[2]["url"], format!("{}/console#/approvals/{id}", s.url));

    // 2-of-M: alice's click leaves it pending, the replacement keeps the buttons.
    let respond = format!("{}/actions/r1", slack.url);
    let (status, reply) =
        post_slack(&s.url, SIGNING_SECRET, &slack_block_actions(SLACK_ALICE, "airlock_approve", &id, &respond), 0)
            .await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("pending")), "{reply}");
    let m = message_at(&slack, "/actions/r1", 1).await;
    assert_eq!(m["replace_original"], true);
    let context = m["blocks"][1]["elements"][0]["text"].as_str().unwrap().to_string();
    assert!(context.contains("1 of 2") && context.contains("approved by *alice*"), "{context}");
    assert_eq!(m["blocks"][2]["elements"][0]["action_id"], "airlock_approve", "still open for a second approver");

    // Bob completes the quorum: approved, with the same reason format as recorded.
    let respond2 = format!("{}/actions/r2", slack.url);
    let (status, reply) =
        post_slack(&s.url, SIGNING_SECRET, &slack_block_actions(SLACK_BOB, "airlock_approve", &id, &respond2), 0).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("approved")), "{reply}");
    let a = approval(&s, &id).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["decisions"][0]["reason"], "approved in Slack by alice");
    assert_eq!(a["decisions"][1]["approver"], "bob");
    let m = message_at(&slack, "/actions/r2", 1).await;
    let context = m["blocks"][1]["elements"][0]["text"].as_str().unwrap().to_string();
    assert!(context.contains("*Approved*") && context.contains("approved by *bob*"), "{context}");
    assert_eq!(m["blocks"][2]["elements"].as_array().unwrap().len(), 1, "only the console link is left: {m}");

    // A deny from Slack denies.
    let id2 = s.create_approval(&approval_request("agent-9", 2, 300, "hold")).await;
    let respond3 = format!("{}/actions/r3", slack.url);
    let (status, reply) =
        post_slack(&s.url, SIGNING_SECRET, &slack_block_actions(SLACK_BOB, "airlock_deny", &id2, &respond3), 0).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("denied")), "{reply}");
    assert_eq!(approval(&s, &id2).await["decisions"][0]["reason"], "denied in Slack by bob");
    let m = message_at(&slack, "/actions/r3", 1).await;
    assert!(m["blocks"][1]["elements"][0]["text"].as_str().unwrap().contains("*Denied*"), "{m}");

    // The signing secret never shows in the log.
    assert!(!s.log().contains(SIGNING_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_unknown_user_and_self_approval_clicks_decide_nothing() {
    let slack = Receiver::start(|_, _, _| 200).await;
    let s = start(&slack.url);
    let id = s.create_approval(&approval_request("agent-1", 1, 300, "hold")).await;
    let respond = format!("{}/actions/refused", slack.url);
    let click = |user: &str| slack_block_actions(user, "airlock_approve", &id, &respond);

    let (status, reply) = post_slack(&s.url, "not-the-secret", &click(SLACK_ALICE), 0).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (401, Some("bad_slack_signature")), "{reply}");
    let (status, reply) = post_slack(&s.url, SIGNING_SECRET, &click(SLACK_ALICE), -400).await;
    assert_eq!(status, 401, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("5 minutes"), "{reply}");

    // Unsigned: refused before anything is parsed.
    let resp = http()
        .post(s.at("/v1/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let (status, reply) = post_slack(&s.url, SIGNING_SECRET, &click("U0NOBODY"), 0).await;
    assert_eq!(status, 200);
    assert_eq!(reply["response_type"], "ephemeral");
    assert!(reply["text"].as_str().unwrap().contains("not linked to an Airlock approver"), "{reply}");

    // agent-1 asked; their own click is refused like the API refuses it.
    let (_, reply) = post_slack(&s.url, SIGNING_SECRET, &click(SLACK_AGENT1), 0).await;
    assert_eq!(reply["response_type"], "ephemeral");
    assert!(reply["text"].as_str().unwrap().contains("cannot decide on their own request"), "{reply}");

    // mallory is an approver, but not in the approval's groups.
    let (_, reply) = post_slack(&s.url, SIGNING_SECRET, &click(SLACK_MALLORY), 0).await;
    assert!(reply["text"].as_str().unwrap().contains("none of the groups"), "{reply}");

    let a = approval(&s, &id).await;
    assert_eq!(a["status"], "pending");
    assert_eq!(a["decisions"].as_array().unwrap().len(), 0, "{a}");
    // Each refused (but signed) click also told the user via response_url, never replacing.
    let m = message_at(&slack, "/actions/refused", 3).await;
    assert_eq!(m["replace_original"], false);
    assert!(!s.log().contains(SIGNING_SECRET));
}

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

/// A local listener standing in for slack.com/api: records every call and answers like the
/// Web API (`chat.postMessage` returns the message's channel and ts).
struct SlackApi {
    url: String,
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>,
}

impl SlackApi {
    async fn start() -> SlackApi {
        use axum::extract::{Path, State};
        type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>;
        async fn method(
            State(calls): State<Calls>,
            Path(name): Path<String>,
            headers: axum::http::HeaderMap,
            body: String,
        ) -> axum::Json<Value> {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let answer = serde_json::json!({"ok": true, "channel": v["channel"], "ts": "1700000000.000900"});
            calls.lock().unwrap().push((name, auth, v));
            axum::Json(answer)
        }
        let calls: Calls = Default::default();
        let app = axum::Router::new().route("/api/{name}", axum::routing::post(method)).with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackApi { url, calls }
    }

    /// Waits for the n-th call (1-based) of `name` to approval `id` and returns its body.
    async fn nth(&self, name: &str, n: usize, needle: &str) -> (String, Value) {
        let start = std::time::Instant::now();
        loop {
            let found: Vec<_> = self
                .calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, _, v)| m == name && v.to_string().contains(needle))
                .cloned()
                .collect();
            if found.len() >= n {
                let (_, auth, v) = found[n - 1].clone();
                return (auth, v);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no call {n} of {name} for {needle}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const BOT_TOKEN: &str = "xoxb-test-bot-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_messages_are_rewritten_on_api_decisions_slack_clicks_and_expiry() {
    let api = SlackApi::start().await;
    let s = Server::start_with(ServerOptions {
        extra_config: format!(
            "[slack]\nsigning_secret = \"${{SLACK_SIGNING_SECRET}}\"\nbot_token = \"${{SLACK_BOT_TOKEN}}\"\n\
             channel = \"C0AIRLOCK\"\napi_url = \"{}\"\n",
            api.url
        ),
        env: vec![("SLACK_SIGNING_SECRET".into(), SIGNING_SECRET.into()), ("SLACK_BOT_TOKEN".into(), BOT_TOKEN.into())],
        database: None,
    });

    // Posted by the bot, with buttons, authenticated by the bot token.
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    let (auth, posted) = api.nth("chat.postMessage", 1, &id).await;
    assert_eq!(auth, format!("Bearer {BOT_TOKEN}"));
    assert_eq!(posted["channel"], "C0AIRLOCK");
    assert_eq!(posted["blocks"][1]["elements"][0]["value"], id.as_str());

    // A decision through the API (what the CLI and console call) rewrites that message.
    let (status, _) = s.decide(BOB, &id, "approve", "checked the statement").await;
    assert_eq!(status, 200);
    let (_, updated) = api.nth("chat.update", 1, &id).await;
    assert_eq!((&updated["channel"], &updated["ts"]), (&"C0AIRLOCK".into(), &"1700000000.000900".into()));
    let context = updated["blocks"][1]["elements"][0]["text"].as_str().unwrap().to_string();
    assert!(context.contains("*Approved*") && context.contains("bob") && context.contains("checked the statement"));

    // A Slack click (without response_url) rewrites it through chat.update as well.
    let id2 = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    api.nth("chat.postMessage", 1, &id2).await;
    let mut click = slack_block_actions(SLACK_ALICE, "airlock_deny", &id2, "");
    click.as_object_mut().unwrap().remove("response_url");
    let (status, reply) = post_slack(&s.url, SIGNING_SECRET, &click, 0).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("denied")), "{reply}");
    let (_, updated) = api.nth("chat.update", 1, &id2).await;
    assert!(updated["blocks"][1]["elements"][0]["text"].as_str().unwrap().contains("*Denied*"), "{updated}");

    // Undecided until the deadline: the message says it expired, once.
    let id3 = s.create_approval(&approval_request("agent-9", 1, 1, "hold")).await;
    api.nth("chat.postMessage", 1, &id3).await;
    let (_, updated) = api.nth("chat.update", 1, &id3).await;
    assert!(updated["blocks"][1]["elements"][0]["text"].as_str().unwrap().contains("*Expired*"), "{updated}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let updates =
        api.calls.lock().unwrap().iter().filter(|(m, _, v)| m == "chat.update" && v.to_string().contains(&id3)).count();
    assert_eq!(updates, 1, "a closed message is not rewritten again");
    assert!(!s.log().contains(BOT_TOKEN) && !s.log().contains(SIGNING_SECRET));
}

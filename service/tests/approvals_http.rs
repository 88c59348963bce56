//! Approval flow over real HTTP against the spawned `airlock` binary and a SQLite file.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_then_wait_returns_approved_promptly() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;

    // A waiter is parked before the decision; measure decision-answered -> wait-answered.
    let url = s.at(&format!("/v1/approvals/{id}/wait?timeout_ms=30000"));
    let waiter = tokio::spawn(async move {
        let (status, v) = call("GET", &url, Some(FILTER_KEY), None).await;
        (status, v, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "wait must block while the approval is pending");
    let (status, decided) = s.decide(ALICE, &id, "approve", "looks right").await;
    let decided_at = Instant::now();
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");

    let (status, v, woke_at) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decisions"][0]["approver"], "alice");
    assert_eq!(v["decisions"][0]["decision"], "approve");
    assert_eq!(v["decisions"][0]["reason"], "looks right");
    let latency = woke_at.saturating_duration_since(decided_at);
    println!("decision -> wait latency: {latency:?}");
    assert!(latency < Duration::from_millis(500), "wait answered {latency:?} after the decision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_with_pending_status_and_caps_the_timeout() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    let t = Instant::now();
    let (status, v) = s.wait(&id, 400).await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    assert_eq!(v["status"], "pending");
    assert!(took >= Duration::from_millis(380) && took < Duration::from_secs(3), "took {took:?}");
    let (status, v) =
        call("GET", &s.at(&format!("/v1/approvals/{id}/wait?timeout_ms=abc")), Some(FILTER_KEY), None).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["field"], "timeout_ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_of_m_needs_the_required_number_of_distinct_approvers() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 2, 300, "hold")).await;
    let (status, v) = s.decide(ALICE, &id, "approve", "ok by me").await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "pending", "one of two approvals must not approve");
    let (status, v) = s.decide(ALICE, &id, "approve", "again").await;
    assert_eq!(status, 409, "the same approver counts once: {v}");
    assert_eq!(v["error"]["code"], "already_decided");
    let (status, v) = s.decide(BOB, &id, "approve", "second pair of eyes").await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "approved");
    let approvers: Vec<&str> =
        v["decisions"].as_array().unwrap().iter().map(|d| d["approver"].as_str().unwrap()).collect();
    assert_eq!(approvers.len(), 2);
    assert!(approvers.contains(&"alice") && approvers.contains(&"bob"));
    let (_, w) = s.wait(&id, 1000).await;
    assert_eq!(w["status"], "approved");
    // Deciding a decided approval is a conflict.
    let (status, v) = s.decide(CAROL, &id, "deny", "too late").await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "approval_not_pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_cannot_approve_their_own_request() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-1", 1, 300, "hold")).await;
    let (status, v) = s.decide(AGENT1_APPROVER, &id, "approve", "trust me").await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["code"], "self_approval");
    let (_, w) = s.wait(&id, 0).await;
    assert_eq!(w["status"], "pending");
    assert_eq!(w["decisions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_outside_the_approval_groups_are_refused() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    let (status, v) = s.decide(MALLORY, &id, "approve", "ops says yes").await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["code"], "not_an_approver");
    let (status, _) = call("GET", &s.at(&format!("/v1/approvals/{id}")), Some(MALLORY), None).await;
    assert_eq!(status, 403);
    let (status, v) = call("GET", &s.at("/v1/approvals?status=pending"), Some(MALLORY), None).await;
    assert_eq!(status, 200);
    assert_eq!(v["approvals"], json!([]), "mallory must not see dba approvals");
    // An auditor-only token has no approver role.
    let (status, v) = s.decide(AUDRA, &id, "approve", "x").await;
    assert_eq!(status, 403, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deny_denies_even_after_an_approval() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 2, 300, "hold")).await;
    let waiter = {
        let url = s.at(&format!("/v1/approvals/{id}/wait?timeout_ms=20000"));
        tokio::spawn(async move { call("GET", &url, Some(FILTER_KEY), None).await })
    };
    assert_eq!(s.decide(ALICE, &id, "approve", "fine").await.1["status"], "pending");
    let (status, v) = s.decide(BOB, &id, "deny", "deletes need a ticket").await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "denied");
    let (_, w) = waiter.await.unwrap();
    assert_eq!(w["status"], "denied");
    assert_eq!(w["decisions"].as_array().unwrap().len(), 2);
    let (status, r) = s.redeem(&id, &digest_of("agent-9-POST-/v1/sql"), "agent-9").await;
    assert_eq!(status, 409);
    assert_eq!(r["error"]["code"], "approval_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_approval_expires_at_its_deadline() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 1, "ticket")).await;
    let t = Instant::now();
    let (_, w) = s.wait(&id, 10_000).await;
    let took = t.elapsed();
    assert_eq!(w["status"], "expired");
    assert!(took < Duration::from_secs(3), "expiry must end the long poll promptly, took {took:?}");
    let (status, v) = s.decide(ALICE, &id, "approve", "late").await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "approval_not_pending");
    let (status, v) = s.redeem(&id, &digest_of("agent-9-POST-/v1/sql"), "agent-9").await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "approval_expired");
    let (_, list) = call("GET", &s.at("/v1/approvals?status=expired"), Some(ALICE), None).await;
    assert_eq!(list["approvals"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeem_succeeds_exactly_once_for_the_bound_request() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "ticket")).await;
    let digest = digest_of("agent-9-POST-/v1/sql");
    let (status, v) = s.redeem(&id, &digest, "agent-9").await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("approval_not_approved")));
    s.decide(ALICE, &id, "approve", "ok").await;

    let (status, v) = s.redeem(&id, &digest_of("something else"), "agent-9").await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("approval_digest_mismatch")));
    let (status, v) = s.redeem(&id, &digest, "agent-2").await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("approval_digest_mismatch")), "wrong subject");

    let (status, v) = s.redeem(&id, &digest, "agent-9").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"status": "approved"}));
    let (status, v) = s.redeem(&id, &digest, "agent-9").await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("approval_already_used")));

    let missing = "apr_00000000000000000000000000000000";
    let (status, v) = s.redeem(missing, &digest, "agent-9").await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("approval_not_found")));
    let (status, v) = s.redeem("not-an-id", &digest, "agent-9").await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("approval_not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeems_have_exactly_one_winner() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "ticket")).await;
    s.decide(BOB, &id, "approve", "ok").await;
    let digest = digest_of("agent-9-POST-/v1/sql");
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let url = s.at(&format!("/v1/approvals/{id}/redeem"));
        let body = json!({"digest": digest, "subject": "agent-9"});
        tasks.push(tokio::spawn(async move { call("POST", &url, Some(FILTER_KEY), Some(&body)).await }));
    }
    let mut wins = 0;
    let mut used = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            200 => wins += 1,
            409 if v["error"]["code"] == "approval_already_used" => used += 1,
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!((wins, used), (1, 23));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_sees_exactly_what_will_run() {
    let s = Server::start();
    let req = approval_request("agent-9", 1, 300, "hold");
    let id = s.create_approval(&req).await;
    let (status, a) = call("GET", &s.at(&format!("/v1/approvals/{id}")), Some(ALICE), None).await;
    assert_eq!(status, 200);
    for field in ["method", "path", "body", "subject", "rule", "reason", "digest"] {
        assert_eq!(a[field], req[field], "{field}");
    }
    assert_eq!(a["status"], "pending");
    assert!(a["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(a["url"], format!("{}/console#/approvals/{id}", s.url));
    let (_, list) = call("GET", &s.at("/v1/approvals?status=pending"), Some(BOB), None).await;
    assert_eq!(list["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(list["approvals"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_approval_requests_name_the_bad_field() {
    let s = Server::start();
    let cases = [
        ("digest", json!("not-hex")),
        ("mode", json!("sometime")),
        ("ttl_seconds", json!(-5)),
        ("method", json!("get")),
        ("subject", json!("")),
    ];
    for (field, bad) in cases {
        let mut body = approval_request("agent-9", 1, 60, "hold");
        body[field] = bad;
        let (status, v) = call("POST", &s.at("/v1/approvals"), Some(FILTER_KEY), Some(&body)).await;
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], field);
    }
    let mut body = approval_request("agent-9", 1, 60, "hold");
    body["approvers"]["required"] = json!(0);
    let (status, v) = call("POST", &s.at("/v1/approvals"), Some(FILTER_KEY), Some(&body)).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("approvers.required")));
    let resp = http().post(s.at("/v1/approvals")).bearer_auth(FILTER_KEY).body("{not json").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_endpoints_require_the_filter_key() {
    let s = Server::start();
    let body = approval_request("agent-9", 1, 60, "hold");
    for token in [None, Some("wrong-key-wrong-key-wrong"), Some(ALICE)] {
        let (status, v) = call("POST", &s.at("/v1/approvals"), token, Some(&body)).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(v["error"]["code"], "unauthorized");
        let (status, _) = s.wait_with_token("apr_00000000000000000000000000000000", token).await;
        assert_eq!(status, 401);
        let (status, _) = call("POST", &s.at("/v1/audit/batch"), token, Some(&json!({"records": []}))).await;
        assert_eq!(status, 401);
    }
    // And the filter key is no approver credential.
    let (status, _) = call("GET", &s.at("/v1/approvals"), Some(FILTER_KEY), None).await;
    assert_eq!(status, 401);
    let (status, _) = call("GET", &s.at("/v1/audit/verify"), Some(FILTER_KEY), None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_endpoints_refuse_a_principal_without_the_approver_role() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 60, "hold")).await;
    let expected = json!({"error": {"code": "missing_role",
        "message": "`audra` lacks the `approver` role needed here"}});
    for (method, path, body) in [
        ("GET", "/v1/approvals".to_string(), None),
        ("GET", format!("/v1/approvals/{id}"), None),
        ("POST", format!("/v1/approvals/{id}/decision"), Some(json!({"decision": "approve", "reason": "audit"}))),
    ] {
        let (status, v) = call(method, &s.at(&path), Some(AUDRA), body.as_ref()).await;
        assert_eq!((status, &v), (403, &expected), "{method} {path}");
    }
    // Checked before the body is read: an unauthenticated bad body is a 401, not a 400.
    let (status, v) =
        call("POST", &s.at(&format!("/v1/approvals/{id}/decision")), None, Some(&json!({"decision": "maybe"}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")));
}

trait WaitWithToken {
    async fn wait_with_token(&self, id: &str, token: Option<&str>) -> (u16, serde_json::Value);
}

impl WaitWithToken for Server {
    async fn wait_with_token(&self, id: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        call("GET", &self.at(&format!("/v1/approvals/{id}/wait?timeout_ms=10")), token, None).await
    }
}

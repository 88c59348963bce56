//! The approver console driven in real headless Chromium through ChromeDriver (W3C
//! WebDriver over HTTP): paste a token, list pending approvals, open one, see exactly
//! what will run (rendered as text, not HTML), approve with a reason; and sign in through
//! the demo IdP's login page, watch a held request appear without reloading, approve it,
//! search sessions, open a timeline and check the audit chain. Screenshots of each page go
//! to the test's target dir (and, with AIRLOCK_UPDATE_SCREENSHOTS=1, to docs/console/).
//! The browser harness is `airlock_e2e::browser`; without Chromium the tests print SKIPPED
//! and pass, unless AIRLOCK_REQUIRE_BROWSER=1.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;
mod signin_support;

use std::time::{Duration, Instant};

use airlock_e2e::browser::Driver;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_approves_in_the_web_console() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = Server::start();
    let mut req = approval_request("agent-9", 1, 600, "hold");
    req["body"] = json!("{\"query\":\"DELETE FROM orders\",\"note\":\"<img src=x onerror=alert(1)>\"}");
    let id = s.create_approval(&req).await;

    driver.goto(&s.at(&format!("/console#/approvals/{id}"))).await;
    driver.type_into("#token", ALICE).await;
    driver.click("#load").await;
    driver.wait_text("#list", "POST /v1/sql").await;
    driver.click(&format!("li[data-id='{id}']")).await;
    driver.wait_text("#d-title", &id).await;

    let shown = driver.text("#d-request").await;
    assert!(shown.contains("POST /v1/sql"), "{shown}");
    assert!(shown.contains("<img src=x onerror=alert(1)>"), "the body is shown literally: {shown}");
    assert_eq!(driver.count("#d-request img").await, 0, "the body must not be rendered as HTML");
    assert_eq!(driver.text("#d-subject").await, "agent-9 (agents)");
    assert_eq!(driver.text("#d-reason").await, "cleanup of a duplicate order");
    assert!(driver.text("#d-quorum").await.contains("0 of 1"));

    driver.type_into("#reason", "verified with the order owner").await;
    driver.click("#approve").await;
    driver.wait_text("#message", "Status is now approved").await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-approved.png");
    driver.screenshot(&shot).await;

    let (_, w) = s.wait(&id, 0).await;
    assert_eq!(w["status"], "approved");
    assert_eq!(w["decisions"][0]["approver"], "alice");
    assert_eq!(w["decisions"][0]["reason"], "verified with the order owner");
    driver.cmd("DELETE", "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_signs_in_with_the_idp_sees_a_held_request_live_approves_and_audits() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let idp = signin_support::DemoIdp::start().await;
    // Staging answers 500 where production answered 200: the replay shows the difference.
    let staging = Receiver::start(|_, _, _| 500).await;
    let s = idp.server_with(&format!("[replay]\ntarget = \"{}\"\n", staging.url));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let records = [
        record("r1", "sess-7", now - 3000, ALLOW, 200),
        record("r2", "sess-7", now - 2000, DENIED_BY_RULE, 403),
        record("r3", "sess-8", now - 1000, ALLOW, 200),
    ];
    assert_eq!(s.ingest(&records).await.0, 200);

    // Sign in through the IdP's login page: code flow with PKCE, back to the console.
    driver.goto(&s.at("/console")).await;
    driver.click("#signin").await;
    driver.wait_url("/login/authorize").await;
    driver.type_into("#username", "dana").await;
    let groups = driver.find("#groups").await;
    driver.cmd("POST", &format!("/element/{groups}/clear"), Some(json!({}))).await;
    driver.type_into("#groups", "dba,audit").await;
    driver.click("#signin").await;
    driver.wait_url("/console").await;
    driver.wait_text("#who-name", "dana (dba, audit)").await;
    driver.wait_text("#live", "live").await;

    // A request held now shows up without a reload.
    let id = s.create_approval(&approval_request("agent-9", 1, 600, "hold")).await;
    driver.wait_text("#list", "POST /v1/sql").await;
    let item = driver.text(&format!("li[data-id='{id}']")).await;
    assert!(item.contains("agent-9") && item.contains("prod-db-writes") && item.contains("0 of 1"), "{item}");
    assert!(item.contains("left"), "a countdown: {item}");
    driver.click(&format!("li[data-id='{id}']")).await;
    driver.wait_text("#d-title", &id).await;
    assert!(driver.text("#d-request").await.contains("[EMAIL]"), "the masked body is shown");
    driver.type_into("#reason", "checked with the order owner").await;
    driver.snapshot(env!("CARGO_TARGET_TMPDIR"), "approvals.png").await;
    driver.click("#approve").await;
    driver.wait_text("#message", "Status is now approved").await;
    let (_, w) = s.wait(&id, 0).await;
    assert_eq!(w["status"], "approved");
    assert_eq!(w["decisions"][0]["approver"], "dana", "the name comes from the ID token's claims");

    // Sessions: search by subject and rule, open a timeline.
    driver.goto(&s.at("/console#/sessions")).await;
    driver.wait_text("#s-list", "sess-8").await;
    driver.type_into("#s-subject", "agent-1").await;
    driver.type_into("#s-rule", "no-deletes").await;
    driver.click("#s-search").await;
    let started = Instant::now();
    while driver.count("#s-list li").await != 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", driver.text("#s-list").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(driver.text("#s-list").await.contains("sess-7"));
    driver.snapshot(env!("CARGO_TARGET_TMPDIR"), "sessions.png").await;
    driver.click("li[data-id='sess-7']").await;
    driver.wait_text("#t-title", "sess-7").await;
    let rows = driver.wait_text("#t-rows", "denied_by_rule").await;
    assert!(rows.contains("/v1/items/r1") && rows.contains("no-deletes") && rows.contains("403"), "{rows}");
    driver.wait_text("#t-request", "\"n\":\"r1\"").await;
    driver.click("#t-replay").await;
    driver.wait_text("#t-replay-summary", "1 replayed against").await;
    let replayed = driver.text("#t-replay-result").await;
    assert!(replayed.contains("#1 POST /v1/items/r1: recorded 200, replay 500 · DIFFERS"), "{replayed}");
    let seen = staging.seen();
    assert_eq!(seen.len(), 1, "the rule-denied record is not replayed");
    assert_eq!((seen[0].path.as_str(), seen[0].body.as_str()), ("/v1/items/r1", "{\"n\":\"r1\"}"));
    driver.snapshot(env!("CARGO_TARGET_TMPDIR"), "timeline.png").await;

    // Audit integrity.
    driver.goto(&s.at("/console#/integrity")).await;
    driver.wait_text("#i-result", "Chain intact").await;
    assert_eq!(driver.text("#i-records").await, "3");
    assert_eq!(driver.text("#i-first-bad").await, "none");
    driver.snapshot(env!("CARGO_TARGET_TMPDIR"), "integrity.png").await;

    // Signing out ends the session: the console asks to sign in again.
    driver.click("#logout").await;
    let started = Instant::now();
    while driver.count("#signin:not([hidden])").await != 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "no sign-in link after logout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.cmd("DELETE", "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_served_with_a_strict_content_security_policy() {
    let s = Server::start();
    let resp = http().get(s.at("/console")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "no inline script: {csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Airlock approvals"));
    assert!(!html.contains("<script>") && html.contains("<script src=\"/console/app.js\""), "scripts are files");
    for file in ["app.js", "approvals.js", "sessions.js", "integrity.js"] {
        let resp = http().get(s.at(&format!("/console/{file}"))).send().await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/javascript; charset=utf-8");
        let js = resp.text().await.unwrap();
        assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML"), "{file} renders data as text only");
    }
    assert_eq!(http().get(s.at("/console/../Cargo.toml")).send().await.unwrap().status().as_u16(), 404);
}

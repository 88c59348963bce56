//! Console sign-in through the demo IdP's login page (authorization code flow with PKCE),
//! over real HTTP, one redirect at a time: the session cookie and its attributes, CSRF on
//! changes made with the cookie, logout, and the refusals of a wrong state, nonce or code
//! verifier and of a reused code.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;
mod signin_support;

use common::*;
use serde_json::{json, Value};
use signin_support::*;

async fn me(s: &Server, session: &str) -> (u16, Value) {
    let resp = http().get(s.at("/auth/me")).header("cookie", session).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or_default())
}

async fn decide_with_cookie(s: &Server, session: &str, csrf: Option<&str>, id: &str) -> (u16, Value) {
    let mut req = http()
        .post(s.at(&format!("/v1/approvals/{id}/decision")))
        .header("cookie", session)
        .json(&json!({"decision": "approve", "reason": "checked"}));
    if let Some(t) = csrf {
        req = req.header("x-airlock-csrf", t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_approver_decides_with_cookie_and_csrf_token_then_logs_out() {
    let idp = DemoIdp::start().await;
    let s = idp.server();
    let id = s.create_approval(&approval_request("agent-9", 1, 600, "hold")).await;

    let resp = sign_in(&s, "dana", "dba,audit").await;
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(location(&resp), "/console");
    let cookies = set_cookies(&resp);
    let session_cookie = cookies.iter().find(|c| c.starts_with("airlock_session=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1800"] {
        assert!(session_cookie.contains(attr), "{session_cookie} lacks {attr}");
    }
    assert!(!session_cookie.contains("Secure"), "served over plain http here: {session_cookie}");
    assert!(cookies.iter().any(|c| c.starts_with("airlock_login=;") && c.contains("Max-Age=0")), "{cookies:?}");
    let session = cookie_pair(&cookies, "airlock_session");

    let (status, who) = me(&s, &session).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["name"], "dana");
    assert_eq!(who["groups"], json!(["dba", "audit"]));
    assert_eq!(who["roles"], json!(["approver", "auditor"]));
    let csrf = who["csrf"].as_str().unwrap().to_string();

    // Reads need no CSRF token; a change with the cookie but without it is refused.
    let (status, _) = call_with_cookie(&s, &session, "/v1/audit/verify").await;
    assert_eq!(status, 200);
    let (status, v) = decide_with_cookie(&s, &session, None, &id).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("csrf_token_invalid")), "{v}");
    let (status, v) = decide_with_cookie(&s, &session, Some("not-the-token"), &id).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("csrf_token_invalid")), "{v}");
    let (status, v) = decide_with_cookie(&s, &session, Some(&csrf), &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decisions"][0]["approver"], "dana");

    // Logout needs the CSRF token too, then the session is gone on the server.
    let resp = http().post(s.at("/auth/logout")).header("cookie", &session).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = http()
        .post(s.at("/auth/logout"))
        .header("cookie", &session)
        .header("x-airlock-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(set_cookies(&resp).iter().any(|c| c.starts_with("airlock_session=;") && c.contains("Max-Age=0")));
    assert_eq!(me(&s, &session).await.0, 401);
    let (status, _) = call_with_cookie(&s, &session, "/v1/audit/verify").await;
    assert_eq!(status, 401, "the old cookie no longer authenticates");
}

async fn call_with_cookie(s: &Server, session: &str, path: &str) -> (u16, Value) {
    let resp = http().get(s.at(path)).header("cookie", session).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_keep_working_and_need_no_csrf_token() {
    let idp = DemoIdp::start().await;
    let s = idp.server();
    let id = s.create_approval(&approval_request("agent-9", 1, 600, "hold")).await;
    let (status, v) = s.decide(ALICE, &id, "approve", "static token").await;
    assert_eq!(status, 200, "{v}");
}

fn refusal(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_state_missing_login_cookie_and_reused_code_are_refused() {
    let idp = DemoIdp::start().await;
    let s = idp.server();

    let b = begin(&s).await;
    let (code, state) = idp_login(&b, &b.params, "dana", "dba").await;
    let resp = callback(&s, &code, "not-the-state", &b.login_cookie).await;
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(refusal(&resp.json().await.unwrap()), "sign_in_refused");

    // The right state but from a browser without the login cookie.
    let resp = callback(&s, &code, &state, "airlock_login=someone-else").await;
    assert_eq!(resp.status().as_u16(), 403);

    // That consumed the state: the same state and code do not work a second time.
    let resp = callback(&s, &code, &state, &b.login_cookie).await;
    assert_eq!(resp.status().as_u16(), 403, "a state is single-use");

    // A good sign-in, then its code replayed under a fresh state.
    let b = begin(&s).await;
    let (code, state) = idp_login(&b, &b.params, "dana", "dba").await;
    assert_eq!(callback(&s, &code, &state, &b.login_cookie).await.status().as_u16(), 303);
    let b2 = begin(&s).await;
    let resp = callback(&s, &code, &b2.params["state"], &b2.login_cookie).await;
    assert_eq!(resp.status().as_u16(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("invalid_grant"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_with_another_nonce_is_refused() {
    let idp = DemoIdp::start().await;
    let s = idp.server();
    let b = begin(&s).await;
    let mut params = b.params.clone();
    params.insert("nonce".into(), "a-nonce-the-service-never-sent".into());
    let (code, state) = idp_login(&b, &params, "dana", "dba").await;
    let resp = callback(&s, &code, &state, &b.login_cookie).await;
    assert_eq!(resp.status().as_u16(), 403);
    assert!(set_cookies(&resp).iter().all(|c| !c.starts_with("airlock_session=")));
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("ID token was refused"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_bound_to_another_pkce_challenge_is_refused() {
    let idp = DemoIdp::start().await;
    let s = idp.server();
    let b = begin(&s).await;
    let mut params = b.params.clone();
    // The challenge of a verifier the attacker holds, not the service's.
    params.insert("code_challenge".into(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into());
    let (code, state) = idp_login(&b, &params, "dana", "dba").await;
    let resp = callback(&s, &code, &state, &b.login_cookie).await;
    assert_eq!(resp.status().as_u16(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("invalid_grant"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_idp_token_endpoint_checks_the_verifier_and_spends_the_code() {
    let idp = DemoIdp::start().await;
    let s = idp.server();
    let b = begin(&s).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let mut params = b.params.clone();
    params.insert("code_challenge".into(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into());
    let (code, _) = idp_login(&b, &params, "dana", "dba").await;
    let token_url = format!("{}/login/token", idp.issuer);
    let exchange = |code: String, verifier: &'static str| {
        let form = [
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", params["redirect_uri"].clone()),
            ("client_id", CLIENT_ID.to_string()),
            ("code_verifier", verifier.to_string()),
        ];
        http().post(&token_url).form(&form).send()
    };
    let ok = exchange(code.clone(), verifier).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!(v["id_token"].as_str().unwrap().matches('.').count(), 2);
    let again = exchange(code, verifier).await.unwrap();
    assert_eq!(again.status().as_u16(), 400, "a code is single-use");
    assert_eq!(again.json::<Value>().await.unwrap()["error"], "invalid_grant");

    let (code, _) = idp_login(&b, &params, "dana", "dba").await;
    let wrong = exchange(code, "a-verifier-of-at-least-forty-three-characters-xx").await.unwrap();
    assert_eq!(wrong.status().as_u16(), 400);
}

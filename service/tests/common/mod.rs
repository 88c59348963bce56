//! Shared harness of the service's HTTP tests: the real `airlock` binary on a free
//! loopback port with a temporary SQLite file (started by `airlock_e2e::serve`, the same
//! harness the end-to-end tests use), async HTTP helpers, and a local receiver that
//! records what alert sinks or replay targets are sent.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_e2e::serve::{AirlockServe, ServeOptions};
use airlock_wire::{Code, Decision};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const FILTER_KEY: &str = "test-filter-key-0123456789abcdef";

/// Approver tokens, one per principal configured by [`Server::start`].
pub const ALICE: &str = "tok-alice-7f3a";
pub const BOB: &str = "tok-bob-91c2";
pub const CAROL: &str = "tok-carol-55d0";
/// In the `ops` group only: may not decide `dba` approvals.
pub const MALLORY: &str = "tok-mallory-0be1";
/// An approver whose name equals the requesting subject `agent-1`.
pub const AGENT1_APPROVER: &str = "tok-agent1-e4d9";
/// Auditor only.
pub const AUDRA: &str = "tok-audra-3c88";

/// Slack member IDs of the approvers above.
pub const SLACK_ALICE: &str = "U0ALICE";
pub const SLACK_BOB: &str = "U0BOB";
pub const SLACK_MALLORY: &str = "U0MALLORY";
pub const SLACK_AGENT1: &str = "U0AGENT1";

/// A Slack `block_actions` payload as Slack posts it when `user` clicks the button
/// `action_id` (value: the approval id) on message `ts` in channel C0AIRLOCK.
pub fn slack_block_actions(user: &str, action_id: &str, approval_id: &str, response_url: &str) -> Value {
    json!({
        "type": "block_actions",
        "team": {"id": "T0TEAM", "domain": "acme"},
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0TEAM"},
        "api_app_id": "A0AIRLOCK",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0AIRLOCK",
            "is_ephemeral": false},
        "trigger_id": "1.2.3",
        "channel": {"id": "C0AIRLOCK", "name": "approvals"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "Airlock approval"},
        "response_url": response_url,
        "actions": [{
            "type": "button", "action_id": action_id, "block_id": "b1", "value": approval_id,
            "text": {"type": "plain_text", "text": "Approve"}, "action_ts": "1700000001.000200"
        }]
    })
}

/// Posts `payload` to `/v1/slack/interactions` form-encoded and signed with `secret` as
/// Slack does (`v0=` hex HMAC-SHA256 of `v0:{timestamp}:{body}`), `skew_secs` off the
/// current time; returns status and JSON reply.
pub async fn post_slack(base: &str, secret: &str, payload: &Value, skew_secs: i64) -> (u16, Value) {
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ts = (i64::try_from(now).unwrap() + skew_secs).to_string();
    let mut mac = hmac_sha256::HMAC::new(secret.as_bytes());
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let sig = format!("v0={}", hex::encode(mac.finalize()));
    let resp = http()
        .post(format!("{base}/v1/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON (HTTP {status}): {text}")))
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn approvers_toml() -> String {
    // name, token, groups, roles, Slack member ID
    let entries = [
        ("alice", ALICE, r#"["dba"]"#, r#"["approver"]"#, SLACK_ALICE),
        ("bob", BOB, r#"["dba"]"#, r#"["approver"]"#, SLACK_BOB),
        ("carol", CAROL, r#"["dba", "ops"]"#, r#"["approver", "auditor"]"#, "U0CAROL"),
        ("mallory", MALLORY, r#"["ops"]"#, r#"["approver"]"#, SLACK_MALLORY),
        ("agent-1", AGENT1_APPROVER, r#"["dba"]"#, r#"["approver"]"#, SLACK_AGENT1),
        ("audra", AUDRA, "[]", r#"["auditor"]"#, "U0AUDRA"),
    ];
    entries
        .iter()
        .map(|(name, tok, groups, roles, slack)| {
            format!(
                "[[approvers]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\ngroups = {groups}\nroles = {roles}\n\
                 slack_user_id = \"{slack}\"\n\n",
                sha256_hex(tok)
            )
        })
        .collect()
}

/// A running `airlock serve` (started by the shared harness `airlock_e2e::serve`) with a
/// fresh temp dir; killed on drop.
pub struct Server {
    serve: AirlockServe,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub db_path: PathBuf,
}

#[derive(Default)]
pub struct ServerOptions {
    /// Extra TOML appended to the config (e.g. `[alerts]` sections).
    pub extra_config: String,
    pub env: Vec<(String, String)>,
    /// Use this database URL instead of a fresh SQLite file.
    pub database: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> Server {
        let dir = tempfile::tempdir().unwrap();
        // AIRLOCK_TEST_BIN runs the suite against another build (e.g. --release for timing).
        let bin = std::env::var("AIRLOCK_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_airlock").to_string());
        let serve = AirlockServe::start(ServeOptions {
            dir: dir.path().to_path_buf(),
            config_toml: format!("{}{}", approvers_toml(), opts.extra_config),
            filter_key: FILTER_KEY.to_string(),
            database: opts.database,
            env: opts.env,
            bin: Some(bin.into()),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Server { url: serve.base_url(), db_path: dir.path().join("airlock.db"), serve, dir }
    }

    pub fn log(&self) -> String {
        self.serve.log()
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.db_path.display())
    }

    /// Stops the server (so tests can edit its SQLite file without contention).
    pub fn stop(&mut self) {
        self.serve.kill();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(90)).build().unwrap()
}

/// Sends a request with an optional bearer token and JSON body; returns status and JSON.
pub async fn call(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut req = http().request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON (HTTP {status}): {text}"));
    (status, value)
}

pub fn digest_of(s: &str) -> String {
    sha256_hex(s)
}

/// A valid approval request body for `subject`, needing `required` approvals from `dba`.
pub fn approval_request(subject: &str, required: i64, ttl_seconds: i64, mode: &str) -> Value {
    json!({
        "rule": "prod-db-writes",
        "subject": subject,
        "groups": ["agents"],
        "method": "POST",
        "path": "/v1/sql",
        "body": "{\"query\":\"DELETE FROM orders WHERE id = 7\",\"email\":\"[EMAIL]\"}",
        "digest": digest_of(&format!("{subject}-POST-/v1/sql")),
        "reason": "cleanup of a duplicate order",
        "session_id": "sess-1",
        "mode": mode,
        "ttl_seconds": ttl_seconds,
        "approvers": {"groups": ["dba"], "required": required},
    })
}

impl Server {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Creates an approval as the filter and returns its id.
    pub async fn create_approval(&self, body: &Value) -> String {
        let (status, v) = call("POST", &self.at("/v1/approvals"), Some(FILTER_KEY), Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn decide(&self, token: &str, id: &str, decision: &str, reason: &str) -> (u16, Value) {
        call(
            "POST",
            &self.at(&format!("/v1/approvals/{id}/decision")),
            Some(token),
            Some(&json!({"decision": decision, "reason": reason})),
        )
        .await
    }

    pub async fn wait(&self, id: &str, timeout_ms: u64) -> (u16, Value) {
        call("GET", &self.at(&format!("/v1/approvals/{id}/wait?timeout_ms={timeout_ms}")), Some(FILTER_KEY), None).await
    }

    pub async fn redeem(&self, id: &str, digest: &str, subject: &str) -> (u16, Value) {
        call(
            "POST",
            &self.at(&format!("/v1/approvals/{id}/redeem")),
            Some(FILTER_KEY),
            Some(&json!({"digest": digest, "subject": subject})),
        )
        .await
    }

    pub async fn ingest(&self, records: &[Value]) -> (u16, Value) {
        call("POST", &self.at("/v1/audit/batch"), Some(FILTER_KEY), Some(&json!({"records": records}))).await
    }

    pub async fn verify(&self) -> Value {
        let (status, v) = call("GET", &self.at("/v1/audit/verify"), Some(AUDRA), None).await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

/// Decisions as the filter writes them (the wire crate's type: a made-up string such as
/// `deny` does not compile here, so the tests send what the filter really sends).
pub const ALLOW: Decision = Decision::Allow;
pub const DENIED_BY_RULE: Decision = Decision::Refused(Code::DeniedByRule);
pub const DENIED_BY_DEFAULT: Decision = Decision::Refused(Code::DeniedByDefault);

/// An audit record as the filter would send it: a rule denial names rule `no-deletes`, a
/// default denial no rule, anything else rule `reads`.
pub fn record(id: &str, session: &str, time_ms: i64, decision: Decision, status: i64) -> Value {
    let rule = match decision {
        DENIED_BY_RULE => Some("no-deletes"),
        DENIED_BY_DEFAULT => None,
        _ => Some("reads"),
    };
    json!({
        "id": id, "time_ms": time_ms, "subject": "agent-1", "groups": ["agents"], "session_id": session,
        "method": "POST", "path": format!("/v1/items/{id}"), "request_body": format!("{{\"n\":\"{id}\"}}"),
        "status": status, "response_body": "{\"ok\":true}", "decision": decision,
        "rule": rule, "approval_id": null, "latency_ms": 3, "reason": null
    })
}

/// What a [`Receiver`] saw.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

type Responder = Arc<dyn Fn(usize, &Method, &str) -> u16 + Send + Sync>;

struct ReceiverState {
    seen: Mutex<Vec<Received>>,
    respond: Responder,
}

/// A local HTTP server recording every request; `respond(n, method, path)` picks the
/// status for the n-th request (0-based).
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut seen = state.seen.lock().unwrap();
    let n = seen.len();
    let path = uri.path().to_string();
    let status = (state.respond)(n, &method, &path);
    seen.push(Received {
        method: method.to_string(),
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    pub async fn start(respond: impl Fn(usize, &Method, &str) -> u16 + Send + Sync + 'static) -> Receiver {
        let state = Arc::new(ReceiverState { seen: Mutex::new(Vec::new()), respond: Arc::new(respond) });
        let app = axum::Router::new().fallback(receive).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, state, task }
    }

    pub fn seen(&self) -> Vec<Received> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (or panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(start.elapsed() < within, "receiver got {} of {n} requests: {seen:?}", seen.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

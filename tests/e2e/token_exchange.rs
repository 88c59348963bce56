//! `token_exchange` (RFC 8693) through a real Envoy, against the demo IdP running as its
//! own process. The agents' tokens come from the same IdP (the filter checks them with
//! its JWKS); for each, the filter exchanges it at the IdP's token endpoint for a token
//! made for the upstream, which the demo `/echo` shows it received: the agent's own
//! subject and groups, the upstream's audience, the filter as the actor. The agent's token
//! never reaches the upstream and the exchanged one never reaches the agent.

use std::time::{Duration, Instant};

use airlock_e2e::control::DBA_BOB;
use airlock_e2e::demo_idp::DemoIdp;
use airlock_e2e::fixtures::{JWKS_CLUSTER, UPSTREAM_CLUSTER};
use airlock_e2e::*;
use serde_json::{json, Value};

const CLIENT_ID: &str = "airlock-exchange";
const CLIENT_SECRET: &str = "e2e-exchange-client-secret-7d21";

fn idp(ttl_secs: u64, env: &[(&str, &str)]) -> DemoIdp {
    DemoIdp::start(&format!("{CLIENT_ID}:{CLIENT_SECRET}"), ttl_secs, env)
}

/// `/echo` allowed; keys from the IdP's JWKS; the upstream's credential exchanged there.
fn exchange_config() -> Value {
    let mut config = test_plugin_config();
    config["rules"] = json!([{"name": "echo-for-agents", "action": "allow", "when": {"path": {"prefix": "/echo"}}}]);
    config["default_action"] = json!("deny");
    config["audit"]["flush_interval_ms"] = json!(200);
    config["upstreams"] = json!([{"cluster": UPSTREAM_CLUSTER, "credential": {
        "type": "token_exchange",
        "token_endpoint": {"cluster": JWKS_CLUSTER, "authority": "idp.airlock.svc.cluster.local",
                           "path": "/oauth/token", "timeout_ms": 1000},
        "client_id": CLIENT_ID, "client_secret": {"value": CLIENT_SECRET},
        "audience": "customer-db", "scope": "customers:read"}}]);
    config
}

fn stack_for(idp: &DemoIdp, control_port: Option<u16>, concurrency: u32) -> Stack {
    let mut builder = builder_for(exchange_config(), TestKeys::shared()).set("JWKS_PORT", &idp.port.to_string());
    if let Some(port) = control_port {
        builder = builder.control_port(port);
    }
    builder.concurrency(concurrency).start().unwrap()
}

/// What `/echo` saw in `authorization`, or the filter's refusal.
fn upstream_authorization(stack: &Stack, jwt: &str) -> Result<String, Reply> {
    let reply = stack.get("/echo/exchange", &[("authorization", &bearer(jwt))]).unwrap();
    if reply.status != 200 {
        return Err(reply);
    }
    let echo = reply.json().unwrap();
    assert!(!echo.to_string().contains(jwt), "the agent's token reached the upstream: {echo}");
    let seen = echo["headers"]["authorization"].as_str().unwrap_or_default().to_string();
    assert!(!reply.headers.iter().any(|(_, v)| v.contains(seen.trim_start_matches("Bearer "))), "token in a header");
    Ok(seen)
}

/// The claims of a compact JWT, unverified (the demo upstream does not check it).
fn claims(authorization: &str) -> Value {
    use base64::Engine as _;
    let jwt = authorization.strip_prefix("Bearer ").unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn exchanged_for(idp: &DemoIdp, subject: &str) -> u64 {
    idp.stats()["exchanged"][subject].as_u64().unwrap_or(0)
}

#[test]
fn each_agent_gets_a_token_for_its_own_identity_exchanged_once_per_worker_and_the_audit_holds_no_token() {
    let dir = std::env::temp_dir().join(format!("airlock-e2e-exchange-{}", std::process::id()));
    let control = airlock_e2e::control::ControlService::start(&dir, &[DBA_BOB], "").unwrap();
    let idp = idp(300, &[]);
    let stack = stack_for(&idp, Some(control.port()), 2);
    let ivy = idp.token("ivy", "support", 600);
    let first = upstream_authorization(&stack, &ivy).unwrap_or_else(|r| panic!("{}", r.text()));
    let seen = claims(&first);
    assert_eq!((seen["sub"].as_str(), seen["aud"].as_str()), (Some("ivy"), Some("customer-db")), "{seen}");
    assert_eq!(seen["act"], json!({"sub": CLIENT_ID}), "the filter is the actor: {seen}");
    assert_eq!((seen["groups"].clone(), seen["scope"].clone()), (json!(["support"]), json!("customers:read")));
    let mut tokens = std::collections::BTreeSet::from([first.clone()]);
    for _ in 0..30 {
        tokens.insert(upstream_authorization(&stack, &ivy).unwrap());
    }
    assert!(tokens.len() <= 2, "one exchanged token per worker's cache: {}", tokens.len());
    assert!((1..=2).contains(&exchanged_for(&idp, "ivy")), "{}", idp.stats());

    // Another agent: a token for its identity, not ivy's.
    let joe = idp.token("joe", "support,dba", 600);
    let joes = claims(&upstream_authorization(&stack, &joe).unwrap());
    assert_eq!((joes["sub"].as_str(), joes["groups"].clone()), (Some("joe"), json!(["support", "dba"])));
    assert_eq!(stack.stat("wasmcustom.airlock.credentials.exchange_failed"), Some(0));

    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let sessions = control.get("/v1/sessions?subject=ivy", DBA_BOB.token).unwrap();
        let records: Vec<Value> = sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                let id = s["session_id"].as_str().unwrap();
                control.get(&format!("/v1/sessions/{id}"), DBA_BOB.token).unwrap()["records"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect();
        if records.len() >= 31 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(records.len(), 31);
    for record in &records {
        assert_eq!(record["credential"], json!({"kind": "token_exchange", "key_id": CLIENT_ID}), "{record}");
    }
    let store = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("airlock.db"))
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        .collect::<String>();
    assert!(store.contains(CLIENT_ID), "the store holds the records");
    let log = stack.envoy_log();
    let exchanged: Vec<String> = tokens.iter().map(|t| t.trim_start_matches("Bearer ").to_string()).collect();
    for secret in exchanged.iter().map(String::as_str).chain([ivy.as_str(), joe.as_str(), CLIENT_SECRET]) {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!store.contains(signature), "a secret is in the audit store");
        assert!(!log.contains(signature), "a secret is in Envoy's log");
    }
}

#[test]
fn a_subject_the_idp_refuses_gets_403_and_an_outage_fails_new_subjects_closed_while_cached_ones_go_on() {
    let idp = idp(300, &[("AIRLOCK_DEMO_OAUTH_EXCHANGE_DENIED", "mallory")]);
    let stack = stack_for(&idp, None, 1);
    let mallory = idp.token("mallory", "support", 600);
    let refused = upstream_authorization(&stack, &mallory).unwrap_err();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(error_of(&refused)["code"], "credential_refused");
    assert_eq!(error_of(&refused)["retry"], "never");
    assert_eq!(stack.stat("wasmcustom.airlock.credentials.refused"), Some(1));

    let ivy = idp.token("ivy", "support", 600);
    let held = upstream_authorization(&stack, &ivy).unwrap();
    idp.outage(true);
    assert_eq!(upstream_authorization(&stack, &ivy).unwrap(), held, "a cached exchange keeps working");
    let zoe = idp.token("zoe", "support", 600);
    let down = upstream_authorization(&stack, &zoe).unwrap_err();
    assert_eq!(down.status, 503, "{}", down.text());
    assert_eq!(error_of(&down)["code"], "dependency_unavailable");
    assert_eq!(down.header("retry-after"), Some("1"));
    idp.outage(false);
    let zoes = upstream_authorization(&stack, &zoe).unwrap_or_else(|r| panic!("{}", r.text()));
    assert_eq!(claims(&zoes)["sub"], "zoe", "recovered");
    let log = stack.envoy_log();
    assert!(log.contains("subject `mallory`") && log.contains("error `invalid_target`"), "{log}");
    assert!(log.contains("HTTP 503"), "the outage is logged");
    assert!(!log.contains(CLIENT_SECRET));
}

#[test]
fn a_short_lived_exchanged_token_is_refreshed_ahead_of_expiry_without_a_failed_request() {
    const TTL_S: u64 = 3;
    let idp = idp(TTL_S, &[]);
    let stack = stack_for(&idp, None, 1);
    let ivy = idp.token("ivy", "support", 600);
    let mut tokens = std::collections::BTreeSet::new();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(9) {
        let seen =
            upstream_authorization(&stack, &ivy).unwrap_or_else(|r| panic!("request {sent} failed: {}", r.text()));
        tokens.insert(seen);
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tokens.len() >= 3, "refreshed ahead of expiry: {} tokens in 9 s", tokens.len());
    let exchanges = exchanged_for(&idp, "ivy");
    assert!(exchanges <= 6, "one exchange per refresh, not per request: {exchanges} for {sent} requests");
    assert!(stack.stat("wasmcustom.airlock.credentials.exchange_ok").unwrap() >= 3);
}

#[test]
fn an_exchanged_token_ends_no_later_than_the_agents_own_token_and_none_is_made_after_it() {
    let idp = idp(300, &[]);
    let mut config = exchange_config();
    config["auth"]["clock_skew_seconds"] = json!(0);
    let builder = builder_for(config, TestKeys::shared()).set("JWKS_PORT", &idp.port.to_string());
    let stack = builder.concurrency(1).start().unwrap();
    let short = idp.token("ivy", "support", 3);
    let agent_exp = claims(&bearer(&short))["exp"].as_u64().unwrap();
    let seen = claims(&upstream_authorization(&stack, &short).unwrap());
    assert!(seen["exp"].as_u64().unwrap() <= agent_exp, "exp {} after the agent's {agent_exp}", seen["exp"]);
    std::thread::sleep(Duration::from_secs(4));
    let expired = upstream_authorization(&stack, &short).unwrap_err();
    assert_eq!(expired.status, 401, "{}", expired.text());
    assert_eq!(exchanged_for(&idp, "ivy"), 1, "no exchange for an expired token");
}

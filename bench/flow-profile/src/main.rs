//! Native profile of Airlock's per-request work, without Envoy.
//!
//! Envoy's official build is stripped and V8 hides JIT-compiled Wasm from `perf`, so the
//! benchmark in Envoy can say *how much* Airlock costs but not *where*. This tool runs the
//! very same `RequestFlow` natively against a host that answers like Envoy would and
//! counts every host call, so that
//!
//! * the host calls per request (each one a V8 <-> Envoy crossing, and for calls that
//!   return data also a call back into the VM to allocate the result) are exact, and
//! * the filter's own CPU per request is measurable and can be profiled with
//!   `valgrind --tool=callgrind` (the Wasm build executes the same Rust code, slower).
//!
//! ```text
//! bash scripts/bench/profile.sh [get|post|mask-1m] [N] [--callgrind]
//! ```
//!
//! or by hand:
//!
//! ```text
//! cargo build --release --manifest-path bench/flow-profile/Cargo.toml
//! bench/flow-profile/target/release/airlock-flow-profile CONFIG.json [SCENARIO] [N]
//! ```
//!
//! CONFIG.json is an Airlock plugin config (`python3 scripts/bench/policy.py airlock
//! --audit` prints the benchmark's); its `auth.jwks` is replaced by a key made
//! here, and every `{"env": ...}` secret resolves to a fixed dummy value. SCENARIO is
//! `get` (default), `post` or `mask-1m`; N the number of requests (default 200000).
//! `AIRLOCK_PROFILE_BODY=FILE` makes `mask-1m` mask that file instead of built-in rows
//! (e.g. the demo upstream's `/large?bytes=1048576`, which the Envoy benchmark masks).

use std::rc::Rc;
use std::time::Instant;

use airlock_filter::config::Config;
use airlock_filter::flow::RequestFlow;
use airlock_filter::host::mock::MockHost;
use airlock_filter::host::Level;
use airlock_filter::stats::Stats;
use airlock_filter::vm_state::VmState;
use jwt_simple::prelude::*;

const UPSTREAM_CLUSTER: &str = "outbound|8080||customer-db.agents.svc.cluster.local";

struct Scenario {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    response_type: &'static str,
    response_body: Vec<u8>,
}

fn scenario(name: &str) -> Result<Scenario, String> {
    match name {
        "get" => Ok(Scenario {
            method: "GET",
            path: "/health".into(),
            body: Vec::new(),
            response_type: "text/plain",
            response_body: b"ok\n".to_vec(),
        }),
        "post" => Ok(Scenario {
            method: "POST",
            path: "/echo/tool".into(),
            body: concat!(
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query_orders","#,
                r#""arguments":{"customer_id":42,"status":"open","limit":20}},"#,
                r#""sql":"SELECT id, total FROM orders WHERE customer_id = 42 AND status = 'open' LIMIT 20"}"#
            )
            .as_bytes()
            .to_vec(),
            response_type: "application/json",
            response_body: br#"{"ok":true}"#.to_vec(),
        }),
        "mask-1m" if std::env::var_os("AIRLOCK_PROFILE_BODY").is_some() => {
            // A recorded response, e.g. `curl 'http://UPSTREAM/large?bytes=1048576'`.
            let path = std::env::var("AIRLOCK_PROFILE_BODY").map_err(|e| e.to_string())?;
            let body = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            Ok(Scenario {
                method: "GET",
                path: "/large?bytes=1048576".into(),
                body: Vec::new(),
                response_type: "application/json",
                response_body: body,
            })
        }
        "mask-1m" => {
            let row = concat!(
                r#"{"id":1,"name":"Alice Martin","email":"alice.martin@example.com","#,
                concat!(
                    r#""phone":"+1 415 555 0132","card":"4111 1111 1111 1111","ssn":"123-45-6789","#,
                    r#""iban":"DE89 3704 0044 0532 0130 00"}"#
                )
            );
            let mut body = String::from("{\"customers\":[");
            while body.len() + row.len() + 2 < 1024 * 1024 {
                if !body.ends_with('[') {
                    body.push(',');
                }
                body.push_str(row);
            }
            body.push_str("]}");
            Ok(Scenario {
                method: "GET",
                path: "/large?bytes=1048576".into(),
                body: Vec::new(),
                response_type: "application/json",
                response_body: body.into_bytes(),
            })
        }
        other => Err(format!("unknown scenario {other:?}: get, post or mask-1m")),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let config_path = args.get(1).ok_or("usage: airlock-flow-profile CONFIG.json [get|post|mask-1m] [N]")?;
    let sc = scenario(args.get(2).map_or("get", String::as_str))?;
    let n: u64 = args.get(3).map_or(Ok(200_000), |s| s.parse()).map_err(|_| "N must be a number")?;

    // Config with a key of our own, and a token it accepts.
    let key = ES256KeyPair::generate().with_key_id("profile");
    let jwk: serde_json::Value =
        serde_json::from_str(&key.public_key().with_key_id("profile").to_jwk()).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(config_path).map_err(|e| format!("{config_path}: {e}"))?;
    let mut config: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    config["auth"]["jwks"] = serde_json::json!({"inline": {"keys": [jwk]}});
    let issuer = config["auth"]["issuers"][0].as_str().unwrap_or_default().to_string();
    let audience = config["auth"]["audiences"][0].as_str().unwrap_or_default().to_string();
    let custom = serde_json::json!({"groups": ["support", "bench"]});
    let claims = Claims::with_custom_claims(custom, Duration::from_hours(2))
        .with_issuer(issuer)
        .with_audience(audience)
        .with_subject("bench-agent");
    let token = key.sign(claims).map_err(|e| e.to_string())?;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis()
            as u64;

    let bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let config = Config::from_json(&bytes, &|_| Some("profile-dummy-secret-0123456789".to_string()))
        .map_err(|e| e.to_string())?;
    // The unit tests' mock host, counting host calls; logging as an Envoy at `warn`.
    let mut host =
        MockHost { now_ms, cluster: Some(UPSTREAM_CLUSTER.to_string()), log_level: Level::Warn, ..MockHost::default() };
    let stats = Stats::define(&mut host, &config).ok_or("stats")?;
    let vm = Rc::new(VmState::new(config, stats, "profile"));
    // An `oauth2_client_credentials` upstream: its token endpoint answers once, as it
    // would on the first tick, so the requests measure the cached token.
    for (_, client) in vm.refresh_oauth(&mut host) {
        let answer = br#"{"access_token":"profile-access-token","token_type":"Bearer","expires_in":86400}"#;
        vm.finish_oauth_fetch(&mut host, client, Some(200), Some(answer));
    }

    let request_headers = vec![
        (":method".to_string(), sc.method.to_string()),
        (":path".to_string(), sc.path.clone()),
        (":authority".to_string(), "127.0.0.1:10000".to_string()),
        (":scheme".to_string(), "http".to_string()),
        ("authorization".to_string(), format!("Bearer {token}")),
        ("content-type".to_string(), "application/json".to_string()),
        ("x-forwarded-proto".to_string(), "http".to_string()),
        ("x-request-id".to_string(), "6f1c2a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f".to_string()),
    ];
    let one = |host: &mut MockHost| {
        host.request_headers = request_headers.clone();
        host.request_body = sc.body.clone();
        host.response_headers = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), sc.response_type.into()),
            ("content-length".into(), sc.response_body.len().to_string()),
        ];
        host.response_body = sc.response_body.clone();
        let mut flow = RequestFlow::new(Rc::clone(&vm), 1);
        let has_body = !sc.body.is_empty();
        let callouts = host.callouts.len();
        flow.on_request_headers(host, !has_body);
        if host.callouts.len() > callouts {
            // A `token_exchange` upstream's first request waits for the exchange: answered
            // as the IdP would, once; the requests measured use the cached token.
            let call = host.callouts.len() as u32;
            flow.on_callout_response(host, call, Some(200), Some(EXCHANGE_ANSWER.to_vec()));
        }
        if has_body {
            flow.on_request_body(host, sc.body.len(), true);
        }
        flow.on_response_headers(host, false);
        flow.on_response_body(host, sc.response_body.len(), true);
        flow.on_log(host);
    };

    // Warm-up (token cache), then the measured requests. The audit queue is shipped and
    // acknowledged every 500 requests, as the root context's timer would.
    for _ in 0..n.clamp(1, 10) {
        one(&mut host);
    }
    host.calls.borrow_mut().clear();
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    for i in 0..n {
        one(&mut host);
        if i % 500 == 499 && vm.ship_audit(&mut host).is_some() {
            vm.finish_audit_shipment(&mut host, Some(200));
        }
    }
    let elapsed = start.elapsed();
    let cpu_us = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => format!("{:.2}", b.saturating_sub(a) as f64 / 1e3 / n as f64),
        _ => "n/a".to_string(),
    };
    let mut out = format!(
        "scenario {} x {n}: {cpu_us} us CPU per request natively ({:.2} us wall; local replies: {})\nhost calls per \
            request:\n",
        args.get(2).map_or("get", String::as_str),
        elapsed.as_secs_f64() * 1e6 / n as f64,
        calls_of(&host, "send_local_response")
    );
    let calls = host.calls.borrow();
    let total: u64 = calls.values().sum();
    for (what, count) in calls.iter() {
        out.push_str(&format!("  {:<28} {:>6.2}\n", what, *count as f64 / n as f64));
    }
    out.push_str(&format!("  {:<28} {:>6.2}\n", "total", total as f64 / n as f64));
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(())
}

const EXCHANGE_ANSWER: &[u8] = br#"{"access_token":"profile-exchanged-token","token_type":"Bearer","expires_in":86400,
    "issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#;

fn calls_of(host: &MockHost, what: &str) -> u64 {
    host.calls.borrow().get(what).copied().unwrap_or(0)
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat): unlike wall time, not
/// inflated when other processes share the core, as they do on the benchmark machine.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("airlock-flow-profile: {e}");
        std::process::exit(2);
    }
}

//! Smoke tests of the harness itself, with Envoy in bare mode (no filter): they prove the
//! demo upstream, the rendered bootstrap and the harness plumbing work, so that a failing
//! filter test points at the filter.

use std::io::Read as _;

use airlock_e2e::Stack;
use serde_json::{json, Value};

fn bare() -> Stack {
    Stack::builder().bare().start().unwrap()
}

#[test]
fn bare_envoy_serves_customers_full_of_pii() {
    let stack = bare();
    let reply = stack.get("/customers", &[]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("content-type").unwrap().starts_with("application/json"));
    // Went through Envoy, not around it.
    assert!(reply.header("x-envoy-upstream-service-time").is_some(), "{:?}", reply.headers);
    let body = reply.json().unwrap();
    let customers = body["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 20);
    assert_eq!(customers[0]["card"], "4111 1111 1111 1111");
    assert_eq!(customers[0]["email"], "alice.martin@example.com");
    assert_eq!(customers[0]["iban"], "DE89370400440532013000");
    assert!(customers.iter().all(|c| c["ssn"].as_str().unwrap().len() == 11));
}

#[test]
fn bare_envoy_lets_drop_table_through_and_the_upstream_really_drops_it() {
    let stack = bare();
    let tables = stack.get("/tables", &[]).unwrap().json().unwrap();
    assert_eq!(tables["tables"], json!(["customers"]));

    let reply = stack.post_json("/sql", &[], &json!({"sql": "DROP TABLE customers"})).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json().unwrap(), json!({"changes": 0}));

    let tables = stack.get("/tables", &[]).unwrap().json().unwrap();
    assert_eq!(tables["tables"], json!([]));
    let gone = stack.get("/customers", &[]).unwrap();
    assert_eq!(gone.status, 500);
    assert!(gone.text().contains("no such table"), "{}", gone.text());
    assert!(stack.upstream_db_path().is_file());
}

#[test]
fn bare_envoy_sql_errors_and_bad_json_are_400_json() {
    let stack = bare();
    let bad_sql = stack.post_json("/sql", &[], &json!({"sql": "SELEC 1"})).unwrap();
    assert_eq!(bad_sql.status, 400);
    assert!(bad_sql.json().unwrap()["error"].as_str().unwrap().contains("syntax error"));
    let bad_json = stack.request("POST", "/sql", &[("content-type", "application/json")], Some(b"{nope")).unwrap();
    assert_eq!(bad_json.status, 400);
    assert!(bad_json.json().unwrap()["error"].as_str().unwrap().contains("not valid JSON"));
}

#[test]
fn bare_envoy_echo_reflects_method_path_headers_and_body() {
    let stack = bare();
    let reply = stack
        .request(
            "PUT",
            "/echo/a/b?q=1",
            &[("x-agent-note", "hello"), ("authorization", "Bearer abc")],
            Some(b"payload \xff"),
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    let echo: Value = reply.json().unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/a/b?q=1");
    assert_eq!(echo["headers"]["x-agent-note"], "hello");
    assert_eq!(echo["headers"]["authorization"], "Bearer abc");
    // Envoy added its own request headers on the way.
    assert!(echo["headers"]["x-request-id"].is_string(), "{echo}");
    assert_eq!(echo["body"], "payload \u{fffd}");
    assert_eq!(echo["body_len"], 9);
}

#[test]
fn bare_envoy_template_normalizes_dot_segments_unreserved_escapes_and_slashes() {
    // What the template's `normalize_path` + `merge_slashes` hand to filters and upstream;
    // the filter's own normalisation must agree with (and not rely on) this.
    let stack = bare();
    for (sent, seen) in [
        ("/echo/a/../b%61//c", "/echo/ba/c"),
        ("/x/../echo/./y", "/echo/y"),
        ("/echo/A%7e%41?x=%2e", "/echo/A~A?x=%2e"),
        ("/echo/a%2Fb", "/echo/a%2Fb"),
    ] {
        let reply = stack.get(sent, &[]).unwrap();
        assert_eq!(reply.json().unwrap()["path"], seen, "sent {sent}");
    }
}

#[test]
fn bare_envoy_passes_gzip_large_and_streamed_bodies_intact() {
    let stack = bare();
    let gz = stack.get("/gzip", &[]).unwrap();
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut json = String::new();
    flate2_decode(&gz.body, &mut json);
    assert!(json.contains("alice.martin@example.com"));

    let large = stack.get("/large?bytes=200000", &[]).unwrap();
    assert_eq!(large.body.len(), 200_000);
    assert!(large.json().unwrap()["customers"].as_array().unwrap().len() > 100);

    let stream = stack.get("/stream?events=3&delay_ms=5", &[]).unwrap();
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let text = stream.text();
    assert_eq!(text.matches("\ndata: {").count(), 3, "{text}");
    assert!(text.contains("bob.chen@example.com") && text.ends_with("data: [DONE]\n\n"));
}

fn flate2_decode(body: &[u8], out: &mut String) {
    assert_eq!(body.get(..2), Some(&[0x1f, 0x8b][..]), "not gzip");
    flate2::read::GzDecoder::new(body).read_to_string(out).unwrap();
}

#[test]
fn stats_log_and_admin_are_available() {
    let stack = bare();
    assert_eq!(stack.get("/health", &[]).unwrap().text(), "ok\n");
    let completed =
        stack.wait_for_stat("http.airlock_ingress.downstream_rq_completed", 1, std::time::Duration::from_secs(10));
    assert!(completed.unwrap_or(0) >= 1, "{completed:?}");
    assert_eq!(stack.stat("server.live"), Some(1));
    assert!(stack.envoy_log().contains("starting main dispatch loop"));
}

#[test]
fn start_expecting_failure_returns_the_log_of_an_envoy_that_rejected_its_config() {
    let log = Stack::builder().bare().set("UPSTREAM_PORT", "99999999").start_expecting_failure().unwrap();
    assert!(log.contains("port_value"), "{log}");
    let err = Stack::builder().bare().start_expecting_failure().unwrap_err();
    assert!(err.contains("started although a failure was expected"), "{err}");
}

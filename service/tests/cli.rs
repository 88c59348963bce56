//! The `airlock` CLI against a running service: approvals, sessions, verify and replay.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

async fn airlock(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"));
        cmd.args(&args).env_remove("AIRLOCK_TOKEN").env_remove("AIRLOCK_SERVER");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_shows_approves_and_denies() {
    let s = Server::start();
    let id = s.create_approval(&approval_request("agent-9", 1, 300, "hold")).await;
    let id2 = s.create_approval(&approval_request("agent-8", 1, 300, "hold")).await;
    let env = [("AIRLOCK_TOKEN", ALICE), ("AIRLOCK_SERVER", s.url.as_str())];

    let out = airlock(&["approvals", "list"], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&id) && text.contains(&id2), "{text}");
    assert!(text.contains("POST /v1/sql"), "{text}");

    let out = airlock(&["approvals", "show", &id], &env).await;
    let text = stdout(&out);
    assert!(
        text.contains("prod-db-writes")
            && text.contains("DELETE FROM orders")
            && text.contains("cleanup of a duplicate order"),
        "{text}"
    );

    let out = airlock(&["approvals", "approve", &id, "--reason", "checked the order id"], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("status is now approved"), "{}", stdout(&out));
    assert_eq!(s.wait(&id, 0).await.1["decisions"][0]["reason"], "checked the order id");

    let out = airlock(&["approvals", "deny", &id2, "--reason", "not today"], &env).await;
    assert!(stdout(&out).contains("status is now denied"));

    // Errors from the server reach the user with their code and a non-zero exit.
    let out = airlock(&["approvals", "approve", &id2, "--reason", "changed my mind"], &env).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("approval_not_pending"), "{}", stderr(&out));
    let out = airlock(&["approvals", "list"], &[("AIRLOCK_SERVER", s.url.as_str())]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("AIRLOCK_TOKEN"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verify_over_http_and_directly_on_the_database() {
    let mut s = Server::start();
    let records: Vec<_> = (1..=4).map(|i| record(&format!("r{i}"), "sess-v", i, ALLOW, 200)).collect();
    s.ingest(&records).await;
    let env = [("AIRLOCK_TOKEN", AUDRA), ("AIRLOCK_SERVER", s.url.as_str())];
    let out = airlock(&["verify"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("\"ok\": true"));

    s.stop();
    let pool = sqlx::SqlitePool::connect(&s.database_url()).await.unwrap();
    sqlx::query("UPDATE audit_records SET path = '/v1/innocent' WHERE seq = 3").execute(&pool).await.unwrap();
    pool.close().await;
    let out = airlock(&["verify", "--database", &s.database_url()], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("\"first_bad_seq\": 3") && text.contains("altered"), "{text}");
    let missing = format!("sqlite://{}/nope.db", s.dir.path().display());
    let out = airlock(&["verify", "--database", &missing], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no SQLite file"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_sessions_and_shows_a_timeline() {
    let s = Server::start();
    s.ingest(&[record("x1", "sess-cli", 1_000, ALLOW, 200), record("x2", "sess-cli", 2_000, DENIED_BY_RULE, 403)])
        .await;
    let env = [("AIRLOCK_TOKEN", AUDRA), ("AIRLOCK_SERVER", s.url.as_str())];
    let out = airlock(&["sessions", "list", "--subject", "agent-1"], &env).await;
    let text = stdout(&out);
    assert!(
        text.contains("sess-cli") && text.contains("2 requests") && text.contains("\"denied_by_rule\":1"),
        "{text}"
    );
    let out = airlock(&["sessions", "show", "sess-cli"], &env).await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("/v1/items/x1") && lines[0].contains("allow"));
    assert!(lines[1].contains("/v1/items/x2") && lines[1].contains("denied_by_rule (rule no-deletes)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_status_differences_against_another_target() {
    let s = Server::start();
    let batch = vec![
        record("p1", "sess-r", 1, ALLOW, 200),
        record("p2", "sess-r", 2, ALLOW, 200),
        record("p3", "sess-r", 3, ALLOW, 404),
        record("p4", "sess-r", 4, DENIED_BY_RULE, 403),
    ];
    s.ingest(&batch).await;
    // Staging differs on p2 (500 where production answered 200).
    let staging = Receiver::start(|_, _, path| match path {
        "/v1/items/p2" => 500,
        "/v1/items/p3" => 404,
        _ => 200,
    })
    .await;
    let env = [("AIRLOCK_TOKEN", AUDRA), ("AIRLOCK_SERVER", s.url.as_str())];
    let out = airlock(&["replay", "sess-r", "--target", &staging.url, "-H", "x-replay: yes"], &env).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "differences exit 1: {text}{}", stderr(&out));
    let diff_lines: Vec<&str> = text.lines().filter(|l| l.ends_with("DIFF")).collect();
    assert_eq!(diff_lines.len(), 1, "{text}");
    assert!(
        diff_lines[0].contains("/v1/items/p2")
            && diff_lines[0].contains("recorded 200")
            && diff_lines[0].contains("replay 500")
    );
    assert!(
        text.contains("replayed 3 requests") && text.contains("1 differ") && text.contains("1 denied skipped"),
        "{text}"
    );

    let seen = staging.wait_for(3, Duration::from_secs(2)).await;
    assert_eq!(seen.len(), 3, "the denied request must not be replayed");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, "{\"n\":\"p1\"}", "the recorded (masked) body is sent");
    assert_eq!(seen[0].headers["x-replay"], "yes");
    assert_eq!(seen[0].headers["content-type"], "application/json");

    // A target that answers like production: no differences, exit 0.
    let same = Receiver::start(|_, _, path| if path == "/v1/items/p3" { 404 } else { 200 }).await;
    let out = airlock(&["replay", "sess-r", "--target", &same.url], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 differ"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_token_prints_the_sha256_used_in_the_config() {
    let out = tokio::task::spawn_blocking(|| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .arg("hash-token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"my-token\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), sha256_hex("my-token"));
}

#[tokio::test]
async fn check_config_validates_offline_and_evaluates_a_sample_request() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/plugin-config.json");
    let out = airlock(
        &[
            "check-config",
            shipped,
            "--method",
            "post",
            "--path",
            "/sql",
            "--subject",
            "alice",
            "--groups",
            "analyst",
            "--body",
            r#"{"sql": "drop\n\ttable customers"}"#,
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("config OK"), "{}", stdout(&out));
    assert!(stdout(&out).contains("decision: deny by rule `block-destructive-sql`"), "{}", stdout(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    config["default_action"] = serde_json::json!("maybe");
    std::fs::write(&bad, config.to_string()).unwrap();
    let out = airlock(&["check-config", bad.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1), "a bad config is a failed check");
    assert!(stdout(&out).contains("default_action"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_search_filters_by_subject_time_decision_rule_and_path() {
    let s = Server::start();
    let mut other = record("b1", "sess-b", 5_000, ALLOW, 200);
    other["subject"] = "agent-2".into();
    other["path"] = "/v1/other/b1".into();
    s.ingest(&[record("a1", "sess-a", 1_000, ALLOW, 200), record("a2", "sess-a", 2_000, DENIED_BY_RULE, 403), other])
        .await;
    let env = [("AIRLOCK_TOKEN", AUDRA), ("AIRLOCK_SERVER", s.url.as_str())];
    let search = |args: &'static [&'static str]| async move {
        let mut all = vec!["sessions", "search", "--json"];
        all.extend_from_slice(args);
        let out = airlock(&all, &env).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let ids: Vec<String> =
            v["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap().into()).collect();
        (ids, v)
    };
    assert_eq!(search(&[]).await.0, ["sess-b", "sess-a"]);
    assert_eq!(search(&["--subject", "agent-2"]).await.0, ["sess-b"]);
    assert_eq!(search(&["--since", "4000"]).await.0, ["sess-b"]);
    assert_eq!(search(&["--until", "1970-01-01T00:00:02.500Z"]).await.0, ["sess-a"]);
    assert_eq!(search(&["--decision", "denied_by_rule"]).await.0, ["sess-a"]);
    assert_eq!(search(&["--rule", "no-deletes"]).await.0, ["sess-a"]);
    assert_eq!(search(&["--path", "/v1/other/"]).await.0, ["sess-b"]);
    assert_eq!(search(&["--path", "/V1/OTHER/"]).await.0, Vec::<String>::new(), "the prefix is case-sensitive");
    assert_eq!(search(&["--path", "/v1/items/a%"]).await.0, Vec::<String>::new(), "% is no wildcard");
    // Filters combine; since/until bound the records counted.
    // rule/decision/path pick sessions by any of their records; since/until bound the count.
    let (ids, v) = search(&["--subject", "agent-1", "--since", "1500", "--rule", "reads"]).await;
    assert_eq!((ids.as_slice(), &v["sessions"][0]["count"]), (&["sess-a".to_string()][..], &1.into()));
    assert_eq!(search(&["--subject", "agent-2", "--rule", "no-deletes"]).await.0, Vec::<String>::new());
    let (ids, v) = search(&["--subject", "agent-1", "--since", "1500"]).await;
    assert_eq!(ids, ["sess-a"]);
    assert_eq!(v["sessions"][0]["count"], 1);

    // The API refuses a bad instant by name.
    let (status, err) = call("GET", &s.at("/v1/sessions?since=yesterday"), Some(AUDRA), None).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("since"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_watch_prints_an_approval_created_after_it_started_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let s = Server::start();
    let before = s.create_approval(&approval_request("agent-3", 1, 300, "hold")).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["approvals", "watch", "--json", "--interval-ms", "200", "--server", &s.url])
        .env("AIRLOCK_TOKEN", ALICE)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |rx: &std::sync::mpsc::Receiver<String>| -> serde_json::Value {
        let line = rx.recv_timeout(Duration::from_secs(15)).expect("watch printed nothing");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not one JSON object a line: {line}"))
    };
    assert_eq!(next(&rx)["id"], before.as_str(), "already pending at start");
    let after = s.create_approval(&approval_request("agent-4", 1, 300, "hold")).await;
    let seen = next(&rx);
    assert_eq!(seen["id"], after.as_str());
    assert_eq!(seen["subject"], "agent-4");
    std::thread::sleep(Duration::from_millis(600));
    assert!(rx.try_recv().is_err(), "each approval is printed once");

    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean exit: {status:?}");
}

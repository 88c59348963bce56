//! Audit ingestion, sessions and hash-chain verification over real HTTP, with tampering
//! done directly on the SQLite file the server writes.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::time::Instant;

use common::*;
use serde_json::{json, Value};

async fn seed(s: &Server, n: usize) {
    let records: Vec<Value> =
        (1..=n).map(|i| record(&format!("r{i}"), "sess-a", 1_700_000_000_000 + i as i64, ALLOW, 200)).collect();
    let (status, v) = s.ingest(&records).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], n);
}

async fn tamper(s: &Server, statements: &[&str]) {
    let pool = sqlx::SqlitePool::connect(&s.database_url()).await.unwrap();
    for st in statements {
        let done = sqlx::query(st).execute(&pool).await.unwrap();
        assert!(done.rows_affected() > 0, "tamper statement changed nothing: {st}");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_ingest_is_idempotent_by_record_id() {
    let s = Server::start();
    let batch: Vec<Value> = (1..=3).map(|i| record(&format!("r{i}"), "sess-a", 1000 + i, ALLOW, 200)).collect();
    let (status, v) = s.ingest(&batch).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"accepted": 3, "duplicates": 0}));
    let (_, v) = s.ingest(&batch).await;
    assert_eq!(v, json!({"accepted": 0, "duplicates": 3}), "a retried batch must not be stored twice");
    let mut mixed = batch.clone();
    mixed.push(record("r4", "sess-a", 1004, ALLOW, 200));
    mixed.push(record("r4", "sess-a", 1004, ALLOW, 200));
    let (_, v) = s.ingest(&mixed).await;
    assert_eq!(v, json!({"accepted": 1, "duplicates": 4}));
    let report = s.verify().await;
    assert_eq!(report, json!({"ok": true, "records": 4, "first_bad_seq": null, "problem": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_the_filter_never_writes_is_refused_by_field() {
    let s = Server::start();
    let mut batch: Vec<Value> = (0..4).map(|i| record(&format!("r{i}"), "sess-a", i, ALLOW, 200)).collect();
    batch[3]["decision"] = json!("deny");
    let (status, v) = s.ingest(&batch).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_field");
    assert_eq!(v["error"]["field"], "records[3].decision");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("invalid `records[3].decision`: unknown decision `deny`"), "{message}");
    assert_eq!(s.verify().await["records"], 0);
    // Listing sessions by a decision that does not exist is a mistake too, not "none".
    let (status, v) = call("GET", &s.at("/v1/sessions?decision=deny"), Some(AUDRA), None).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("decision")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batch_is_refused_whole_and_names_the_record_field() {
    let s = Server::start();
    let mut bad = record("r2", "sess-a", 1, ALLOW, 200);
    bad["status"] = json!(1200);
    let (status, v) = s.ingest(&[record("r1", "sess-a", 1, ALLOW, 200), bad]).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["field"], "records[1].status");
    assert_eq!(s.verify().await["records"], 0, "nothing of a refused batch is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_an_altered_record() {
    let s = Server::start();
    seed(&s, 5).await;
    assert_eq!(s.verify().await["ok"], true);
    tamper(&s, &["UPDATE audit_records SET response_body = '{\"ok\":false}' WHERE seq = 3"]).await;
    let r = s.verify().await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_seq"], 3);
    assert!(r["problem"].as_str().unwrap().contains("altered"), "{r}");
    assert_eq!(r["records"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_stored_decision_the_filter_never_writes() {
    let s = Server::start();
    seed(&s, 3).await;
    tamper(&s, &["UPDATE audit_records SET decision = 'deny' WHERE seq = 2"]).await;
    let r = s.verify().await;
    assert_eq!((r["ok"].as_bool(), r["first_bad_seq"].as_i64()), (Some(false), Some(2)));
    let problem = r["problem"].as_str().unwrap();
    assert!(problem.contains("record 2 is unreadable") && problem.contains("`deny`"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_a_removed_record() {
    let s = Server::start();
    seed(&s, 5).await;
    tamper(&s, &["DELETE FROM audit_records WHERE seq = 2"]).await;
    let r = s.verify().await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_seq"], 2);
    assert!(r["problem"].as_str().unwrap().contains("removed"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_records_cut_from_the_end() {
    let s = Server::start();
    seed(&s, 5).await;
    tamper(&s, &["DELETE FROM audit_records WHERE seq >= 4"]).await;
    let r = s.verify().await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_seq"], 4);
    assert!(r["problem"].as_str().unwrap().contains("removed from the end"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_reordered_records() {
    let s = Server::start();
    seed(&s, 5).await;
    tamper(
        &s,
        &[
            "UPDATE audit_records SET seq = -1 WHERE seq = 2",
            "UPDATE audit_records SET seq = 2 WHERE seq = 4",
            "UPDATE audit_records SET seq = 4 WHERE seq = -1",
        ],
    )
    .await;
    let r = s.verify().await;
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_seq"], 2);
    assert!(r["problem"].as_str().unwrap().contains("reordered"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_group_records_and_filter_by_subject_time_and_decision() {
    let s = Server::start();
    let mut other = record("o1", "sess-b", 5_000, DENIED_BY_RULE, 403);
    other["subject"] = json!("agent-2");
    let batch = vec![
        record("a1", "sess-a", 1_000, ALLOW, 200),
        record("a2", "sess-a", 2_000, ALLOW, 500),
        record("a3", "sess-a", 3_000, DENIED_BY_RULE, 403),
        other,
        record("c1", "sess-c", 9_000, ALLOW, 200),
    ];
    assert_eq!(s.ingest(&batch).await.1["accepted"], 5);

    let (status, v) = call("GET", &s.at("/v1/sessions"), Some(AUDRA), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = v["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sess-c", "sess-b", "sess-a"], "most recently active first");
    let a = &v["sessions"][2];
    assert_eq!((a["count"].as_i64(), a["first_ms"].as_i64(), a["last_ms"].as_i64()), (Some(3), Some(1000), Some(3000)));
    assert_eq!(a["decisions"], json!({"allow": 2, "denied_by_rule": 1}));

    let (_, v) = call("GET", &s.at("/v1/sessions?subject=agent-2"), Some(AUDRA), None).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(v["sessions"][0]["session_id"], "sess-b");
    let (_, v) = call("GET", &s.at("/v1/sessions?decision=denied_by_rule&subject=agent-1"), Some(AUDRA), None).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(v["sessions"][0]["session_id"], "sess-a");
    let (_, v) = call("GET", &s.at("/v1/sessions?from=4000&to=1970-01-01T00:00:06Z"), Some(AUDRA), None).await;
    let ids: Vec<&str> = v["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sess-b"]);
    let (status, v) = call("GET", &s.at("/v1/sessions?from=yesterday"), Some(AUDRA), None).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("from")));

    let (status, v) = call("GET", &s.at("/v1/sessions/sess-a"), Some(AUDRA), None).await;
    assert_eq!(status, 200);
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["a1", "a2", "a3"]);
    assert_eq!(recs[2]["decision"], "denied_by_rule");
    assert_eq!(recs[0]["request_body"], "{\"n\":\"a1\"}");
    assert_eq!(recs[1]["prev_hash"], recs[0]["hash"]);
    let (status, _) = call("GET", &s.at("/v1/sessions/nope"), Some(AUDRA), None).await;
    assert_eq!(status, 404);
    // Approver-only tokens may not browse the audit log.
    let (status, v) = call("GET", &s.at("/v1/sessions"), Some(ALICE), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("missing_role")));
}

/// Measures sustained ingest through HTTP into SQLite (debug build of the service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rate_keeps_the_chain_valid() {
    let s = Server::start();
    let batches = 20;
    let per_batch = 500;
    let started = Instant::now();
    for b in 0..batches {
        let records: Vec<Value> = (0..per_batch)
            .map(|i| record(&format!("b{b}-{i}"), &format!("sess-{}", i % 50), 1_000 + i as i64, ALLOW, 200))
            .collect();
        let (status, v) = s.ingest(&records).await;
        assert_eq!((status, v["accepted"].as_u64()), (200, Some(per_batch as u64)));
    }
    let took = started.elapsed();
    let total = batches * per_batch;
    println!("audit ingest: {total} records in {took:?} = {:.0} records/s", total as f64 / took.as_secs_f64());
    let t = Instant::now();
    let r = s.verify().await;
    println!("verify of {total} records: {:?}", t.elapsed());
    assert_eq!(r["ok"], true);
    assert_eq!(r["records"], total);
}

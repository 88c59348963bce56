//! The store's guarantees, run on SQLite and (when `AIRLOCK_TEST_POSTGRES_URL` is set)
//! on PostgreSQL: every test exists once per backend. On PostgreSQL each test gets a
//! fresh database, and the multi-replica tests run two real server processes on it.
//! Without the variable the PostgreSQL variants print SKIPPED on stderr and pass.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_service::chain::AuditRecord;
use airlock_service::store::approvals::{NewApproval, RedeemError, Verdict};
use airlock_service::store::tools::AcceptError;
use airlock_service::store::Store;
use airlock_wire::{ApprovalStatus, CredentialUse, Decision, Mode, ToolChangeStatus, ToolObservation};
use common::*;
use sqlx::Executor;

const PG_ENV: &str = "AIRLOCK_TEST_POSTGRES_URL";

/// A database for one test; PostgreSQL databases are dropped afterwards.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        Db { url, _dir: Some(dir), pg_admin: None }
    }

    async fn postgres(test: &str) -> Option<Db> {
        let Ok(admin) = std::env::var(PG_ENV) else {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test} on PostgreSQL: set {PG_ENV} to run it");
            return None;
        };
        let mut rnd = [0u8; 6];
        getrandom::getrandom(&mut rnd).unwrap();
        let name = format!("airlock_test_{}", hex::encode(rnd));
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        pool.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        pool.close().await;
        let mut url = reqwest::Url::parse(&admin).unwrap();
        url.set_path(&format!("/{name}"));
        Some(Db { url: url.to_string(), _dir: None, pg_admin: Some((admin, name)) })
    }

    async fn drop_pg(&self) {
        if let Some((admin, name)) = &self.pg_admin {
            let pool = sqlx::PgPool::connect(admin).await.unwrap();
            let _ = pool.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
            pool.close().await;
        }
    }

    /// Runs raw SQL (tampering) on the database behind the store's back.
    async fn raw(&self, statements: &[&str]) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        for st in statements {
            let r = sqlx::query(st).execute(&pool).await.unwrap();
            assert!(r.rows_affected() > 0, "changed nothing: {st}");
        }
        pool.close().await;
    }
}

/// Declares `name::sqlite` and `name::postgres` tests running `body(db)`.
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = Db::sqlite();
                $body(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = Db::postgres(stringify!($name)).await else {
                    return;
                };
                $body(&db).await;
                db.drop_pg().await;
            }
        }
    };
}

fn new_approval(subject: &str, required: i64, ttl_seconds: i64) -> NewApproval {
    NewApproval {
        rule: "r".into(),
        subject: subject.into(),
        groups: vec!["agents".into()],
        method: "POST".into(),
        path: "/sql".into(),
        body: "DROP TABLE x".into(),
        digest: "d".repeat(64),
        reason: Some("why".into()),
        session_id: "s".into(),
        mode: Mode::Ticket,
        ttl_seconds,
        approver_groups: vec!["dba".into()],
        required,
    }
}

fn audit(id: &str, n: u64) -> AuditRecord {
    AuditRecord {
        id: id.to_string().into(),
        time_ms: n,
        subject: "agent".into(),
        groups: vec!["g".to_string()].into(),
        session_id: format!("s{}", n % 3).into(),
        method: "GET".into(),
        path: format!("/items/{n}").into(),
        request_body: None,
        status: 200,
        response_body: Some("{}".into()),
        decision: Decision::Allow,
        rule: None,
        approval_id: None,
        latency_ms: 1,
        reason: None,
        // Every other record names a signing key: stored and hashed like every field.
        credential: n
            .is_multiple_of(2)
            .then(|| CredentialUse { kind: "signed_request".into(), key_id: Some("k1".into()) }),
    }
}

async fn quorum_and_single_use(db: &Db) {
    let store = Store::open(&db.url).await.unwrap();
    let now = 1_000_000;
    let a = store
        .create_approval("apr_00000000000000000000000000000001", &new_approval("agent", 2, 60), now)
        .await
        .unwrap();
    assert_eq!(a.status(now), ApprovalStatus::Pending);
    let a1 = store.decide(&a.id, "alice", Verdict::Approve, "ok", now + 1).await.unwrap();
    assert_eq!(a1.status(now + 1), ApprovalStatus::Pending);
    assert!(store.decide(&a.id, "alice", Verdict::Approve, "again", now + 2).await.is_err());
    let a2 = store.decide(&a.id, "bob", Verdict::Approve, "ok", now + 3).await.unwrap();
    assert_eq!(a2.status(now + 3), ApprovalStatus::Approved);
    assert_eq!(a2.decisions.len(), 2);
    let digest = "d".repeat(64);
    assert_eq!(store.redeem(&a.id, &"e".repeat(64), "agent", now + 4).await.unwrap(), Err(RedeemError::DigestMismatch));
    assert_eq!(store.redeem(&a.id, &digest, "other", now + 4).await.unwrap(), Err(RedeemError::DigestMismatch));
    assert_eq!(store.redeem(&a.id, &digest, "agent", now + 4).await.unwrap(), Ok(()));
    assert_eq!(store.redeem(&a.id, &digest, "agent", now + 5).await.unwrap(), Err(RedeemError::AlreadyUsed));

    let d = store
        .create_approval("apr_00000000000000000000000000000002", &new_approval("agent", 2, 60), now)
        .await
        .unwrap();
    store.decide(&d.id, "alice", Verdict::Approve, "ok", now + 1).await.unwrap();
    let d = store.decide(&d.id, "bob", Verdict::Deny, "no", now + 2).await.unwrap();
    assert_eq!(d.status(now + 2), ApprovalStatus::Denied);

    let e =
        store.create_approval("apr_00000000000000000000000000000003", &new_approval("agent", 1, 1), now).await.unwrap();
    assert_eq!(e.status(now + 1000), ApprovalStatus::Expired);
    assert!(store.decide(&e.id, "alice", Verdict::Approve, "late", now + 1000).await.is_err());
    let pending = store.list_approvals(Some(ApprovalStatus::Pending), now + 1000, 10).await.unwrap();
    assert!(pending.is_empty(), "expired approvals are not pending");
    store.close().await;
}
on_both_backends!(quorum_deny_expiry_and_single_use_redeem, quorum_and_single_use);

async fn concurrent_redeem(db: &Db) {
    let store = Arc::new(Store::open(&db.url).await.unwrap());
    let id = "apr_0000000000000000000000000000000a";
    store.create_approval(id, &new_approval("agent", 1, 60), 0).await.unwrap();
    store.decide(id, "alice", Verdict::Approve, "ok", 1).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = Arc::clone(&store);
            tokio::spawn(async move { s.redeem(id, &"d".repeat(64), "agent", 2).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    store.close().await;
}
on_both_backends!(concurrent_redeems_have_one_winner, concurrent_redeem);

async fn concurrent_quorum(db: &Db) {
    // Two approvers of a 2-of-M approval decide at the same instant: the second vote
    // must see the first, so the approval ends approved.
    let store = Arc::new(Store::open(&db.url).await.unwrap());
    for round in 0..5 {
        let id = format!("apr_{round:032x}");
        store.create_approval(&id, &new_approval("agent", 2, 60), 0).await.unwrap();
        let (a, b) = tokio::join!(
            store.decide(&id, "alice", Verdict::Approve, "ok", 1),
            store.decide(&id, "bob", Verdict::Approve, "ok", 1)
        );
        a.unwrap();
        b.unwrap();
        let got = store.get_approval(&id).await.unwrap().unwrap();
        assert_eq!(got.status(2), ApprovalStatus::Approved, "round {round}");
    }
    store.close().await;
}
on_both_backends!(simultaneous_votes_reach_the_quorum, concurrent_quorum);

async fn chain_and_tampering(db: &Db) {
    let store = Store::open(&db.url).await.unwrap();
    let batch: Vec<AuditRecord> = (1..=6).map(|i| audit(&format!("r{i}"), i)).collect();
    let out = store.append_audit(&batch, 0).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (6, 0));
    let out = store.append_audit(&batch, 0).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 6));
    assert!(store.verify_chain().await.unwrap().ok);
    let sessions = store
        .list_sessions(&airlock_service::store::sessions::SessionFilter { limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().map(|s| s.count).sum::<i64>(), 6);

    db.raw(&["UPDATE audit_records SET status = 500 WHERE seq = 5"]).await;
    let r = store.verify_chain().await.unwrap();
    assert_eq!((r.ok, r.first_bad_seq), (false, Some(5)));
    assert!(r.problem.unwrap().contains("altered"));
    db.raw(&["UPDATE audit_records SET status = 200 WHERE seq = 5"]).await;
    assert!(store.verify_chain().await.unwrap().ok, "restoring the value restores the chain");

    db.raw(&["UPDATE audit_records SET credential_json = NULL WHERE seq = 2"]).await;
    let r = store.verify_chain().await.unwrap();
    assert_eq!((r.ok, r.first_bad_seq), (false, Some(2)), "the credential a record names is chained too");
    db.raw(&[r#"UPDATE audit_records SET credential_json = '{"kind":"signed_request","key_id":"k1"}' WHERE seq = 2"#])
        .await;
    assert!(store.verify_chain().await.unwrap().ok);

    db.raw(&[
        "UPDATE audit_records SET seq = -1 WHERE seq = 3",
        "UPDATE audit_records SET seq = 3 WHERE seq = 4",
        "UPDATE audit_records SET seq = 4 WHERE seq = -1",
    ])
    .await;
    let r = store.verify_chain().await.unwrap();
    assert_eq!((r.ok, r.first_bad_seq), (false, Some(3)));
    assert!(r.problem.unwrap().contains("reordered"));

    db.raw(&["DELETE FROM audit_records WHERE seq = 1"]).await;
    let r = store.verify_chain().await.unwrap();
    assert_eq!((r.ok, r.first_bad_seq, r.records), (false, Some(1), 5));
    assert!(r.problem.unwrap().contains("removed"));
    store.close().await;
}
on_both_backends!(audit_chain_detects_altered_reordered_and_removed_records, chain_and_tampering);

async fn parallel_appenders(db: &Db) {
    // Two stores (as two replicas would) append interleaved batches; the chain stays one
    // valid sequence and retried batches are not duplicated.
    let a = Arc::new(Store::open(&db.url).await.unwrap());
    let b = Arc::new(Store::open(&db.url).await.unwrap());
    let mut tasks = Vec::new();
    for (name, store) in [("a", &a), ("b", &b)] {
        for batch_no in 0..5 {
            let store = Arc::clone(store);
            let batch: Vec<AuditRecord> = (0..40).map(|i| audit(&format!("{name}-{batch_no}-{i}"), i)).collect();
            tasks.push(tokio::spawn(async move {
                store.append_audit(&batch, 0).await.unwrap();
                store.append_audit(&batch, 0).await.unwrap().duplicates
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 40);
    }
    let r = a.verify_chain().await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.records, 400);
    a.close().await;
    b.close().await;
}
on_both_backends!(parallel_appenders_keep_one_valid_chain, parallel_appenders);

/// Two server processes on one PostgreSQL database: a decision taken on replica B ends a
/// long poll parked on replica A (through the periodic re-read), and a ticket approved
/// on one replica is redeemed once across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_share_approvals_and_the_chain() {
    let Some(db) = Db::postgres("two_replicas").await else {
        return;
    };
    let opts = || ServerOptions { database: Some(db.url.clone()), ..ServerOptions::default() };
    let a = Server::start_with(opts());
    let b = Server::start_with(opts());
    let id = a.create_approval(&approval_request("agent-9", 1, 300, "ticket")).await;
    let url = a.at(&format!("/v1/approvals/{id}/wait?timeout_ms=20000"));
    let waiter = tokio::spawn(async move {
        let r = call("GET", &url, Some(FILTER_KEY), None).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = b.decide(ALICE, &id, "approve", "from replica b").await;
    let decided = Instant::now();
    assert_eq!(status, 200);
    let ((_, v), woke) = waiter.await.unwrap();
    assert_eq!(v["status"], "approved");
    let lag = woke.saturating_duration_since(decided);
    println!("cross-replica decision -> wait latency: {lag:?}");
    assert!(lag < Duration::from_millis(1500), "{lag:?}");

    let digest = digest_of("agent-9-POST-/v1/sql");
    let (ra, rb) = tokio::join!(a.redeem(&id, &digest, "agent-9"), b.redeem(&id, &digest, "agent-9"));
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);

    let batch_a: Vec<_> = (0..50).map(|i| record(&format!("a{i}"), "s", i, ALLOW, 200)).collect();
    let batch_b: Vec<_> = (0..50).map(|i| record(&format!("b{i}"), "s", i, ALLOW, 200)).collect();
    let (x, y) = tokio::join!(a.ingest(&batch_a), b.ingest(&batch_b));
    assert_eq!((x.0, y.0), (200, 200));
    let r = b.verify().await;
    assert_eq!((r["ok"].as_bool(), r["records"].as_i64()), (Some(true), Some(100)), "{r}");
    drop(a);
    drop(b);
    db.drop_pg().await;
}

async fn append_rate(db: &Db) {
    // Store-level append throughput (no HTTP), printed for the report.
    let store = Store::open(&db.url).await.unwrap();
    let started = Instant::now();
    for b in 0..20 {
        let batch: Vec<AuditRecord> = (0..500).map(|i| audit(&format!("{b}-{i}"), i)).collect();
        assert_eq!(store.append_audit(&batch, 0).await.unwrap().accepted, 500);
    }
    let took = started.elapsed();
    println!(
        "{}: appended 10000 records in {took:?} = {:.0} records/s",
        db.url.split(':').next().unwrap_or("?"),
        10_000.0 / took.as_secs_f64()
    );
    assert!(store.verify_chain().await.unwrap().ok);
    store.close().await;
}
on_both_backends!(append_rate_of_ten_thousand_records, append_rate);

fn seen(tool: &str, fingerprint: char, pin: char, change: u8) -> (ToolObservation, String) {
    let observation = ToolObservation {
        upstream: "outbound|8080||mcp".into(),
        tool: tool.into(),
        fingerprint: fingerprint.to_string().repeat(64),
        pin: pin.to_string().repeat(64),
    };
    (observation, format!("tch_{change:032x}"))
}

async fn tool_pins(db: &Db) {
    let store = Store::open(&db.url).await.unwrap();
    assert!(store.observe_tools(&[seen("echo", 'a', 'a', 1), seen("add", 'b', 'b', 2)], 1).await.unwrap().is_empty());
    // Two reports of one change, concurrently as from two replicas: recorded once.
    let store = Arc::new(store);
    let (x, y) = tokio::join!(
        {
            let s = Arc::clone(&store);
            async move { s.observe_tools(&[seen("echo", 'c', 'a', 3)], 2).await.unwrap() }
        },
        {
            let s = Arc::clone(&store);
            async move { s.observe_tools(&[seen("echo", 'c', 'a', 4)], 2).await.unwrap() }
        }
    );
    assert_eq!(x.len() + y.len(), 1, "{x:?} {y:?}");
    let pending = store.tool_changes(Some(ToolChangeStatus::Pending), 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let pins = store.tool_pins().await.unwrap();
    let echo = pins.iter().find(|p| p.tool == "echo").unwrap();
    assert_eq!(
        (echo.fingerprint.as_str(), echo.pending.as_ref().map(|p| p.id.as_str())),
        ("a".repeat(64).as_str(), Some(pending[0].id.as_str()))
    );
    let accepted = store.accept_tool_change(&pending[0].id, "bob", 3).await.unwrap();
    assert_eq!(accepted.status, ToolChangeStatus::Accepted);
    assert!(matches!(
        store.accept_tool_change(&pending[0].id, "alice", 4).await,
        Err(AcceptError::NotPending(ToolChangeStatus::Accepted))
    ));
    let pins = store.tool_pins().await.unwrap();
    let echo = pins.iter().find(|p| p.tool == "echo").unwrap();
    assert_eq!((echo.fingerprint.clone(), echo.pending.clone()), ("c".repeat(64), None));
    store.close().await;
}

on_both_backends!(tool_pins_trust_first_use_record_a_change_once_and_take_the_accepted_one, tool_pins);

async fn slack_messages(db: &Db) {
    use airlock_service::store::slack_messages::SlackMessage;
    let store = Store::open(&db.url).await.unwrap();
    let now = 1_000_000;
    let open =
        store.create_approval("apr_00000000000000000000000000000011", &new_approval("a", 1, 1), now).await.unwrap();
    let done =
        store.create_approval("apr_00000000000000000000000000000012", &new_approval("a", 1, 1), now).await.unwrap();
    for (a, ts) in [(&open, "1.1"), (&done, "1.2")] {
        let m = SlackMessage { approval_id: a.id.clone(), channel: "C1".into(), ts: ts.into() };
        store.put_slack_message(&m).await.unwrap();
    }
    assert_eq!(store.slack_message(&open.id).await.unwrap().unwrap().ts, "1.1");
    assert!(store.slack_message("apr_00000000000000000000000000000099").await.unwrap().is_none());
    store.decide(&done.id, "bob", Verdict::Approve, "ok", now + 1).await.unwrap();
    assert!(store.expired_open_slack_messages(now + 500).await.unwrap().is_empty(), "nothing expired yet");
    let expired = store.expired_open_slack_messages(now + 1000).await.unwrap();
    assert_eq!(expired.iter().map(|m| m.approval_id.as_str()).collect::<Vec<_>>(), [open.id.as_str()]);
    store.close_slack_message(&open.id).await.unwrap();
    assert!(store.expired_open_slack_messages(now + 1000).await.unwrap().is_empty(), "closed once rewritten");
    store.close().await;
}
on_both_backends!(slack_message_handles_find_expired_undecided_approvals_once, slack_messages);

async fn session_search(db: &Db) {
    use airlock_service::store::sessions::SessionFilter;
    let store = Store::open(&db.url).await.unwrap();
    let records: Vec<AuditRecord> = (1..=6).map(|n| audit(&format!("r{n}"), n)).collect();
    store.append_audit(&records, 10).await.unwrap();
    let ids = |f: SessionFilter| {
        let store = &store;
        async move {
            let mut v: Vec<String> = store
                .list_sessions(&SessionFilter { limit: 10, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.session_id)
                .collect();
            v.sort();
            v
        }
    };
    // Paths are /items/N, sessions s{N % 3}.
    assert_eq!(ids(SessionFilter { path_prefix: Some("/items/4".into()), ..Default::default() }).await, ["s1"]);
    assert_eq!(
        ids(SessionFilter { path_prefix: Some("/ITEMS/".into()), ..Default::default() }).await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids(SessionFilter { path_prefix: Some("/items/_".into()), ..Default::default() }).await,
        Vec::<String>::new()
    );
    assert_eq!(ids(SessionFilter { rule: Some("none".into()), ..Default::default() }).await, Vec::<String>::new());
    assert_eq!(ids(SessionFilter { from_ms: Some(5), ..Default::default() }).await, ["s0", "s2"]);
    store.close().await;
}
on_both_backends!(session_search_filters_by_path_prefix_rule_and_time, session_search);

//! `airlock approvals|tools|sessions|verify` subcommands: each fetches JSON from the service
//! and renders it for a terminal (or as raw JSON with `--json`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{encode, Client};
use super::CliError;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

pub async fn approvals_list(client: &Client, status: &str, as_json: bool) -> Result<(), CliError> {
    let v = client.get(&format!("/v1/approvals?status={}", encode(status))).await?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let list = v["approvals"].as_array().ok_or_else(|| CliError::BadAnswer("no `approvals` list".into()))?;
    if list.is_empty() {
        println!("no {status} approvals");
    }
    for a in list {
        print_approval_line(a);
    }
    Ok(())
}

pub async fn approvals_show(client: &Client, id: &str, as_json: bool) -> Result<(), CliError> {
    let a = client.get(&format!("/v1/approvals/{}", encode(id))).await?;
    if as_json {
        print_json(&a);
        return Ok(());
    }
    println!("approval   {}", text(&a["id"]));
    println!("status     {}", text(&a["status"]));
    println!("requester  {} (groups {})", text(&a["subject"]), text(&a["groups"]));
    println!("rule       {}", text(&a["rule"]));
    println!("reason     {}", text(&a["reason"]));
    println!("deadline   {}", text(&a["expires_at"]));
    println!("approvers  {} of {}", text(&a["approvers"]["required"]), text(&a["approvers"]["groups"]));
    println!("request    {} {}", text(&a["method"]), text(&a["path"]));
    println!("body (masked):\n{}", text(&a["body"]));
    if let Some(ds) = a["decisions"].as_array() {
        for d in ds {
            println!(
                "decision   {} {} by {}: {}",
                text(&d["at"]),
                text(&d["decision"]),
                text(&d["approver"]),
                text(&d["reason"])
            );
        }
    }
    Ok(())
}

/// Polls the pending list and prints each approval the first time it is seen (those
/// already pending at start included), until Ctrl-C. A failed poll is reported on stderr
/// and retried: an on-call terminal should outlive a service restart.
pub async fn approvals_watch(client: &Client, interval: Duration, as_json: bool) -> Result<(), CliError> {
    let mut seen: HashSet<String> = HashSet::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    if !as_json {
        eprintln!("watching for pending approvals (Ctrl-C to stop)");
    }
    loop {
        match client.get("/v1/approvals?status=pending").await {
            Ok(v) => {
                for a in v["approvals"].as_array().into_iter().flatten() {
                    let id = text(&a["id"]);
                    if !seen.insert(id) {
                        continue;
                    }
                    if as_json {
                        println!("{a}");
                    } else {
                        print_approval_line(a);
                    }
                }
            }
            Err(e) => eprintln!("airlock: {e} (retrying)"),
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn print_approval_line(a: &Value) {
    println!(
        "{}  {:<8}  {}  {} {}  rule={}  expires={}",
        text(&a["id"]),
        text(&a["status"]),
        text(&a["subject"]),
        text(&a["method"]),
        text(&a["path"]),
        text(&a["rule"]),
        text(&a["expires_at"])
    );
}

pub async fn approvals_decide(
    client: &Client,
    id: &str,
    decision: &str,
    reason: &str,
    as_json: bool,
) -> Result<(), CliError> {
    let a = client
        .post(&format!("/v1/approvals/{}/decision", encode(id)), &json!({"decision": decision, "reason": reason}))
        .await?;
    if as_json {
        print_json(&a);
        return Ok(());
    }
    println!("recorded {decision} on {}: status is now {}", text(&a["id"]), text(&a["status"]));
    Ok(())
}

pub async fn tool_changes(client: &Client, status: &str, as_json: bool) -> Result<(), CliError> {
    let v = client.get(&format!("/v1/mcp/tool-changes?status={}", encode(status))).await?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let list = v["changes"].as_array().ok_or_else(|| CliError::BadAnswer("no `changes` list".into()))?;
    if list.is_empty() {
        println!("no {status} tool changes");
    }
    for c in list {
        println!(
            "{}  {:<10}  {}  tool={}  observed={}  {}.. -> {}..",
            text(&c["id"]),
            text(&c["status"]),
            text(&c["upstream"]),
            text(&c["tool"]),
            text(&c["observed_at"]),
            text(&c["old_fingerprint"]).chars().take(12).collect::<String>(),
            text(&c["new_fingerprint"]).chars().take(12).collect::<String>()
        );
    }
    Ok(())
}

pub async fn tool_accept(client: &Client, id: &str, as_json: bool) -> Result<(), CliError> {
    let c = client.post(&format!("/v1/mcp/tool-changes/{}/accept", encode(id)), &json!({})).await?;
    if as_json {
        print_json(&c);
        return Ok(());
    }
    println!(
        "accepted {}: tool `{}` of upstream `{}` is pinned to its new definition",
        text(&c["id"]),
        text(&c["tool"]),
        text(&c["upstream"])
    );
    Ok(())
}

/// Filters of `sessions search`, sent as the query of `GET /v1/sessions`.
pub struct SessionQuery {
    pub subject: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub decision: Option<String>,
    pub rule: Option<String>,
    pub path: Option<String>,
    pub limit: Option<u32>,
}

pub async fn sessions_list(client: &Client, q: &SessionQuery, as_json: bool) -> Result<(), CliError> {
    let mut params = Vec::new();
    let filters = [
        ("subject", &q.subject),
        ("since", &q.since),
        ("until", &q.until),
        ("decision", &q.decision),
        ("rule", &q.rule),
        ("path", &q.path),
    ];
    for (name, v) in filters {
        if let Some(v) = v {
            params.push(format!("{name}={}", encode(v)));
        }
    }
    if let Some(l) = q.limit {
        params.push(format!("limit={l}"));
    }
    let v = client.get(&format!("/v1/sessions?{}", params.join("&"))).await?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let list = v["sessions"].as_array().ok_or_else(|| CliError::BadAnswer("no `sessions` list".into()))?;
    if list.is_empty() {
        println!("no sessions");
    }
    for s in list {
        println!(
            "{}  {}  {} .. {}  {} requests  {}",
            text(&s["session_id"]),
            text(&s["subject"]),
            text(&s["first_at"]),
            text(&s["last_at"]),
            text(&s["count"]),
            text(&s["decisions"])
        );
    }
    Ok(())
}

pub async fn sessions_show(client: &Client, id: &str, as_json: bool) -> Result<(), CliError> {
    let v = client.get(&format!("/v1/sessions/{}", encode(id))).await?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let records = v["records"].as_array().ok_or_else(|| CliError::BadAnswer("no `records` list".into()))?;
    for r in records {
        let at = r["time_ms"].as_i64().map(crate::time::rfc3339_ms).unwrap_or_default();
        println!(
            "#{}  {}  {} {}  -> {}  {}{}  {}ms",
            text(&r["seq"]),
            at,
            text(&r["method"]),
            text(&r["path"]),
            text(&r["status"]),
            text(&r["decision"]),
            r["rule"].as_str().map(|x| format!(" (rule {x})")).unwrap_or_default(),
            text(&r["latency_ms"])
        );
    }
    Ok(())
}

/// Prints the verification report; returns whether the chain is intact.
pub fn print_verify(report: &Value) -> bool {
    print_json(report);
    report["ok"].as_bool().unwrap_or(false)
}

pub async fn verify_http(client: &Client) -> Result<bool, CliError> {
    let v = client.get("/v1/audit/verify").await?;
    Ok(print_verify(&v))
}

pub async fn verify_database(url: &str) -> Result<bool, CliError> {
    // Opening a SQLite URL creates a missing file, which would then "verify" as an empty,
    // intact log: refuse a path that does not exist instead.
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && !path.contains(":memory:") && !std::path::Path::new(path).exists() {
            return Err(CliError::BadArgument {
                arg: "--database".into(),
                problem: format!("no SQLite file at {path}"),
            });
        }
    }
    let store = crate::store::Store::open(url).await?;
    let report = store.verify_chain().await?;
    store.close().await;
    let v = serde_json::to_value(&report).map_err(|e| CliError::BadAnswer(e.to_string()))?;
    Ok(print_verify(&v))
}

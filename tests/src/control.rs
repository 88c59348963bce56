//! The real control service (`airlock serve`, started by [`crate::serve`]) for end-to-end
//! tests: SQLite in a temp dir, a filter key, static approver tokens, and sync (ureq)
//! helpers to act as an approver. It can be stopped and restarted on the same port, as
//! an outage would.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::serve::{AirlockServe, ServeOptions};

/// The filter key shared by the plugin config and the service (≥ 16 characters).
pub const FILTER_KEY: &str = "e2e-filter-key-0123456789abcdef";

/// An approver: `token` authenticates them to the service.
pub struct Approver {
    pub name: &'static str,
    pub token: &'static str,
    pub groups: &'static [&'static str],
}

pub const DBA_BOB: Approver = Approver { name: "bob", token: "approver-token-bob-0123456789", groups: &["dba"] };
/// Same name as the agent the tests call as: may not approve its own requests.
pub const DBA_ALICE: Approver = Approver { name: "alice", token: "approver-token-alice-0123456789", groups: &["dba"] };

pub struct ControlService {
    serve: AirlockServe,
}

fn sha256_hex(s: &str) -> String {
    hmac_sha256::Hash::hash(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl ControlService {
    /// Starts the service in `dir` with the given approvers and extra TOML config.
    pub fn start(dir: &Path, approvers: &[Approver], extra_config: &str) -> Result<ControlService, String> {
        ControlService::start_with_env(dir, approvers, extra_config, &[])
    }

    /// As [`ControlService::start`], with environment variables for the service (what
    /// `${NAME}` references in `extra_config` read).
    pub fn start_with_env(
        dir: &Path,
        approvers: &[Approver],
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> Result<ControlService, String> {
        let mut config = String::from("public_url = \"http://console.airlock.test\"\n");
        for a in approvers {
            let groups: Vec<String> = a.groups.iter().map(|g| format!("\"{g}\"")).collect();
            config.push_str(&format!(
                "\n[[approvers]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\ngroups = [{}]\nroles = \
                    [\"approver\", \"auditor\"]\n",
                a.name,
                sha256_hex(a.token),
                groups.join(", ")
            ));
        }
        config.push_str(extra_config);
        let serve = AirlockServe::start(ServeOptions {
            dir: dir.to_path_buf(),
            config_toml: config,
            filter_key: FILTER_KEY.to_string(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..ServeOptions::default()
        })?;
        Ok(ControlService { serve })
    }

    pub fn port(&self) -> u16 {
        self.serve.port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.serve.base_url())
    }

    pub fn log(&self) -> String {
        self.serve.log()
    }

    pub fn database_url(&self) -> String {
        self.serve.database_url()
    }

    /// Kills the service (an outage, not a clean shutdown).
    pub fn kill(&mut self) {
        self.serve.kill();
    }

    /// Starts it again on the same port and database.
    pub fn restart(&mut self) -> Result<(), String> {
        self.serve.restart()
    }

    fn agent(&self) -> ureq::Agent {
        crate::http::agent()
    }

    /// GET with an approver/auditor token; the JSON answer.
    pub fn get(&self, path: &str, token: &str) -> Result<Value, String> {
        let reply = crate::http::send(
            &self.agent(),
            "GET",
            &self.url(path),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )?;
        reply.json()
    }

    /// Records an approver's decision; returns the HTTP status and body.
    pub fn decide(&self, id: &str, approver: &Approver, decision: &str, reason: &str) -> Result<(u16, Value), String> {
        let body = json!({"decision": decision, "reason": reason}).to_string();
        let reply = crate::http::send(
            &self.agent(),
            "POST",
            &self.url(&format!("/v1/approvals/{id}/decision")),
            &[("authorization", &format!("Bearer {}", approver.token)), ("content-type", "application/json")],
            Some(body.as_bytes()),
        )?;
        Ok((reply.status, reply.json().unwrap_or(Value::Null)))
    }

    /// Waits until a pending approval shows up and returns it.
    pub fn wait_for_pending(&self, approver: &Approver, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let list = self.get("/v1/approvals?status=pending", approver.token)?;
            if let Some(first) = list["approvals"].as_array().and_then(|a| a.first()) {
                return Ok(first.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("no pending approval appeared".into())
    }
}

impl Drop for ControlService {
    /// Stops the service and removes its directory, unless a test failed (then the log
    /// and database stay for a look).
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.serve.dir());
        }
    }
}

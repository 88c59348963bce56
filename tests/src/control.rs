//! The real control service (`airlock serve`) for end-to-end tests: SQLite in a temp dir,
//! a filter key, and static approver tokens. It can be stopped and restarted on the same
//! port, as an outage would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::paths::workspace_root;
use crate::process::ChildGuard;

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
    child: Option<ChildGuard>,
    port: u16,
    dir: PathBuf,
}

fn service_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("AIRLOCK_SERVICE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(2).map(Path::to_path_buf));
    }
    dirs.push(workspace_root().join("target").join("debug"));
    dirs.into_iter()
        .map(|d| d.join("airlock"))
        .find(|p| p.is_file())
        .ok_or_else(|| "service binary `airlock` not found: run `cargo build -p airlock-service` or set AIRLOCK_SERVICE_BIN".into())
}

fn sha256_hex(s: &str) -> String {
    hmac_sha256::Hash::hash(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl ControlService {
    /// Starts the service in `dir` with the given approvers and extra TOML config.
    pub fn start(dir: &Path, approvers: &[Approver], extra_config: &str) -> Result<ControlService, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut config = String::from("public_url = \"http://console.airlock.test\"\n");
        for a in approvers {
            let groups: Vec<String> = a.groups.iter().map(|g| format!("\"{g}\"")).collect();
            config.push_str(&format!(
                "\n[[approvers]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\ngroups = [{}]\nroles = [\"approver\", \"auditor\"]\n",
                a.name,
                sha256_hex(a.token),
                groups.join(", ")
            ));
        }
        config.push_str(extra_config);
        std::fs::write(dir.join("airlock.toml"), config).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("filter.key"), FILTER_KEY).map_err(|e| e.to_string())?;
        let mut svc = ControlService { child: None, port: 0, dir: dir.to_path_buf() };
        svc.spawn()?;
        Ok(svc)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("service.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| e.to_string())?;
        let before = std::fs::read_to_string(&log_path).unwrap_or_default().len();
        let mut cmd = Command::new(service_bin()?);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--database", &format!("sqlite://{}", self.dir.join("airlock.db").display())])
            .arg("--config")
            .arg(self.dir.join("airlock.toml"))
            .arg("--filter-key-file")
            .arg(self.dir.join("filter.key"))
            .env_remove("AIRLOCK_FILTER_KEY")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(ChildGuard::spawn(cmd, "airlock serve")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let fresh = text.get(before..).unwrap_or_default();
            if let Some(line) = fresh.lines().find_map(|l| l.strip_prefix("airlock: listening on http://127.0.0.1:")) {
                self.port = line.trim().parse().map_err(|_| format!("bad listen line: {line}"))?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("control service did not start:\n{}", self.log()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("airlock.db").display())
    }

    /// Kills the service (an outage, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the same port and database.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    fn agent(&self) -> ureq::Agent {
        crate::http::agent()
    }

    /// GET with an approver/auditor token; the JSON answer.
    pub fn get(&self, path: &str, token: &str) -> Result<Value, String> {
        let reply = crate::http::send(&self.agent(), "GET", &self.url(path), &[("authorization", &format!("Bearer {token}"))], None)?;
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
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

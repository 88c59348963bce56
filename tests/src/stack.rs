//! A whole test stack: demo upstream + JWKS server + real Envoy (with or without
//! airlock.wasm), each in a fresh temp dir, torn down on drop.
//!
//! Envoy's admin and listener ports are 0 in the rendered bootstrap and read back from
//! Envoy (`--admin-address-path`, `/listeners`), and the upstream announces the port it
//! bound, so parallel tests never race for ports.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_demo::render::{render, FilterMode};
use serde_json::Value;

use crate::http::{self, Reply};
use crate::jwks::{JwksMode, JwksServer};
use crate::paths;
use crate::process::ChildGuard;

/// How long Envoy may take to become ready (V8 compiles the module once per worker).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the upstream may take to announce its port.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(20);
/// Envoy log lines quoted in start-up errors.
const LOG_TAIL_LINES: usize = 40;
/// Set to keep every stack's temp dir (they are always kept when a test panics).
pub const KEEP_ENV: &str = "AIRLOCK_E2E_KEEP";

/// Builder for [`Stack`]; see [`Stack::builder`].
#[derive(Clone, Debug)]
pub struct StackBuilder {
    plugin_config: Option<Value>,
    bare: bool,
    jwks_doc: String,
    jwks_mode: Option<JwksMode>,
    control_port: Option<u16>,
    concurrency: u32,
    log_level: String,
    envoy_args: Vec<String>,
    envoy_env: Vec<(String, String)>,
    values: BTreeMap<String, String>,
    template: Option<PathBuf>,
    upstream_threads: usize,
    lds: bool,
    hot_restart_base_id: Option<u32>,
}

impl Default for StackBuilder {
    fn default() -> Self {
        StackBuilder {
            plugin_config: None,
            bare: false,
            jwks_doc: r#"{"keys":[]}"#.to_string(),
            jwks_mode: None,
            control_port: None,
            concurrency: 1,
            log_level: "info".to_string(),
            envoy_args: Vec::new(),
            envoy_env: Vec::new(),
            values: BTreeMap::new(),
            template: None,
            upstream_threads: 2,
            lds: false,
            hot_restart_base_id: None,
        }
    }
}

impl StackBuilder {
    /// The filter's JSON plugin config (required unless [`StackBuilder::bare`]).
    pub fn plugin_config(mut self, config: Value) -> Self {
        self.plugin_config = Some(config);
        self
    }

    /// Envoy without the Airlock filter (smoke tests, baselines).
    pub fn bare(mut self) -> Self {
        self.bare = true;
        self
    }

    /// Initial JWKS document (default `{"keys":[]}`); change it later with `stack.jwks()`.
    pub fn jwks(mut self, doc: impl Into<String>) -> Self {
        self.jwks_doc = doc.into();
        self
    }

    /// How the JWKS server answers from the very start, before Envoy's first fetch
    /// (e.g. [`JwksMode::Refuse`]: the identity provider is down when Envoy starts).
    pub fn jwks_mode(mut self, mode: JwksMode) -> Self {
        self.jwks_mode = Some(mode);
        self
    }

    /// Port of a control service the test started. Default: a port nothing listens on
    /// (the "control service is down" case).
    pub fn control_port(mut self, port: u16) -> Self {
        self.control_port = Some(port);
        self
    }

    /// Envoy worker threads (default 1: one VM, deterministic per-VM state).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers.max(1);
        self
    }

    /// Envoy log level (`trace`, `debug`, `info` (default), `warning`, ...).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    /// An extra Envoy command-line argument, e.g. `--component-log-level` `wasm:debug`.
    pub fn envoy_arg(mut self, arg: &str) -> Self {
        self.envoy_args.push(arg.to_string());
        self
    }

    /// An environment variable for the Envoy process.
    pub fn envoy_env(mut self, name: &str, value: &str) -> Self {
        self.envoy_env.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets (or overrides) a template placeholder.
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.values.insert(name.to_string(), value.to_string());
        self
    }

    /// Another bootstrap template (default `envoy/envoy.yaml`).
    pub fn template(mut self, path: impl Into<PathBuf>) -> Self {
        self.template = Some(path.into());
        self
    }

    /// Tokio worker threads of the demo upstream (default 2).
    pub fn upstream_threads(mut self, threads: usize) -> Self {
        self.upstream_threads = threads.max(1);
        self
    }

    /// Serves the bootstrap's listeners over file-based LDS (`lds.json` in the stack's
    /// dir) instead of `static_resources`, so that [`Stack::update_listeners`] can replace
    /// them as a control plane would.
    pub fn listeners_over_lds(mut self) -> Self {
        self.lds = true;
        self
    }

    /// Starts Envoy as restart epoch 0 of `base_id` (hot restart on, shared memory under
    /// that id), so that [`Stack::hot_restart`] can start epoch 1. The listener port is
    /// then fixed: the new process takes over the old one's socket by its address.
    pub fn hot_restart(mut self, base_id: u32) -> Self {
        self.hot_restart_base_id = Some(base_id);
        self
    }

    /// Starts everything and waits until Envoy is LIVE and its listener answers.
    pub fn start(self) -> Result<Stack, String> {
        let mut stack = self.launch()?;
        stack.wait_ready()?;
        Ok(stack)
    }

    /// Starts a stack whose plugin config should be rejected, waits for Envoy to exit and
    /// returns its log (for asserting on the error message). An `Err` means Envoy did
    /// not exit: it became ready (the config was accepted) or hung.
    pub fn start_expecting_failure(self) -> Result<String, String> {
        let mut stack = self.launch()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if stack.envoy.try_wait().is_some() {
                return Ok(stack.envoy_log());
            }
            if stack.admin_says_live() {
                return Err(format!(
                    "Envoy started although a failure was expected; log tail:\n{}",
                    stack.envoy_log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("Envoy neither failed nor became ready; log tail:\n{}", stack.envoy_log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launch(self) -> Result<Stack, String> {
        let envoy_bin = paths::envoy_bin()?;
        let wasm = if self.bare { None } else { Some(paths::wasm_path()?) };
        let plugin_config = match (&self.plugin_config, self.bare) {
            (Some(c), false) => Some(serde_json::to_string_pretty(c).map_err(|e| e.to_string())?),
            (None, false) => return Err("a stack with the filter needs .plugin_config(...) (or use .bare())".into()),
            (_, true) => None,
        };
        let template_path = self.template.clone().unwrap_or_else(paths::template_path);
        let template = std::fs::read_to_string(&template_path)
            .map_err(|e| format!("cannot read {}: {e}", template_path.display()))?;

        let temp = make_temp_dir()?;
        let dir = temp.0.clone();
        let jwks = JwksServer::start(&self.jwks_doc)?;
        if let Some(mode) = &self.jwks_mode {
            jwks.set_mode(mode.clone());
        }
        let db_path = dir.join("upstream.db");
        let (upstream, upstream_port) = start_upstream(&dir, &db_path, self.upstream_threads)?;
        let control_port = match self.control_port {
            Some(p) => p,
            None => free_port()?,
        };

        let mut values: BTreeMap<String, String> = BTreeMap::new();
        values.insert("ADMIN_PORT".into(), "0".into());
        let listen_port = if self.hot_restart_base_id.is_some() { free_port()? } else { 0 };
        values.insert("LISTEN_PORT".into(), listen_port.to_string());
        values.insert("UPSTREAM_PORT".into(), upstream_port.to_string());
        values.insert("JWKS_PORT".into(), jwks.port().to_string());
        values.insert("CONTROL_PORT".into(), control_port.to_string());
        if let (Some(w), Some(c)) = (&wasm, plugin_config) {
            values.insert("WASM_PATH".into(), w.display().to_string());
            // A template may carry its own plugin config (the Istio manifest's filter).
            if template.contains("{{PLUGIN_CONFIG}}") {
                values.insert("PLUGIN_CONFIG".into(), c);
            }
        }
        values.extend(self.values.clone());
        let mode = if self.bare { FilterMode::Bare } else { FilterMode::WithFilter };
        let mut yaml =
            render(&template, &values, mode).map_err(|e| format!("rendering {}: {e}", template_path.display()))?;
        let lds_path = dir.join("lds.json");
        if self.lds {
            yaml = move_listeners_to_lds(&yaml, &lds_path)?;
        }
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, yaml).map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

        let log_path = dir.join("envoy.log");
        let admin_addr_path = dir.join("admin.address");
        let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&envoy_bin);
        cmd.arg("-c").arg(&config_path);
        match self.hot_restart_base_id {
            Some(id) => cmd.args(["--base-id", &id.to_string(), "--restart-epoch", "0"]),
            None => cmd.arg("--disable-hot-restart"),
        };
        cmd.args(["--concurrency", &self.concurrency.to_string()])
            .args(["-l", &self.log_level])
            .arg("--admin-address-path")
            .arg(&admin_addr_path)
            .args(&self.envoy_args)
            .envs(self.envoy_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&dir);
        let envoy = ChildGuard::spawn(cmd, "envoy")?;

        Ok(Stack {
            envoy,
            parent: None,
            launch: self.clone(),
            envoy_bin,
            lds_path: self.lds.then_some(lds_path),
            config_path,
            epoch: 0,
            upstream,
            jwks,
            dir,
            db_path,
            log_path,
            admin_addr_path,
            admin_port: 0,
            listen_port: 0,
            upstream_port,
            control_port,
            bare: self.bare,
            agent: http::agent(),
            keep_files: AtomicBool::new(false),
            _temp: temp,
        })
    }
}

/// A running stack. Dropping it kills and reaps Envoy and the upstream, stops the JWKS
/// server and removes the temp dir (kept, with its path printed, if the test panicked or
/// `AIRLOCK_E2E_KEEP` is set).
pub struct Stack {
    envoy: ChildGuard,
    /// The previous restart epoch, draining, after [`Stack::hot_restart`].
    parent: Option<ChildGuard>,
    /// How this stack was built (Envoy's arguments, for a hot restart).
    launch: StackBuilder,
    envoy_bin: PathBuf,
    lds_path: Option<PathBuf>,
    config_path: PathBuf,
    epoch: u32,
    upstream: ChildGuard,
    jwks: JwksServer,
    dir: PathBuf,
    db_path: PathBuf,
    log_path: PathBuf,
    admin_addr_path: PathBuf,
    admin_port: u16,
    listen_port: u16,
    upstream_port: u16,
    control_port: u16,
    bare: bool,
    agent: ureq::Agent,
    keep_files: AtomicBool,
    /// Declared last: dropped after the children are dead and the JWKS server stopped.
    _temp: TempDir,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// `http://127.0.0.1:LISTEN{path}`: through Envoy (and the filter).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// `http://127.0.0.1:UPSTREAM{path}`: straight to the demo upstream, bypassing Envoy.
    pub fn upstream_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.upstream_port)
    }

    /// `http://127.0.0.1:ADMIN{path}`: Envoy's admin API.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }
    pub fn upstream_port(&self) -> u16 {
        self.upstream_port
    }
    pub fn control_port(&self) -> u16 {
        self.control_port
    }
    /// Waits for Envoy to exit by itself; its exit status, `None` if it still runs.
    pub fn wait_for_envoy_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.envoy.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the listeners served over LDS (see [`StackBuilder::listeners_over_lds`]):
    /// `edit` changes them (e.g. the filter's plugin config); the new file is written
    /// aside and renamed into place, the move Envoy's file watch reacts to.
    pub fn update_listeners(&self, edit: impl FnOnce(&mut Vec<Value>)) -> Result<(), String> {
        let path = self.lds_path.as_ref().ok_or("this stack does not serve its listeners over LDS")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let resources = doc.get_mut("resources").and_then(Value::as_array_mut).ok_or("lds.json has no resources")?;
        edit(resources);
        write_by_rename(path, &doc)
    }

    /// Hot restart: starts a new Envoy as the next restart epoch with the bootstrap as
    /// `edit` changes it; the old process hands over its listeners, drains for
    /// `--drain-time-s` and is told to exit after `--parent-shutdown-time-s` (pass both
    /// with [`StackBuilder::envoy_arg`]). Returns once the new one is ready; the old one
    /// is then [`Stack::wait_for_parent_exit`]'s.
    pub fn hot_restart(&mut self, edit: impl FnOnce(&mut Value)) -> Result<(), String> {
        let base_id = self.launch.hot_restart_base_id.ok_or("this stack was not started with hot_restart()")?;
        let text = std::fs::read_to_string(&self.config_path).map_err(|e| e.to_string())?;
        let mut bootstrap: Value = serde_norway::from_str(&text).map_err(|e| format!("envoy.yaml: {e}"))?;
        edit(&mut bootstrap);
        self.epoch += 1;
        let config_path = self.dir.join(format!("envoy-{}.json", self.epoch));
        std::fs::write(&config_path, bootstrap.to_string()).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new().append(true).open(&self.log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let admin_addr_path = self.dir.join(format!("admin-{}.address", self.epoch));
        let mut cmd = Command::new(&self.envoy_bin);
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--base-id", &base_id.to_string(), "--restart-epoch", &self.epoch.to_string()])
            .args(["--concurrency", &self.launch.concurrency.to_string()])
            .args(["-l", &self.launch.log_level])
            .arg("--admin-address-path")
            .arg(&admin_addr_path)
            .args(&self.launch.envoy_args)
            .envs(self.launch.envoy_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&self.dir);
        let child = ChildGuard::spawn(cmd, "envoy")?;
        self.parent = Some(std::mem::replace(&mut self.envoy, child));
        self.config_path = config_path;
        self.admin_addr_path = admin_addr_path;
        self.admin_port = 0;
        self.wait_ready()
    }

    /// Waits for the previous restart epoch to exit; its exit status.
    pub fn wait_for_parent_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let parent = self.parent.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = parent.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Envoy's process id (to read its memory use from `/proc`).
    pub fn envoy_pid(&self) -> u32 {
        self.envoy.id()
    }
    pub fn is_bare(&self) -> bool {
        self.bare
    }

    /// The JWKS server behind the `airlock_jwks` cluster.
    pub fn jwks(&self) -> &JwksServer {
        &self.jwks
    }

    /// The upstream's SQLite file (inspect it with rusqlite or the sqlite3 CLI).
    pub fn upstream_db_path(&self) -> &Path {
        &self.db_path
    }

    /// This stack's temp dir (rendered `envoy.yaml`, `envoy.log`, `upstream.log`, db).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent the request helpers use (no redirects, error statuses are answers).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// Sends a request through Envoy. `path` starts with `/`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        http::send(&self.agent, method, &self.url(path), headers, body)
    }

    /// `GET` through Envoy.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        self.request("GET", path, headers, None)
    }

    /// `POST` of a JSON body through Envoy (content-type set).
    pub fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Result<Reply, String> {
        let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", path, &all, Some(body.to_string().as_bytes()))
    }

    /// All counters and gauges from the admin API (`name → value`; histograms and text
    /// readouts are left out).
    pub fn stats(&self) -> Result<HashMap<String, u64>, String> {
        let reply = http::send(&self.agent, "GET", &self.admin_url("/stats"), &[], None)?;
        if reply.status != 200 {
            return Err(format!("admin /stats answered {}", reply.status));
        }
        Ok(parse_stats(&reply.text()))
    }

    /// One stat, `None` if Envoy does not have it (yet).
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().ok()?.get(name).copied()
    }

    /// Polls until `stat(name)` reaches at least `min`; returns the last value seen.
    pub fn wait_for_stat(&self, name: &str, min: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stat(name);
            if v.is_some_and(|v| v >= min) || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything Envoy wrote so far (stdout and stderr, including the filter's logs).
    pub fn envoy_log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The upstream's stderr so far.
    pub fn upstream_log(&self) -> String {
        std::fs::read(self.dir.join("upstream.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Keeps this stack's temp dir when it is dropped (a shared stack outlives the test
    /// that failed on it; see [`crate::shared`]).
    pub fn keep_files(&self) {
        self.keep_files.store(true, Ordering::SeqCst);
    }

    /// The last lines of Envoy's log, for failure messages.
    pub fn envoy_log_tail(&self) -> String {
        let log = self.envoy_log();
        let lines: Vec<&str> = log.lines().collect();
        let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
    }

    fn read_admin_port(&mut self) -> Option<u16> {
        if self.admin_port == 0 {
            let text = std::fs::read_to_string(&self.admin_addr_path).ok()?;
            self.admin_port = text.trim().rsplit(':').next()?.parse().ok()?;
        }
        Some(self.admin_port)
    }

    fn admin_says_live(&mut self) -> bool {
        if self.read_admin_port().is_none() {
            return false;
        }
        matches!(http::send(&self.agent, "GET", &self.admin_url("/ready"), &[], None),
            Ok(r) if r.status == 200 && r.text().trim() == "LIVE")
    }

    fn listener_port(&self) -> Option<u16> {
        let reply = http::send(&self.agent, "GET", &self.admin_url("/listeners?format=json"), &[], None).ok()?;
        let v = reply.json().ok()?;
        v.get("listener_statuses")?
            .as_array()?
            .iter()
            .find(|l| l.get("name").and_then(Value::as_str) == Some("airlock_ingress"))
            .or_else(|| v.get("listener_statuses")?.as_array()?.first())?
            .pointer("/local_address/socket_address/port_value")?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.envoy.try_wait() {
                return Err(format!("Envoy exited ({status}) during start-up; log tail:\n{}", self.envoy_log_tail()));
            }
            if self.admin_says_live() {
                if let Some(port) = self.listener_port() {
                    self.listen_port = port;
                    // A bare TCP connect, not a request: a request would go through the
                    // filter and show up in its stats and audit records.
                    if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Envoy was not ready after {READY_TIMEOUT:?}; log tail:\n{}",
                    self.envoy_log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self._temp.1 |= self.keep_files.load(Ordering::SeqCst);
        self.envoy.kill();
        if let Some(parent) = &mut self.parent {
            parent.kill();
        }
        self.upstream.kill();
        if std::thread::panicking() {
            eprintln!("--- envoy log tail ({}) ---\n{}\n---", self.log_path.display(), self.envoy_log_tail());
        }
    }
}

/// Moves the rendered bootstrap's listeners into `lds_path` and points the bootstrap's
/// `dynamic_resources` at that file; returns the new bootstrap (JSON, which is YAML).
fn move_listeners_to_lds(yaml: &str, lds_path: &Path) -> Result<String, String> {
    let mut bootstrap: Value = serde_norway::from_str(yaml).map_err(|e| format!("rendered bootstrap: {e}"))?;
    let listeners = bootstrap
        .get_mut("static_resources")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("listeners"))
        .and_then(|l| l.as_array().cloned())
        .ok_or("the bootstrap has no static listeners")?;
    let resources: Vec<Value> = listeners
        .into_iter()
        .map(|mut l| {
            l["@type"] = Value::from("type.googleapis.com/envoy.config.listener.v3.Listener");
            l
        })
        .collect();
    write_by_rename(lds_path, &serde_json::json!({ "resources": resources }))?;
    // Envoy serves dynamic resources only to a node that names itself.
    bootstrap["node"] = serde_json::json!({"id": "airlock-e2e", "cluster": "airlock-e2e"});
    bootstrap["dynamic_resources"] = serde_json::json!({
        "lds_config": {"path_config_source": {"path": lds_path.display().to_string()}, "resource_api_version": "V3"}
    });
    Ok(bootstrap.to_string())
}

fn write_by_rename(path: &Path, doc: &Value) -> Result<(), String> {
    let aside = path.with_extension("json.new");
    std::fs::write(&aside, doc.to_string()).map_err(|e| format!("cannot write {}: {e}", aside.display()))?;
    std::fs::rename(&aside, path).map_err(|e| format!("cannot move {} into place: {e}", path.display()))
}

/// Parses the admin API's plain `/stats` output.
pub fn parse_stats(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse::<u64>().ok()?))
        })
        .collect()
}

/// A port that was free a moment ago on 127.0.0.1 (for services started outside the
/// harness; the harness itself binds port 0 wherever it can).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The stack's temp dir; removed on drop unless a test panicked or `AIRLOCK_E2E_KEEP`
/// is set (also when start-up fails half-way, so failed starts leave nothing behind).
/// The path, and whether to keep it whatever happens (see [`Stack::keep_files`]).
struct TempDir(PathBuf, bool);

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 || std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("e2e stack files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn make_temp_dir() -> Result<TempDir, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "airlock-e2e-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(TempDir(dir, false))
}

/// Starts the demo upstream on port 0 and reads the port it announces.
fn start_upstream(dir: &Path, db: &Path, threads: usize) -> Result<(ChildGuard, u16), String> {
    let bin = paths::demo_bin()?;
    let log_path = dir.join("upstream.log");
    let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.args(["upstream", "--listen", "127.0.0.1:0", "--threads", &threads.to_string(), "--db"])
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = ChildGuard::spawn(cmd, "demo upstream")?;
    let stdout = child.take_stdout().ok_or("demo upstream has no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(UPSTREAM_TIMEOUT).map_err(|_| {
        format!(
            "demo upstream did not announce its port within {UPSTREAM_TIMEOUT:?}: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    })?;
    let port = line.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).ok_or_else(|| {
        format!(
            "demo upstream failed to start (said {line:?}): {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    })?;
    // Fail early with the upstream's own words if it is not answering.
    TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("demo upstream not reachable on {port}: {e}"))?;
    Ok((child, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stats_keeps_counters_and_skips_histograms_and_text() {
        let stats = parse_stats(
            "server.live: 1\nhttp.x.rq_total: 42\ncluster.a.upstream_cx_length_ms: P0(nan,1) \
            P25(nan,2)\nserver.version: \"1.40\"\n",
        );
        assert_eq!(stats.len(), 2);
        assert_eq!(stats["http.x.rq_total"], 42);
    }
}

//! The one harness that runs the real control service (`airlock serve`) for tests: the
//! end-to-end tests here (through [`crate::control::ControlService`]) and the service's
//! own HTTP tests (`service/tests/common`, a dev-dependency on this crate) both start it
//! with [`AirlockServe::start`].
//!
//! It writes the config and the filter key into a directory the caller owns, keeps the
//! SQLite file and the service's log there, waits for the `airlock: listening on` line to
//! learn the port, and kills the process when dropped (or when the test process dies).
//! It can be killed and restarted on the same port and database, as an outage would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::paths::workspace_root;
use crate::process::ChildGuard;

/// How long a start may take before the harness gives up (debug builds, busy machines).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The line the service prints on stderr once it accepts connections.
const LISTENING: &str = "airlock: listening on http://127.0.0.1:";

/// What to start `airlock serve` with.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Holds `airlock.toml`, `filter.key`, `airlock.db` and `service.log`; created if
    /// missing, never removed by the harness.
    pub dir: PathBuf,
    /// The service config (`--config`), TOML.
    pub config_toml: String,
    /// The shared filter key (written to `--filter-key-file`).
    pub filter_key: String,
    /// A database URL instead of `sqlite://<dir>/airlock.db` (e.g. PostgreSQL).
    pub database: Option<String>,
    /// Extra environment variables for the service.
    pub env: Vec<(String, String)>,
    /// The `airlock` binary; `None`: see [`service_bin`].
    pub bin: Option<PathBuf>,
}

/// A running `airlock serve`.
pub struct AirlockServe {
    child: Option<ChildGuard>,
    port: u16,
    opts: ServeOptions,
    bin: PathBuf,
}

/// The `airlock` binary: `$AIRLOCK_SERVICE_BIN`, else next to the running test binary
/// (`target/<profile>/deps/..`), else `target/debug/airlock`.
pub fn service_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("AIRLOCK_SERVICE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(2).map(Path::to_path_buf));
    }
    dirs.push(workspace_root().join("target").join("debug"));
    dirs.into_iter().map(|d| d.join("airlock")).find(|p| p.is_file()).ok_or_else(|| {
        "service binary `airlock` not found: run `cargo build -p airlock-service` or set AIRLOCK_SERVICE_BIN".into()
    })
}

impl AirlockServe {
    /// Writes the config and key into `opts.dir` and starts the service on a free port.
    pub fn start(opts: ServeOptions) -> Result<AirlockServe, String> {
        let bin = match &opts.bin {
            Some(b) => b.clone(),
            None => service_bin()?,
        };
        let write = |name: &str, text: &str| {
            std::fs::write(opts.dir.join(name), text)
                .map_err(|e| format!("cannot write {name} in {}: {e}", opts.dir.display()))
        };
        std::fs::create_dir_all(&opts.dir).map_err(|e| e.to_string())?;
        write("airlock.toml", &opts.config_toml)?;
        write("filter.key", &format!("{}\n", opts.filter_key))?;
        let mut serve = AirlockServe { child: None, port: 0, opts, bin };
        serve.spawn()?;
        Ok(serve)
    }

    fn log_path(&self) -> PathBuf {
        self.opts.dir.join("service.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        // Only a line written by this start counts (the log is kept across restarts).
        let before = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--database", &self.database_url()])
            .arg("--config")
            .arg(self.opts.dir.join("airlock.toml"))
            .arg("--filter-key-file")
            .arg(self.opts.dir.join("filter.key"))
            .env_remove("AIRLOCK_FILTER_KEY")
            .env("AIRLOCK_LOG", "info")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn(cmd, "airlock serve")?;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let fresh = text.get(before..).unwrap_or_default();
            if let Some(port) = fresh.lines().find_map(|l| l.strip_prefix(LISTENING)) {
                self.port = port.trim().parse().map_err(|_| format!("bad listen line: {port}"))?;
                self.child = Some(child);
                return Ok(());
            }
            if child.try_wait().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill();
        Err(format!("airlock serve did not start; log:\n{}", self.log()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the service wrote to stderr, over all starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn database_url(&self) -> String {
        self.opts.database.clone().unwrap_or_else(|| format!("sqlite://{}", self.opts.dir.join("airlock.db").display()))
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Kills the service (an outage, not a clean shutdown); a no-op once stopped.
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
}

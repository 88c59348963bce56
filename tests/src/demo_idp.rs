//! The demo IdP (`airlock-demo idp`) as its own process, for suites that point Envoy's
//! identity-provider cluster at it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::paths;
use crate::process::ChildGuard;

/// Starts `airlock-demo idp` on `port` with `args` and `env`, and waits until it listens;
/// the process is killed when the guard drops.
pub fn spawn(port: u16, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new(paths::demo_bin().unwrap());
    cmd.args(["idp", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(cmd, "demo idp").unwrap();
    let mut line = String::new();
    BufReader::new(child.take_stdout().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "the demo IdP did not start: {line:?}");
    child
}

/// The demo IdP with its token endpoint, as its own process, killed when dropped.
pub struct DemoIdp {
    _child: ChildGuard,
    pub port: u16,
}

impl DemoIdp {
    /// Starts `airlock-demo idp` knowing the `client_secret_basic` clients `clients`
    /// (`id:secret,...`), issuing tokens that live `ttl_secs`, with more of its `env`.
    pub fn start(clients: &str, ttl_secs: u64, env: &[(&str, &str)]) -> DemoIdp {
        let port = crate::free_port().unwrap();
        let ttl = ttl_secs.to_string();
        let mut all_env = vec![("AIRLOCK_DEMO_OAUTH_CLIENTS", clients), ("AIRLOCK_DEMO_OAUTH_TTL", ttl.as_str())];
        all_env.extend_from_slice(env);
        DemoIdp { _child: spawn(port, &[], &all_env), port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /oauth/stats`: `issued` (all tokens) and `exchanged` (per subject).
    pub fn stats(&self) -> serde_json::Value {
        let reply = crate::send(&crate::agent(), "GET", &self.url("/oauth/stats"), &[], None).unwrap();
        reply.json().unwrap()
    }

    /// How many tokens the endpoint has issued.
    pub fn issued(&self) -> u64 {
        self.stats()["issued"].as_u64().unwrap()
    }

    /// Makes the token endpoint answer 503 (`true`) or serve again.
    pub fn outage(&self, on: bool) {
        let body = if on { &b"on"[..] } else { &b"off"[..] };
        let reply = crate::send(&crate::agent(), "POST", &self.url("/oauth/outage"), &[], Some(body)).unwrap();
        assert_eq!(reply.status, 204);
    }

    /// A token the IdP signs for `sub` in `groups` (its issuer, the demo audience).
    pub fn token(&self, sub: &str, groups: &str, ttl_secs: u64) -> String {
        let url = self.url(&format!("/token?sub={sub}&groups={groups}&ttl={ttl_secs}"));
        let reply = crate::send(&crate::agent(), "GET", &url, &[], None).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text().trim().to_string()
    }
}

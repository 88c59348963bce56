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

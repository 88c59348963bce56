//! Child processes that die with the test process.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
//! process. Tests run on short-lived threads (and a stack may be shared through a static
//! across tests), so every child is forked by one spawner thread that lives as long as
//! the process: children then die exactly when the test process dies, however it dies.

use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

fn spawner() -> Result<Sender<SpawnRequest>, String> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    let cell = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        let _ = std::thread::Builder::new().name("e2e-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    Ok(cell.lock().map_err(|_| "spawner lock poisoned".to_string())?.clone())
}

/// A child that is killed and reaped when dropped.
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` so that it receives SIGKILL if the test process dies.
    pub fn spawn(mut cmd: Command, name: &str) -> Result<ChildGuard, String> {
        die_with_parent(&mut cmd);
        let (tx, rx) = channel();
        spawner()?.send((cmd, tx)).map_err(|_| "spawner thread is gone".to_string())?;
        let child = rx
            .recv()
            .map_err(|_| "spawner thread is gone".to_string())?
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(ChildGuard { child, name: name.to_string() })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Takes the child's piped stdout, if it was piped.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// SIGKILL and reap (no-op if already exited).
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie still has /proc/<pid>; reaped children do not.
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn dropping_the_guard_kills_and_reaps_the_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let guard = ChildGuard::spawn(cmd, "sleep").unwrap();
        let pid = guard.id();
        assert!(alive(pid));
        drop(guard);
        assert!(!alive(pid));
    }

    #[test]
    fn children_spawned_from_a_finished_thread_stay_alive() {
        // PR_SET_PDEATHSIG follows the forking thread: the spawner thread must be the one
        // forking, or this child would be killed when the test's helper thread ends.
        let mut guard = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            ChildGuard::spawn(cmd, "sleep").unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(guard.try_wait().is_none(), "child died with the thread that asked for it");
    }
}

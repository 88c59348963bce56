"""Processes of a benchmark run: starting, readiness, CPU and memory accounting, cleanup.

Everything started here is tracked and stopped (by pid, never by name) when the run ends,
also on Ctrl-C or an error, so a failed run leaves no Envoy behind on the shared machine.
"""

import http.client
import json
import os
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run cannot go on; the message says what to check."""


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd, cpus):
    """`cmd` under `taskset -c cpus` (taskset execs the command, so the pid is the
    command's own), or unchanged when `cpus` is None."""
    return (["taskset", "-c", cpus] + cmd) if cpus else cmd


def http_get(port, path, headers=None, timeout=5.0, method="GET", body=None):
    """(status, headers dict, body bytes) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Processes:
    """Children of this run, stopped in reverse start order by `stop_all`."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []

    def start(self, name, cmd, env=None, cpus=None):
        log_path = os.path.join(self.log_dir, f"{name}.log")
        log = open(log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen(pinned(cmd, cpus), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full_env)
        log.close()
        self.children.append((name, proc, log_path))
        return proc, log_path

    def stop(self, proc, grace=5.0):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self):
        for _, proc, _ in reversed(self.children):
            self.stop(proc)
        self.children.clear()


def wait_for_line(log_path, needle, proc, timeout, what):
    """Waits until `needle` appears in the log; returns the line."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(log_path, "r", errors="replace") as f:
                for line in f:
                    if needle in line:
                        return line.strip()
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode}; see {log_path}")
        time.sleep(0.05)
    raise BenchError(f"{what} did not start within {timeout:.0f} s; see {log_path}")


def tail(path, lines=25):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Envoy:
    """One Envoy process with a fixed `--concurrency`."""

    def __init__(self, procs, name, envoy_bin, bootstrap, admin_port, listen_port,
                 concurrency, cpus, env=None, log_level="warning"):
        self.name = name
        self.admin_port = admin_port
        self.listen_port = listen_port
        cmd = [envoy_bin, "-c", bootstrap, "--concurrency", str(concurrency),
               "--disable-hot-restart", "--log-level", log_level]
        self.proc, self.log_path = procs.start(f"envoy-{name}", cmd, env=env, cpus=cpus)
        self.pid = self.proc.pid

    def wait_ready(self, timeout=90.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"Envoy ({self.name}) exited with status {self.proc.returncode}:\n"
                                 f"{tail(self.log_path)}")
            try:
                status, _, body = http_get(self.admin_port, "/ready", timeout=1.0)
                if status == 200 and body.strip() == b"LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"Envoy ({self.name}) not ready after {timeout:.0f} s:\n{tail(self.log_path)}")

    def alive(self):
        return self.proc.poll() is None

    def cpu_seconds(self):
        """User + system CPU time of the whole process (all threads), from /proc."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the comm: state is fields[0], so utime (field 14) is fields[11].
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BenchError(f"no VmRSS for Envoy ({self.name})")

    def counter(self, name):
        """An Envoy stat (counter or gauge) by exact name, or None."""
        _, _, body = http_get(self.admin_port, f"/stats?filter=^{name}$&format=json")
        for stat in json.loads(body).get("stats", []):
            if stat.get("name") == name:
                return stat.get("value")
        return None

"""Load generators: `wrk` for closed-loop peak throughput, `h2load --rps` for a fixed
request rate.

wrk reports its own numbers through a `done()` Lua hook as one JSON line (exact
microsecond percentiles, no unit parsing). h2load writes every request's latency to a
log file (`--log-file`) and the percentiles are computed here, because h2load itself
only prints mean and standard deviation.
"""

import json
import os
import re
import subprocess

from procs import BenchError, pinned

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def lua_string(s):
    # A JSON string literal is a valid Lua string literal for the ASCII we use.
    return json.dumps(s)


def wrk_script(path, method, headers, body_file):
    """Writes the wrk Lua script for one request shape."""
    lines = [f"wrk.method = {lua_string(method)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    if body_file:
        lines.append(f"local f = assert(io.open({lua_string(body_file)}, 'rb'))")
        lines.append("wrk.body = f:read('*a')")
        lines.append("f:close()")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + WRK_DONE)


def run_wrk(url, script, conns, seconds, cpus, timeout_s=10):
    cmd = pinned(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout_s}s",
                  "--latency", "-s", script, url], cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[len("WRKJSON "):])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            return r
    raise BenchError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def h2load_outcomes(stdout):
    """The request outcomes of h2load's summary line (`requests: N total, N started,
    N done, N succeeded, N failed, N errored, N timeout`): `failed` requests got no
    complete answer (reset, closed, timed out), `errored` ones could not be sent. Those
    are not in the per-request log, which only holds answered requests."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("requests:")), "")
    pairs = re.findall(r"(\d+) (total|started|done|succeeded|failed|errored|timeout)\b", line)
    return {f"h2load_{word}": int(n) for n, word in pairs}


# h2load runs still going, so a run stopped early (Ctrl-C, an error in another thread) can
# end them instead of leaving them to their full duration.
_running = set()


def stop_running():
    """Kills every h2load this process started that is still running."""
    for proc in list(_running):
        proc.kill()


def run_h2load(url, headers, rate, clients, seconds, cpus, log_file, warmup_s=1):
    """Fixed-rate load: `clients` HTTP/1.1 connections each sending `rate/clients`
    requests per second for `seconds` (after `warmup_s`). Not fully open-loop: a client
    whose previous response is late sends its next request late (h2load keeps one request
    in flight per HTTP/1.1 connection), so keep the rate well below saturation. `url` may
    be a list: h2load takes the URLs in turn."""
    per_client = max(1, round(rate / clients))
    cmd = ["h2load", "--h1", "-t1", f"-c{clients}", f"--rps={per_client}",
           f"-D{seconds}", f"--warm-up-time={warmup_s}", f"--log-file={log_file}"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += url if isinstance(url, list) else [url]
    if os.path.exists(log_file):
        os.remove(log_file)
    proc = subprocess.Popen(pinned(cmd, cpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _running.add(proc)
    try:
        stdout, stderr = proc.communicate(timeout=seconds + warmup_s + 60)
    finally:
        proc.kill()
        _running.discard(proc)
    out = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    lat, statuses = [], {}
    try:
        with open(log_file) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) < 3:
                    continue
                statuses[cols[1]] = statuses.get(cols[1], 0) + 1
                lat.append(int(cols[2]))
    except FileNotFoundError:
        pass
    if not lat:
        raise BenchError(f"h2load logged no request (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    lat.sort()
    return {
        **h2load_outcomes(out.stdout),
        "target_rps": per_client * clients,
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "statuses": statuses,
        "p50_us": percentile(lat, 50),
        "p90_us": percentile(lat, 90),
        "p99_us": percentile(lat, 99),
        "max_us": lat[-1],
        "mean_us": sum(lat) / len(lat),
    }

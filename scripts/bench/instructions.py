#!/usr/bin/env python3
"""Instructions per request of each Envoy variant, counted by valgrind's callgrind.

Requests per second and CPU microseconds swing with whatever else the machine runs (on
the shared 2-core machines here, bare Envoy alone has swung 4x between runs). Counted
instructions do not: the same binary, config and requests give the same count within a
fraction of a percent, so a regression of a few percent is visible at once.

Each variant's Envoy runs under callgrind (V8's JIT code included: `--smc-check`), first
answers warm-up requests, then has its counters zeroed, answers N requests of a scenario
from h2load, and has its counters dumped: the dump's total divided by N is the cost of one
request in Envoy, filter and all (the kernel's share is not counted). Startup is slow
under valgrind (about 2.5 minutes for Airlock, whose 2 MB module V8 compiles with
TurboFan); the measurement itself takes seconds.

    python3 scripts/bench/instructions.py [--work target/bench/work] [--requests 500]
    python3 scripts/bench/instructions.py --variants bare,airlock --scenarios sse   # streaming only

The `sse` scenario (the streaming suite's bulk SSE stream of small chat deltas, masked on
Airlock) is counted per MB of upstream body instead of per request: `--streams` streams
after one warm-up stream.

It reuses what the last `bash scripts/bench.sh` left in target/bench/work: the rendered
bootstraps, the request bodies and the token (valid for 2 hours after that run).
Writes target/bench/instructions.json and prints a Markdown table.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import BenchError, Processes, http_get, wait_for_line  # noqa: E402
from run import FILTER_KEY, ROOT, UPSTREAM_TOKEN, envoy_bin, start_service  # noqa: E402
import stream  # noqa: E402

VARIANTS = [("bare", "bare Envoy"), ("trivial", "trivial Wasm"), ("native", "jwt_authn+rbac+lua"),
            ("airlock", "Airlock, audit off"), ("airlock-audit", "Airlock, audit to the control service")]
SCENARIOS = [("get", "GET", "/health", None), ("post", "POST", "/echo/tool", "post.json")]
# The native anchor has no rule for the streaming paths (it answers 403).
SSE_VARIANTS = {"bare", "trivial", "airlock", "airlock-audit"}


def ports(bootstrap):
    """(listener port, upstream port) of a rendered bootstrap."""
    text = open(bootstrap).read()
    listener = re.search(r"listeners:.*?port_value:\s*(\d+)", text, re.S)
    upstream = re.search(r"customer-db[^\n]*\n(?:.*\n)*?.*?port_value:\s*(\d+)", text)
    if not listener or not upstream:
        raise BenchError(f"cannot find the listener and upstream ports in {bootstrap}")
    return int(listener.group(1)), int(upstream.group(1))


def control_port(bootstrap):
    """Port of the control service cluster when the plugin config ships audit records."""
    text = open(bootstrap).read()
    if '"audit"' not in text:
        return None
    match = re.search(r'name: "outbound\|8080\|\|control[^\n]*\n(?:.*\n)*?.*?port_value:\s*(\d+)', text)
    if not match:
        raise BenchError(f"{bootstrap} ships audit records but has no control service cluster")
    return int(match.group(1))


def bench_token(work):
    path = os.path.join(work, "wrk-get.lua")
    try:
        match = re.search(r'"(Bearer [^"]+)"', open(path).read())
    except OSError:
        match = None
    if not match:
        raise BenchError(f"no token in {path}: run `bash scripts/bench.sh` first")
    return match.group(1)


def h2load(port, method, path, token, body, n):
    cmd = ["h2load", "--h1", "-n", str(n), "-c", "4", "-H", f"authorization: {token}"]
    if body:
        cmd += ["-d", body, "-H", "content-type: application/json"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True)
    ok = re.search(r"status codes: (\d+) 2xx", out.stdout)
    if not ok or int(ok.group(1)) != n:
        raise BenchError(f"{method} {path}: not every request answered 2xx (token expired? "
                         f"re-run `bash scripts/bench.sh`):\n{out.stdout[-600:]}")


def dumped_total(prefix, before):
    """Total instructions of the newest callgrind dump not in `before`."""
    deadline = time.time() + 60
    while time.time() < deadline:
        dumps = sorted(set(f for f in os.listdir(os.path.dirname(prefix))
                           if f.startswith(os.path.basename(prefix))) - before)
        for name in dumps:
            text = open(os.path.join(os.path.dirname(prefix), name)).read()
            total = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if total:
                return name, int(total.group(1))
        time.sleep(0.2)
    raise BenchError("callgrind wrote no dump")


# Under valgrind Envoy runs ~50x slower, so the timed run's 100 ms audit flush would ship
# batches of a few records and count a whole batch's overhead against each. The measured
# Envoy flushes every few seconds instead, close to the timed run's ~600 records per batch,
# and is given the time to ship the measured requests' records before its counters are read.
AUDIT_FLUSH_MS = 4000


def with_slow_audit_flush(bootstrap):
    text = open(bootstrap).read()
    slowed, n = re.subn(r'"flush_interval_ms":\s*\d+', f'"flush_interval_ms": {AUDIT_FLUSH_MS}', text)
    if n != 1:
        raise BenchError(f"{bootstrap}: expected one audit flush_interval_ms, found {n}")
    path = bootstrap.replace(".yaml", "-instructions.yaml")
    with open(path, "w") as f:
        f.write(slowed)
    return path


def sse_stream(port, token, n):
    """`n` whole SSE streams on one connection (the stream client of stream.py): body bytes."""
    sid, _, method, path, body = stream.streams()[0]
    assert sid == "sse"
    res = stream.fetch(port, method, path, {"authorization": token}, body, 0, min_requests=n)
    if res["statuses"] != {200: n}:
        raise BenchError(f"sse: statuses {res['statuses']} (token expired? re-run `bash scripts/bench.sh`)")
    return res["body_bytes"]


def measure_variant(procs, envoy, work, variant, token, n, audited, scenarios, streams, sse_bytes):
    bootstrap = os.path.join(work, f"envoy-{variant}.yaml")
    if audited:
        bootstrap = with_slow_audit_flush(bootstrap)
    listen, _ = ports(bootstrap)
    # Lets every audit record made so far reach the control service (a flush, then the call).
    settle = (lambda: time.sleep(AUDIT_FLUSH_MS / 1000 * 1.5)) if audited else (lambda: None)
    prefix = os.path.join(work, f"callgrind.{variant}")
    for f in os.listdir(work):
        if f.startswith(os.path.basename(prefix)):
            os.remove(os.path.join(work, f))
    env = {"AIRLOCK_DEMO_UPSTREAM_TOKEN": UPSTREAM_TOKEN, "AIRLOCK_FILTER_KEY": FILTER_KEY}
    proc, log = procs.start(f"callgrind-{variant}", [
        "valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={prefix}.%p",
        envoy, "-c", bootstrap, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warning"], env=env)
    started = time.time()
    while True:
        if proc.poll() is not None:
            raise BenchError(f"Envoy ({variant}) under valgrind exited; see {log}")
        try:
            if http_get(listen, "/health", {"authorization": token}, timeout=5)[0] == 200:
                break
        except OSError:
            pass
        if time.time() - started > 900:
            raise BenchError(f"Envoy ({variant}) not answering under valgrind after 15 minutes; see {log}")
        time.sleep(1)
    startup = time.time() - started
    result = {"startup_s": round(startup, 1)}
    for sid, method, path, body_name in SCENARIOS + [("sse", None, None, None)]:
        if sid not in scenarios or (sid == "sse" and variant not in SSE_VARIANTS):
            continue
        body = os.path.join(work, body_name) if body_name else None
        if sid == "sse":
            sse_stream(listen, token, 1)
        else:
            h2load(listen, method, path, token, body, 100)
        settle()
        before = set(os.listdir(work))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        if sid == "sse":
            sse_stream(listen, token, streams)
        else:
            h2load(listen, method, path, token, body, n)
        settle()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        _, total = dumped_total(prefix, before)
        # Per request; the stream per MB (10^6 bytes) of the upstream's body.
        result[sid] = total // n if sid != "sse" else int(total / (streams * sse_bytes / 1e6))
    procs.stop(proc, grace=30)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench", "work"))
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "instructions.json"))
    ap.add_argument("--variants", default=",".join(v for v, _ in VARIANTS),
                    help="comma-separated subset of: " + ", ".join(v for v, _ in VARIANTS))
    ap.add_argument("--scenarios", default="get,post,sse", help="comma-separated subset of: get, post, sse")
    ap.add_argument("--streams", type=int, default=3, help="SSE streams counted (sse scenario)")
    args = ap.parse_args()
    scenarios = set(args.scenarios.split(","))
    if scenarios - {"get", "post", "sse"}:
        raise BenchError(f"unknown scenarios: {', '.join(sorted(scenarios - {'get', 'post', 'sse'}))}")
    for tool in ["valgrind", "callgrind_control", "h2load"]:
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (bash scripts/setup.sh installs it)")
    work = os.path.abspath(args.work)
    token = bench_token(work)
    envoy = envoy_bin()
    demo = os.path.join(ROOT, "target", "release", "airlock-demo")
    procs = Processes(work)
    results = {}
    try:
        _, upstream_port = ports(os.path.join(work, "envoy-bare.yaml"))
        up, up_log = procs.start("instructions-upstream", [
            demo, "upstream", "--listen", f"127.0.0.1:{upstream_port}",
            "--db", os.path.join(work, "instructions-upstream.db"), "--threads", "1"])
        wait_for_line(up_log, "listening on", up, 30, "demo upstream")
        # The stream's size as the upstream writes it (what "per MB" counts).
        sse_bytes = sse_stream(upstream_port, token, 1) if "sse" in scenarios else 0
        service_bin = os.path.join(ROOT, "target", "release", "airlock")
        chosen = args.variants.split(",")
        unknown = set(chosen) - {v for v, _ in VARIANTS}
        if unknown:
            raise BenchError(f"unknown variants: {', '.join(sorted(unknown))}")
        for variant, label in [(v, l) for v, l in VARIANTS if v in chosen]:
            print(f"[instructions] {label}: starting Envoy under callgrind", file=sys.stderr, flush=True)
            port = control_port(os.path.join(work, f"envoy-{variant}.yaml"))
            # Audit records go to a real control service, as in the timed run; the shipping
            # (batches over dispatch_http_call) is part of what is counted.
            service = start_service(procs, argparse.Namespace(load_cpus=None), work, service_bin, port) if port else None
            results[variant] = measure_variant(procs, envoy, work, variant, token, args.requests, port is not None,
                                               scenarios, args.streams, sse_bytes)
            if service:
                procs.stop(service["proc"])
            print(f"[instructions] {label}: {results[variant]}", file=sys.stderr, flush=True)
    finally:
        procs.stop_all()
    with open(args.out, "w") as f:
        json.dump({"requests": args.requests, "streams": args.streams, "sse_bytes": sse_bytes,
                   "variants": results}, f, indent=2)
    bare = results.get("bare") or {}
    cols = [(sid, method) for sid, method, *_ in SCENARIOS if sid in scenarios]
    if cols:
        print("| Variant | " + " | ".join(f"{m} instructions/request | + vs bare" for _, m in cols) + " |")
        print("|---|" + "---:|---:|" * len(cols))
        for variant, label in VARIANTS:
            r = results.get(variant)
            if not r:
                continue
            cells = []
            for sid, _ in cols:
                extra = "–" if variant == "bare" or sid not in bare else f"+{r[sid] - bare[sid]:,}"
                cells += [f"{r[sid]:,}", extra]
            print(f"| {label} | " + " | ".join(cells) + " |")
    if "sse" in scenarios:
        print()
        print(f"SSE stream of chat deltas ({sse_bytes / 1e6:.2f} MB, masked on Airlock), {args.streams} streams:")
        print()
        print("| Variant | instructions per MB | + vs bare |")
        print("|---|---:|---:|")
        for variant, label in VARIANTS:
            r = results.get(variant) or {}
            if "sse" not in r:
                continue
            extra = "–" if variant == "bare" or "sse" not in bare else f"+{r['sse'] - bare['sse']:,}"
            print(f"| {label} | {r['sse']:,} | {extra} |")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"instructions: {e}", file=sys.stderr)
        sys.exit(1)

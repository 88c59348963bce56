#!/usr/bin/env python3
"""Turns a run's raw results (target/bench/results.json) into the markdown report.

Run on its own to re-render a report without measuring again:
    python3 scripts/bench/report.py target/bench/results.json

Medians over rounds everywhere. Ratios between variants are taken per round (both
variants measured minutes apart at most, in rotating order) and then the median of those
ratios is reported, which cancels slow drift of the shared machine better than a ratio of
medians would.
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import stream  # noqa: E402

VARIANT_NAMES = {"bare": "bare Envoy", "trivial": "trivial Wasm", "native": "jwt_authn+rbac+lua",
                 "airlock": "Airlock", "airlock-noaudit": "Airlock, audit off"}
TARGET_TRIVIAL_RATIO = 0.85
TARGET_ADDED_P99_MS = 0.3
TARGET_MASK_MB_S = 150.0


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def by_round(runs, scenario, variant, key):
    return {r["round"]: r.get(key) for r in runs if r["scenario"] == scenario and r["variant"] == variant}


def paired(runs, scenario, a, b, key, op):
    """Median over rounds of op(a's value, b's value) from the same round."""
    ra, rb = by_round(runs, scenario, a, key), by_round(runs, scenario, b, key)
    vals = [op(ra[k], rb[k]) for k in ra if k in rb and ra[k] is not None and rb[k] is not None and (op is not _div or rb[k])]
    return median(vals)


def _div(x, y):
    return x / y


def _sub(x, y):
    return x - y


def fmt(v, spec=",.0f", none="–"):
    return none if v is None else format(v, spec)


def ms(us):
    return None if us is None else us / 1000.0


def summarise(results):
    """Per (scenario, variant): medians and ratios. Also used by tests of the report."""
    runs = results["runs"]
    out = {}
    for sc in results["scenarios"]:
        for v in sc["variants"]:
            sel = [r for r in runs if r["scenario"] == sc["id"] and r["variant"] == v]
            if not sel:
                continue
            row = {
                "rps": median([r["rps"] for r in sel]),
                "p50_us": median([r["p50_us"] for r in sel]),
                "p99_us": median([r["p99_us"] for r in sel]),
                "cpu_us": median([r["cpu_us_per_req"] for r in sel]),
                "util": median([r["envoy_cpu_util"] for r in sel]),
                "status_errors": sum(r["status_errors"] for r in sel),
                "requests": sum(r["requests"] for r in sel),
                "rounds": len(sel),
            }
            for ref in ("bare", "trivial", "native"):
                if ref != v and ref in sc["variants"]:
                    row[f"rps_x_{ref}"] = paired(runs, sc["id"], v, ref, "rps", _div)
                    row[f"cpu_x_{ref}"] = paired(runs, sc["id"], v, ref, "cpu_us_per_req", _div)
                    row[f"cpu_plus_{ref}"] = paired(runs, sc["id"], v, ref, "cpu_us_per_req", _sub)
                    row[f"p50_plus_{ref}"] = paired(runs, sc["id"], v, ref, "p50_us", _sub)
                    row[f"p99_plus_{ref}"] = paired(runs, sc["id"], v, ref, "p99_us", _sub)
            out[(sc["id"], v)] = row
    return out


def render(results):
    s = summarise(results)
    m = results["machine"]
    st = results["settings"]
    L = []
    L.append(f"Command: `{results['command']}` — {st['rounds']} interleaved rounds × {st['seconds']:g} s per run, "
             f"Envoy `--concurrency 1`, wrk 1 thread; pinning: Envoy CPU {st['pinning']['envoy'] or 'any'}, "
             f"load + upstream CPU {st['pinning']['load'] or 'any'}. Run took {results['duration_s']:.0f} s.")
    L.append("")
    L.append(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, Envoy {m['envoy_version']}, "
             f"commit {m['git_commit']}{' (+ uncommitted changes)' if m['git_dirty'] else ''}, "
             f"load average at start {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}.")
    L.append("")
    L.append("Airlock variant: " + (f"audit records shipped to the control service (running on the load CPU; "
                                    f"`\"audit\": {json.dumps(st.get('audit_section'))}`); "
                                    "*Airlock, audit off* is the same policy without it."
                                    if st.get("airlock_audit") else "no audit shipping (this filter build has none)."))
    L.append("")
    if results.get("only") == "streaming":
        L.append(stream.render(results["streaming"]))
        L.append("### Targets")
        L.append("")
        L.extend(stream.targets(results["streaming"]))
        L.append("")
        return "\n".join(L) + "\n"
    L.append("### All scenarios (medians)")
    L.append("")
    L.append("| Scenario | Variant | req/s | × bare | p50 ms | p99 ms | Envoy CPU µs/req | CPU × bare | +CPU µs vs bare | non-2xx |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sc in results["scenarios"]:
        for v in sc["variants"]:
            r = s.get((sc["id"], v))
            if not r:
                continue
            L.append(f"| {sc['id']} | {VARIANT_NAMES[v]} | {fmt(r['rps'])} | {fmt(r.get('rps_x_bare'), '.2f')} | "
                     f"{fmt(ms(r['p50_us']), '.2f')} | {fmt(ms(r['p99_us']), '.2f')} | {fmt(r['cpu_us'], '.1f')} | "
                     f"{fmt(r.get('cpu_x_bare'), '.2f')} | {fmt(r.get('cpu_plus_bare'), '+.1f')} | "
                     f"{r['status_errors']:,}/{r['requests']:,} |")
    L.append("")
    L.append("Scenarios: " + "; ".join(f"**{sc['id']}** {sc['title']}, {sc['conns']} connection(s)"
                                       for sc in results["scenarios"]) + ".")
    L.append("")

    # Masking
    mask_rows = [sc for sc in results["scenarios"] if sc["id"].startswith("mask-")]
    if mask_rows:
        L.append("### Masking through Envoy (1 connection)")
        L.append("")
        L.append("| Body | bare p50 ms | Airlock p50 ms | added p50 ms | added p99 ms | Airlock CPU µs/req | "
                 "MB/s per worker (end to end) | MB/s per worker (masking only) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for sc in mask_rows:
            b, a = s.get((sc["id"], "bare")), s.get((sc["id"], "airlock"))
            if not (a and b):
                continue
            size = int(sc["path"].split("bytes=")[1])
            e2e = size / a["cpu_us"] if a["cpu_us"] else None
            added = a.get("cpu_plus_bare")
            only = size / added if added and added > 0 else None
            L.append(f"| {sc['id'][5:].upper()}B | {fmt(ms(b['p50_us']), '.2f')} | {fmt(ms(a['p50_us']), '.2f')} | "
                     f"{fmt(ms(a.get('p50_plus_bare')), '+.2f')} | {fmt(ms(a.get('p99_plus_bare')), '+.2f')} | "
                     f"{fmt(a['cpu_us'], ',.0f')} | {fmt(e2e, ',.0f')} | {fmt(only, ',.0f')} |")
        L.append("")
        L.append("MB/s per worker = response bytes ÷ Envoy CPU µs per request (10^6 B/s per fully busy worker); "
                 "*end to end* divides by all of Airlock-Envoy's CPU for the request, *masking only* by the CPU "
                 "above bare Envoy for the same response.")
        L.append("")

    # Fixed rate
    fixed = results.get("fixed_rate") or []
    if fixed:
        L.append(f"### Latency at a fixed rate (h2load `--rps`, 8 connections, {st['fixed_rate']:,} req/s = half of Airlock's peak GET)")
        L.append("")
        L.append("| Variant | achieved req/s | p50 ms | p99 ms | added p99 ms vs bare | Envoy CPU µs/req |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for v in ("bare", "trivial", "native", "airlock"):
            sel = [r for r in fixed if r["variant"] == v]
            if not sel:
                continue
            add = paired(fixed, "get-fixed-rate", v, "bare", "p99_us", _sub) if v != "bare" else None
            L.append(f"| {VARIANT_NAMES[v]} | {fmt(median([r['rps'] for r in sel]))} | "
                     f"{fmt(ms(median([r['p50_us'] for r in sel])), '.3f')} | {fmt(ms(median([r['p99_us'] for r in sel])), '.3f')} | "
                     f"{fmt(ms(add), '+.3f')} | {fmt(median([r['cpu_us_per_req'] for r in sel]), '.1f')} |")
        L.append("")

    # Memory
    mem = results.get("memory") or {}
    if mem:
        L.append("### Envoy resident memory (VmRSS)")
        L.append("")
        L.append("| Variant | at start MiB | idle after the runs MiB | under 1,000 connections MiB | req/s at 1,000 conns | socket errors |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for v, r in mem.items():
            L.append(f"| {VARIANT_NAMES[v]} | {r['rss_start_kib'] / 1024:.1f} | {r['rss_idle_kib'] / 1024:.1f} | "
                     f"{r['rss_1000_conns_kib'] / 1024:.1f} | {fmt(r['rps_1000_conns'])} | {r['socket_errors']:,} |")
        L.append("")

    # Audit / approvals
    L.append("### Audit shipping and approvals")
    L.append("")
    au = results.get("audit") or {}
    if au.get("supported") and "records_stored" in au:
        L.append(f"- Audit: {au['records_stored']:,} records stored for {au['requests_answered']:,} requests answered "
                 f"under {au['load_rps']:,.0f} req/s; lost {au['lost']:,}; ingested {au['ingest_records_per_s']:,.0f} "
                 f"records/s; chain verified: {au['chain_ok']}.")
        w = au.get("whole_run")
        if w:
            L.append(f"- Whole run: the Airlock Envoy answered {w['requests_answered']:,} requests, the store holds "
                     f"{w['records_stored']:,} records: {w['lost']:,} missing (filter counters: "
                     f"audit.records {fmt(w['records_counter'])}, audit.dropped {fmt(w['dropped_counter'])}, "
                     f"audit.ship_failed {fmt(w['ship_failed_counter'])}).")
    else:
        L.append(f"- Audit: not measured: this filter build does not accept the control/audit config "
                 f"({au.get('why', 'unknown')}).")
    ap = results.get("approvals") or {}
    if ap.get("supported"):
        L.append(f"- Approval decision → held request answered: p50 {fmt(ms(ap['p50_us']), '.1f')} ms, "
                 f"max {fmt(ms(ap['max_us']), '.1f')} ms over {ap['samples']} approvals.")
    else:
        L.append(f"- Approvals: not measured ({ap.get('why', 'unknown')}).")
    L.append("")

    mb = results.get("mask_bench")
    if mb and mb.get("rows"):
        L.append(f"### Native masking micro-benchmark (`cargo bench -p airlock-filter --bench mask`, raw: `{mb['raw_file']}`)")
        L.append("")
        L.append("| Case | MB/s |")
        L.append("|---|---:|")
        for row in mb["rows"]:
            L.append(f"| {row['case']} | {row['mb_per_s']:,.1f} |")
        L.append("")

    if results.get("streaming"):
        L.append(stream.render(results["streaming"]))

    L.append("### Summary (one line per scenario; ratios are req/s relative to bare Envoy, median of per-round ratios)")
    L.append("")
    L.append("```")
    for sc in results["scenarios"]:
        b = s.get((sc["id"], "bare"))
        parts = [f"{sc['id']:<9}", f"bare {fmt(b['rps'] if b else None):>7} req/s"]
        for v in sc["variants"]:
            if v == "bare":
                continue
            r = s.get((sc["id"], v))
            if r:
                parts.append(f"{v} {fmt(r.get('rps_x_bare'), '.2f')}x ({fmt(r.get('cpu_plus_bare'), '+.0f')} us CPU)")
        L.append(" | ".join(parts))
    L.append("```")
    L.append("")

    if results.get("findings"):
        L.append("### Findings of the pre-measurement checks")
        L.append("")
        for f in results["findings"]:
            L.append(f"- {f}")
        L.append("")

    # Targets
    L.append("### Targets")
    L.append("")
    get_a = s.get(("get", "airlock"), {})
    t1 = get_a.get("rps_x_trivial")
    t2 = get_a.get("rps_x_native")
    L.append(f"- Allowed path ≥ {TARGET_TRIVIAL_RATIO:.0%} of trivial-Wasm throughput: {fmt(t1, '.2f')}× — "
             f"{verdict(t1 is not None and t1 >= TARGET_TRIVIAL_RATIO)}.")
    L.append(f"- Allowed path not slower than jwt_authn+rbac: {fmt(t2, '.2f')}× — {verdict(t2 is not None and t2 >= 1.0)}.")
    add = paired(fixed, "get-fixed-rate", "airlock", "bare", "p99_us", _sub) if fixed else None
    L.append(f"- Added p99 at half of peak < {TARGET_ADDED_P99_MS} ms: {fmt(ms(add), '+.3f')} ms — "
             f"{verdict(add is not None and add / 1000 < TARGET_ADDED_P99_MS)}.")
    m1 = s.get(("mask-1m", "airlock"))
    e2e = (1048576 / m1["cpu_us"]) if m1 and m1["cpu_us"] else None
    L.append(f"- Masking ≥ {TARGET_MASK_MB_S:.0f} MB/s per worker (1 MB dense PII through Envoy, end to end): "
             f"{fmt(e2e, ',.0f')} MB/s — {verdict(e2e is not None and e2e >= TARGET_MASK_MB_S)}.")
    if au.get("supported") and "lost" in au:
        whole = (au.get("whole_run") or {}).get("lost")
        L.append(f"- No audit record lost: {au['lost']:,} lost in the audit run, {fmt(whole)} over the whole run — "
                 f"{verdict(au['lost'] == 0 and (whole or 0) == 0)}.")
    else:
        L.append("- No audit record lost: not measured (see above).")
    if results.get("streaming"):
        L.extend(stream.targets(results["streaming"]))
    L.append("")
    return "\n".join(L) + "\n"


def verdict(ok):
    return "**met**" if ok else "**missed**"


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.json"
    with open(path) as f:
        print(render(json.load(f)), end="")

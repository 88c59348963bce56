#!/usr/bin/env python3
"""Streaming masking through Envoy: throughput per worker and added delay per event.

Part of `bash scripts/bench.sh` (run only these with `bash scripts/bench.sh --only streaming`);
run.py calls `measure()` with the Envoys it started. Two measurements:

1. **Throughput.** The demo upstream serves, as fast as it can write, (a) an SSE stream of
   small OpenAI chat-completion deltas (`data: {"id":…,"choices":[{"index":0,"delta":
   {"content":"…"}}]}`, a few words each, with some PII in the prose) and (b) NDJSON
   customer rows (every row full of PII), each several MB. One connection asks for one
   stream after the other for a few seconds; variants: bare Envoy, Airlock on a masked
   rule, Airlock on an unmasked rule (the same Envoy; the request carries the bench's
   opt-out header). Rounds interleave the variants in rotating order; medians reported.
   *MB/s per worker* is upstream body bytes ÷ Envoy CPU seconds (utime+stime from /proc),
   the rate one fully busy worker would sustain; wall-clock MB/s is reported as well.
2. **Added delay per event.** The upstream writes one event every `interval` ms, each
   stamped with its send time (`"airlock_sent"`, wall clock: CLOCK_REALTIME, which the
   upstream and this client read alike on one machine). The client reads the stream
   unbuffered (raw socket) and takes the time each `recv` returns; delay = arrival − send,
   per event. Two texts: deltas that end at a word boundary (a space or punctuation, so
   no tail can be a PII prefix: the headline figure) and deltas that end mid-word (the
   masker holds the unfinished word back until the next delta, by design, so that text
   is delayed by about one interval). For each delta two delays: until its event arrives,
   and until its whole text has arrived (it may come with the next event).

Clients run as subprocesses of this file pinned to the load CPU (`python3 stream.py
fetch|events …`, JSON on stdout), so the Python work never lands on Envoy's CPU.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import policy  # noqa: E402
from procs import BenchError, pinned  # noqa: E402

HERE = os.path.abspath(__file__)
TARGET_MB_S = 150.0
TARGET_ADDED_P99_MS = 1.0

# ---------------------------------------------------------------------------------------
# The streams

# One answer paragraph (~1.5 KB): prose with a few values the built-in detectors find. None
# is a real person's; the card is the well-known Luhn-valid test number.
PLANTED = {
    "email": "jordan.lee@example.net",
    "phone": "+1 415-555-0199",
    "credit_card": "4242 4242 4242 4242",
    "us_ssn": "219-09-9999",
}
PARAGRAPH = (
    "Sure, here is a summary of the account review you asked for. The customer opened the "
    "account three years ago and has placed forty two orders since then, most of them in "
    "the spring. Two orders were returned because the items arrived damaged, and both "
    "refunds were processed within a week. The customer can be reached at "
    f"{PLANTED['email']} or by phone at {PLANTED['phone']}, preferably in the afternoon. "
    "The payment method on file is the card "
    f"{PLANTED['credit_card']}, which expires next year, and the identity check used the "
    f"social security number {PLANTED['us_ssn']}. There are no open disputes and no "
    "chargebacks on the account. The shipping address was updated last month after the "
    "customer moved, and the new address has been verified by the carrier. The loyalty "
    "tier is silver, with enough points for one free shipment. I would suggest offering "
    "the customer early access to the summer sale, since most of their purchases happen "
    "around that time, and a reminder that the warranty on the last order ends soon. "
    "Let me know if you want the full order history, a breakdown by category, or a draft "
    "of the email to send. "
)
SSE_CHUNK_CHARS = 24       # characters per delta: a few words (cuts fall anywhere, as tokens do)
SSE_REPEAT = 320           # ~17,000 events, ~4.1 MB
NDJSON_ROWS = 10000        # the endpoint's maximum: ~2.5 MB

LATENCY_EVENTS = 300
LATENCY_INTERVAL_MS = 5

WORDS = ("the order was shipped on time and the customer asked about the invoice so we sent "
         "a copy with the tracking link and a note about the return window which closes at "
         "the end of the month").split()


def latency_pieces(kind, n=LATENCY_EVENTS):
    """`n` deltas of three to five words. `boundary`: each ends with a space or `, ` / `. `
    (a safe place to cut: nothing after it can extend what came before into a detection).
    `midword`: the same text cut inside a word, so every delta's last word is unfinished."""
    pieces = []
    for i in range(n):
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 3)]
        pieces.append(" ".join(words) + (", ", ". ", " ")[i % 3])
    if kind == "boundary":
        return pieces
    text = "".join(pieces)
    cuts, at = [], 0
    for p in pieces[:-1]:
        # Two characters or more into the next delta, inside a word: letters on both sides.
        end = max(at + len(p), cuts[-1] + 1 if cuts else 0) + 2
        while end < len(text) - 1 and not (text[end - 1].isalpha() and text[end].isalpha()):
            end += 1
        if end >= len(text) - 1:
            break
        cuts.append(end)
        at += len(p)
    out = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    return out


def sse_request(text, chunk_size=None, split_at=None, repeat=1, stamp=False, delay_ms=0):
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Summarise."}],
            "demo_text": text, "delay_ms": delay_ms, "repeat": repeat, "stamp": stamp}
    if chunk_size:
        body["chunk_size"] = chunk_size
    if split_at:
        body["split_at"] = split_at
    return body


def streams():
    """The two bulk streams: (id, title, method, path, request body or None)."""
    return [
        ("sse", f"SSE, OpenAI chat-completion deltas of {SSE_CHUNK_CHARS} characters", "POST", policy.SSE_PATH,
         sse_request(PARAGRAPH, chunk_size=SSE_CHUNK_CHARS, repeat=SSE_REPEAT)),
        ("ndjson", f"NDJSON, {NDJSON_ROWS:,} customer rows", "GET",
         f"{policy.NDJSON_PATH}?rows={NDJSON_ROWS}&delay_ms=0", None),
    ]


# ---------------------------------------------------------------------------------------
# Clients (run as subprocesses on the load CPU)

def read_response(f):
    """Reads one HTTP/1.1 response from the buffered socket file: (status, headers, body)."""
    status_line = f.readline()
    if not status_line:
        raise BenchError("connection closed before a response")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            parts.append(f.read(size))
            f.read(2)
        body = b"".join(parts)
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()
    return status, headers, body


def request_bytes(method, path, headers, body):
    data = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "host: bench", *[f"{k}: {v}" for k, v in headers.items()]]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def fetch(port, method, path, headers, body, seconds, min_requests=2):
    """Asks for the stream again and again on one keep-alive connection for `seconds`
    (whole responses only, at least `min_requests`)."""
    req = request_bytes(method, path, headers, body)
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    f = sock.makefile("rb", buffering=1 << 16)
    n, total, statuses, times = 0, 0, {}, []
    t0 = time.monotonic()
    while n < min_requests or time.monotonic() - t0 < seconds:
        t1 = time.monotonic()
        sock.sendall(req)
        status, _, resp = read_response(f)
        times.append(time.monotonic() - t1)
        statuses[status] = statuses.get(status, 0) + 1
        n += 1
        total += len(resp)
    wall = time.monotonic() - t0
    sock.close()
    return {"requests": n, "body_bytes": total, "wall_s": wall, "statuses": statuses,
            "request_s": sorted(times)[len(times) // 2]}


def events(port, headers, body):
    """One stamped SSE stream read straight off the socket: for every event, the time the
    `recv` that completed it returned (time.time_ns(), the clock the upstream stamps with),
    its sequence number and send time, and its delta text."""
    req = request_bytes("POST", policy.SSE_PATH, headers, body)
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # REALTIME - MONOTONIC moves only when the wall clock is stepped (both are slewed
    # alike): a step during the stream would corrupt the delays, so it is checked.
    offset0 = time.time_ns() - time.monotonic_ns()
    sock.sendall(req)
    raw, head, body_buf, out, done = b"", None, b"", [], False
    chunked, status = False, None
    while not done:
        data = sock.recv(1 << 16)
        now = time.time_ns()
        if not data:
            break
        raw += data
        if head is None:
            if b"\r\n\r\n" not in raw:
                continue
            head, raw = raw.split(b"\r\n\r\n", 1)
            status = int(head.split()[1])
            chunked = b"transfer-encoding: chunked" in head.lower()
        # De-chunk what is complete.
        while True:
            if not chunked:
                body_buf += raw
                raw = b""
                break
            nl = raw.find(b"\r\n")
            if nl < 0:
                break
            size = int(raw[:nl].split(b";")[0], 16)
            if size == 0:
                done = True
                break
            if len(raw) < nl + 2 + size + 2:
                break
            body_buf += raw[nl + 2:nl + 2 + size]
            raw = raw[nl + 4 + size:]
        while b"\n\n" in body_buf:
            ev, body_buf = body_buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                msg = json.loads(payload, parse_float=str)
                choices = msg.get("choices") or [{}]
                content = (choices[0].get("delta") or {}).get("content")
                sent = msg.get("airlock_sent")
                out.append({"t": now, "seq": msg.get("airlock_seq"),
                            "sent": stamp_ns(sent) if sent is not None else None, "content": content})
    sock.close()
    offset1 = time.time_ns() - time.monotonic_ns()
    return {"status": status, "events": out, "clock_step_ns": offset1 - offset0}


def stamp_ns(text):
    secs, _, frac = str(text).partition(".")
    return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9])


def run_client(args, cpus, timeout):
    cmd = pinned([sys.executable, HERE] + args, cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise BenchError(f"stream client failed ({' '.join(args[:1])}): {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------------
# Checks

EMAIL_RE = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


def sse_contents(body):
    """(joined delta text, number of events, whether every data line is JSON or [DONE])."""
    text, n, ok = [], 0, True
    for ev in body.split(b"\n\n"):
        for line in ev.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            n += 1
            if payload == b"[DONE]":
                continue
            try:
                msg = json.loads(payload)
            except ValueError:
                ok = False
                continue
            for c in msg.get("choices") or []:
                piece = (c.get("delta") or {}).get("content")
                if piece:
                    text.append(piece)
    return "".join(text), n, ok


def check(ctx, specs):
    """Fetches each stream once per variant and checks it before anything is measured:
    bare and unmasked Airlock deliver the upstream's stream, masked Airlock delivers it with
    no raw value left, the markers in place and every event / line still JSON. Returns
    {stream id: upstream body bytes} (bare Envoy's body is the upstream's)."""
    problems, sizes = [], {}
    for sid, _, method, path, body in specs:
        got = {}
        for v, port, hdrs in ctx["variants"]:
            r = run_client(["fetch", "--port", str(port), "--method", method, "--path", path,
                            "--headers", json.dumps(hdrs), "--body", json.dumps(body), "--seconds", "0",
                            "--min-requests", "1", "--save", os.path.join(ctx["work"], f"stream-{sid}-{v}.out")],
                           ctx["load_cpus"], 300)
            if r["statuses"] != {"200": 1}:
                problems.append(f"{sid} on {v}: statuses {r['statuses']}")
                continue
            got[v] = open(os.path.join(ctx["work"], f"stream-{sid}-{v}.out"), "rb").read()
        if len(got) < 3:
            continue
        raw, masked, unmasked = got["bare"], got["airlock"], got["airlock-unmasked"]
        sizes[sid] = len(raw)
        if sid == "sse":
            text, _, _ = sse_contents(raw)
            if text != PARAGRAPH * SSE_REPEAT:
                problems.append("sse on bare: the joined deltas are not the requested text")
            if sse_contents(unmasked)[0] != text:
                problems.append("sse on airlock-unmasked: the joined deltas differ from bare Envoy's")
            mtext, _, json_ok = sse_contents(masked)
            if not json_ok:
                problems.append("sse on airlock: an event's data is no longer JSON")
            for kind, value in PLANTED.items():
                if value in mtext:
                    problems.append(f"sse on airlock: the {kind} {value!r} reached the client")
                want = SSE_REPEAT
                if mtext.count(f"[REDACTED:{kind}]") < want:
                    problems.append(f"sse on airlock: {mtext.count(f'[REDACTED:{kind}]')} [REDACTED:{kind}] "
                                    f"markers, expected {want}")
        else:
            rows = [json.loads(x) for x in raw.splitlines() if x.strip()]
            if unmasked != raw:
                problems.append("ndjson on airlock-unmasked: the body differs from bare Envoy's")
            try:
                mrows = [json.loads(x) for x in masked.splitlines() if x.strip()]
            except ValueError:
                problems.append("ndjson on airlock: a line is no longer JSON")
                mrows = []
            if len(mrows) != len(rows):
                problems.append(f"ndjson on airlock: {len(mrows)} rows, expected {len(rows)}")
            values = {row[k] for row in rows for k in ("email", "phone", "card", "ssn", "iban")}
            mtext = masked.decode()
            leaked = [v for v in values if v in mtext]
            if leaked or EMAIL_RE.search(masked):
                problems.append(f"ndjson on airlock: raw values reached the client, e.g. {leaked[:3]}")
            if mtext.count("[REDACTED:email]") < len(rows):
                problems.append(f"ndjson on airlock: {mtext.count('[REDACTED:email]')} e-mail markers for "
                                f"{len(rows)} rows")
    # The stamped stream: the stamps pass the masking proxy and the text arrives whole.
    for kind in ("boundary", "midword"):
        body = latency_body(kind, 20, 1)
        want = "".join(latency_pieces(kind, 20))
        for v, port, hdrs in ctx["variants"]:
            r = run_client(["events", "--port", str(port), "--headers", json.dumps(hdrs), "--body", json.dumps(body)],
                           ctx["load_cpus"], 60)
            text = "".join(e["content"] or "" for e in r["events"])
            stamped = [e for e in r["events"] if e["sent"] is not None]
            if r["status"] != 200 or text != want:
                problems.append(f"stamped {kind} stream on {v}: status {r['status']}, text {text[:80]!r}…")
            if len(stamped) < 20:
                problems.append(f"stamped {kind} stream on {v}: {len(stamped)} stamped events of at least 20")
    if problems:
        raise BenchError("streaming variants do not answer as expected, nothing measured:\n  " + "\n  ".join(problems))
    return sizes


def latency_body(kind, n=LATENCY_EVENTS, interval_ms=LATENCY_INTERVAL_MS):
    pieces = latency_pieces(kind, n)
    cuts, at = [], 0
    for p in pieces[:-1]:
        at += len(p)
        cuts.append(at)
    return sse_request("".join(pieces), split_at=cuts, stamp=True, delay_ms=interval_ms)


# ---------------------------------------------------------------------------------------
# Measuring

def delays(result, pieces):
    """Per delta (in order): ms from its send stamp to the arrival of its event, and to the
    arrival of the last character of its text (joined text long enough to cover it)."""
    evs = result["events"]
    by_seq = {e["seq"]: e for e in evs if e["seq"] is not None}
    ends, at = [], 0
    for p in pieces:
        at += len(p)
        ends.append(at)
    event_ms, text_ms = [], []
    joined, k = 0, 0
    complete_at = []
    for e in evs:
        joined += len(e["content"] or "")
        while k < len(ends) and ends[k] <= joined:
            complete_at.append(e["t"])
            k += 1
    # Content deltas are seq 1..n (seq 0 is the role chunk).
    for i in range(len(pieces)):
        e = by_seq.get(i + 1)
        if e is None or i >= len(complete_at):
            continue
        event_ms.append((e["t"] - e["sent"]) / 1e6)
        text_ms.append((complete_at[i] - e["sent"]) / 1e6)
    return event_ms, text_ms


def pct(values, p):
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def rotate(seq, k):
    k %= len(seq)
    return seq[k:] + seq[:k]


def measure(ctx, rounds, seconds, log):
    """ctx: variants [(name, port, headers)] for bare, airlock, airlock-unmasked; envoys
    {name: Envoy} (airlock-unmasked is the airlock Envoy); work; load_cpus."""
    specs = streams()
    log("streaming: checking every variant delivers the streams (masked where it should)")
    sizes = check(ctx, specs)
    log("  " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    runs = []
    variants = ctx["variants"]
    log(f"streaming throughput: {rounds} rounds x {len(specs) * len(variants)} runs of {seconds:g} s")
    for r in range(rounds):
        for sid, _, method, path, body in specs:
            for v, port, hdrs in rotate(list(variants), r):
                envoy = ctx["envoys"][v]
                cpu0 = envoy.cpu_seconds()
                res = run_client(["fetch", "--port", str(port), "--method", method, "--path", path,
                                  "--headers", json.dumps(hdrs), "--body", json.dumps(body),
                                  "--seconds", str(seconds)], ctx["load_cpus"], seconds + 300)
                cpu = envoy.cpu_seconds() - cpu0
                if not envoy.alive():
                    raise BenchError(f"Envoy ({envoy.name}) died during the streaming run; see {envoy.log_path}")
                mb = res["requests"] * sizes[sid] / 1e6
                row = {"round": r + 1, "stream": sid, "variant": v, "requests": res["requests"],
                       "statuses": res["statuses"], "upstream_mb": mb, "wall_s": res["wall_s"],
                       "mb_per_s_wall": mb / res["wall_s"], "envoy_cpu_s": cpu,
                       "cpu_ms_per_mb": cpu * 1e3 / mb if mb else None,
                       "mb_per_cpu_s": mb / cpu if cpu else None, "request_ms_p50": res["request_s"] * 1e3}
                runs.append(row)
                log(f"  round {r + 1}/{rounds} {sid:<6} {v:<16} {row['mb_per_s_wall']:7.1f} MB/s wall  "
                    f"{row['mb_per_cpu_s'] or 0:7.1f} MB per Envoy CPU s  ({res['requests']} streams)")

    lat = []
    cases = [("boundary", variants), ("midword", [x for x in variants if x[0] != "airlock-unmasked"])]
    n_runs = sum(len(vs) for _, vs in cases)
    log(f"streaming delay per event: {rounds} rounds x {n_runs} streams of {LATENCY_EVENTS} events "
        f"every {LATENCY_INTERVAL_MS} ms")
    for r in range(rounds):
        for kind, vs in cases:
            pieces = latency_pieces(kind)
            body = latency_body(kind)
            for v, port, hdrs in rotate(list(vs), r):
                res = run_client(["events", "--port", str(port), "--headers", json.dumps(hdrs),
                                  "--body", json.dumps(body)], ctx["load_cpus"], 120)
                event_ms, text_ms = delays(res, pieces)
                row = {"round": r + 1, "case": kind, "variant": v, "events": len(event_ms),
                       "clock_step_ns": res["clock_step_ns"],
                       "event_p50_ms": pct(event_ms, 50), "event_p99_ms": pct(event_ms, 99),
                       "event_max_ms": max(event_ms) if event_ms else None,
                       "text_p50_ms": pct(text_ms, 50), "text_p99_ms": pct(text_ms, 99),
                       "text_max_ms": max(text_ms) if text_ms else None,
                       "event_ms": [round(x, 4) for x in event_ms], "text_ms": [round(x, 4) for x in text_ms]}
                if len(event_ms) < len(pieces) * 0.99 or abs(res["clock_step_ns"]) > 100_000:
                    raise BenchError(f"delay run {kind} on {v}: {len(event_ms)} of {len(pieces)} deltas timed, "
                                     f"wall clock stepped by {res['clock_step_ns']} ns")
                lat.append(row)
                log(f"  round {r + 1}/{rounds} {kind:<8} {v:<16} event p50 {row['event_p50_ms']:.3f} "
                    f"p99 {row['event_p99_ms']:.3f} ms, text p50 {row['text_p50_ms']:.3f} "
                    f"p99 {row['text_p99_ms']:.3f} ms")
    return {"sizes": sizes, "streams": [{"id": s[0], "title": s[1], "method": s[2], "path": s[3]} for s in specs],
            "settings": {"rounds": rounds, "seconds": seconds, "latency_events": LATENCY_EVENTS,
                         "latency_interval_ms": LATENCY_INTERVAL_MS, "sse_chunk_chars": SSE_CHUNK_CHARS},
            "throughput": runs, "latency": lat}


# ---------------------------------------------------------------------------------------
# Report

NAMES = {"bare": "bare Envoy", "airlock": "Airlock, masked rule", "airlock-unmasked": "Airlock, unmasked rule"}


def _median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    m = len(vals) // 2
    return vals[m] if len(vals) % 2 else (vals[m - 1] + vals[m]) / 2


def _paired(rows, match_a, match_b, key, op):
    a = {r["round"]: r[key] for r in rows if match_a(r)}
    b = {r["round"]: r[key] for r in rows if match_b(r)}
    return _median([op(a[k], b[k]) for k in a if k in b and a[k] is not None and b[k] is not None and b[k] != 0])


def _f(v, spec):
    return "–" if v is None else format(v, spec)


def summary(st):
    """Medians and per-round paired ratios, by (stream, variant) and (case, variant)."""
    tp, lat = st["throughput"], st["latency"]
    out = {"throughput": {}, "latency": {}}
    for s in st["streams"]:
        for v in NAMES:
            sel = [r for r in tp if r["stream"] == s["id"] and r["variant"] == v]
            if not sel:
                continue
            row = {k: _median([r[k] for r in sel]) for k in ("mb_per_s_wall", "mb_per_cpu_s", "cpu_ms_per_mb",
                                                            "request_ms_p50")}
            same = lambda name: (lambda r, n=name: r["stream"] == s["id"] and r["variant"] == n)  # noqa: E731
            if v != "bare":
                row["wall_x_bare"] = _paired(tp, same(v), same("bare"), "mb_per_s_wall", lambda x, y: x / y)
                row["cpu_x_bare"] = _paired(tp, same(v), same("bare"), "cpu_ms_per_mb", lambda x, y: x / y)
                added = _paired(tp, same(v), same("bare"), "cpu_ms_per_mb", lambda x, y: x - y)
                row["added_cpu_ms_per_mb"] = added
                row["mb_per_added_cpu_s"] = 1e3 / added if added and added > 0 else None
            row["streams"] = sum(r["requests"] for r in sel)
            out["throughput"][(s["id"], v)] = row
    for case in ("boundary", "midword"):
        for v in NAMES:
            sel = [r for r in lat if r["case"] == case and r["variant"] == v]
            if not sel:
                continue
            row = {k: _median([r[k] for r in sel]) for k in ("event_p50_ms", "event_p99_ms", "text_p50_ms",
                                                            "text_p99_ms", "text_max_ms")}
            same = lambda name: (lambda r, n=name: r["case"] == case and r["variant"] == n)  # noqa: E731
            if v != "bare":
                for k in ("event_p50_ms", "event_p99_ms", "text_p50_ms", "text_p99_ms"):
                    row[f"{k}_plus"] = _paired(lat, same(v), same("bare"), k, lambda x, y: x - y)
            row["events"] = sum(r["events"] for r in sel)
            # Every event of every round in one distribution (older results have no lists).
            for k in ("event_ms", "text_ms"):
                pooled = [x for r in sel for x in r.get(k, [])]
                row[f"pooled_{k[:-3]}_p50_ms"], row[f"pooled_{k[:-3]}_p99_ms"] = pct(pooled, 50), pct(pooled, 99)
            out["latency"][(case, v)] = row
    return out


def render(st):
    s = summary(st)
    cfg = st["settings"]
    L = ["### Streaming masking (`bash scripts/bench.sh --only streaming`)", ""]
    sizes = st["sizes"]
    L.append(f"Streams, each asked for again and again on one connection for {cfg['seconds']:g} s per run, "
             f"{cfg['rounds']} interleaved rounds: " + "; ".join(
                 f"**{x['id']}** {x['title']} ({sizes.get(x['id'], 0) / 1e6:.2f} MB)" for x in st["streams"]) + ".")
    L.append("")
    L.append("| Stream | Variant | MB/s wall | × bare | Envoy CPU ms/MB | CPU × bare | MB/s per worker "
             "(end to end) | MB/s per worker (masking only) |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for x in st["streams"]:
        for v in NAMES:
            r = s["throughput"].get((x["id"], v))
            if not r:
                continue
            L.append(f"| {x['id']} | {NAMES[v]} | {_f(r['mb_per_s_wall'], ',.1f')} | "
                     f"{_f(r.get('wall_x_bare'), '.2f')} | "
                     f"{_f(r['cpu_ms_per_mb'], '.2f')} | {_f(r.get('cpu_x_bare'), '.2f')} | "
                     f"{_f(r['mb_per_cpu_s'], ',.0f')} | "
                     f"{_f(r.get('mb_per_added_cpu_s') if v == 'airlock' else None, ',.0f')} |")
    L.append("")
    L.append("*MB/s per worker (end to end)* = upstream MB ÷ all of that Envoy's CPU seconds; *masking only* = "
             "÷ the CPU above bare Envoy for the same MB (median of per-round differences). MB = 10^6 bytes "
             "of the upstream's body.")
    L.append("")
    L.append(f"Delay per event ({cfg['latency_events']} deltas written {cfg['latency_interval_ms']} ms apart, "
             "send stamp to client `recv`, median over rounds of each stream's p50 / p99):")
    L.append("")
    L.append("| Deltas | Variant | event p50 ms | event p99 ms | text p50 ms | text p99 ms | added event p50 | "
             "added event p99 | added text p99 | all rounds: text p50 / p99 ms |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in ("boundary", "midword"):
        for v in NAMES:
            r = s["latency"].get((case, v))
            if not r:
                continue
            L.append(f"| {case} | {NAMES[v]} | {_f(r['event_p50_ms'], '.3f')} | {_f(r['event_p99_ms'], '.3f')} | "
                     f"{_f(r['text_p50_ms'], '.3f')} | {_f(r['text_p99_ms'], '.3f')} | "
                     f"{_f(r.get('event_p50_ms_plus'), '+.3f')} | {_f(r.get('event_p99_ms_plus'), '+.3f')} | "
                     f"{_f(r.get('text_p99_ms_plus'), '+.3f')} | "
                     f"{_f(r.get('pooled_text_p50_ms'), '.3f')} / {_f(r.get('pooled_text_p99_ms'), '.3f')} |")
    L.append("")
    L.append("*event*: until the event that carries the delta arrives; *text*: until the delta's last character "
             "has arrived (with a mid-word cut, the unfinished word comes with the next event). *added*: Airlock "
             "minus bare Envoy, per round, median. *all rounds*: every delta of every round in one "
             "distribution.")
    L.append("")
    return "\n".join(L) + "\n"


def targets(st):
    s = summary(st)
    lines = []
    for sid in ("sse", "ndjson"):
        r = s["throughput"].get((sid, "airlock"))
        v = r and r["mb_per_cpu_s"]
        lines.append(f"- Streaming masking ≥ {TARGET_MB_S:.0f} MB/s per worker ({sid}, end to end): "
                     f"{_f(v, ',.0f')} MB/s — {'**met**' if v and v >= TARGET_MB_S else '**missed**'}.")
    r = s["latency"].get(("boundary", "airlock"))
    add = r and r.get("text_p99_ms_plus")
    ok = add is not None and add < TARGET_ADDED_P99_MS
    lines.append(f"- A delta ending at a word boundary released with < {TARGET_ADDED_P99_MS:g} ms added at p99: "
                 f"{_f(add, '+.3f')} ms — {'**met**' if ok else '**missed**'}.")
    return lines


# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="stream clients (used by run.py)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    e = sub.add_parser("events")
    for p in (f, e):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--headers", default="{}")
        p.add_argument("--body", default="null")
    f.add_argument("--method", default="GET")
    f.add_argument("--path", required=True)
    f.add_argument("--seconds", type=float, default=3)
    f.add_argument("--min-requests", type=int, default=2)
    f.add_argument("--save", help="write the last body here")
    args = ap.parse_args()
    headers, body = json.loads(args.headers), json.loads(args.body)
    if args.cmd == "fetch":
        if args.save:
            sock = socket.create_connection(("127.0.0.1", args.port), timeout=120)
            sock.sendall(request_bytes(args.method, args.path, headers, body))
            status, _, resp = read_response(sock.makefile("rb"))
            sock.close()
            with open(args.save, "wb") as out:
                out.write(resp)
            res = {"requests": 1, "body_bytes": len(resp), "wall_s": 0, "statuses": {str(status): 1}, "request_s": 0}
        else:
            res = fetch(args.port, args.method, args.path, headers, body, args.seconds, args.min_requests)
            res["statuses"] = {str(k): v for k, v in res["statuses"].items()}
    else:
        res = events(args.port, headers, body)
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"stream: {e}", file=sys.stderr)
        sys.exit(1)

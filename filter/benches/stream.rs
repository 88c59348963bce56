//! Throughput of streaming masking (`airlock_filter::stream`): an SSE stream of small
//! OpenAI-style chat deltas (with and without PII), pushed one event per call as an LLM
//! API sends them and in 16 KiB network reads; NDJSON customer rows; a text body. Plain
//! `harness = false` bench, like `mask`:
//!
//!     cargo bench -p airlock-filter --bench stream
//!
//! Prints MB/s (10^6 bytes of stream per CPU second, best of many batches) and, for the
//! event-per-call cases, the CPU time of one `push` (p50/p99), i.e. the delay masking adds
//! to an event. An argument runs only the cases whose label contains it.

// A bench is test code: a failed unwrap is a bench bug, reported as such.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Instant;

use airlock_filter::mask::{compile_profile, MaskProfile, MaskProfileSpec};
use airlock_filter::stream::{StreamKind, StreamLimits, StreamMasker};

/// Small deterministic generator, so every run streams the same bytes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the", "customer", "asked", "about", "their", "order", "and", "we", "shipped", "it", "on", "Monday", "with",
    "tracking", "number", "attached", "so", "please", "let", "me", "know", "if", "anything", "else", "is", "needed",
];
const PII: &[&str] = &[
    "alice.martin@example.com",
    "4111 1111 1111 1111",
    "123-45-6789",
    "(415) 555-0134",
    "AKIAIOSFODNN7EXAMPLE",
    "DE89 3704 0044 0532 0130 00",
];

/// Prose of about `n` bytes; with `pii`, one value in every ~12 words.
fn prose(n: usize, pii: bool) -> String {
    let mut r = Lcg(7);
    let mut s = String::new();
    while s.len() < n {
        if pii && r.below(12) == 0 {
            s.push_str(PII[r.below(PII.len())]);
        } else {
            s.push_str(WORDS[r.below(WORDS.len())]);
        }
        s.push_str(match r.below(10) {
            0 => ", ",
            1 => ".\n",
            _ => " ",
        });
    }
    s
}

/// The text cut into OpenAI-style deltas of 1–3 words (a leading space each, as
/// tokenizers produce), one chat completion chunk event per delta.
fn chat_events(text: &str) -> Vec<String> {
    let mut r = Lcg(11);
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = 0;
        for _ in 0..r.below(3) + 1 {
            end = rest[end..].find(' ').map_or(rest.len(), |i| end + i + 1);
            if end >= rest.len() {
                break;
            }
        }
        let (delta, tail) = rest.split_at(end);
        rest = tail;
        let chunk = serde_json::json!({
            "id": "chatcmpl-9x8y7z6w5v4u3t2s1r", "object": "chat.completion.chunk", "created": 1_718_000_000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_a1b2c3d4e5",
            "choices": [{ "index": 0, "delta": { "content": delta }, "logprobs": null, "finish_reason": null }],
        });
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

fn ndjson_rows(n: usize) -> String {
    let mut r = Lcg(3);
    let mut s = String::new();
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            concat!(
                r#"{{"id":{i},"name":"Customer {i}","email":"user{i}@example.com","phone":"(415) 555-{p:04}","#,
                r#""ssn":"123-45-{p:04}","notes":"order {o} shipped; contact bob{i}@mail.example.org","active":true}}"#,
                "\n"
            ),
            i = i,
            p = 1000 + r.below(8999),
            o = r.next(),
        ));
        i += 1;
    }
    s
}

/// CPU time of this thread (Linux), else wall time: the machines are shared.
fn now() -> f64 {
    if let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
    {
        return ns as f64 / 1e9;
    }
    thread_local!(static START: Instant = Instant::now());
    START.with(|s| s.elapsed().as_secs_f64())
}

/// Best MB/s over many batches of ~20 ms.
fn measure(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut iters = 1u32;
    loop {
        let t = now();
        for _ in 0..iters {
            f();
        }
        if now() - t >= 0.02 {
            break;
        }
        iters *= 2;
    }
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = now();
        for _ in 0..iters {
            f();
        }
        best = best.min((now() - t) / f64::from(iters));
    }
    bytes as f64 / best / 1e6
}

/// Masks the whole stream, one `push` per chunk; returns the output size.
fn stream_once(kind: StreamKind, p: &MaskProfile, chunks: &[&[u8]], out: &mut Vec<u8>) -> usize {
    let mut m = StreamMasker::new(kind, StreamLimits::default());
    let mut total = 0;
    for c in chunks {
        out.clear();
        m.push(p, c, out).unwrap();
        total += out.len();
    }
    out.clear();
    m.finish(p, out).unwrap();
    total + out.len()
}

/// CPU time of each push (µs), p50 and p99, over the whole stream.
fn push_latency(kind: StreamKind, p: &MaskProfile, chunks: &[&[u8]]) -> (f64, f64) {
    let mut m = StreamMasker::new(kind, StreamLimits::default());
    let mut out = Vec::new();
    let mut times = Vec::with_capacity(chunks.len());
    for c in chunks {
        out.clear();
        let t = Instant::now();
        m.push(p, c, &mut out).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |label: &str| only.as_deref().is_none_or(|o| label.contains(o));
    let spec: MaskProfileSpec = serde_json::from_str(r#"{"detectors":["all"]}"#).unwrap();
    let p = compile_profile(spec, "bench").unwrap();

    let sse_pii: String = chat_events(&prose(200_000, true)).concat();
    let sse_clean: String = chat_events(&prose(200_000, false)).concat();
    let ndjson = ndjson_rows(1 << 20);
    let text = prose(1 << 20, true);

    println!("{:<48} {:>9} {:>8} {:>10} {:>10}", "case", "bytes", "MB/s", "push p50", "push p99");
    let cases: [(&str, StreamKind, &str, bool); 7] = [
        ("sse chat deltas with PII, event per push", StreamKind::Sse, &sse_pii, true),
        ("sse chat deltas with PII, 16 KiB pushes", StreamKind::Sse, &sse_pii, false),
        ("sse chat deltas without PII, event per push", StreamKind::Sse, &sse_clean, true),
        ("sse chat deltas without PII, 16 KiB pushes", StreamKind::Sse, &sse_clean, false),
        ("ndjson customer rows, 16 KiB pushes", StreamKind::Ndjson, &ndjson, false),
        ("text with PII, 16 KiB pushes", StreamKind::Text, &text, false),
        ("text with PII, 1 push", StreamKind::Text, &text, false),
    ];
    let mut out = Vec::new();
    for (label, kind, input, per_event) in cases {
        if !wanted(label) {
            continue;
        }
        let chunks: Vec<&[u8]> = if per_event {
            input.split_inclusive("\n\n").map(str::as_bytes).collect()
        } else if label.ends_with("1 push") {
            vec![input.as_bytes()]
        } else {
            input.as_bytes().chunks(16 * 1024).collect()
        };
        let mbs = measure(input.len(), || {
            black_box(stream_once(kind, &p, black_box(&chunks), &mut out));
        });
        let (p50, p99) = push_latency(kind, &p, &chunks);
        println!("{label:<48} {:>9} {mbs:>8.0} {:>8.1}µs {:>8.1}µs", input.len(), p50, p99);
    }
    let label = "reference: mask_json of the ndjson rows one by one";
    if wanted(label) {
        let rows: Vec<&str> = ndjson.lines().collect();
        let mbs = measure(ndjson.len(), || {
            for r in &rows {
                black_box(p.mask_json(black_box(r.as_bytes())).unwrap());
            }
        });
        println!("{label:<48} {:>9} {mbs:>8.0}", ndjson.len());
    }
    let label = "reference: mask_text of the text at once";
    if wanted(label) {
        let mbs = measure(text.len(), || {
            black_box(p.mask_text(black_box(&text)));
        });
        println!("{label:<48} {:>9} {mbs:>8.0}", text.len());
    }
}

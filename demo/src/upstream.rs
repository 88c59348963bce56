//! The demo upstream: the kind of service an AI agent calls, full of personal data and
//! with an endpoint that executes SQL for real.
//!
//! Every handler reads the request body (Envoy's `direct_response` would not, which hides
//! body-phase bugs in a filter), and nothing is logged per request so the service stays
//! out of the way when benchmarked behind Envoy.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::db::{Db, DbError};
use crate::pii::{seed_customers, Customer};

/// Largest request body the upstream reads (and largest `/large` answer): far above the
/// filter's limits, so the filter, not the upstream, is what a limit test measures.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// `/large` answer size when `bytes` is not given.
pub const DEFAULT_LARGE_BYTES: usize = 1024 * 1024;

/// Options of `airlock-demo upstream`.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    pub listen: SocketAddr,
    pub db: PathBuf,
    /// Tokio worker threads; `None` uses one per core.
    pub threads: Option<usize>,
}

struct AppState {
    db: Db,
    gzip_customers: Bytes,
    text: Bytes,
}

type Shared = Arc<AppState>;

/// Builds the router over an opened database. Public so tests can serve it in-process.
pub fn router(db: Db) -> Result<Router, String> {
    let state = Arc::new(AppState { db, gzip_customers: gzip_customers()?, text: Bytes::from(pii_text()) });
    Ok(Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/slow", get(slow))
        .route("/customers", get(list_customers))
        .route("/customers/{id}", get(one_customer))
        .route("/tables", get(tables))
        .route("/sql", post(sql))
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/text", get(text))
        .route("/gzip", get(gzip))
        .route("/escaped", get(escaped))
        .route("/customers/encoded", get(crate::encoded::encoded))
        .route("/customers/bomb", get(crate::encoded::bomb))
        .route("/large", get(large))
        .route("/stream", get(stream))
        .route("/v1/chat/completions", post(crate::llm::chat_completions))
        .route("/ndjson", get(crate::llm::ndjson))
        .route("/jsonl", get(crate::llm::jsonl))
        .route("/ranged", get(ranged))
        .route("/odd/{variant}", get(odd))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such endpoint: see `airlock-demo --help`") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state))
}

/// Runs the upstream until the process is stopped. Prints
/// `airlock-demo upstream listening on ADDR` on stdout once it accepts connections
/// (ADDR is the real address, useful with port 0).
pub fn run(opts: UpstreamOptions) -> Result<(), String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let pool = opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(2, 8);
    let db = Db::open(&opts.db, pool).map_err(|e| e.to_string())?;
    let app = router(db)?;
    runtime.block_on(async move {
        use axum::serve::ListenerExt as _;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        announce("upstream", addr)?;
        let listener = listener.tap_io(|tcp| {
            // Small JSON answers: do not let Nagle hold them back behind delayed ACKs.
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(|e| e.to_string())
    })
}

/// Prints the one line the e2e harness waits for, and flushes it at once.
pub(crate) fn announce(what: &str, addr: SocketAddr) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "airlock-demo {what} listening on {addr}").and_then(|_| out.flush()).map_err(|e| e.to_string())
}

pub(crate) async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

fn json_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn db_error(e: DbError) -> Response {
    json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

async fn list_customers(State(st): State<Shared>, _body: Bytes) -> Response {
    match st.db.customers() {
        Ok(rows) => {
            // Serialised straight from the rows (no intermediate `Value`): this is the
            // endpoint benchmarks hit.
            #[derive(serde::Serialize)]
            struct Body<'a> {
                customers: &'a [Customer],
            }
            match serde_json::to_vec(&Body { customers: &rows }) {
                Ok(bytes) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Err(e) => db_error(e),
    }
}

async fn one_customer(State(st): State<Shared>, Path(id): Path<String>, _body: Bytes) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return json_error(StatusCode::BAD_REQUEST, "customer id must be an integer");
    };
    match st.db.customer(id) {
        Ok(Some(c)) => json_response(StatusCode::OK, &json!(c)),
        Ok(None) => json_error(StatusCode::NOT_FOUND, &format!("no customer with id {id}")),
        Err(e) => db_error(e),
    }
}

async fn tables(State(st): State<Shared>, _body: Bytes) -> Response {
    match st.db.tables() {
        Ok(t) => json_response(StatusCode::OK, &json!({ "tables": t })),
        Err(e) => db_error(e),
    }
}

async fn sql(State(st): State<Shared>, body: Bytes) -> Response {
    let sql = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut o)) => match o.remove("sql") {
            Some(Value::String(s)) => s,
            _ => return json_error(StatusCode::BAD_REQUEST, "body must be {\"sql\": \"...\"} with a string"),
        },
        Ok(_) => return json_error(StatusCode::BAD_REQUEST, "body must be a JSON object {\"sql\": \"...\"}"),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("body is not valid JSON: {e}")),
    };
    // Arbitrary SQL can take a while: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || st.db.run_sql(&sql)).await;
    match result {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("SQL task failed: {e}")),
    }
}

/// Longest wait `/slow` accepts: well above any timeout a test sets in Envoy.
pub const MAX_SLOW_DELAY_MS: usize = 60_000;

/// `GET /slow?delay_ms=D`: answers `{"slept_ms": D}` after D milliseconds (default 1000),
/// holding nothing but a timer meanwhile: a slow upstream for Envoy's timeouts to answer
/// (the soak's slow-upstream phase, `scripts/bench/soak.py`).
async fn slow(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let delay_ms = match query_usize(&q, "delay_ms", 1000, MAX_SLOW_DELAY_MS) {
        Ok(n) => n,
        Err(msg) => return json_error(StatusCode::BAD_REQUEST, &msg),
    };
    tokio::time::sleep(Duration::from_millis(delay_ms as u64)).await;
    json_response(StatusCode::OK, &json!({ "slept_ms": delay_ms }))
}

/// Reflects the request: method, path with query, headers (lower-case names; repeated
/// headers joined with ", "), the body as lossy text and its length in bytes.
async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut hdrs: serde_json::Map<String, Value> = serde_json::Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match hdrs.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                hdrs.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let path = uri.path_and_query().map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    json_response(
        StatusCode::OK,
        &json!({
            "method": method.as_str(),
            "path": path,
            "headers": hdrs,
            "body": String::from_utf8_lossy(&body),
            "body_len": body.len(),
        }),
    )
}

async fn text(State(st): State<Shared>, _body: Bytes) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], st.text.clone()).into_response()
}

/// `GET /escaped?type=html|text|none`: customer contacts written the way pages and
/// JSON-in-text carry them (`\u0040`, `&#64;`, `&commat;`, `%40`, `&#52;…`), served as
/// `text/html`, `text/plain` or with no content type. Every value is plain to a reader.
async fn escaped(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let content_type = match q.get("type").map(String::as_str) {
        None | Some("html") => Some("text/html; charset=utf-8"),
        Some("text") => Some("text/plain"),
        Some("none") => None,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, "type must be html, text or none"),
    };
    let body = escaped_contacts();
    match content_type {
        Some(t) => (StatusCode::OK, [(header::CONTENT_TYPE, t)], body).into_response(),
        None => (StatusCode::OK, body).into_response(),
    }
}

/// The body of `/escaped`: one line per seed customer, each value escaped a different way.
pub fn escaped_contacts() -> String {
    let mut s = String::from("<p>Contacts</p>\n");
    for (i, c) in seed_customers().iter().take(8).enumerate() {
        let email = match i % 4 {
            0 => c.email.replace('@', "\\u0040"),
            1 => c.email.replace('@', "&#64;"),
            2 => c.email.replace('@', "&commat;").replace('.', "&period;"),
            _ => format!("mailto:{}", c.email.replace('@', "%40")),
        };
        let card = match c.card.split_at_checked(1) {
            Some((first, rest)) => format!("&#{};{rest}", u32::from(first.chars().next().unwrap_or('0'))),
            None => c.card.clone(),
        };
        s.push_str(&format!("<li>{} {email}, card {card}, ssn {}</li>\n", c.name, c.ssn.replace('-', "\\u002d")));
    }
    s
}

/// Always gzip, whatever the client accepts: a filter must not let compressed PII through.
async fn gzip(State(st): State<Shared>, _body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::CONTENT_ENCODING, "gzip")],
        st.gzip_customers.clone(),
    )
        .into_response()
}

/// A numeric query parameter; the error is the client-facing message.
fn query_usize(q: &HashMap<String, String>, name: &str, default: usize, max: usize) -> Result<usize, String> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("{name} must be an integer from 0 to {max}")),
        },
    }
}

async fn large(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let bytes = match query_usize(&q, "bytes", DEFAULT_LARGE_BYTES, MAX_BODY_BYTES) {
        Ok(n) => n,
        Err(msg) => return json_error(StatusCode::BAD_REQUEST, &msg),
    };
    let body = tokio::task::spawn_blocking(move || large_body(bytes)).await.unwrap_or_default();
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"customers":[...],"pad":"xxx"}` of exactly `n` bytes when `n >= 25` (smaller `n`
/// gives `{"customers":[]}`): customer rows repeated with increasing ids, then padding.
pub fn large_body(n: usize) -> Vec<u8> {
    const PREFIX: &[u8] = b"{\"customers\":[";
    const PAD_OPEN: &[u8] = b"],\"pad\":\"";
    const PAD_CLOSE: &[u8] = b"\"}";
    let overhead = PAD_OPEN.len() + PAD_CLOSE.len();
    let seeds = seed_customers();
    let mut out = Vec::with_capacity(n + 64);
    out.extend_from_slice(PREFIX);
    let mut id = 0i64;
    'fill: loop {
        for seed in &seeds {
            id += 1;
            let row = Customer { id, ..seed.clone() };
            let Ok(json) = serde_json::to_vec(&row) else {
                break 'fill;
            };
            let sep = usize::from(id > 1);
            if out.len() + sep + json.len() + overhead > n {
                break 'fill;
            }
            if sep == 1 {
                out.push(b',');
            }
            out.extend_from_slice(&json);
        }
    }
    if out.len() + overhead <= n {
        out.extend_from_slice(PAD_OPEN);
        let pad = n - out.len() - PAD_CLOSE.len();
        out.resize(out.len() + pad, b'x');
        out.extend_from_slice(PAD_CLOSE);
    } else {
        out.extend_from_slice(b"]}");
    }
    out
}

/// Server-sent events carrying PII, each event cut into chunks in the middle of the email
/// and of the card number, with a pause between chunks so they leave as separate writes.
async fn stream(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let events = match query_usize(&q, "events", 5, 1000) {
        Ok(n) => n,
        Err(msg) => return json_error(StatusCode::BAD_REQUEST, &msg),
    };
    let delay = match query_usize(&q, "delay_ms", 20, 2000) {
        Ok(n) => Duration::from_millis(n as u64),
        Err(msg) => return json_error(StatusCode::BAD_REQUEST, &msg),
    };
    let chunks = sse_chunks(events);
    let body = futures_util::stream::unfold((chunks.into_iter(), true), move |(mut it, first)| async move {
        let chunk = it.next()?;
        if !first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(chunk)), (it, false)))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response()
}

/// The chunks of `/stream`: `events` SSE events then `data: [DONE]`; their
/// concatenation is the full event text.
pub fn sse_chunks(events: usize) -> Vec<String> {
    let seeds = seed_customers();
    let mut chunks = Vec::with_capacity(events * 3 + 1);
    for (i, c) in seeds.iter().cycle().take(events).enumerate() {
        let event = format!(
            "id: {}\ndata: {}\n\n",
            i + 1,
            json!({"name": c.name, "email": c.email, "card": c.card, "ssn": c.ssn})
        );
        let mut cuts = Vec::new();
        for value in [&c.email, &c.card] {
            if let Some(pos) = event.find(value.as_str()) {
                cuts.push(floor_char_boundary(&event, pos + value.len() / 2));
            }
        }
        cuts.sort_unstable();
        let mut start = 0;
        for cut in cuts {
            if let Some(part) = event.get(start..cut) {
                chunks.push(part.to_string());
                start = cut;
            }
        }
        chunks.push(event.get(start..).unwrap_or_default().to_string());
    }
    chunks.push("data: [DONE]\n\n".to_string());
    chunks
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The seed customers as one JSON document, the body `/ranged` and `/odd` build on.
fn customers_json() -> Vec<u8> {
    serde_json::to_vec(&json!({ "customers": seed_customers() })).unwrap_or_default()
}

/// `GET /ranged`: the customers JSON, honouring `Range` like a file server would: one
/// range answers 206 with that fragment and `content-range`, several a
/// `multipart/byteranges` 206. A filter that let `Range` through would get a fragment.
async fn ranged(headers: HeaderMap, _body: Bytes) -> Response {
    let body = customers_json();
    let total = body.len();
    let spec = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("bytes="));
    let Some(spec) = spec else {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    };
    let ranges: Option<Vec<(usize, usize)>> = spec.split(',').map(|r| byte_range(r.trim(), total)).collect();
    let part = |(start, end): (usize, usize)| body.get(start..=end).unwrap_or_default().to_vec();
    match ranges.as_deref() {
        Some([one]) => (
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::CONTENT_RANGE, format!("bytes {}-{}/{total}", one.0, one.1)),
            ],
            part(*one),
        )
            .into_response(),
        Some(many) if !many.is_empty() => {
            let mut out = Vec::new();
            for range in many {
                let head = format!(
                    "--demo-ranges\r\ncontent-type: application/json\r\ncontent-range: bytes {}-{}/{total}\r\n\r\n",
                    range.0, range.1
                );
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(&part(*range));
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"--demo-ranges--\r\n");
            (StatusCode::PARTIAL_CONTENT, [(header::CONTENT_TYPE, "multipart/byteranges; boundary=demo-ranges")], out)
                .into_response()
        }
        _ => (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{total}"))]).into_response(),
    }
}

/// One `first-last`, `first-` or `-suffix` range of a body of `total` bytes, inclusive.
fn byte_range(spec: &str, total: usize) -> Option<(usize, usize)> {
    let (first, last) = spec.split_once('-')?;
    let last_byte = total.checked_sub(1)?;
    if first.is_empty() {
        let suffix = last.parse::<usize>().ok()?.min(total);
        return (suffix > 0).then(|| (total - suffix, last_byte));
    }
    let first = first.parse::<usize>().ok()?;
    let last = if last.is_empty() { last_byte } else { last.parse::<usize>().ok()?.min(last_byte) };
    (first <= last).then_some((first, last))
}

/// `GET /odd/{variant}`: the customers JSON (or text) in a form a masker must not take
/// at face value. See [`odd_body`] for the variants.
async fn odd(Path(variant): Path<String>, _body: Bytes) -> Response {
    if variant == "sse-tail" {
        return sse_tail();
    }
    match odd_body(&variant) {
        Some((content_type, body)) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "no such variant: see `airlock-demo --help`"),
    }
}

/// The events of `/odd/sse-tail`: plain-text data (one text across events, as SSE
/// clients join it) whose very last words are an email, and no `[DONE]`.
pub const SSE_TAIL_EVENTS: [&str; 3] = [
    "data: Refund approved for Alice Martin.\n\n",
    "data: Tell her the reference is R-2291 and\n\n",
    "data: write to alice.martin@example.com\n\n",
];

/// `/odd/sse-tail`: [`SSE_TAIL_EVENTS`] one write each, 50 ms apart, then the end of
/// the stream, which is all that tells a masker the last text is complete.
fn sse_tail() -> Response {
    let writes = SSE_TAIL_EVENTS.iter().map(|e| Bytes::from_static(e.as_bytes())).collect::<Vec<_>>();
    let body = futures_util::stream::unfold((writes.into_iter(), true), |(mut it, first)| async move {
        let write = it.next()?;
        if !first {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some((Ok::<Bytes, std::convert::Infallible>(write), (it, false)))
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

/// The content type and body of an `/odd` variant:
/// - `utf16`: JSON in UTF-16 (little-endian, with a BOM), `charset=utf-16`;
/// - `utf16-bom`: the same bytes under plain `application/json` (only the BOM tells);
/// - `utf16-text`: the text export in UTF-16LE without BOM or charset (NUL-interleaved);
/// - `utf16-ndjson`: customer rows as `application/x-ndjson; charset=utf-16`;
/// - `latin1`: the JSON under `charset=iso-8859-1`;
/// - `utf8-bom`: the JSON in UTF-8 preceded by a UTF-8 BOM;
/// - `not-json`: the text export (PII, not JSON) under `application/json`;
/// - `not-utf8`: the JSON with a byte that is not UTF-8 inside the first email.
pub fn odd_body(variant: &str) -> Option<(&'static str, Vec<u8>)> {
    let json = customers_json();
    let utf16 = |text: &[u8]| -> Vec<u8> {
        String::from_utf8_lossy(text).encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>()
    };
    let with = |prefix: &[u8], body: Vec<u8>| [prefix.to_vec(), body].concat();
    Some(match variant {
        "utf16" => ("application/json; charset=utf-16", with(&[0xFF, 0xFE], utf16(&json))),
        "utf16-bom" => ("application/json", with(&[0xFF, 0xFE], utf16(&json))),
        "utf16-text" => ("text/plain", utf16(pii_text().as_bytes())),
        "utf16-ndjson" => {
            let lines = crate::llm::ndjson_lines(3).concat();
            ("application/x-ndjson; charset=utf-16", with(&[0xFF, 0xFE], utf16(lines.as_bytes())))
        }
        "latin1" => ("application/json; charset=iso-8859-1", json),
        "utf8-bom" => ("application/json", with(&[0xEF, 0xBB, 0xBF], json)),
        "not-json" => ("application/json", pii_text().into_bytes()),
        "not-utf8" => {
            let mut body = json;
            if let Some(at) = body.iter().position(|b| *b == b'@') {
                body.insert(at, 0xFF);
            }
            ("application/json", body)
        }
        _ => return None,
    })
}

fn gzip_customers() -> Result<Bytes, String> {
    let json = serde_json::to_vec(&json!({ "customers": seed_customers() })).map_err(|e| e.to_string())?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json).map_err(|e| e.to_string())?;
    enc.finish().map(Bytes::from).map_err(|e| e.to_string())
}

/// `/text`: one line per seed customer plus secrets of other kinds (a cloud access key in
/// the format of AWS's documentation example, a JWT-shaped token, a PEM private-key block
/// with filler content). None of it is a real credential.
pub fn pii_text() -> String {
    let mut s = String::from("Customer export (demo data, not real people)\n\n");
    for c in seed_customers().iter().take(8) {
        s.push_str(&format!(
            "{} <{}>, phone {}, card {}, SSN {}, IBAN {}\n",
            c.name, c.email, c.phone, c.card, c.ssn, c.iban
        ));
    }
    s.push_str("\nDeploy notes\n");
    s.push_str("aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n");
    s.push_str(concat!(
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        ".eyJzdWIiOiJkZW1vLWFnZW50IiwibmFtZSI6IkRlbW8ifQ",
        ".c2lnbmF0dXJlLW5vdC12YWxpZC1kZW1vLW9ubHk\n"
    ));
    s.push_str("-----BEGIN PRIVATE KEY-----\n");
    s.push_str("MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAZGVtby1vbmx5LW5v\n");
    s.push_str("dC1hLXJlYWwta2V5LWZpbGxlci1jb250ZW50LWZvci1tYXNraW5nLXRlc3Rz\n");
    s.push_str("-----END PRIVATE KEY-----\n");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// One HTTP/1.1 GET to the router served on a loopback port: (status line, body, time taken).
    fn get_served(path: &str) -> (String, String, Duration) {
        use std::io::Read as _;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("airlock-demo-slow-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let app = router(Db::open(&dir.join("up.db"), 2).unwrap()).unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        let started = std::time::Instant::now();
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        write!(tcp, "GET {path} HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        tcp.read_to_string(&mut reply).unwrap();
        let took = started.elapsed();
        runtime.shutdown_background();
        let _ = std::fs::remove_dir_all(&dir);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string(), took)
    }

    #[test]
    fn slow_answers_only_after_the_delay_it_was_asked_for() {
        let (status, body, took) = get_served("/slow?delay_ms=300");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({ "slept_ms": 300 }));
        assert!(took >= Duration::from_millis(300), "answered after {took:?}");
    }

    #[test]
    fn slow_refuses_a_delay_it_cannot_honour_with_a_clear_error() {
        let (status, body, took) = get_served("/slow?delay_ms=60001");
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");
        assert!(body.contains("delay_ms must be an integer from 0 to 60000"), "{body}");
        assert!(took < Duration::from_secs(5), "the refusal waited {took:?}");
    }

    #[test]
    fn large_body_has_the_exact_requested_size_and_is_valid_json() {
        for n in [25usize, 100, 1000, 4096, 100_003] {
            let body = large_body(n);
            assert_eq!(body.len(), n, "size for {n}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["customers"].is_array());
        }
        let v: Value = serde_json::from_slice(&large_body(50_000)).unwrap();
        assert!(v["customers"].as_array().unwrap().len() > 50);
        assert_eq!(large_body(3), b"{\"customers\":[]}".to_vec());
    }

    #[test]
    fn sse_chunks_split_emails_and_cards_across_chunk_boundaries() {
        let chunks = sse_chunks(2);
        let whole: String = chunks.concat();
        let first = &seed_customers()[0];
        assert!(whole.contains(&first.email) && whole.contains(&first.card));
        assert!(chunks.iter().all(|c| !c.contains(&first.email) && !c.contains(&first.card)));
        assert!(whole.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn byte_ranges_are_read_as_a_file_server_reads_them() {
        assert_eq!(byte_range("0-40", 100), Some((0, 40)));
        assert_eq!(byte_range("90-", 100), Some((90, 99)));
        assert_eq!(byte_range("-10", 100), Some((90, 99)));
        assert_eq!(byte_range("50-500", 100), Some((50, 99)));
        assert_eq!(byte_range("60-50", 100), None);
        assert_eq!(byte_range("x-1", 100), None);
        assert_eq!(byte_range("0-1", 0), None);
    }

    #[test]
    fn odd_variants_are_the_customers_in_the_form_they_name() {
        let (ct, body) = odd_body("utf16").unwrap();
        assert_eq!(ct, "application/json; charset=utf-16");
        let units: Vec<u16> = body[2..].chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect();
        let v: Value = serde_json::from_str(&String::from_utf16(&units).unwrap()).unwrap();
        assert_eq!(v["customers"][0]["email"], "alice.martin@example.com");
        let (_, bom) = odd_body("utf8-bom").unwrap();
        assert!(serde_json::from_slice::<Value>(&bom[3..]).is_ok());
        let (_, broken) = odd_body("not-utf8").unwrap();
        assert!(std::str::from_utf8(&broken).is_err());
        assert!(odd_body("nope").is_none());
    }

    #[test]
    fn gzip_body_decompresses_to_the_customer_list() {
        use std::io::Read as _;
        let gz = gzip_customers().unwrap();
        let mut json = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut json).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["customers"][0]["email"], "alice.martin@example.com");
    }
}

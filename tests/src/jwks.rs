//! An in-process JWKS server the filter fetches keys from (through Envoy's `airlock_jwks`
//! cluster), controllable from the test: swap the document, count fetches, make it fail.
//!
//! Plain std networking, one thread per connection with HTTP/1.1 keep-alive, because
//! Envoy keeps its upstream connections open between fetches.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head accepted; Envoy's callouts are far smaller.
const MAX_HEAD: usize = 64 * 1024;

/// How the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksMode {
    /// 200 with the document for the path (the normal case).
    Serve,
    /// This HTTP status with a small JSON error body.
    Status(u16),
    /// Reads the request, then closes the connection without answering (a crashed or
    /// unreachable IdP, as Envoy sees it: a callout with no `:status`).
    Refuse,
    /// Waits this long, then serves (for callout timeout tests).
    Delay(Duration),
}

#[derive(Default)]
struct State {
    default_doc: Mutex<String>,
    docs: Mutex<HashMap<String, String>>,
    mode: Mutex<Option<JwksMode>>,
    paths: Mutex<Vec<String>>,
    fetches: AtomicU64,
    connections: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle to the running server; stops it on drop.
pub struct JwksServer {
    state: Arc<State>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl JwksServer {
    /// Starts on a free loopback port, serving `doc` at every path.
    pub fn start(doc: &str) -> Result<JwksServer, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("JWKS server: cannot bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(State::default());
        *lock(&state.default_doc) = doc.to_string();
        let st = Arc::clone(&state);
        let accept = std::thread::Builder::new()
            .name("jwks-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    st.connections.fetch_add(1, Ordering::SeqCst);
                    let st = Arc::clone(&st);
                    let _ = std::thread::Builder::new().name("jwks-conn".into()).spawn(move || serve_conn(conn, &st));
                }
            })
            .map_err(|e| format!("JWKS server: cannot start thread: {e}"))?;
        Ok(JwksServer { state, addr, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`, to fetch the document directly (not through Envoy).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the document served at every path without a document of its own.
    pub fn set_jwks(&self, doc: &str) {
        *lock(&self.state.default_doc) = doc.to_string();
    }

    /// Serves `doc` at exactly `path` (query ignored), e.g. an OIDC discovery document
    /// at `/.well-known/openid-configuration`.
    pub fn set_document(&self, path: &str, doc: &str) {
        lock(&self.state.docs).insert(path.to_string(), doc.to_string());
    }

    /// Changes how requests are answered from now on.
    pub fn set_mode(&self, mode: JwksMode) {
        *lock(&self.state.mode) = Some(mode);
    }

    /// Back to normal answers.
    pub fn serve(&self) {
        self.set_mode(JwksMode::Serve);
    }

    /// Answer every request with `status`.
    pub fn fail_with(&self, status: u16) {
        self.set_mode(JwksMode::Status(status));
    }

    /// Close every connection without answering.
    pub fn refuse(&self) {
        self.set_mode(JwksMode::Refuse);
    }

    /// Requests received so far, whatever the answer was.
    pub fn fetch_count(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (Envoy reuses one per worker between fetches).
    pub fn connection_count(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Paths (with query) of the requests received so far, oldest first.
    pub fn requested_paths(&self) -> Vec<String> {
        lock(&self.state.paths).clone()
    }

    /// Waits until at least `n` requests have been received; false on timeout.
    pub fn wait_for_fetches(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.fetch_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

struct Request {
    path: String,
    keep_alive: bool,
}

/// Reads one request (head and body) from `buf` + `conn`; `None` on EOF or garbage.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
        }
    };
    let head = String::from_utf8_lossy(buf.get(..head_end)?).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let _method = request_line.next()?;
    let path = request_line.next()?.to_string();
    let version = request_line.next().unwrap_or("HTTP/1.1");
    let mut content_length = 0usize;
    let mut keep_alive = version != "HTTP/1.0";
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().ok()?,
                "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
                "connection" if value.eq_ignore_ascii_case("keep-alive") => keep_alive = true,
                _ => {}
            }
        }
    }
    buf.drain(..head_end);
    while buf.len() < content_length {
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
        }
    }
    buf.drain(..content_length);
    Some(Request { path, keep_alive })
}

fn serve_conn(mut conn: TcpStream, st: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    while !st.stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut conn, &mut buf) else {
            return;
        };
        lock(&st.paths).push(req.path.clone());
        st.fetches.fetch_add(1, Ordering::SeqCst);
        let mode = lock(&st.mode).clone().unwrap_or(JwksMode::Serve);
        let (status, body) = match mode {
            JwksMode::Refuse => {
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
            JwksMode::Status(code) => (code, format!("{{\"error\":\"injected failure {code}\"}}")),
            JwksMode::Delay(d) => {
                std::thread::sleep(d);
                (200, document(st, &req.path))
            }
            JwksMode::Serve => (200, document(st, &req.path)),
        };
        let response = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            reason(status),
            body.len(),
            if req.keep_alive { "" } else { "connection: close\r\n" }
        );
        if conn.write_all(response.as_bytes()).is_err() || !req.keep_alive {
            return;
        }
    }
}

fn document(st: &State, path: &str) -> String {
    let bare = path.split('?').next().unwrap_or(path);
    lock(&st.docs).get(bare).cloned().unwrap_or_else(|| lock(&st.default_doc).clone())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(agent: &ureq::Agent, url: &str) -> Result<crate::Reply, String> {
        crate::http::send(agent, "GET", url, &[], None)
    }

    #[test]
    fn serves_counts_and_swaps_documents_over_one_keep_alive_connection() {
        let server = JwksServer::start(r#"{"keys":[]}"#).unwrap();
        let agent = crate::http::agent();
        assert_eq!(get(&agent, &server.url("/jwks.json")).unwrap().text(), r#"{"keys":[]}"#);
        server.set_jwks(r#"{"keys":[{"kid":"k2"}]}"#);
        server.set_document("/.well-known/openid-configuration", r#"{"jwks_uri":"x"}"#);
        assert_eq!(get(&agent, &server.url("/jwks.json?x=1")).unwrap().text(), r#"{"keys":[{"kid":"k2"}]}"#);
        assert_eq!(
            get(&agent, &server.url("/.well-known/openid-configuration")).unwrap().text(),
            r#"{"jwks_uri":"x"}"#
        );
        assert_eq!(server.fetch_count(), 3);
        assert_eq!(server.connection_count(), 1, "keep-alive: one connection for three requests");
        assert_eq!(server.requested_paths()[1], "/jwks.json?x=1");
    }

    #[test]
    fn fails_with_a_status_or_closes_without_answering_when_told() {
        let server = JwksServer::start("{}").unwrap();
        let agent = crate::http::agent();
        server.fail_with(500);
        let reply = get(&agent, &server.url("/")).unwrap();
        assert_eq!(reply.status, 500);
        assert!(reply.text().contains("injected failure"));
        server.refuse();
        assert!(get(&agent, &server.url("/")).is_err());
        server.serve();
        assert_eq!(get(&agent, &server.url("/")).unwrap().status, 200);
        assert!(server.wait_for_fetches(3, Duration::from_secs(1)));
        assert!(!server.wait_for_fetches(10, Duration::from_millis(100)));
    }
}

//! A local HTTP/1.1 server that answers `200 {"ok":true}` to every request and records
//! what reached it: connections, and each request's method, path, headers and body. It
//! stands in for an alert sink (what did the control service send?) and for an upstream
//! whose every connection matters (did anything arrive before Airlock decided?).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: Mutex<Vec<Received>>,
}

pub struct Recorder {
    port: u16,
    seen: Arc<Seen>,
}

impl Recorder {
    pub fn start() -> Result<Recorder, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("recorder: cannot bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let seen = Arc::new(Seen::default());
        let store = Arc::clone(&seen);
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    store.connections.fetch_add(1, Ordering::SeqCst);
                    let store = Arc::clone(&store);
                    let _ = std::thread::Builder::new().name("recorder-conn".into()).spawn(move || serve(conn, &store));
                }
            })
            .map_err(|e| format!("recorder: cannot start thread: {e}"))?;
        Ok(Recorder { port, seen })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Requests so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.seen.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `n` requests to `path` arrived or `within` passed; returns their JSON
    /// bodies.
    pub fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Value> = self.requests().iter().filter(|r| r.path == path).map(Received::json).collect();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Answers every request on a keep-alive connection until the peer closes it.
fn serve(conn: TcpStream, seen: &Seen) {
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    while let Some(request) = read_request(&mut reader) {
        seen.requests.lock().unwrap_or_else(|e| e.into_inner()).push(request);
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

/// One request with a `content-length` or chunked body (or none).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(chunk.get(..size)?);
        }
    } else if let Some(length) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
    }
    Some(Received { method, path, headers, body })
}

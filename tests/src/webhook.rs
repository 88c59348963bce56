//! A local alert receiver: accepts HTTP POSTs on loopback, answers 200 and keeps each
//! request's path and JSON body, so tests can read what the control service sent to a
//! webhook or Slack sink.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One delivery: the request path and its body parsed as JSON (`Null` if it was not).
pub type Delivery = (String, Value);

pub struct WebhookReceiver {
    port: u16,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl WebhookReceiver {
    pub fn start() -> Result<WebhookReceiver, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("webhook receiver: cannot bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&seen);
        std::thread::Builder::new()
            .name("webhook-receiver".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Some(delivery) = receive(conn) {
                        store.lock().unwrap_or_else(|e| e.into_inner()).push(delivery);
                    }
                }
            })
            .map_err(|e| format!("webhook receiver: cannot start thread: {e}"))?;
        Ok(WebhookReceiver { port, seen })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Deliveries so far, in arrival order.
    pub fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `n` deliveries to `path` arrived or `within` passed; returns them.
    pub fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Value> = self.seen().into_iter().filter(|(p, _)| p == path).map(|(_, v)| v).collect();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads one request (content-length bodies, which is what the service sends) and
/// answers 200 with `connection: close`.
fn receive(conn: TcpStream) -> Option<Delivery> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut conn = conn;
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    Some((path, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

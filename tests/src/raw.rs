//! Raw HTTP/1.1 over a `TcpStream`, for requests no well-behaved client library sends:
//! header values with non-UTF-8 bytes, chunked bodies whose chunks arrive separately.
//!
//! Requests should carry `connection: close`: the reply is read until the peer closes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reply read off the wire: the same type the client library's answers use (the body
/// de-chunked if it came chunked).
pub use crate::http::Reply as RawReply;

/// Sends `parts` one after the other to `127.0.0.1:port`, sleeping `pause` between
/// them (so they leave as separate TCP segments and reach Envoy as separate reads),
/// then reads the reply until the connection closes or `timeout` passes.
pub fn exchange(port: u16, parts: &[&[u8]], pause: Duration, timeout: Duration) -> Result<RawReply, String> {
    let mut conn =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
        // The peer may answer and close before every part is sent (a refusal after the
        // headers): the reply is what matters, so a failed write is not an error.
        if conn.write_all(part).and_then(|_| conn.flush()).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => return Err(format!("no reply from 127.0.0.1:{port}: {e}")),
            Err(_) => break,
        }
    }
    parse_reply(&raw)
}

/// Parses a complete HTTP/1.1 reply (head and body up to EOF).
pub fn parse_reply(raw: &[u8]) -> Result<RawReply, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("reply has no complete head: {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok())
    {
        rest.get(..len).ok_or_else(|| format!("body shorter than content-length {len}: {}", rest.len()))?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawReply { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end =
            rest.windows(2).position(|w| w == b"\r\n").ok_or("chunked body cut short (no chunk-size line)")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("chunked body cut short (chunk shorter than its size)")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("chunked body cut short (no CRLF after a chunk)")?;
    }
}

/// The bytes of one chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_chunked_reply_into_its_body() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
        let reply = parse_reply(raw).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"abcde");
        assert_eq!(reply.header("x-a"), Some("b"));
    }

    #[test]
    fn parses_a_content_length_reply_and_ignores_bytes_after_the_body() {
        let reply = parse_reply(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nokXX").unwrap();
        assert_eq!(reply.status, 403);
        assert_eq!(reply.body, b"ok");
    }

    #[test]
    fn chunk_writes_hex_size_data_and_crlf() {
        assert_eq!(chunk(b"0123456789abcdef!"), b"11\r\n0123456789abcdef!\r\n".to_vec());
    }

    #[test]
    fn a_cut_chunked_body_is_an_error_not_a_short_body() {
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab").is_err());
    }
}

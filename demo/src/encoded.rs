//! Compressed answers, whatever the client accepts: the upstreams a masking filter must
//! not let slip through (under `/customers/`, where the shipped rules mask). `encoded`
//! serves the customer JSON, SSE events or NDJSON rows under any `content-encoding`
//! (stacked ones too); `bomb` streams a decompression bomb, compressed on the fly so that
//! a gigabyte of it costs neither memory nor a stored file.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::llm::ndjson_lines;
use crate::pii::seed_customers;
use crate::upstream::sse_chunks;

/// Largest `/bomb` (decompressed): 16 GiB.
pub const MAX_BOMB_BYTES: u64 = 16 << 30;
/// `/bomb` size when `bytes` is not given: 1 GiB.
pub const DEFAULT_BOMB_BYTES: u64 = 1 << 30;
/// Padding fed to the bomb's encoder per step.
const BOMB_STEP: usize = 256 * 1024;

/// One content coding of `?encoding=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 9110 section 8.4.1.2).
    Deflate,
    Br,
    Zstd,
    Identity,
    /// Any other token: named in the header, the body left as it is.
    Label(String),
}

impl Coding {
    pub fn parse(token: &str) -> Coding {
        match token.trim().to_ascii_lowercase().as_str() {
            "gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Br,
            "zstd" => Coding::Zstd,
            "identity" => Coding::Identity,
            _ => Coding::Label(token.trim().to_string()),
        }
    }

    /// The `content-encoding` token.
    pub fn name(&self) -> &str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Identity => "identity",
            Coding::Label(name) => name,
        }
    }
}

/// Where an encoder writes: shared so its output can be taken while it still runs.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A streaming encoder for one coding; `flush` ends a block so that what was written so
/// far can be decoded (one SSE event arrives as one decodable piece).
enum Encoder {
    Gzip(flate2::write::GzEncoder<Sink>),
    Deflate(flate2::write::ZlibEncoder<Sink>),
    Br(Box<brotli::CompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Encoder<'static, Sink>),
    Plain(Sink),
}

impl Encoder {
    fn new(coding: &Coding, sink: Sink) -> std::io::Result<Encoder> {
        let level = flate2::Compression::default();
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(sink, level)),
            Coding::Deflate => Encoder::Deflate(flate2::write::ZlibEncoder::new(sink, level)),
            // Quality 5 of 11: the highest qualities take seconds for a gigabyte bomb.
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(sink, 4096, 5, 22))),
            Coding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(sink, 3)?),
            Coding::Identity | Coding::Label(_) => Encoder::Plain(sink),
        })
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Deflate(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
            Encoder::Plain(e) => e.write_all(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Deflate(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Plain(_) => Ok(()),
        }
    }

    /// Writes the coding's trailer (checksum, end marker).
    fn finish(self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.finish().map(drop),
            Encoder::Deflate(e) => e.finish().map(drop),
            // Dropping the writer ends the brotli stream.
            Encoder::Br(e) => {
                drop(e);
                Ok(())
            }
            Encoder::Zstd(e) => e.finish().map(drop),
            Encoder::Plain(_) => Ok(()),
        }
    }
}

/// `data` encoded with each coding in turn (the order of the `content-encoding` list).
pub fn encode(codings: &[Coding], data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = data.to_vec();
    for coding in codings {
        let sink = Sink::default();
        let mut encoder = Encoder::new(coding, sink.clone())?;
        encoder.write_all(&body)?;
        encoder.finish()?;
        body = sink.take();
    }
    Ok(body)
}

/// `pieces` through one encoder, flushed after each: the writes of a compressed stream.
pub fn encode_pieces(coding: &Coding, pieces: &[String]) -> std::io::Result<Vec<Bytes>> {
    let sink = Sink::default();
    let mut encoder = Encoder::new(coding, sink.clone())?;
    let mut writes = Vec::with_capacity(pieces.len() + 1);
    for piece in pieces {
        encoder.write_all(piece.as_bytes())?;
        encoder.flush()?;
        writes.push(Bytes::from(sink.take()));
    }
    encoder.finish()?;
    writes.push(Bytes::from(sink.take()));
    writes.retain(|w| !w.is_empty());
    Ok(writes)
}

/// The `content-encoding` list of `?encoding=` (default `gzip`).
fn codings(q: &HashMap<String, String>) -> Vec<Coding> {
    q.get("encoding")
        .map_or("gzip", String::as_str)
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(Coding::parse)
        .collect()
}

fn header_value(codings: &[Coding]) -> HeaderValue {
    let list: Vec<&str> = codings.iter().map(Coding::name).collect();
    HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("x-invalid"))
}

fn bad_request(message: &str) -> Response {
    let body = json!({ "error": message }).to_string();
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /customers/encoded?encoding=LIST&as=json|sse|ndjson&delay_ms=D`.
pub async fn encoded(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let codings = codings(&q);
    let delay = match q.get("delay_ms").map(|v| v.parse::<u64>()) {
        None => Duration::from_millis(20),
        Some(Ok(ms)) if ms <= 2000 => Duration::from_millis(ms),
        Some(_) => return bad_request("delay_ms must be an integer from 0 to 2000"),
    };
    let (content_type, pieces) = match q.get("as").map_or("json", String::as_str) {
        "json" => {
            let body = json!({ "customers": seed_customers() }).to_string();
            return match encode(&codings, body.as_bytes()) {
                Ok(bytes) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    [(header::CONTENT_ENCODING, header_value(&codings))],
                    bytes,
                )
                    .into_response(),
                Err(e) => bad_request(&format!("cannot encode: {e}")),
            };
        }
        "sse" => ("text/event-stream", sse_chunks(5)),
        "ndjson" => ("application/x-ndjson", ndjson_lines(10)),
        _ => return bad_request("as must be json, sse or ndjson"),
    };
    let [coding] = codings.as_slice() else {
        return bad_request("a streamed answer takes exactly one coding");
    };
    let writes = match encode_pieces(coding, &pieces) {
        Ok(w) => w,
        Err(e) => return bad_request(&format!("cannot encode: {e}")),
    };
    let body = futures_util::stream::unfold((writes.into_iter(), true), move |(mut it, first)| async move {
        let write = it.next()?;
        if !first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<Bytes, std::convert::Infallible>(write), (it, false)))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_ENCODING, header_value(&codings)),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `GET /customers/bomb?encoding=gzip|deflate|br|zstd&bytes=N`: `{"customers":[],"pad":"xx…x"}` of
/// N bytes once decoded, encoded as it is sent. A few kilobytes per megabyte on the wire.
pub async fn bomb(Query(q): Query<HashMap<String, String>>, _body: Bytes) -> Response {
    let codings = codings(&q);
    let [coding] = codings.as_slice() else {
        return bad_request("a bomb takes exactly one coding");
    };
    let bytes = match q.get("bytes").map(|v| v.parse::<u64>()) {
        None => DEFAULT_BOMB_BYTES,
        Some(Ok(n)) if n <= MAX_BOMB_BYTES => n,
        Some(_) => return bad_request(&format!("bytes must be an integer from 0 to {MAX_BOMB_BYTES}")),
    };
    let sink = Sink::default();
    let encoder = match Encoder::new(coding, sink.clone()) {
        Ok(e) => e,
        Err(e) => return bad_request(&format!("cannot encode: {e}")),
    };
    let body = futures_util::stream::unfold(BombState::new(encoder, sink, bytes), |mut state| async move {
        let chunk = state.next()?;
        Some((chunk, state))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CONTENT_ENCODING, header_value(&codings)),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

const BOMB_HEAD: &[u8] = b"{\"customers\":[],\"pad\":\"";
const BOMB_TAIL: &[u8] = b"\"}";

/// The bomb being written: the padding still to feed the encoder.
struct BombState {
    encoder: Option<Encoder>,
    sink: Sink,
    started: bool,
    pad_left: u64,
}

impl BombState {
    fn new(encoder: Encoder, sink: Sink, bytes: u64) -> Self {
        let frame = (BOMB_HEAD.len() + BOMB_TAIL.len()) as u64;
        BombState { encoder: Some(encoder), sink, started: false, pad_left: bytes.saturating_sub(frame) }
    }

    /// The next non-empty piece of encoded output; `None` once the trailer is out.
    fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        let pad = [b'x'; BOMB_STEP];
        loop {
            let mut encoder = self.encoder.take()?;
            let step = if !self.started {
                self.started = true;
                encoder.write_all(BOMB_HEAD)
            } else if self.pad_left > 0 {
                let n = usize::try_from(self.pad_left.min(BOMB_STEP as u64)).unwrap_or(BOMB_STEP);
                self.pad_left -= n as u64;
                encoder.write_all(pad.get(..n).unwrap_or_default())
            } else {
                let done = encoder.write_all(BOMB_TAIL).and_then(|_| encoder.finish());
                let out = self.sink.take();
                return Some(done.map(|_| Bytes::from(out)));
            };
            if let Err(e) = step {
                return Some(Err(e));
            }
            self.encoder = Some(encoder);
            let out = self.sink.take();
            if !out.is_empty() {
                return Some(Ok(Bytes::from(out)));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn decode(coding: &Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).unwrap(),
            Coding::Deflate => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out).unwrap(),
            Coding::Br => brotli::Decompressor::new(data, 4096).read_to_end(&mut out).unwrap(),
            Coding::Zstd => zstd::stream::read::Decoder::new(data).unwrap().read_to_end(&mut out).unwrap(),
            Coding::Identity | Coding::Label(_) => {
                out = data.to_vec();
                out.len()
            }
        };
        out
    }

    #[test]
    fn every_coding_round_trips_and_stacked_ones_apply_in_list_order() {
        let data = b"{\"email\":\"alice.martin@example.com\"}".repeat(20);
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd] {
            let encoded = encode(std::slice::from_ref(&coding), &data).unwrap();
            assert_ne!(encoded, data, "{coding:?}");
            assert_eq!(decode(&coding, &encoded), data, "{coding:?}");
        }
        let stacked = encode(&[Coding::Gzip, Coding::Br], &data).unwrap();
        assert_eq!(decode(&Coding::Gzip, &decode(&Coding::Br, &stacked)), data);
        assert_eq!(encode(&[Coding::parse("compress")], &data).unwrap(), data);
    }

    #[test]
    fn flushed_pieces_decode_piece_by_piece_to_the_whole_stream() {
        let pieces: Vec<String> = (0..4).map(|i| format!("data: {{\"n\":{i}}}\n\n")).collect();
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let writes = encode_pieces(&coding, &pieces).unwrap();
            assert!(writes.len() >= pieces.len(), "{coding:?}: {} writes", writes.len());
            let whole: Vec<u8> = writes.concat();
            assert_eq!(decode(&coding, &whole), pieces.concat().into_bytes(), "{coding:?}");
        }
    }

    #[test]
    fn a_bomb_decodes_to_exactly_the_requested_size_of_json_and_is_small_on_the_wire() {
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let sink = Sink::default();
            let mut state = BombState::new(Encoder::new(&coding, sink.clone()).unwrap(), sink, 3_000_000);
            let mut wire = Vec::new();
            while let Some(chunk) = state.next() {
                wire.extend_from_slice(&chunk.unwrap());
            }
            assert!(wire.len() < 30_000, "{coding:?}: {} bytes on the wire", wire.len());
            let plain = decode(&coding, &wire);
            assert_eq!(plain.len(), 3_000_000, "{coding:?}");
            let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(v["customers"], json!([]));
        }
    }
}

//! Compressed response bodies on masked routes: `gzip`, `deflate` and `br` are decoded inside
//! the filter, so the masker sees what the client would read, and the client gets the
//! decoded, masked body (without `content-encoding`).
//!
//! Why here and not Envoy's `decompressor` filter: measured with Envoy 1.40, that filter
//! ends a decompression bomb or a corrupt body as if it were complete (status 200, only
//! its stats say otherwise), and the trailers it appends never reach a Wasm filter that
//! holds a buffered response, which then hangs. Decoding here gives exact errors and
//! Airlock's own bounds.
//!
//! Bounds, against decompression bombs: the decoded bytes never exceed `max_output`, and
//! past the first [`RATIO_FLOOR`] bytes never exceed [`MAX_RATIO`] times the compressed
//! bytes received so far, checked as the output is produced (a bomb costs at most that
//! much memory and time, never more). `zstd` and stacked codings are not decoded:
//! [`encoding`] names them, and the caller refuses them.

use std::fmt;
use std::io::{self, Write};

use brotli_decompressor::DecompressorWriter as BrotliDecoder;
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// Decoded bytes allowed for each compressed byte, past [`RATIO_FLOOR`]. Text and JSON
/// compress 3–20×, repetitive JSON rows up to ~100×; deflate's own maximum is ~1032×.
pub const MAX_RATIO: u64 = 200;
/// Decoded bytes always allowed, whatever the ratio (small bodies compress very well).
pub const RATIO_FLOOR: u64 = 1 << 20;

/// A coding Airlock decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped per RFC 9110, raw deflate as some servers send it.
    Deflate,
    /// `br` (RFC 7932).
    Brotli,
}

/// What a response's `content-encoding` asks of the masker.
#[derive(Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Absent, empty or `identity`.
    Identity,
    Decode(Coding),
    /// Codings Airlock does not decode (listed, as the header names them).
    Unsupported(String),
}

/// Reads a `content-encoding` value: case, spacing and `identity` entries are ignored;
/// more than one coding (stacked) is not decoded.
pub fn encoding(value: &str) -> Encoding {
    let codings: Vec<&str> =
        value.split(',').map(str::trim).filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")).collect();
    match codings.as_slice() {
        [] => Encoding::Identity,
        [one] if one.eq_ignore_ascii_case("gzip") || one.eq_ignore_ascii_case("x-gzip") => {
            Encoding::Decode(Coding::Gzip)
        }
        [one] if one.eq_ignore_ascii_case("deflate") => Encoding::Decode(Coding::Deflate),
        [one] if one.eq_ignore_ascii_case("br") => Encoding::Decode(Coding::Brotli),
        _ => Encoding::Unsupported(codings.join(", ")),
    }
}

/// Why a body could not be decoded. Messages name the bound or the problem, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// More decoded bytes than the caller allows (`max_output`).
    TooLarge { limit: u64 },
    /// More than [`MAX_RATIO`] decoded bytes per compressed byte: a decompression bomb.
    Ratio,
    /// Not valid data of its coding (or cut short).
    Corrupt(Coding),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { limit } => write!(f, "the decoded body exceeds {limit} bytes"),
            DecodeError::Ratio => {
                write!(f, "the body decodes to more than {MAX_RATIO} times its compressed size (a decompression bomb)")
            }
            DecodeError::Corrupt(c) => write!(f, "the body is not valid {} data", c.name()),
        }
    }
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// Decodes one body, chunk by chunk as it arrives.
pub struct Decoder {
    coding: Coding,
    state: State,
    max_output: u64,
    /// Compressed bytes received so far.
    input: u64,
}

enum State {
    /// `deflate` until its first two bytes tell zlib from raw deflate.
    Sniffing(Vec<u8>),
    Gzip(MultiGzDecoder<Sink>),
    Zlib(ZlibDecoder<Sink>),
    Raw(DeflateDecoder<Sink>),
    Brotli(Box<BrotliDecoder<Sink>>),
    /// An error was reported; nothing more is decoded.
    Failed,
}

impl Decoder {
    /// A decoder whose whole output may not exceed `max_output` bytes.
    pub fn new(coding: Coding, max_output: u64) -> Self {
        let state = match coding {
            Coding::Gzip => State::Gzip(MultiGzDecoder::new(Sink::default())),
            Coding::Deflate => State::Sniffing(Vec::new()),
            Coding::Brotli => State::Brotli(Box::new(BrotliDecoder::new(Sink::default(), BROTLI_BUFFER))),
        };
        Decoder { coding, state, max_output, input: 0 }
    }

    /// Decodes `chunk` and appends what it decodes to (so far) to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.input += chunk.len() as u64;
        if let State::Sniffing(head) = &mut self.state {
            head.extend_from_slice(chunk);
            if head.len() < 2 {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.state = if is_zlib_header(&head) {
                State::Zlib(ZlibDecoder::new(Sink::default()))
            } else {
                State::Raw(DeflateDecoder::new(Sink::default()))
            };
            return self.decode(&head, out);
        }
        self.decode(chunk, out)
    }

    /// The body has ended: decodes what is left and checks the data ended properly.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let State::Sniffing(head) = &self.state {
            return if head.is_empty() { Ok(()) } else { self.fail(DecodeError::Corrupt(self.coding)) };
        }
        let limit = self.allowed();
        let done = match &mut self.state {
            State::Gzip(d) => finish_into(d, limit),
            State::Zlib(d) => finish_into(d, limit),
            State::Raw(d) => finish_into(d, limit),
            State::Brotli(d) => finish_into(d.as_mut(), limit),
            State::Sniffing(_) | State::Failed => return Err(DecodeError::Corrupt(self.coding)),
        };
        self.drain(done, limit, out)
    }

    /// Whole-body decoding: `body` is all of it.
    pub fn decode_all(coding: Coding, body: &[u8], max_output: u64) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = Decoder::new(coding, max_output);
        let mut out = Vec::new();
        decoder.push(body, &mut out)?;
        decoder.finish(&mut out)?;
        Ok(out)
    }

    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let limit = self.allowed();
        let done = match &mut self.state {
            State::Gzip(d) => write_into(d, chunk, limit),
            State::Zlib(d) => write_into(d, chunk, limit),
            State::Raw(d) => write_into(d, chunk, limit),
            State::Brotli(d) => write_into(d.as_mut(), chunk, limit),
            State::Sniffing(_) | State::Failed => return Err(DecodeError::Corrupt(self.coding)),
        };
        self.drain(done, limit, out)
    }

    /// The decoded total allowed now: the caller's bound, and the ratio past its floor.
    fn allowed(&self) -> u64 {
        self.max_output.min(RATIO_FLOOR.max(self.input.saturating_mul(MAX_RATIO)))
    }

    /// Moves the decoded bytes to `out`, or turns a failed write into its reason (`limit`:
    /// the bound the write ran under).
    fn drain(&mut self, done: Result<(), Stop>, limit: u64, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let sink = match &mut self.state {
            State::Gzip(d) => d.get_mut(),
            State::Zlib(d) => d.get_mut(),
            State::Raw(d) => d.get_mut(),
            State::Brotli(d) => d.get_mut(),
            State::Sniffing(_) | State::Failed => return Ok(()),
        };
        match done {
            Ok(()) => {
                out.append(&mut sink.buf);
                Ok(())
            }
            Err(Stop::Bound) if limit >= self.max_output => {
                let limit = self.max_output;
                self.fail(DecodeError::TooLarge { limit })
            }
            Err(Stop::Bound) => self.fail(DecodeError::Ratio),
            Err(Stop::Corrupt) => self.fail(DecodeError::Corrupt(self.coding)),
        }
    }

    fn fail(&mut self, e: DecodeError) -> Result<(), DecodeError> {
        self.state = State::Failed;
        Err(e)
    }
}

/// The brotli decoder's output buffer (its window is allocated as the stream asks).
const BROTLI_BUFFER: usize = 4096;

/// zlib's two-byte header (RFC 1950): method 8 (deflate), window ≤ 32 KiB, and a check
/// that makes the pair a multiple of 31. Raw deflate data almost never starts so.
fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Why a decoder stopped writing.
enum Stop {
    /// The sink reached its bound.
    Bound,
    Corrupt,
}

/// The decoders' flate2 `Write` side, with the sink's bound set before each call.
trait Bounded: Write {
    fn sink(&mut self) -> &mut Sink;
}

impl Bounded for MultiGzDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

impl Bounded for ZlibDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

impl Bounded for DeflateDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

impl Bounded for BrotliDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

fn write_into(d: &mut impl Bounded, chunk: &[u8], limit: u64) -> Result<(), Stop> {
    d.sink().limit = limit;
    let done = d.write_all(chunk).and_then(|()| d.flush());
    classify(d, done)
}

fn finish_into<D: Bounded + Finish>(d: &mut D, limit: u64) -> Result<(), Stop> {
    d.sink().limit = limit;
    let done = d.finish_data();
    classify(d, done)
}

fn classify(d: &mut impl Bounded, done: io::Result<()>) -> Result<(), Stop> {
    match done {
        Ok(()) => Ok(()),
        Err(_) if d.sink().hit_bound => Err(Stop::Bound),
        Err(_) => Err(Stop::Corrupt),
    }
}

/// Ending the data: flushes the decoder and checks the stream was complete.
trait Finish {
    fn finish_data(&mut self) -> io::Result<()>;
}

impl Finish for MultiGzDecoder<Sink> {
    fn finish_data(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl Finish for ZlibDecoder<Sink> {
    fn finish_data(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl Finish for DeflateDecoder<Sink> {
    fn finish_data(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl Finish for BrotliDecoder<Sink> {
    /// Fails when the data ended before the brotli stream did.
    fn finish_data(&mut self) -> io::Result<()> {
        self.close()
    }
}

/// Collects decoded bytes, refusing any beyond `limit` in all.
#[derive(Default)]
struct Sink {
    buf: Vec<u8>,
    total: u64,
    limit: u64,
    hit_bound: bool,
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.total + b.len() as u64 > self.limit {
            self.hit_bound = true;
            return Err(io::Error::other("decoded size bound reached"));
        }
        self.total += b.len() as u64;
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(data).unwrap();
        }
        out
    }

    const BODY: &[u8] = br#"{"customers":[{"email":"alice@example.com","card":"4111 1111 1111 1111"}]}"#;

    #[test]
    fn content_encoding_values_are_read_as_one_coding_or_named() {
        assert_eq!(encoding(""), Encoding::Identity);
        assert_eq!(encoding(" Identity "), Encoding::Identity);
        assert_eq!(encoding("GZIP"), Encoding::Decode(Coding::Gzip));
        assert_eq!(encoding("x-gzip, identity"), Encoding::Decode(Coding::Gzip));
        assert_eq!(encoding(" deflate"), Encoding::Decode(Coding::Deflate));
        assert_eq!(encoding("gzip, br"), Encoding::Unsupported("gzip, br".into()));
        assert_eq!(encoding("BR"), Encoding::Decode(Coding::Brotli));
        assert_eq!(encoding("zstd"), Encoding::Unsupported("zstd".into()));
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode_whole_and_byte_by_byte() {
        let cases = [
            (Coding::Gzip, gzip(BODY)),
            (Coding::Deflate, zlib(BODY)),
            (Coding::Deflate, raw(BODY)),
            (Coding::Brotli, br(BODY)),
        ];
        for (coding, data) in cases {
            assert_eq!(Decoder::decode_all(coding, &data, 1 << 20).unwrap(), BODY, "{coding:?}");
            let mut d = Decoder::new(coding, 1 << 20);
            let mut out = Vec::new();
            for b in &data {
                d.push(std::slice::from_ref(b), &mut out).unwrap();
            }
            d.finish(&mut out).unwrap();
            assert_eq!(out, BODY, "{coding:?} byte by byte");
        }
    }

    #[test]
    fn concatenated_gzip_members_decode_as_one_body() {
        let data = [gzip(b"first "), gzip(b"second")].concat();
        assert_eq!(Decoder::decode_all(Coding::Gzip, &data, 1 << 20).unwrap(), b"first second");
    }

    #[test]
    fn a_body_decoding_past_the_output_bound_fails_at_the_bound() {
        let data = gzip(&vec![b'x'; 100_000]);
        assert_eq!(Decoder::decode_all(Coding::Gzip, &data, 50_000), Err(DecodeError::TooLarge { limit: 50_000 }));
    }

    #[test]
    fn a_bomb_fails_on_its_ratio_without_decoding_it_whole() {
        let zeros = vec![0u8; 64 << 20];
        for (coding, bomb) in [(Coding::Gzip, gzip(&zeros)), (Coding::Brotli, br(&zeros))] {
            assert!(bomb.len() < 100_000, "{}", bomb.len());
            let mut d = Decoder::new(coding, u64::MAX);
            let mut out = Vec::new();
            let got = bomb.chunks(16 << 10).try_for_each(|c| d.push(c, &mut out));
            assert_eq!(got, Err(DecodeError::Ratio), "{coding:?}");
            assert!(out.len() as u64 <= RATIO_FLOOR.max(bomb.len() as u64 * MAX_RATIO), "{}", out.len());
            assert_eq!(d.push(b"more", &mut out), Err(DecodeError::Corrupt(coding)), "a failed decoder stays failed");
        }
    }

    #[test]
    fn corrupt_and_truncated_data_are_errors() {
        let cut = br(BODY);
        assert!(Decoder::decode_all(Coding::Brotli, &cut[..cut.len() / 2], 1 << 20).is_err());
        assert!(Decoder::decode_all(Coding::Brotli, b"\xff\xff\xff not brotli", 1 << 20).is_err());
        assert_eq!(
            Decoder::decode_all(Coding::Gzip, b"not gzip at all", 1 << 20),
            Err(DecodeError::Corrupt(Coding::Gzip))
        );
        let cut = gzip(BODY);
        assert!(Decoder::decode_all(Coding::Gzip, &cut[..cut.len() / 2], 1 << 20).is_err());
        let cut = zlib(BODY);
        assert!(Decoder::decode_all(Coding::Deflate, &cut[..cut.len() / 2], 1 << 20).is_err());
        assert_eq!(Decoder::decode_all(Coding::Deflate, b"x", 1 << 20), Err(DecodeError::Corrupt(Coding::Deflate)));
    }
}

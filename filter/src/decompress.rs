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
//! Bounds, against decompression bombs, checked as the output is produced (a sink that
//! refuses bytes past the bound), so a bomb costs at most the bound in memory and time:
//! the decoded bytes never exceed `max_output`; each chunk may add at most
//! [`MAX_RATIO`] times its own compressed size (at least [`PUSH_FLOOR`], and anything up
//! to [`RATIO_FLOOR`] for a body's first bytes), so allowance saved by poorly
//! compressing data cannot be spent at once; and a stream's chunk at most
//! [`STREAM_PUSH_MAX`]. Brotli's window (allocated before any output) is at most the
//! standard 16 MiB: large-window brotli is refused.
//! `zstd` and stacked codings are not decoded:
//! [`encoding`] names them, and the caller refuses them.

use std::fmt;
use std::io::{self, Write};

use brotli_decompressor::DecompressorWriter as BrotliDecoder;
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// Decoded bytes allowed for each compressed byte, past [`RATIO_FLOOR`]. Text and JSON
/// compress 3–20×, repetitive JSON rows up to ~100×; deflate's own maximum is ~1032×.
pub const MAX_RATIO: u64 = 200;
/// Decoded bytes a body's start may reach whatever the ratio (small bodies compress very well).
pub const RATIO_FLOOR: u64 = 1 << 20;
/// Decoded bytes any chunk may add whatever its ratio (one chunk may end a long run).
pub const PUSH_FLOOR: u64 = 64 << 10;
/// Decoded bytes one chunk of a stream may add: what the callback holds at once.
pub const STREAM_PUSH_MAX: u64 = 4 << 20;

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
    /// Large-window brotli (a window up to 1 GiB, allocated before any output).
    LargeWindow,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { limit } => write!(f, "the decoded body exceeds {limit} bytes"),
            DecodeError::Ratio => {
                write!(f, "the body decodes to more than {MAX_RATIO} times its compressed size (a decompression bomb)")
            }
            DecodeError::Corrupt(c) => write!(f, "the body is not valid {} data", c.name()),
            DecodeError::LargeWindow => write!(f, "the body is large-window brotli, which is not decoded"),
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
    /// Decoded bytes one chunk may add at most.
    push_max: u64,
}

enum State {
    /// `deflate` until its first two bytes tell zlib from raw deflate; `br` until its
    /// first byte tells its window.
    Sniffing(Vec<u8>),
    Decoding(Box<dyn BodyDecoder>),
    /// An error was reported; nothing more is decoded.
    Failed,
}

impl Decoder {
    /// A decoder for a whole body, whose output may not exceed `max_output` bytes.
    pub fn new(coding: Coding, max_output: u64) -> Self {
        Decoder::with_bounds(coding, max_output, max_output)
    }

    /// A decoder for a stream: no bound on the whole, [`STREAM_PUSH_MAX`] per chunk.
    pub fn for_stream(coding: Coding) -> Self {
        Decoder::with_bounds(coding, u64::MAX, STREAM_PUSH_MAX)
    }

    fn with_bounds(coding: Coding, max_output: u64, push_max: u64) -> Self {
        let state = match coding {
            Coding::Gzip => State::Decoding(Box::new(MultiGzDecoder::new(Sink::default()))),
            Coding::Deflate | Coding::Brotli => State::Sniffing(Vec::new()),
        };
        Decoder { coding, state, max_output, push_max }
    }

    /// Decodes `chunk` and appends what it decodes to (so far) to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let State::Sniffing(head) = &mut self.state {
            head.extend_from_slice(chunk);
            let needed = if self.coding == Coding::Brotli { 1 } else { 2 };
            if head.len() < needed {
                return Ok(());
            }
            let head = std::mem::take(head);
            let decoder: Box<dyn BodyDecoder> = match self.coding {
                Coding::Brotli if brotli_window_bits(&head).is_none() => return self.fail(DecodeError::LargeWindow),
                Coding::Brotli => Box::new(BrotliDecoder::new(Sink::default(), BROTLI_BUFFER)),
                _ if is_zlib_header(&head) => Box::new(ZlibDecoder::new(Sink::default())),
                _ => Box::new(DeflateDecoder::new(Sink::default())),
            };
            self.state = State::Decoding(decoder);
            return self.decode(&head, out);
        }
        self.decode(chunk, out)
    }

    /// The body has ended: decodes what is left and checks the data ended properly.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let State::Sniffing(head) = &self.state {
            return if head.is_empty() { Ok(()) } else { self.fail(DecodeError::Corrupt(self.coding)) };
        }
        let limit = self.allowed(0);
        let State::Decoding(d) = &mut self.state else { return Err(DecodeError::Corrupt(self.coding)) };
        d.sink_mut().limit = limit;
        let done = d.finish_data();
        let done = classify(d.as_mut(), done);
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
        let limit = self.allowed(chunk.len());
        let State::Decoding(d) = &mut self.state else { return Err(DecodeError::Corrupt(self.coding)) };
        d.sink_mut().limit = limit;
        let done = d.write_all(chunk).and_then(|()| d.flush());
        let done = classify(d.as_mut(), done);
        self.drain(done, limit, out)
    }

    /// The decoded total allowed once a chunk of `len` compressed bytes is decoded (see
    /// the module docs).
    fn allowed(&self, len: usize) -> u64 {
        let total = match &self.state {
            State::Decoding(d) => d.sink().total,
            State::Sniffing(_) | State::Failed => 0,
        };
        let ratio = (len as u64).saturating_mul(MAX_RATIO);
        let step = ratio.max(PUSH_FLOOR).max(RATIO_FLOOR.saturating_sub(total)).min(self.push_max);
        self.max_output.min(total.saturating_add(step))
    }

    /// Moves the decoded bytes to `out`, or turns a failed write into its reason (`limit`:
    /// the bound the write ran under).
    fn drain(&mut self, done: Result<(), Stop>, limit: u64, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let State::Decoding(d) = &mut self.state else { return Ok(()) };
        let sink = d.sink_mut();
        match done {
            Ok(()) if out.is_empty() => {
                std::mem::swap(out, &mut sink.buf);
                Ok(())
            }
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

/// The window of a brotli stream from its first byte (RFC 7932 §9.1, bits read from the
/// lowest): `None` for the large-window extension's marker, whose window may reach 1 GiB.
fn brotli_window_bits(head: &[u8]) -> Option<u32> {
    let b = *head.first()?;
    if b & 1 == 0 {
        return Some(16);
    }
    match (b >> 1) & 7 {
        0 => match (b >> 4) & 7 {
            0 => Some(17),
            1 => None,
            m => Some(8 + u32::from(m)),
        },
        n => Some(17 + u32::from(n)),
    }
}

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

/// One coding's decoder, writing into a [`Sink`] (flate2's and brotli's `Write` side).
trait BodyDecoder: Write {
    fn sink(&self) -> &Sink;
    fn sink_mut(&mut self) -> &mut Sink;
    /// Flushes the decoder and checks the data was complete.
    fn finish_data(&mut self) -> io::Result<()>;
}

impl BodyDecoder for MultiGzDecoder<Sink> {
    fn sink(&self) -> &Sink {
        self.get_ref()
    }
    fn sink_mut(&mut self) -> &mut Sink {
        self.get_mut()
    }
    fn finish_data(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl BodyDecoder for ZlibDecoder<Sink> {
    fn sink(&self) -> &Sink {
        self.get_ref()
    }
    fn sink_mut(&mut self) -> &mut Sink {
        self.get_mut()
    }
    fn finish_data(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl BodyDecoder for DeflateDecoder<Sink> {
    fn sink(&self) -> &Sink {
        self.get_ref()
    }
    fn sink_mut(&mut self) -> &mut Sink {
        self.get_mut()
    }
    fn finish_data(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl BodyDecoder for BrotliDecoder<Sink> {
    fn sink(&self) -> &Sink {
        self.get_ref()
    }
    fn sink_mut(&mut self) -> &mut Sink {
        self.get_mut()
    }
    /// Fails when the data ended before the brotli stream did.
    fn finish_data(&mut self) -> io::Result<()> {
        self.close()
    }
}

/// A failed write as a reason: the sink's bound, or bad data.
fn classify(d: &mut dyn BodyDecoder, done: io::Result<()>) -> Result<(), Stop> {
    match done {
        Ok(()) => Ok(()),
        Err(_) if d.sink().hit_bound => Err(Stop::Bound),
        Err(_) => Err(Stop::Corrupt),
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
    fn allowance_saved_by_poorly_compressing_data_cannot_be_spent_in_one_chunk() {
        // Hex text compresses about 2x; the zeros after it would decode hundreds of MiB.
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let hex: Vec<u8> = (0..(6 << 20))
            .map(|_| {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                b"0123456789abcdef"[(r % 16) as usize]
            })
            .collect();
        let body = [gzip(&hex), gzip(&vec![b'a'; 256 << 20])].concat();
        let mut d = Decoder::for_stream(Coding::Gzip);
        let mut most = 0;
        let mut got = Ok(());
        for c in body.chunks(64 << 10) {
            let mut out = Vec::new();
            got = d.push(c, &mut out);
            most = most.max(out.len() as u64);
            if got.is_err() {
                break;
            }
        }
        assert_eq!(got, Err(DecodeError::Ratio));
        assert!(most <= STREAM_PUSH_MAX, "one chunk decoded to {most} bytes");
    }

    #[test]
    fn large_window_brotli_is_refused_before_its_window_is_allocated() {
        assert_eq!(brotli_window_bits(&[0x11]), None);
        assert_eq!(brotli_window_bits(&[0x0b]), Some(22));
        assert_eq!(brotli_window_bits(&[0x00]), Some(16));
        let mut d = Decoder::for_stream(Coding::Brotli);
        assert_eq!(d.push(&[0x11, 0x00, 0x00, 0x00], &mut Vec::new()), Err(DecodeError::LargeWindow));
        // What a standard encoder writes at its largest window still decodes.
        let mut out = Vec::new();
        {
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 24);
            e.write_all(BODY).unwrap();
        }
        assert_eq!(Decoder::decode_all(Coding::Brotli, &out, 1 << 20).unwrap(), BODY);
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

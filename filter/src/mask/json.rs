//! Structure-aware JSON masking: one pass that validates, walks and re-serialises.
//!
//! A purpose-built walker rather than `serde_json::Value`: it keeps member order and the
//! exact text of numbers (no float round-trip, no big-integer loss), leaves strings
//! without a detection byte for byte (original escapes included), and decodes a string
//! only when it contains escapes, so `"\u0061lice@example.com"` is seen as the email it
//! is. Output is compact: insignificant whitespace is dropped.
//!
//! Output is written lazily: the walker only notes how far the input has been copied, and
//! copies unchanged stretches in one piece when it reaches a change (a masked value or
//! whitespace to drop). A compact body without PII is validated, scanned and copied with
//! a single `memcpy`.
//!
//! Recursion is bounded by [`MAX_DEPTH`]; everything else is iterative.

use super::paths::PathState;
use super::{Found, JsonSyntaxError, MaskCounts, MaskError, MaskProfile, Pending, ALL_CUSTOM, MAX_DEPTH};

/// Masks `body`; see [`MaskProfile::mask_json`].
pub(super) fn mask(profile: &MaskProfile, body: &[u8]) -> Result<(Vec<u8>, MaskCounts), MaskError> {
    let text = std::str::from_utf8(body).map_err(|_| MaskError::InvalidUtf8)?;
    // A UTF-8 byte order mark is tolerated (and dropped), as most JSON readers do.
    let (src, base) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, 3),
        None => (text, 0),
    };
    let mut w = Walker {
        p: profile,
        src,
        b: src.as_bytes(),
        base,
        pos: 0,
        copied: 0,
        out: Vec::with_capacity(src.len() + src.len() / 8 + 16),
        counts: MaskCounts::default(),
        scratch: String::new(),
        pending: vec![Pending::Stale; profile.custom.len()],
        custom_in_body: profile.custom_in_body(src),
    };
    w.drop_ws();
    w.value(0, profile.pointers.root())?;
    w.drop_ws();
    if w.pos < w.b.len() {
        return Err(w.err("unexpected data after the JSON value"));
    }
    w.flush(w.pos);
    Ok((w.out, w.counts))
}

/// Bytes that end the fast scan inside a string: `"`, `\` and control characters.
/// (Indexing here runs at compile time, where it cannot fail at run time.)
#[allow(clippy::indexing_slicing)]
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A scanned string token: `start..end` covers the quotes; `escaped` if it has a `\`.
#[derive(Clone, Copy)]
struct StrToken {
    start: usize,
    end: usize,
    escaped: bool,
}

struct Walker<'p, 'a> {
    p: &'p MaskProfile,
    src: &'a str,
    b: &'a [u8],
    /// Offset of `src` in the body (a dropped byte order mark), for error positions.
    base: usize,
    pos: usize,
    /// Input before this offset has been written to `out` (or replaced there).
    copied: usize,
    out: Vec<u8>,
    counts: MaskCounts,
    /// Reused decode buffer for strings with escapes.
    scratch: String,
    /// Reused look-ahead of custom detectors (see [`MaskProfile::detections`]).
    pending: Vec<Pending>,
    /// Custom detectors worth running on escape-free strings of this body.
    custom_in_body: u32,
}

impl<'a> Walker<'_, 'a> {
    fn err(&self, problem: &'static str) -> MaskError {
        MaskError::InvalidJson(JsonSyntaxError { offset: self.base + self.pos, problem })
    }

    fn peek(&self) -> u8 {
        self.b.get(self.pos).copied().unwrap_or(0)
    }

    /// Skips whitespace (parsing only; see [`Walker::drop_ws`] for the output).
    fn skip_ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.pos += 1;
        }
    }

    /// Skips whitespace and leaves it out of the output.
    fn drop_ws(&mut self) {
        if matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.flush(self.pos);
            self.skip_ws();
            self.copied = self.pos;
        }
    }

    fn expect(&mut self, c: u8, problem: &'static str) -> Result<(), MaskError> {
        if self.peek() != c {
            return Err(self.err(problem));
        }
        self.pos += 1;
        Ok(())
    }

    /// Walks the value at `pos`, masking as configured, and moves past it. `depth` counts
    /// the containers around the value; `path` the pointers still matching its path.
    fn value(&mut self, depth: usize, path: PathState) -> Result<(), MaskError> {
        match self.peek() {
            b'{' => self.object(depth, path),
            b'[' => self.array(depth, path),
            b'"' => {
                let tok = self.scan_string()?;
                self.mask_string(tok);
                Ok(())
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.skip_literal(b"true"),
            b'f' => self.skip_literal(b"false"),
            b'n' => self.skip_literal(b"null"),
            0 if self.pos >= self.b.len() => Err(self.err("unexpected end of body")),
            _ => Err(self.err("expected a JSON value")),
        }
    }

    fn object(&mut self, depth: usize, path: PathState) -> Result<(), MaskError> {
        if depth >= MAX_DEPTH {
            return Err(MaskError::TooDeep);
        }
        self.pos += 1;
        self.drop_ws();
        if self.peek() == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != b'"' {
                return Err(self.err("expected a member name in double quotes"));
            }
            let tok = self.scan_string()?;
            let (replace, child) = self.member_rules(tok, depth, path);
            self.mask_string(tok);
            self.drop_ws();
            self.expect(b':', "expected ':' after a member name")?;
            self.drop_ws();
            if replace {
                self.replace_value(depth + 1)?;
            } else {
                self.value(depth + 1, child)?;
            }
            self.drop_ws();
            match self.peek() {
                b',' => {
                    self.pos += 1;
                    self.drop_ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}' after an object member")),
            }
        }
    }

    /// Whether the member's whole value is replaced (`fields` or a pointer ending here),
    /// and the pointer state for walking into the value otherwise.
    fn member_rules(&mut self, tok: StrToken, depth: usize, path: PathState) -> (bool, PathState) {
        let p = self.p;
        if p.fields.is_empty() && p.pointers.is_empty() {
            return (false, path);
        }
        let key = self.content(tok);
        let (child, pointer_hit) = p.pointers.member(path, depth, key);
        (pointer_hit || p.is_masked_field(key), child)
    }

    fn array(&mut self, depth: usize, path: PathState) -> Result<(), MaskError> {
        if depth >= MAX_DEPTH {
            return Err(MaskError::TooDeep);
        }
        self.pos += 1;
        self.drop_ws();
        if self.peek() == b']' {
            self.pos += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let (child, pointer_hit) = self.p.pointers.element(path, depth, index);
            if pointer_hit {
                self.replace_value(depth + 1)?;
            } else {
                self.value(depth + 1, child)?;
            }
            index += 1;
            self.drop_ws();
            match self.peek() {
                b',' => {
                    self.pos += 1;
                    self.drop_ws();
                }
                b']' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or ']' after an array element")),
            }
        }
    }

    /// Validates the value at `pos` and moves past it without emitting anything: the
    /// value of a masked field. Still bounded by the depth limit.
    fn skip_value(&mut self, depth: usize) -> Result<(), MaskError> {
        match self.peek() {
            open @ (b'{' | b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(MaskError::TooDeep);
                }
                let close = if open == b'{' { b'}' } else { b']' };
                self.pos += 1;
                self.skip_ws();
                if self.peek() == close {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        if self.peek() != b'"' {
                            return Err(self.err("expected a member name in double quotes"));
                        }
                        self.scan_string()?;
                        self.skip_ws();
                        self.expect(b':', "expected ':' after a member name")?;
                        self.skip_ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.peek() {
                        b',' => {
                            self.pos += 1;
                            self.skip_ws();
                        }
                        c if c == close => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected ',' or a closing bracket")),
                    }
                }
            }
            b'"' => self.scan_string().map(drop),
            b'-' | b'0'..=b'9' => self.scan_number().map(drop),
            b't' => self.skip_literal(b"true"),
            b'f' => self.skip_literal(b"false"),
            b'n' => self.skip_literal(b"null"),
            0 if self.pos >= self.b.len() => Err(self.err("unexpected end of body")),
            _ => Err(self.err("expected a JSON value")),
        }
    }

    fn skip_literal(&mut self, word: &[u8]) -> Result<(), MaskError> {
        if !self.b.get(self.pos..).is_some_and(|rest| rest.starts_with(word)) {
            return Err(self.err("invalid literal (expected true, false or null)"));
        }
        self.pos += word.len();
        Ok(())
    }

    /// Scans the number at `pos` (RFC 8259 grammar); returns its span and whether it is a
    /// plain non-negative integer.
    fn scan_number(&mut self) -> Result<(usize, bool), MaskError> {
        let start = self.pos;
        let mut integer = true;
        if self.peek() == b'-' {
            integer = false;
            self.pos += 1;
        }
        match self.peek() {
            b'0' => self.pos += 1,
            b'1'..=b'9' => self.skip_digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == b'.' {
            integer = false;
            self.pos += 1;
            if !self.peek().is_ascii_digit() {
                return Err(self.err("invalid number: digits must follow '.'"));
            }
            self.skip_digits();
        }
        if matches!(self.peek(), b'e' | b'E') {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), b'+' | b'-') {
                self.pos += 1;
            }
            if !self.peek().is_ascii_digit() {
                return Err(self.err("invalid number: digits must follow the exponent"));
            }
            self.skip_digits();
        }
        Ok((start, integer))
    }

    fn skip_digits(&mut self) {
        let n = self.b.get(self.pos..).map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
        self.pos += n;
    }

    /// Leaves a number as it is, or replaces it by the replacement string when its digits are a
    /// whole card, SSN or phone number.
    fn number(&mut self) -> Result<(), MaskError> {
        let (start, integer) = self.scan_number()?;
        let p = self.p;
        if integer && p.mask_numbers {
            let raw = self.b.get(start..self.pos).unwrap_or_default();
            if let Some(kind) = p.detectors.classify_integer(raw) {
                self.replace_with(start, self.pos, p.builtin_slot(kind));
            }
        }
        Ok(())
    }

    /// Scans the string token at `pos` (which is `"`), validating escapes and rejecting
    /// raw control characters, and moves past the closing quote.
    #[inline(always)]
    fn scan_string(&mut self) -> Result<StrToken, MaskError> {
        let start = self.pos;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            i = find_stop(self.b, i);
            match self.b.get(i).copied() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match self.b.get(i + 1).copied() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') if self.b.get(i + 2..i + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => {
                            i += 6
                        }
                        _ => {
                            self.pos = i;
                            return Err(self.err("invalid escape in string"));
                        }
                    }
                }
                Some(_) => {
                    self.pos = i;
                    return Err(self.err("unescaped control character in string"));
                }
                None => {
                    self.pos = start;
                    return Err(self.err("unterminated string"));
                }
            }
        }
        self.pos = i + 1;
        Ok(StrToken { start, end: i + 1, escaped })
    }

    /// The string's text: borrowed from the body, or decoded into `scratch` when escaped.
    fn content(&mut self, tok: StrToken) -> &str {
        let inner = self.src.get(tok.start + 1..tok.end - 1).unwrap_or_default();
        if !tok.escaped {
            return inner;
        }
        decode_escapes(inner, &mut self.scratch);
        &self.scratch
    }

    /// Masks detections in a string token's decoded text. Without a detection nothing is
    /// written here: the original bytes go out with the next flush.
    #[inline]
    fn mask_string(&mut self, tok: StrToken) {
        let p = self.p;
        let inner: &'a str = self.src.get(tok.start + 1..tok.end - 1).unwrap_or_default();
        // Decoded text is not in the body, so the body-wide custom gate does not apply.
        let custom = if tok.escaped { ALL_CUSTOM } else { self.custom_in_body };
        // Look-ahead storage is only needed (and only taken) when custom detectors run.
        let mut pending = if custom == 0 { Vec::new() } else { std::mem::take(&mut self.pending) };
        let pending_slots = pending.as_mut_slice();
        if tok.escaped {
            let mut scratch = std::mem::take(&mut self.scratch);
            decode_escapes(inner, &mut scratch);
            if let Some((first, rest)) = p.detections(&scratch, custom, pending_slots) {
                self.write_masked(tok, &scratch, std::iter::once(first).chain(rest));
            }
            self.scratch = scratch;
        } else if let Some((first, rest)) = p.detections(inner, custom, pending_slots) {
            self.write_masked(tok, inner, std::iter::once(first).chain(rest));
        }
        if custom != 0 {
            self.pending = pending;
        }
    }

    /// Writes string token `tok` re-escaped from its decoded `text`, detections replaced.
    fn write_masked(&mut self, tok: StrToken, text: &str, detections: impl Iterator<Item = Found>) {
        let p = self.p;
        // Text of an escape-free token is the body's own bytes, which JSON already forbids
        // to hold anything needing an escape: it is copied as is, not re-escaped byte by byte.
        let copy = if tok.escaped { write_escaped } else { write_verbatim };
        self.flush(tok.start);
        self.out.push(b'"');
        let mut last = 0;
        for m in detections {
            copy(&mut self.out, text.get(last..m.start).unwrap_or_default());
            if let Some(r) = p.replacement(m.slot) {
                self.out.extend_from_slice(&r.json_inner);
            }
            self.counts.add(m.slot, p.kinds.len());
            last = m.end;
        }
        copy(&mut self.out, text.get(last..).unwrap_or_default());
        self.out.push(b'"');
        self.copied = tok.end;
    }

    /// Copies the unchanged input from `copied` up to `upto` to the output.
    fn flush(&mut self, upto: usize) {
        if upto > self.copied {
            self.out.extend_from_slice(self.b.get(self.copied..upto).unwrap_or_default());
            self.copied = upto;
        }
    }

    /// Replaces input `start..end` (one whole value) by the replacement of `slot`.
    fn replace_with(&mut self, start: usize, end: usize, slot: usize) {
        self.flush(start);
        if let Some(r) = self.p.replacement(slot) {
            self.out.push(b'"');
            self.out.extend_from_slice(&r.json_inner);
            self.out.push(b'"');
        }
        self.counts.add(slot, self.p.kinds.len());
        self.copied = end;
    }

    /// Replaces the value at `pos` by the `field` replacement, validating it on the way.
    fn replace_value(&mut self, depth: usize) -> Result<(), MaskError> {
        let start = self.pos;
        self.skip_value(depth)?;
        self.replace_with(start, self.pos, self.p.field_slot);
        Ok(())
    }
}

/// The first byte at or after `i` that ends a string scan (`"`, `\\`, control), or the
/// length. Eight bytes per step (SWAR): the lowest flagged byte of the first flagged word
/// is exact (borrows only ever spill into higher bytes), so no byte loop follows.
#[inline(always)]
fn find_stop(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        let hits = control | has_zero(v ^ (ONES * u64::from(b'"'))) | has_zero(v ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b.get(i..).map_or(0, |rest| rest.iter().position(|&c| stop(c)).unwrap_or(rest.len()))
}

fn stop(c: u8) -> bool {
    STRING_STOP.get(usize::from(c)).copied().unwrap_or(false)
}

/// Decodes the escapes of a string body already validated by `scan_string` into `out`.
/// A lone surrogate (legal in JSON, not representable in UTF-8) becomes U+FFFD.
fn decode_escapes(raw: &str, out: &mut String) {
    out.clear();
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let esc = rest.get(i + 1..).unwrap_or_default();
        let mut consumed = 2;
        match esc.as_bytes().first() {
            Some(b'n') => out.push('\n'),
            Some(b't') => out.push('\t'),
            Some(b'r') => out.push('\r'),
            Some(b'b') => out.push('\u{8}'),
            Some(b'f') => out.push('\u{c}'),
            Some(b'u') => {
                let hi = hex4(esc.get(1..5));
                consumed = 6;
                let c = match hi {
                    Some(hi @ 0xD800..=0xDBFF) => {
                        let lo = esc.get(5..7).filter(|s| *s == "\\u").and_then(|_| hex4(esc.get(7..11)));
                        match lo {
                            Some(lo @ 0xDC00..=0xDFFF) => {
                                consumed = 12;
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            }
                            _ => None,
                        }
                    }
                    Some(cp) => char::from_u32(cp),
                    None => None,
                };
                out.push(c.unwrap_or('\u{FFFD}'));
            }
            Some(&c) => out.push(char::from(c)),
            None => consumed = 1,
        }
        rest = rest.get(i + consumed..).unwrap_or_default();
    }
    out.push_str(rest);
}

fn hex4(s: Option<&str>) -> Option<u32> {
    let s = s?;
    if s.len() != 4 {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Appends `s` JSON-escaped (without quotes): `"`, `\` and control characters.
fn write_verbatim(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if !stop(c) {
            continue;
        }
        out.extend_from_slice(bytes.get(last..i).unwrap_or_default());
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let hex = |n: u8| HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(c >> 4), hex(c)]);
            }
        }
        last = i + 1;
    }
    out.extend_from_slice(bytes.get(last..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn naive_stop(b: &[u8], i: usize) -> usize {
        (i..b.len()).find(|&j| stop(b[j])).unwrap_or(b.len())
    }

    #[test]
    fn word_at_a_time_stop_scan_agrees_with_a_byte_scan() {
        // Fillers next to each stop byte at every offset, including bytes that make the
        // SWAR arithmetic borrow (0x00, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff).
        let fillers = [b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff];
        let stops = [b'"', b'\\', 0x00, 0x1f, b'\n'];
        for &fill in &fillers {
            for &s in &stops {
                for len in 0..20 {
                    for at in 0..=len {
                        let mut v = vec![fill; len];
                        if at < len {
                            v[at] = s;
                        }
                        if at + 3 < len {
                            v[at + 3] = b'"';
                        }
                        for start in 0..=len.min(3) {
                            assert_eq!(find_stop(&v, start), naive_stop(&v, start), "{v:?} from {start}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decodes_surrogate_pairs_and_replaces_lone_surrogates() {
        let mut out = String::new();
        decode_escapes(r"a\u00e9\ud83d\ude00\ud800x\udc00\n\/", &mut out);
        assert_eq!(out, "aé😀\u{FFFD}x\u{FFFD}\n/");
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        write_escaped(&mut out, "a\"b\\c\u{1}\té");
        assert_eq!(String::from_utf8(out).unwrap(), r#"a\"b\\c\u0001\té"#);
    }
}

//! The JSON grammar, read without writing anything: a cursor over the body that
//! validates and steps over tokens (strings, numbers, literals, whole values). The
//! masking walk (`json/mod.rs`) drives it and decides what to write; this module knows
//! nothing of masking, which keeps it a leaf next to `escape`.

use super::escape::stop;
use crate::mask::{JsonSyntaxError, MaskError, MAX_DEPTH};

/// A scanned string token: `start..end` covers the quotes; `escaped` if it has a `\`.
#[derive(Clone, Copy)]
pub(super) struct StrToken {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) escaped: bool,
}

/// A position in the body being read.
pub(super) struct Scanner<'a> {
    pub(super) b: &'a [u8],
    /// Offset of `b` in the body (a dropped byte order mark), for error positions.
    pub(super) base: usize,
    pub(super) pos: usize,
}

impl Scanner<'_> {
    pub(super) fn err(&self, problem: &'static str) -> MaskError {
        MaskError::InvalidJson(JsonSyntaxError { offset: self.base + self.pos, problem })
    }

    pub(super) fn peek(&self) -> u8 {
        self.b.get(self.pos).copied().unwrap_or(0)
    }

    /// Skips whitespace (reading only; the walk's `drop_ws` also leaves it out of the output).
    pub(super) fn skip_ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.pos += 1;
        }
    }

    pub(super) fn expect(&mut self, c: u8, problem: &'static str) -> Result<(), MaskError> {
        if self.peek() != c {
            return Err(self.err(problem));
        }
        self.pos += 1;
        Ok(())
    }

    /// Validates the value at `pos` and moves past it without emitting anything: the
    /// value of a masked field. Still bounded by the depth limit.
    pub(super) fn skip_value(&mut self, depth: usize) -> Result<(), MaskError> {
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

    pub(super) fn skip_literal(&mut self, word: &[u8]) -> Result<(), MaskError> {
        if !self.b.get(self.pos..).is_some_and(|rest| rest.starts_with(word)) {
            return Err(self.err("invalid literal (expected true, false or null)"));
        }
        self.pos += word.len();
        Ok(())
    }

    /// Scans the number at `pos` (RFC 8259 grammar); returns its span and whether it is a
    /// plain non-negative integer.
    pub(super) fn scan_number(&mut self) -> Result<(usize, bool), MaskError> {
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

    /// Scans the string token at `pos` (which is `"`), validating escapes and rejecting
    /// raw control characters, and moves past the closing quote.
    #[inline(always)]
    pub(super) fn scan_string(&mut self) -> Result<StrToken, MaskError> {
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
}

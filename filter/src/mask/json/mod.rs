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
//!
//! Layout: `scan` reads the grammar (validation, token boundaries) and `escape` decodes
//! and writes string escapes; both are leaves. This file is the walk itself: what each
//! value becomes in the output.

mod escape;
mod scan;

pub(crate) use escape::write_escaped;
use escape::{decode_escapes, write_verbatim};
use scan::{Scanner, StrToken};

use super::paths::{PathState, Pointers};
use super::{Decoded, Found, MaskCounts, MaskError, MaskProfile, Pending, ALL_CUSTOM, MAX_DEPTH};

/// Masks `body`; see [`MaskProfile::mask_json`]. `pointers` are the profile's, or those
/// and result columns' numbered from `columns_from` (see [`MaskProfile::mask_sql_result`]).
pub(super) fn mask(
    profile: &MaskProfile,
    body: &[u8],
    pointers: &Pointers,
    columns_from: usize,
) -> Result<(Vec<u8>, MaskCounts), MaskError> {
    let text = std::str::from_utf8(body).map_err(|_| MaskError::InvalidUtf8)?;
    // A UTF-8 byte order mark is tolerated (and dropped), as most JSON readers do.
    let (src, base) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, 3),
        None => (text, 0),
    };
    let mut w = Walker {
        p: profile,
        pointers,
        columns_from,
        src,
        lex: Scanner { b: src.as_bytes(), base, pos: 0 },
        copied: 0,
        out: Vec::with_capacity(src.len() + src.len() / 8 + 16),
        counts: MaskCounts::default(),
        scratch: String::new(),
        view: Decoded::default(),
        pending: vec![Pending::Stale; profile.custom.len()],
        custom_in_body: profile.custom_in_body(src),
        refs_in_body: memchr::memchr2(b'&', b'%', src.as_bytes()).is_some()
            || memchr::memchr3(0xc2, 0xe2, 0xef, src.as_bytes()).is_some(),
    };
    w.drop_ws();
    w.value(0, pointers.root())?;
    w.drop_ws();
    if w.lex.pos < w.lex.b.len() {
        return Err(w.lex.err("unexpected data after the JSON value"));
    }
    w.flush(w.lex.pos);
    Ok((w.out, w.counts))
}

struct Walker<'p, 'a> {
    p: &'p MaskProfile,
    pointers: &'p Pointers,
    /// Pointers from this index on address result columns (their `{kind}` is `column`).
    columns_from: usize,
    src: &'a str,
    /// The reading position; everything before `lex.pos` has been validated.
    lex: Scanner<'a>,
    /// Input before this offset has been written to `out` (or replaced there).
    copied: usize,
    out: Vec<u8>,
    counts: MaskCounts,
    /// Reused decode buffer for strings with escapes.
    scratch: String,
    /// Reused view of a string as a reader decodes it once more (escapes inside its text).
    view: Decoded,
    /// Reused look-ahead of custom detectors (see [`MaskProfile::detections`]).
    pending: Vec<Pending>,
    /// Custom detectors worth running on escape-free strings of this body.
    custom_in_body: u32,
    /// Whether the body holds a `&`, a `%` or a lead byte of an invisible character
    /// (0xC2, 0xE2, 0xEF) anywhere: if not, an escape-free string has nothing a reader
    /// could decode further or would not see (its `\\` would be an escape), and the
    /// per-string look for one is skipped. Dense JSON rows rarely have any.
    refs_in_body: bool,
}

impl<'a> Walker<'_, 'a> {
    /// Skips whitespace and leaves it out of the output.
    fn drop_ws(&mut self) {
        if matches!(self.lex.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.flush(self.lex.pos);
            self.lex.skip_ws();
            self.copied = self.lex.pos;
        }
    }

    /// Walks the value at `pos`, masking as configured, and moves past it. `depth` counts
    /// the containers around the value; `path` the pointers still matching its path.
    fn value(&mut self, depth: usize, path: PathState) -> Result<(), MaskError> {
        match self.lex.peek() {
            b'{' => self.object(depth, path),
            b'[' => self.array(depth, path),
            b'"' => {
                let tok = self.lex.scan_string()?;
                self.mask_string(tok);
                Ok(())
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.lex.skip_literal(b"true"),
            b'f' => self.lex.skip_literal(b"false"),
            b'n' => self.lex.skip_literal(b"null"),
            0 if self.lex.pos >= self.lex.b.len() => Err(self.lex.err("unexpected end of body")),
            _ => Err(self.lex.err("expected a JSON value")),
        }
    }

    fn object(&mut self, depth: usize, path: PathState) -> Result<(), MaskError> {
        if depth >= MAX_DEPTH {
            return Err(MaskError::TooDeep);
        }
        self.lex.pos += 1;
        self.drop_ws();
        if self.lex.peek() == b'}' {
            self.lex.pos += 1;
            return Ok(());
        }
        loop {
            if self.lex.peek() != b'"' {
                return Err(self.lex.err("expected a member name in double quotes"));
            }
            let tok = self.lex.scan_string()?;
            let (replace, child) = self.member_rules(tok, depth, path);
            self.mask_string(tok);
            self.drop_ws();
            self.lex.expect(b':', "expected ':' after a member name")?;
            self.drop_ws();
            if let Some(slot) = replace {
                self.replace_value(depth + 1, slot)?;
            } else {
                self.value(depth + 1, child)?;
            }
            self.drop_ws();
            match self.lex.peek() {
                b',' => {
                    self.lex.pos += 1;
                    self.drop_ws();
                }
                b'}' => {
                    self.lex.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.lex.err("expected ',' or '}' after an object member")),
            }
        }
    }

    /// Whether the member's whole value is replaced (`fields` or a pointer ending here),
    /// and the pointer state for walking into the value otherwise.
    fn member_rules(&mut self, tok: StrToken, depth: usize, path: PathState) -> (Option<usize>, PathState) {
        let (p, pointers) = (self.p, self.pointers);
        if p.fields.is_empty() && pointers.is_empty() {
            return (None, path);
        }
        let key = self.content(tok);
        let (child, pointer_hit) = pointers.member(path, depth, key);
        match pointer_hit {
            Some(i) => (Some(self.pointer_slot(i)), child),
            None => (p.is_masked_field(key).then_some(p.field_slot), child),
        }
    }

    /// The kind a value addressed by pointer `i` is masked as.
    fn pointer_slot(&self, i: usize) -> usize {
        if i >= self.columns_from {
            self.p.column_slot
        } else {
            self.p.field_slot
        }
    }

    fn array(&mut self, depth: usize, path: PathState) -> Result<(), MaskError> {
        if depth >= MAX_DEPTH {
            return Err(MaskError::TooDeep);
        }
        self.lex.pos += 1;
        self.drop_ws();
        if self.lex.peek() == b']' {
            self.lex.pos += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let (child, pointer_hit) = self.pointers.element(path, depth, index);
            if let Some(i) = pointer_hit {
                self.replace_value(depth + 1, self.pointer_slot(i))?;
            } else {
                self.value(depth + 1, child)?;
            }
            index += 1;
            self.drop_ws();
            match self.lex.peek() {
                b',' => {
                    self.lex.pos += 1;
                    self.drop_ws();
                }
                b']' => {
                    self.lex.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.lex.err("expected ',' or ']' after an array element")),
            }
        }
    }

    /// Leaves a number as it is, or replaces it by the replacement string when its digits are a
    /// whole card, SSN or phone number.
    fn number(&mut self) -> Result<(), MaskError> {
        let (start, integer) = self.lex.scan_number()?;
        let p = self.p;
        if integer && p.mask_numbers {
            let raw = self.lex.b.get(start..self.lex.pos).unwrap_or_default();
            if let Some(kind) = p.detectors.classify_integer(raw) {
                self.replace_with(start, self.lex.pos, p.builtin_slot(kind));
            }
        }
        Ok(())
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
        if tok.escaped || self.refs_in_body {
            return self.mask_decoded_string(tok, inner);
        }
        // The common case: the body's own bytes, with nothing a reader would decode.
        let custom = self.custom_in_body;
        // Look-ahead storage is only needed (and only taken) when custom detectors run.
        let mut pending = if custom == 0 { Vec::new() } else { std::mem::take(&mut self.pending) };
        if let Some((first, rest)) = p.detections(inner, custom, pending.as_mut_slice()) {
            self.write_masked(tok, inner, std::iter::once(first).chain(rest));
        }
        if custom != 0 {
            self.pending = pending;
        }
    }

    /// A string whose text is decoded (JSON escapes), or that may hold escapes a reader
    /// decodes further (`&#64;`, `%40`): detections are looked for in both views.
    fn mask_decoded_string(&mut self, tok: StrToken, inner: &str) {
        let p = self.p;
        // Decoded text is not in the body, so the body-wide custom gate does not apply.
        let custom = if tok.escaped { ALL_CUSTOM } else { self.custom_in_body };
        let has_custom = !p.custom.is_empty();
        let mut pending = if has_custom { std::mem::take(&mut self.pending) } else { Vec::new() };
        let pending_slots = pending.as_mut_slice();
        let mut view = std::mem::take(&mut self.view);
        let mut scratch = std::mem::take(&mut self.scratch);
        let text: &str = if tok.escaped {
            decode_escapes(inner, &mut scratch);
            &scratch
        } else {
            inner
        };
        match p.decoded_detections(text, custom, pending_slots, &mut view) {
            Some(found) if found.is_empty() => {}
            Some(found) => self.write_masked(tok, text, found.into_iter()),
            None => {
                if let Some((first, rest)) = p.detections(text, custom, pending_slots) {
                    self.write_masked(tok, text, std::iter::once(first).chain(rest));
                }
            }
        }
        self.view = view;
        self.scratch = scratch;
        if has_custom {
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
            self.out.extend_from_slice(self.lex.b.get(self.copied..upto).unwrap_or_default());
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
    fn replace_value(&mut self, depth: usize, slot: usize) -> Result<(), MaskError> {
        let start = self.lex.pos;
        self.lex.skip_value(depth)?;
        self.replace_with(start, self.lex.pos, slot);
        Ok(())
    }
}

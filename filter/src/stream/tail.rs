//! The held-back tail of a streamed text: which prefix of the text received so far can be
//! masked and released now, because nothing that arrives later can turn it (or part of
//! it) into a detection.
//!
//! # The rule
//!
//! A text is cut only at a *safe boundary*: a position `c` such that no detection of any
//! possible continuation of the text contains both byte `c - 1` and byte `c`, and such
//! that the detections left of `c` do not depend on what follows it (nor those right of
//! it on what precedes it). Masking `text[..c]` on its own then masks every detection
//! that lies in it, and the rest is masked later, together with what arrives next, so a
//! value split across chunks or events is always masked whole.
//!
//! With the built-in detectors only, `c` is a safe boundary when the byte before it is:
//!
//! 1. a *hard* separator: an ASCII control character (`\n`, `\t`, …) or one of
//!    `! " $ ' * , / : < = > ? [ ] ^ ` { | } ~`. No built-in detection contains one, so
//!    none can straddle it; and every look-ahead or look-behind of a detector (`end_ok`,
//!    the e-mail walk-back, grouped numbers) stops at the first such byte. `\`, `&`, `#`,
//!    `;` and `%` are deliberately *not* separators, so that a value written with JSON,
//!    HTML or URL escapes (`alice\u0040example.com`, `alice&#64;example.com`), which
//!    masking reads through, is never cut in the middle;
//! 2. a space that cannot be inside a grouped number or IBAN: the detections containing a
//!    space (cards `4111 1111 …`, SSNs `123 45 6789`, phones `(415) 555-0134`,
//!    `+1 415 555 0134`, grouped IBANs `GB82 WEST 1234 …`) only have digits, `)` or a
//!    group of at most four upper-case letters and digits right before a space. So a
//!    space is a boundary when the byte before it is not `)` and the ASCII word right
//!    before it (letters and digits) is empty, contains a lower-case letter, or contains
//!    an upper-case letter and is longer than four characters (`Hello ␣`, `NOTICE ␣`,
//!    `, ␣` are boundaries; `4111 ␣`, `WEST ␣`, `(415) ␣` are not). Since cards and SSNs
//!    may follow letters (`CC4111 1111 …`), a word that ends in a digit is never a boundary
//!    whatever letters it holds (`NOTE4111 ␣`). A space is also a
//!    boundary once the byte after it has arrived and is not a digit, an upper-case
//!    letter or `(`, which every group after a space starts with (`0134 ␣now`);
//!    since masking also reads values through escapes (`&#52;111 1111 …`), a space
//!    next to a word that holds, or is preceded by, `\`, `&`, `#`, `;` or `%` is not a
//!    boundary, nor one followed by `\`, `&` or `%`. Masking also reads through invisible
//!    characters (zero-width space, joiners, soft hyphen, BOM: `4111\u{200B} 1111 …` is a
//!    card), so the bytes next to the space are taken from beyond any invisible characters
//!    around it;
//! 3. the last byte of a non-ASCII character, when no `@` is within 320 bytes before or
//!    64 bytes after it and at least 65 bytes have arrived after it (a `\`, `&` or `%`
//!    counts as an `@`: it may start `\u0040`, `&commat;`, `%40`). Only e-mail
//!    addresses contain non-ASCII characters (internationalised local parts and domains);
//!    an address has a local part of at most 64 bytes before its `@` and a domain of at
//!    most 253 after it, so no address can straddle such a position. Never after an
//!    invisible character: masking reads through it, so what precedes and what follows it
//!    may be one value (`4111\u{200B}1111…`). This keeps long
//!    texts in scripts without spaces (Chinese, Japanese) streaming.
//!
//! A private key (`-----BEGIN … PRIVATE KEY-----` up to its `-----END … PRIVATE
//! KEY-----`) can contain any byte, so the text is never cut inside a complete block, nor
//! anywhere after the start of a block whose end has not arrived yet (or of a header that
//! may still become one): the detector masks a key without its end line to the end of the
//! text, and the lines after a cut would otherwise escape it.
//!
//! So in prose only the last, unfinished word is held back (`alice` may become
//! `alice@example.com`), with digits and grouped values until their group ends, and a
//! private key until its end line.
//!
//! Custom detectors are regular expressions that may match anything, so with any in the
//! profile the text is only cut after a line feed (`\n`) (and still never inside a
//! private key): a custom pattern is assumed not to match across a line break in streamed
//! text. Lines longer than the held-back cap end the stream (fail closed).

use std::borrow::Cow;

use crate::mask::{invisible_at, invisible_before, starts_escape, MaskProfile, ReaderView, COLUMN_KIND, FIELD_KIND};

use super::Counter;

/// How text may be cut before masking, from the detectors of the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CutRule {
    /// Built-in detectors only: safe boundaries as described in the module docs.
    Builtin,
    /// Custom detectors present: after line feeds only.
    Lines,
}

/// Names of the built-in detectors whose shapes the [`CutRule::Builtin`] rule knows. A
/// kind not listed here (a custom detector, or a built-in added later) selects the
/// conservative [`CutRule::Lines`].
const KNOWN_BUILTINS: [&str; 8] = ["email", "credit_card", "us_ssn", "phone", "iban", "jwt", "api_key", "private_key"];

impl CutRule {
    pub(super) fn for_profile(profile: &MaskProfile) -> CutRule {
        let known = |k: &String| k == FIELD_KIND || k == COLUMN_KIND || KNOWN_BUILTINS.contains(&k.as_str());
        if profile.kinds().iter().all(known) {
            CutRule::Builtin
        } else {
            CutRule::Lines
        }
    }
}

/// The text of one stream that has arrived but not been released yet.
#[derive(Debug, Default)]
pub(super) struct Tail {
    pending: String,
    /// Positions `1..=checked` of `pending` were found not to be safe boundaries by an
    /// earlier scan; only positions after `checked` (and the last few before it, which
    /// rule 3 may accept now that more text arrived) are looked at again. Keeps a long
    /// tail that grows byte by byte from costing quadratic time.
    checked: usize,
    /// Whether `pending` may hold a `-----BEGIN ` (then blocks are located on each scan).
    pem: bool,
}

impl Tail {
    pub(super) fn push(&mut self, text: &str) {
        self.pending.push_str(text);
    }

    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Masks the part of the pending text that is safe to release, appends it to `out`,
    /// and keeps the rest.
    pub(super) fn release(&mut self, profile: &MaskProfile, rule: CutRule, counts: &mut Counter, out: &mut String) {
        let b = self.pending.as_bytes();
        if !self.pem {
            self.pem = may_hold_key(b, self.checked.saturating_sub(BEGIN.len()));
        }
        let (cut, hi) = scan(b, rule, self.checked, self.pem);
        self.checked = hi - cut;
        if cut == 0 {
            return;
        }
        if let Some(head) = self.pending.get(..cut) {
            mask_into(profile, head, counts, out);
        }
        self.pending.drain(..cut);
        if self.pem {
            self.pem = may_hold_key(self.pending.as_bytes(), 0);
        }
    }

    /// Masks all of the pending text (the text has ended) and appends it to `out`.
    pub(super) fn flush(&mut self, profile: &MaskProfile, counts: &mut Counter, out: &mut String) {
        mask_into(profile, &self.pending, counts, out);
        self.pending.clear();
        self.checked = 0;
        self.pem = false;
    }
}

pub(super) fn mask_into(profile: &MaskProfile, text: &str, counts: &mut Counter, out: &mut String) {
    if text.is_empty() {
        return;
    }
    let (masked, found) = profile.mask_text(text);
    counts.add(&found);
    match masked {
        Cow::Borrowed(s) => out.push_str(s),
        Cow::Owned(s) => out.push_str(&s),
    }
}

/// The largest `c` such that `text[..c]` can be masked and released now (see the module
/// docs). Always a character boundary.
#[cfg(test)]
pub(super) fn safe_cut(text: &str, rule: CutRule) -> usize {
    scan(text.as_bytes(), rule, 0, true).0
}

/// The largest safe boundary of `b`, looking only at positions after `checked` (minus
/// rule 3's margin), and the position up to which the scan looked (the start of a private
/// key still arriving, else the end). `pem`: whether `b` may contain a `-----BEGIN `.
fn scan(b: &[u8], rule: CutRule, checked: usize, pem: bool) -> (usize, usize) {
    let keys = if pem { private_keys(b) } else { PrivateKeys::default() };
    let hi = keys.live.unwrap_or(b.len());
    let lo = checked.saturating_sub(LOCAL_MAX + 1).min(hi);
    let mut at = AtFinder::new(b);
    let mut i = hi;
    while i > lo {
        if let Some(start) = keys.inside_block(i) {
            i = start;
            continue;
        }
        let ok = match rule {
            CutRule::Lines => byte(b, i - 1) == b'\n',
            CutRule::Builtin => builtin_cut(b, i, &mut at),
        };
        if ok {
            return (i, hi);
        }
        i -= 1;
    }
    (0, hi)
}

fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Whether no built-in detection can contain the byte: see rule 1 of the module docs.
pub(super) fn is_hard(c: u8) -> bool {
    c < 0x20
        || c == 0x7f
        || matches!(
            c,
            b'!' | b'"'
                | b'$'
                | b'\''
                | b'*'
                | b','
                | b'/'
                | b':'
                | b'<'
                | b'='
                | b'>'
                | b'?'
                | b'['
                | b']'
                | b'^'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
}

/// Whether `i` (with `0 < i ≤ len`) is a safe boundary for the built-in detectors.
fn builtin_cut(b: &[u8], i: usize, at: &mut AtFinder) -> bool {
    let c = byte(b, i - 1);
    if is_hard(c) {
        return true;
    }
    if c == b' ' {
        return space_cut(b, i - 1);
    }
    // The last byte of a non-ASCII character: `i` is a character boundary. Not after an
    // invisible character: masking reads through it, so its neighbours may be one value.
    if c >= 0x80 && (i == b.len() || !is_continuation(byte(b, i))) {
        return invisible_before(b, i).is_none() && non_ascii_cut(b, i, at);
    }
    false
}

fn is_continuation(c: u8) -> bool {
    (0x80..0xc0).contains(&c)
}

/// Rule 2: whether a cut right after the space at `s` is safe. Invisible characters next
/// to the space are looked through: masking reads the text without them.
fn space_cut(b: &[u8], s: usize) -> bool {
    let may_start_group = |n: u8| n.is_ascii_digit() || n.is_ascii_uppercase() || n == b'(' || starts_escape(n);
    let mut after = s + 1;
    while let Some(len) = invisible_at(b, after) {
        after += len;
    }
    if b.get(after).is_some_and(|&n| !may_start_group(n)) {
        return true;
    }
    let mut before = s;
    while let Some(len) = invisible_before(b, before) {
        before -= len;
    }
    let Some(p) = before.checked_sub(1) else { return true };
    let prev = byte(b, p);
    if prev == b')' {
        return false;
    }
    // A word written with escapes may decode to a group of digits or capitals.
    let mut run = b
        .get(..before)
        .unwrap_or_default()
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || is_escape_byte(**c));
    if run.any(|&c| is_escape_byte(c)) {
        return false;
    }
    if !prev.is_ascii_alphanumeric() {
        return true;
    }
    // Cards and SSNs may follow letters (`CC4111 1111 …`): any word ending in a digit may
    // end with a group.
    if prev.is_ascii_digit() {
        return false;
    }
    let word = b.get(..before).unwrap_or_default().iter().rev().take_while(|c| c.is_ascii_alphanumeric());
    let (mut len, mut lower, mut upper) = (0usize, false, false);
    for c in word {
        len += 1;
        lower |= c.is_ascii_lowercase();
        upper |= c.is_ascii_uppercase();
    }
    lower || (upper && len > 4)
}

/// Whether `c` may be inside an escape that masking decodes (`&#64;`) without being a
/// letter or digit.
fn is_escape_byte(c: u8) -> bool {
    starts_escape(c) || matches!(c, b'#' | b';')
}

/// Longest e-mail local part (before the `@`), as the detector bounds it.
const LOCAL_MAX: usize = 64;
/// Bytes looked at before a non-ASCII boundary: more than an `@` and a 253-byte domain.
const DOMAIN_REACH: usize = 320;

/// Rule 3: whether the boundary `i` after a non-ASCII character is safe.
fn non_ascii_cut(b: &[u8], i: usize, at: &mut AtFinder) -> bool {
    // The margins count what masking reads: invisible characters are left out of its view,
    // so they do not count towards a local part's 64 bytes or a domain's reach.
    let Some(hi) = after_visible(b, i, LOCAL_MAX + 1) else {
        return false;
    };
    at.last_below(hi).is_none_or(|a| a + DOMAIN_REACH < i && after_visible(b, a, DOMAIN_REACH).is_some_and(|e| e < i))
}

/// The offset `n` visible bytes after `from` (invisible characters skipped), if the text
/// reaches that far.
fn after_visible(b: &[u8], from: usize, n: usize) -> Option<usize> {
    let (mut i, mut seen) = (from, 0);
    while seen < n {
        if i >= b.len() {
            return None;
        }
        match invisible_at(b, i) {
            Some(len) => i += len,
            None => {
                i += 1;
                seen += 1;
            }
        }
    }
    Some(i)
}

/// Finds the last `@` before a position, for positions queried in decreasing order (as
/// the backward scan does) in amortised linear time.
struct AtFinder<'a> {
    b: &'a [u8],
    /// `(hi, answer)` of the last query.
    cached: Option<(usize, Option<usize>)>,
}

impl<'a> AtFinder<'a> {
    fn new(b: &'a [u8]) -> Self {
        AtFinder { b, cached: None }
    }

    fn last_below(&mut self, hi: usize) -> Option<usize> {
        let found = match self.cached {
            // The last `@` below a larger bound is also the last below `hi` if it is below.
            Some((h, found)) if h >= hi && found.is_none_or(|a| a < hi) => found,
            Some((h, Some(a))) if h >= hi => self.search(a.min(hi)),
            _ => self.search(hi),
        };
        self.cached = Some((hi, found));
        found
    }

    fn search(&self, hi: usize) -> Option<usize> {
        self.b.get(..hi.min(self.b.len()))?.iter().rposition(|&c| c == b'@' || starts_escape(c))
    }
}

/// Private keys in a text: complete blocks (never cut inside) and the start of the first
/// block whose end has not arrived (nothing is released from there on).
#[derive(Debug, Default)]
struct PrivateKeys {
    blocks: Vec<(usize, usize)>,
    live: Option<usize>,
}

impl PrivateKeys {
    /// The start of the complete block that `i` is strictly inside of, if any.
    fn inside_block(&self, i: usize) -> Option<usize> {
        self.blocks.iter().find(|&&(s, e)| s < i && i < e).map(|&(s, _)| s)
    }
}

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";
/// Longest escape the reader's view decodes (`\uD83D\uDE00`).
const ESCAPE_MAX: usize = 12;
/// Longest PEM label the detector reads.
const LABEL_MAX: usize = 64;

/// How far a PEM label starting at `start` has got.
enum Label {
    /// Names a private key and is closed by `-----`; the offset just past the dashes.
    Key(usize),
    /// The text ends before the label (or its dashes) is complete, and it may still name a key.
    Open,
    /// Cannot name a private key whatever follows.
    Dead,
}

fn label(b: &[u8], start: usize) -> Label {
    let rest = b.get(start..).unwrap_or_default();
    let run = rest
        .iter()
        .take(LABEL_MAX + 1)
        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || **c == b' ')
        .count();
    if run == rest.len() {
        return if run <= LABEL_MAX { Label::Open } else { Label::Dead };
    }
    // An escape still arriving may stand for a label character (`PRIV\u0041TE`): once it
    // is complete, the reader's view decodes it.
    if rest.get(run).is_some_and(|&c| starts_escape(c)) && rest.len() - run <= ESCAPE_MAX {
        return Label::Open;
    }
    let len = run.min(LABEL_MAX);
    let name = rest.get(..len).unwrap_or_default();
    if !(name.ends_with(b"PRIVATE KEY") || name.ends_with(b"PRIVATE KEY BLOCK")) {
        return Label::Dead;
    }
    let after = rest.get(len..).unwrap_or_default();
    // Dashes so far, then an escape still arriving (`KEY--\u002d--`) may close it too.
    let dashes = after.iter().take_while(|&&c| c == b'-').count();
    let escape_arriving = dashes < DASHES.len()
        && after.get(dashes).is_some_and(|&c| starts_escape(c))
        && after.len() - dashes <= ESCAPE_MAX;
    if after.starts_with(DASHES) {
        Label::Key(start + len + DASHES.len())
    } else if DASHES.starts_with(after) || escape_arriving {
        Label::Open
    } else {
        Label::Dead
    }
}

/// The first `needle` (which starts with `-`, rare in text) at or after `from`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let mut at = from;
    loop {
        at += b.get(at..)?.iter().position(|&c| c == b'-')?;
        if b.get(at..).is_some_and(|rest| rest.starts_with(needle)) {
            return Some(at);
        }
        at += 1;
    }
}

/// Whether `b` may hold a `-----BEGIN ` at or after `from`, or anywhere in the text a
/// reader sees (masking reads a key through escapes and invisible characters:
/// `-\u{200B}----BEGIN …`, `&#45;----BEGIN …`).
fn may_hold_key(b: &[u8], from: usize) -> bool {
    find(b, from, BEGIN).is_some() || views(b).iter().any(|v| find(v.text().as_bytes(), 0, BEGIN).is_some())
}

/// The views masking reads `b` in: decoded, and without invisible characters only.
fn views(b: &[u8]) -> Vec<ReaderView> {
    let Ok(s) = std::str::from_utf8(b) else {
        return Vec::new();
    };
    [ReaderView::of(s), ReaderView::without_invisibles(s)].into_iter().flatten().collect()
}

/// Where private-key blocks are, mirroring the detector (which also reads the text as a
/// reader sees it): a `-----BEGIN ` with a private key label, through the first
/// `-----END ` with one. The text's own blocks and each view's count: an escape still
/// arriving reads as another character in the decoded view (`&#8` of `&#83;` as U+0008),
/// where only the text itself, or its view without invisible characters, shows a key
/// that may still come.
fn private_keys(b: &[u8]) -> PrivateKeys {
    let mut keys = private_keys_in(b);
    for v in views(b) {
        let seen = private_keys_in(v.text().as_bytes());
        keys.blocks.extend(seen.blocks.iter().map(|&(s, e)| (v.source(s), v.source(e))));
        keys.live = match (keys.live, seen.live.map(|p| v.source(p))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    keys
}

fn private_keys_in(b: &[u8]) -> PrivateKeys {
    let mut keys = PrivateKeys::default();
    let mut from = 0;
    while let Some(p) = find(b, from, BEGIN) {
        let header_end = match label(b, p + BEGIN.len()) {
            Label::Key(end) => end,
            Label::Open => {
                keys.live = Some(p);
                return keys;
            }
            Label::Dead => {
                from = p + 1;
                continue;
            }
        };
        let mut search = header_end;
        let end = loop {
            let Some(q) = find(b, search, END) else { break None };
            match label(b, q + END.len()) {
                Label::Key(end) => break Some(end),
                Label::Open => break None,
                Label::Dead => search = q + END.len(),
            }
        };
        match end {
            Some(end) => {
                keys.blocks.push((p, end));
                from = end;
            }
            None => {
                keys.live = Some(p);
                return keys;
            }
        }
    }
    // A `-----BEGIN ` still arriving: the tail after the last safe boundary holds it
    // anyway (dashes and letters are never boundaries).
    keys
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn cut(s: &str) -> &str {
        &s[..safe_cut(s, CutRule::Builtin)]
    }

    #[test]
    fn prose_is_released_up_to_the_last_word() {
        assert_eq!(cut("Hello world, this is"), "Hello world, this ");
        assert_eq!(cut("Hello world, "), "Hello world, ");
        assert_eq!(cut("Hello world."), "Hello ");
        assert_eq!(cut("line one\nline"), "line one\n");
        assert_eq!(cut("word"), "");
    }

    #[test]
    fn grouped_numbers_and_ibans_are_held_until_their_group_ends() {
        assert_eq!(cut("card 4111 1111 "), "card ");
        assert_eq!(cut("call (415) "), "call ");
        assert_eq!(cut("iban GB82 WEST "), "iban ");
        assert_eq!(cut("iban GB82 WEST 1234 done "), "iban GB82 WEST 1234 done ");
        assert_eq!(cut("SHOUTING WORDS "), "SHOUTING WORDS ");
        assert_eq!(cut("I AM "), "");
    }

    #[test]
    fn a_private_key_is_held_from_its_header_until_its_end_line() {
        let head = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIE AAAA\nabc ";
        assert_eq!(cut(head), "key:\n");
        assert_eq!(cut("key:\n-----BEGIN RSA PRI"), "key:\n");
        let full = format!("{head}\n-----END RSA PRIVATE KEY-----\nafter ");
        assert_eq!(cut(&full), full);
        let no_newline = format!("{head}\n-----END RSA PRIVATE KEY-----");
        assert_eq!(cut(&no_newline), "key:\n", "not cut inside the complete block");
        assert_eq!(cut("-----BEGIN CERTIFICATE-----\nMIIBxyz "), "-----BEGIN CERTIFICATE-----\nMIIBxyz ");
    }

    #[test]
    fn a_private_key_with_invisible_characters_in_its_header_or_end_line_is_held_the_same() {
        let head = "key:\n-\u{200b}----BEGIN RSA PRIVATE KEY-----\nMIIE AAAA\nabc ";
        assert_eq!(cut(head), "key:\n", "masking reads the header through the zero-width space");
        let full = format!("{head}\n-----END RSA PRIV\u{ad}ATE KEY-----\nafter ");
        assert_eq!(cut(&full), full);
        let no_newline = format!("{head}\n-----END RSA PRIVATE KEY-----\u{200b}");
        assert_eq!(cut(&no_newline), "key:\n", "not cut inside the complete block");
    }

    #[test]
    fn a_private_key_header_with_an_escape_still_arriving_is_held() {
        for head in ["PRIV\\", "PRIV\\u00", "OPENS&#8", "OPENS%5", "PRIVATE KEY--\\u00", "PRIVATE KEY-&#4"] {
            let text = format!("key:\n-----BEGIN {head}");
            assert_eq!(cut(&text), "key:\n", "{text:?}");
        }
        let hidden = "key:\n-\u{ad}----BEGIN EC PRIVA&#8";
        assert_eq!(cut(hidden), "key:\n", "invisible characters in the dashes and an escape arriving");
        let done = "key:\n-----BEGIN RSA PRIV\\u0041TE KEY-----\nMIIE AAAA\nabc ";
        assert_eq!(cut(done), "key:\n", "the complete escape is read by the view");
        let not_a_key = format!("-----BEGIN RSA PRIV\\q{} text ", "x".repeat(20));
        assert_eq!(cut(&not_a_key), not_a_key, "an escape lead far from the end does not hold the text");
    }

    #[test]
    fn invisible_characters_do_not_count_towards_the_margins_around_an_at_sign() {
        // 36 bytes of Devanagari, 12 of zero-width spaces, then a 21-byte local part: the
        // masker's view (without the spaces) reads one 57-byte local part from the start.
        let text = format!("{}{}aaaaa.aaaaaa.aaaaaaaa@a.aa", "नमस्ते".repeat(2), "\u{200b}".repeat(4));
        assert_eq!(safe_cut(&text, CutRule::Builtin), 0);
    }

    #[test]
    fn non_ascii_text_is_cut_away_from_any_at_sign() {
        let cjk = "这是一个很长的中文句子没有空格".repeat(4);
        let c = safe_cut(&cjk, CutRule::Builtin);
        assert!(c > 0 && c + 65 <= cjk.len(), "{c}");
        let with_at = format!("{cjk}@{cjk}");
        let c = safe_cut(&with_at, CutRule::Builtin);
        let at = with_at.find('@').unwrap();
        assert!(c + 65 <= at || c > at + 320, "{c} vs @ at {at}");
    }

    #[test]
    fn values_written_with_escapes_are_never_cut_before_they_end() {
        assert_eq!(cut("pay &#52;111 1111 "), "pay ");
        assert_eq!(cut("pay \\u0034111 1111 "), "pay ");
        assert_eq!(cut("iban &#71;B82 WEST "), "iban ");
        assert_eq!(cut("group 4111 &#49;111"), "group ");
        assert_eq!(cut("call (415)&#32;555 "), "call ");
        assert_eq!(cut("plain words &amp; more "), "plain words &amp; more ");
        let cjk = "这是一个很长的中文句子没有空格".repeat(4);
        let escaped_at = format!("{cjk}用户\\u0040例子{cjk}");
        let c = safe_cut(&escaped_at, CutRule::Builtin);
        let at = escaped_at.find('\\').unwrap();
        assert!(c + 65 <= at || c > at + 320, "{c} vs escaped @ at {at}");
    }

    #[test]
    fn lines_rule_cuts_after_line_feeds_only() {
        assert_eq!(&"a b, c\nd e"[..safe_cut("a b, c\nd e", CutRule::Lines)], "a b, c\n");
        assert_eq!(safe_cut("a b, c d", CutRule::Lines), 0);
    }
}

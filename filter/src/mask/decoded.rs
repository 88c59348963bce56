//! What a reader decodes from a text one level further: JSON and C-style escapes
//! (`\u0040`, `\x40`, `\"`), HTML character references (`&#64;`, `&#x40;`, `&commat;`)
//! and URL percent-encoding (`%40`). A client that parses a text body as JSON, renders it
//! as HTML, follows a link or hands it to a model reads `carol@example.com` in
//! `carol\u0040example.com`, so detections are also searched in this decoded view and
//! mapped back to the bytes they came from, which are then masked whole.
//!
//! Invisible characters (zero-width space, non-joiner and joiner, word joiner, soft hyphen,
//! BOM), raw or escaped, are left out of the view: a reader does not see them, so
//! `alice\u{200B}@example.com` and `4111\u{AD}1111…` are found there and masked whole.
//!
//! One level only, all kinds at once: `&amp;#64;` reads as `&#64;`, not `@`. Sequences
//! that do not decode (a lone surrogate, `&#xZZ;`, `%4`, an unknown entity) stay as they
//! are. Where that mixes what no single reader decodes at once (escapes of two syntaxes,
//! or escapes and invisible characters), the views of each single reader are built too
//! ([`Decoded::single_reader_views`]). Imports only the detectors' definition of an
//! invisible character.

use memchr::memchr3;

use super::detectors::is_invisible;

/// The bytes an escape that this view decodes starts with: `\\u0040`, `&#64;`, `%40`.
const ESCAPE_LEADS: [u8; 3] = [b'\\', b'&', b'%'];

/// Whether `c` may start an escape this view decodes (the stream's cut rule must not
/// split a value there either).
pub(crate) fn starts_escape(c: u8) -> bool {
    ESCAPE_LEADS.contains(&c)
}

/// `memchr3` for the escape leads.
fn find_escape_lead(b: &[u8]) -> Option<usize> {
    let [a, e, p] = ESCAPE_LEADS;
    memchr3(a, e, p, b)
}

/// The first byte at or after `from` where the view may differ from the source: an escape
/// lead (`\`, `&`, `%`) or an invisible character, whose UTF-8 lead bytes are 0xE2, 0xC2
/// and 0xEF. Each kind's next position is kept, so a text full of one kind (em dashes,
/// all 0xE2) and free of the other costs one pass, not one per hit.
struct Next<'a> {
    b: &'a [u8],
    escape: usize,
    invisible: usize,
}

impl<'a> Next<'a> {
    /// Starts at `first`, the first byte that may be either kind.
    fn new(b: &'a [u8], first: usize) -> Self {
        let mut next = Next { b, escape: 0, invisible: 0 };
        next.escape = next.find_escape(first);
        next.invisible = next.find_invisible(first);
        next
    }

    fn at(&mut self, from: usize) -> usize {
        if self.escape < from {
            self.escape = self.find_escape(from);
        }
        if self.invisible < from {
            self.invisible = self.find_invisible(from);
        }
        self.escape.min(self.invisible)
    }

    fn find_escape(&self, from: usize) -> usize {
        let rest = self.b.get(from..).unwrap_or_default();
        find_escape_lead(rest).map_or(self.b.len(), |k| from + k)
    }

    fn find_invisible(&self, from: usize) -> usize {
        let mut i = from;
        while let Some(k) = memchr3(0xe2, 0xc2, 0xef, self.b.get(i..).unwrap_or_default()) {
            if invisible_at(self.b, i + k).is_some() {
                return i + k;
            }
            i += k + 1;
        }
        self.b.len()
    }
}

/// The first byte of `b` that may start an escape or an invisible character. A plain
/// loop for short strings, where two `memchr3` calls cost more in setup than they save;
/// `memchr3` (vectorised) for longer ones.
fn first_special(b: &[u8]) -> Option<usize> {
    if b.len() < SHORT {
        return b.iter().position(|&c| starts_escape(c) || matches!(c, 0xc2 | 0xe2 | 0xef));
    }
    let escape = find_escape_lead(b);
    let lead = memchr3(0xc2, 0xe2, 0xef, b.get(..escape.unwrap_or(b.len())).unwrap_or_default());
    lead.or(escape)
}

/// Strings shorter than this are searched byte by byte (see [`first_special`]).
const SHORT: usize = 32;

/// The length of the invisible character at `b[i]`, if there is one.
pub(crate) fn invisible_at(b: &[u8], i: usize) -> Option<usize> {
    let len = if b.get(i) == Some(&0xc2) { 2 } else { 3 };
    let c = std::str::from_utf8(b.get(i..i + len)?).ok()?.chars().next()?;
    is_invisible(c).then_some(len)
}

/// A decoded view of a source text, with the way back to the source's byte offsets.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    pub(super) text: String,
    /// For each byte of `text`, the source offset where the character it belongs to
    /// starts, plus one entry for the end (the source's length). A character decoded from
    /// an escape maps to the escape's first byte, so a span `a..b` of `text` comes from
    /// `origin[a]..origin[b]` of the source, whole escapes included.
    origin: Vec<u32>,
    /// The escape families ([`BACKSLASH`], [`REFERENCE`], [`PERCENT`]) the last decode
    /// decoded, and whether it left out invisible characters.
    families: u8,
    dropped: bool,
}

/// Escape families: JSON and C escapes, HTML character references, URL percent-encoding.
pub(super) const BACKSLASH: u8 = 1;
pub(super) const REFERENCE: u8 = 2;
pub(super) const PERCENT: u8 = 4;
pub(super) const ALL_FAMILIES: u8 = BACKSLASH | REFERENCE | PERCENT;

fn family(lead: u8) -> u8 {
    match lead {
        b'\\' => BACKSLASH,
        b'&' => REFERENCE,
        _ => PERCENT,
    }
}

impl Decoded {
    /// Decodes `s` into this view; false (and the view left meaningless) when `s` holds
    /// nothing to decode, the common case, which costs one plain loop over it.
    pub(super) fn decode(&mut self, s: &str) -> bool {
        self.build(s, ALL_FAMILIES)
    }

    /// The views a single reader sees, when the all-kinds view mixed what no one reader
    /// decodes at once: an escape of one syntax next to one of another, or next to an
    /// invisible character, can eat a value's first characters (`%40\u0030…` reads as `@0…`
    /// there, as `%40 0…` to a JSON reader; `%0a` of `%0a\u{200B}@a.aa` as a line feed).
    /// The escape families each alone (with invisible characters left out), then no escape
    /// at all. Empty when the view was not mixed, the common case.
    pub(super) fn single_reader_views(&self) -> impl Iterator<Item = u8> {
        let (f, dropped) = (self.families, self.dropped);
        let mixed = f.count_ones() > 1 || (f != 0 && dropped);
        [BACKSLASH, REFERENCE, PERCENT, 0]
            .into_iter()
            .filter(move |&only| mixed && (only & f != 0 || (only == 0 && dropped)))
    }

    /// The view that decodes only the escape `families` (all invisible characters left
    /// out); false when it would not differ from the source.
    pub(super) fn build(&mut self, s: &str, families: u8) -> bool {
        let b = s.as_bytes();
        let Some(first) = first_special(b) else {
            return false;
        };
        let mut next = Next::new(b, first);
        let first = next.at(first);
        if first >= b.len() {
            return false;
        }
        self.text.clear();
        self.origin.clear();
        let mut changed = false;
        let (mut decoded, mut dropped) = (0u8, false);
        let mut plain = 0;
        let mut i = first;
        while i < b.len() {
            let (c, len) = match invisible_at(b, i) {
                Some(len) => {
                    dropped = true;
                    (None, len)
                }
                None => match decode_at(b, i).filter(|_| family(byte_at(b, i)) & families != 0) {
                    Some((c, len)) => {
                        decoded |= family(byte_at(b, i));
                        (Some(c).filter(|&c| !is_invisible(c)), len)
                    }
                    None => {
                        i = next.at(i + 1);
                        continue;
                    }
                },
            };
            self.push_source(s, plain, i);
            if let Some(c) = c {
                self.origin.extend(std::iter::repeat_n(i as u32, c.len_utf8()));
                self.text.push(c);
            }
            changed = true;
            i += len;
            plain = i;
            i = next.at(i);
        }
        if !changed {
            return false;
        }
        self.families = decoded;
        self.dropped = dropped;
        self.push_source(s, plain, b.len());
        self.origin.push(b.len() as u32);
        true
    }

    /// The source span of the decoded span `start..end`.
    pub(super) fn source_span(&self, start: usize, end: usize) -> (usize, usize) {
        let at = |i: usize| self.origin.get(i).map_or(usize::MAX, |&o| o as usize);
        (at(start), at(end))
    }

    /// Appends `s[from..to]` unchanged (a run without escapes).
    fn push_source(&mut self, s: &str, from: usize, to: usize) {
        if to > from {
            self.text.push_str(s.get(from..to).unwrap_or_default());
            self.origin.extend(from as u32..to as u32);
        }
    }
}

fn byte_at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The length of the invisible character ending right before `b[i]`, if there is one.
pub(crate) fn invisible_before(b: &[u8], i: usize) -> Option<usize> {
    [2, 3].into_iter().find(|&len| i >= len && invisible_at(b, i - len) == Some(len))
}

/// The character an escape at `b[i]` stands for, and the escape's length in bytes.
fn decode_at(b: &[u8], i: usize) -> Option<(char, usize)> {
    let rest = b.get(i..)?;
    match rest.first()? {
        b'\\' => backslash(rest),
        b'&' => reference(rest),
        b'%' => percent(rest),
        _ => None,
    }
}

fn backslash(rest: &[u8]) -> Option<(char, usize)> {
    let c = match rest.get(1)? {
        b'u' => return unicode_escape(rest),
        b'x' => return Some((char::from(hex_value(rest.get(2..4)?)? as u8), 4)),
        b'n' => '\n',
        b't' => '\t',
        b'r' => '\r',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'"' => '"',
        b'\'' => '\'',
        b'\\' => '\\',
        b'/' => '/',
        _ => return None,
    };
    Some((c, 2))
}

/// `\uXXXX`, or a surrogate pair `\uD83D\uDE00`; a lone surrogate does not decode.
fn unicode_escape(rest: &[u8]) -> Option<(char, usize)> {
    let hi = hex_value(rest.get(2..6)?)?;
    if !(0xD800..0xDC00).contains(&hi) {
        return char::from_u32(hi).map(|c| (c, 6));
    }
    if rest.get(6..8)? != b"\\u" {
        return None;
    }
    let lo = hex_value(rest.get(8..12)?)?;
    if !(0xDC00..0xE000).contains(&lo) {
        return None;
    }
    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).map(|c| (c, 12))
}

/// `&#64;`, `&#x40;` (the `;` optional, as browsers read them) or a named reference.
fn reference(rest: &[u8]) -> Option<(char, usize)> {
    if rest.get(1) == Some(&b'#') {
        let hex = matches!(rest.get(2), Some(b'x' | b'X'));
        let start = if hex { 3 } else { 2 };
        let digits = rest
            .get(start..)?
            .iter()
            .take(8)
            .take_while(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() })
            .count();
        if digits == 0 || digits > 7 {
            return None;
        }
        let text = std::str::from_utf8(rest.get(start..start + digits)?).ok()?;
        let cp = u32::from_str_radix(text, if hex { 16 } else { 10 }).ok()?;
        let c = char::from_u32(cp)?;
        let semicolon = usize::from(rest.get(start + digits) == Some(&b';'));
        return Some((c, start + digits + semicolon));
    }
    let name_len = rest.get(1..)?.iter().take(8).take_while(|c| c.is_ascii_alphabetic()).count();
    if rest.get(1 + name_len) != Some(&b';') {
        return None;
    }
    let name = rest.get(1..1 + name_len)?;
    NAMED.iter().find(|(n, _)| n.as_bytes() == name).map(|&(_, c)| (c, name_len + 2))
}

/// Named references for the characters values are written with (the `;` required): the
/// separators of e-mail addresses, numbers and keys, and the usual HTML escapes.
const NAMED: [(&str, char); 25] = [
    ("commat", '@'),
    ("period", '.'),
    ("plus", '+'),
    ("minus", '\u{2212}'),
    ("hyphen", '\u{2010}'),
    ("dash", '\u{2010}'),
    ("lowbar", '_'),
    ("UnderBar", '_'),
    ("lpar", '('),
    ("rpar", ')'),
    ("nbsp", '\u{a0}'),
    ("sol", '/'),
    ("colon", ':'),
    ("num", '#'),
    ("equals", '='),
    ("percnt", '%'),
    ("amp", '&'),
    ("quot", '"'),
    ("apos", '\''),
    ("lt", '<'),
    ("gt", '>'),
    ("Tab", '\t'),
    ("shy", '\u{ad}'),
    ("zwj", '\u{200d}'),
    ("zwnj", '\u{200c}'),
];

/// `%40`: percent-encoding of an ASCII character.
fn percent(rest: &[u8]) -> Option<(char, usize)> {
    let v = hex_value(rest.get(1..3)?)?;
    (v < 0x80).then(|| (char::from(v as u8), 3))
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |v, &c| Some(v * 16 + char::from(c).to_digit(16)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn decoded(s: &str) -> Option<String> {
        let mut d = Decoded::default();
        d.decode(s).then(|| d.text.clone())
    }

    #[test]
    fn every_escape_kind_decodes_one_level() {
        assert_eq!(decoded("carol\\u0040example.com").unwrap(), "carol@example.com");
        assert_eq!(decoded("carol\\x40example.com").unwrap(), "carol@example.com");
        assert_eq!(decoded("carol&#64;example&#x2E;com").unwrap(), "carol@example.com");
        assert_eq!(decoded("carol&#64example.com").unwrap(), "carol@example.com", "`;` is optional");
        assert_eq!(decoded("carol&commat;example&period;com").unwrap(), "carol@example.com");
        assert_eq!(decoded("mailto:carol%40example.com").unwrap(), "mailto:carol@example.com");
        assert_eq!(decoded("say \\\"hi\\\" \\ud83d\\ude00").unwrap(), "say \"hi\" \u{1F600}");
        assert_eq!(decoded("&amp;#64;").unwrap(), "&#64;", "one level only");
    }

    #[test]
    fn text_without_decodable_sequences_is_left_alone() {
        assert_eq!(decoded("plain words"), None);
        assert_eq!(decoded("a=1&b=2 100% \\d &#xZZ; &unknown; %4 %e9 \\ud800 x"), None);
    }

    #[test]
    fn invisible_characters_raw_or_escaped_are_left_out_of_the_view() {
        assert_eq!(decoded("alice\u{200b}@exa\u{ad}mple.com\u{feff}").unwrap(), "alice@example.com");
        assert_eq!(decoded("4111\\u200B1111&#x2060;1111&shy;1111").unwrap(), "4111111111111111");
        assert_eq!(decoded("a \u{200d}\u{200c}b"), Some("a b".into()));
        assert_eq!(decoded("em — dash … «quote» ·"), None, "visible punctuation is not dropped");
    }

    #[test]
    fn a_value_with_invisible_characters_maps_back_to_its_whole_span() {
        let src = "mail ali\u{200b}ce@example.com\u{200b}— ok";
        let mut d = Decoded::default();
        assert!(d.decode(src));
        let start = d.text.find("alice").unwrap();
        let (a, b) = d.source_span(start, start + "alice@example.com".len());
        assert_eq!(&src[a..b], "ali\u{200b}ce@example.com\u{200b}", "a dropped character maps to the span after it");
    }

    #[test]
    fn decoded_spans_map_back_to_whole_escapes() {
        let src = "to: carol\\u0040example.com&period; ok";
        let mut d = Decoded::default();
        assert!(d.decode(src));
        let start = d.text.find("carol").unwrap();
        let end = d.text.find(" ok").unwrap();
        let (a, b) = d.source_span(start, end);
        assert_eq!(&src[a..b], "carol\\u0040example.com&period;");
        assert_eq!(d.source_span(d.text.len(), d.text.len()), (src.len(), src.len()));
    }
}

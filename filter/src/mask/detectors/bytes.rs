//! Byte-level reads shared by the matchers. Every read goes through [`at`], which yields
//! 0 past either end of the slice, so a matcher can look ahead or behind without bounds
//! checks of its own and never panics on a truncated candidate. A leaf module: it imports
//! nothing from the detectors.

pub(super) fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

pub(super) fn prev(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| at(b, j))
}

pub(super) fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

pub(super) fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

pub(super) fn is_upper_alnum(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

pub(super) fn is_b64url(c: u8) -> bool {
    is_alnum(c) || c == b'-' || c == b'_'
}

pub(super) fn starts_with(b: &[u8], i: usize, prefix: &[u8]) -> bool {
    b.get(i..).is_some_and(|rest| rest.starts_with(prefix))
}

/// Length of the run of bytes satisfying `f` starting at `i`.
pub(super) fn run(b: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(i..).map_or(0, |rest| rest.iter().take_while(|&&c| f(c)).count())
}

pub(super) fn digits_at(b: &[u8], i: usize, n: usize) -> bool {
    (i..i + n).all(|j| is_digit(at(b, j)))
}

pub(super) fn digit_value(c: u8) -> u32 {
    u32::from(c.wrapping_sub(b'0'))
}

/// The character starting at byte `i` and its length in bytes; `None` at the end or inside
/// a character. The matchers scan `&str` bytes, so the text is valid UTF-8.
pub(super) fn char_at(b: &[u8], i: usize) -> Option<(char, usize)> {
    let rest = b.get(i..b.len().min(i + 4))?;
    let len = match rest.first()? {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(rest.get(..len)?).ok()?.chars().next()?;
    Some((c, len))
}

/// The character ending right before byte `i` and its length in bytes.
pub(super) fn char_before(b: &[u8], i: usize) -> Option<(char, usize)> {
    let start = (i.saturating_sub(4)..i).rev().find(|&j| !(0x80..0xc0).contains(&at(b, j)))?;
    char_at(b, start).filter(|&(_, len)| start + len == i)
}

/// Whether a reader sees nothing of `c` (zero-width space, non-joiner and joiner, word
/// joiner, soft hyphen, BOM). The one definition: the decoded view leaves these out.
pub(in crate::mask) fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{ad}' | '\u{feff}')
}

/// Whether a non-ASCII character ends a value rather than belonging to one: spaces,
/// invisible characters, and the punctuation and symbol blocks (Latin-1 punctuation such
/// as `«` `»` `·` and the soft hyphen, general punctuation such as `—` `–` `…` `‘` `’` and
/// the zero-width characters, currency, arrows, mathematical and technical symbols, CJK and
/// full-width punctuation, emoji). Letters of any script are not: they may be part of an
/// internationalised e-mail address.
pub(super) fn is_unicode_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{a0}'..='\u{bf}'
            | '\u{d7}'
            | '\u{f7}'
            | '\u{2000}'..='\u{2bff}'
            | '\u{2e00}'..='\u{2e7f}'
            | '\u{3000}'..='\u{303f}'
            | '\u{fe10}'..='\u{fe6f}'
            | '\u{feff}'
            | '\u{ff00}'..='\u{ff0f}'
            | '\u{ff1a}'..='\u{ff20}'
            | '\u{ff3b}'..='\u{ff40}'
            | '\u{ff5b}'..='\u{ff65}'
            | '\u{1f000}'..='\u{1faff}')
}

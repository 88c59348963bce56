//! E-mail addresses, found from their `@`: the local part is walked back, the domain
//! forward.
//!
//! An address ends at the first byte that cannot continue it, whatever that byte is: the
//! top-level domain is the run of ASCII letters of the last label, so `alice@example.com—`,
//! `…com-`, `…com…`, `…com»` and `…co.uk--x` all end right after the letters. Non-ASCII
//! letters belong to an address (RFC 6531 `zoë@bücher.de`); non-ASCII punctuation, symbols,
//! spaces and invisible characters ([`is_unicode_separator`]) end it on either side.

use super::bytes::{at, char_at, char_before, is_alnum, is_unicode_separator, prev};

/// Local-part bytes; bytes of non-ASCII characters count too (checked whole by the caller).
fn is_local_char(c: u8) -> bool {
    is_alnum(c) || c >= 0x80 || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Length of the domain label at `i`: ASCII letters, digits and `-`, and non-ASCII letters.
fn label_len(b: &[u8], i: usize) -> usize {
    let mut j = i;
    loop {
        let c = at(b, j);
        if is_alnum(c) || c == b'-' {
            j += 1;
        } else if c >= 0x80 {
            match char_at(b, j) {
                Some((ch, len)) if !is_unicode_separator(ch) => j += len,
                _ => return j - i,
            }
        } else {
            return j - i;
        }
    }
}

/// Found from its `@`: the local part (at most 64 bytes, RFC 5321) is walked back no
/// further than `floor` (the end of the previous detection), the domain needs two or more
/// labels of letters, digits and inner hyphens (internationalised labels allowed), and
/// ends with an ASCII alphabetic TLD of 2+ letters followed by anything but an ASCII letter
/// or digit.
pub(super) fn email_at(b: &[u8], pos: usize, floor: usize) -> Option<(usize, usize)> {
    let lo = floor.max(pos.saturating_sub(64));
    let mut start = pos;
    while start > lo && is_local_char(prev(b, start)) {
        if prev(b, start) >= 0x80 {
            match char_before(b, start) {
                Some((ch, len)) if !is_unicode_separator(ch) && start - len >= lo => start -= len,
                _ => break,
            }
        } else {
            start -= 1;
        }
    }
    if start == lo
        && lo > floor
        && is_local_char(prev(b, lo))
        && !char_before(b, lo).is_some_and(|(c, _)| is_unicode_separator(c))
    {
        return None;
    }
    while start < pos && at(b, start) == b'.' {
        start += 1;
    }
    if start == pos {
        return None;
    }
    let domain_start = pos + 1;
    let mut i = domain_start;
    let mut labels = 0usize;
    let mut best = None;
    loop {
        let len = label_len(b, i);
        if len == 0 || len > 63 || at(b, i) == b'-' || i + len - domain_start > 253 {
            break;
        }
        labels += 1;
        // The ASCII letters the label starts with: a TLD when nothing alphanumeric follows
        // them (`uk` in `uk--x`, `com` in `com—`).
        let letters = (i..i + len).take_while(|&j| at(b, j).is_ascii_alphabetic()).count();
        if labels >= 2 && letters >= 2 && !is_alnum(at(b, i + letters)) {
            best = Some(i + letters);
        }
        if at(b, i + len - 1) == b'-' {
            break;
        }
        i += len;
        // The next label may start with a non-ASCII letter (`пример.рф.com`).
        if at(b, i) == b'.' && (is_alnum(at(b, i + 1)) || at(b, i + 1) >= 0x80) {
            i += 1;
        } else {
            break;
        }
    }
    best.map(|end| (start, end))
}

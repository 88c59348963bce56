//! Number-shaped detectors: US SSNs, phone numbers (NANP and E.164 with a `+`) and
//! payment cards (Luhn). They share the edge rules [`digit_start_ok`] and [`end_ok`],
//! which keep them from matching a stretch of a longer number.
//!
//! Letters glued to a value: a card or an SSN is found even when ASCII letters touch it
//! (`CC4111111111111111`, `ssn123-45-6789x`), because a prefix is how a hostile query hides
//! one (`'CC' || card`); digits touching it still stop it (it is a stretch of a longer
//! number). A card right after a letter must also start with an issuer prefix that
//! networks really use ([`issuer_prefix`]): letter-prefixed ids that carry a date
//! (`INV20240101…`) pass Luhn one time in ten, and `20…` is no network's prefix. Phones
//! keep needing a non-alphanumeric neighbour: a glued 10-digit shape is far more often an
//! id than a phone.

use super::bytes::{at, digit_value, digits_at, is_alnum, is_digit, prev, run};

/// A number-shaped detection must not start inside a longer token: not after a letter or
/// digit, nor after `-`/`.` that follows a digit (`1-123-45-6789`, `3.123-45-6789`).
pub(super) fn digit_start_ok(b: &[u8], pos: usize) -> bool {
    let p = prev(b, pos);
    if is_alnum(p) {
        return false;
    }
    let pp = pos.checked_sub(2).map_or(0, |j| at(b, j));
    !(matches!(p, b'-' | b'.') && is_digit(pp))
}

/// The mirror of [`digit_start_ok`] at the end. A value followed by `@` is kept: when an
/// e-mail domain follows, the scan masks the whole address instead (`Detectors::try_at`).
pub(super) fn end_ok(b: &[u8], end: usize) -> bool {
    let n = at(b, end);
    if is_alnum(n) {
        return false;
    }
    !(matches!(n, b'-' | b'.') && is_digit(at(b, end + 1)))
}

// ---- US SSN ----

/// [`end_ok`] for cards and SSNs, which may be followed by a letter (see the module docs).
pub(super) fn value_end_ok(b: &[u8], end: usize) -> bool {
    let n = at(b, end);
    if is_digit(n) {
        return false;
    }
    !(matches!(n, b'-' | b'.' | b'_') && is_digit(at(b, end + 1)))
}

/// `AAA-GG-SSSS` or `AAA GG SSSS` (one separator kind). A bare run of 9 digits is not an
/// SSN in text: too many ids, amounts and zip+4 codes look like one.
pub(super) fn ssn_at(b: &[u8], pos: usize) -> Option<usize> {
    let sep = at(b, pos + 3);
    let shaped = digits_at(b, pos, 3)
        && matches!(sep, b'-' | b' ')
        && digits_at(b, pos + 4, 2)
        && at(b, pos + 6) == sep
        && digits_at(b, pos + 7, 4);
    let end = pos + 11;
    (shaped && ssn_parts_valid(b, pos, pos + 4, pos + 7) && value_end_ok(b, end)).then_some(end)
}

/// Area not 000, 666 or 900–999; group not 00; serial not 0000 (never issued).
pub(super) fn ssn_parts_valid(b: &[u8], area: usize, group: usize, serial: usize) -> bool {
    let num = |i: usize, n: usize| (i..i + n).fold(0u32, |acc, j| acc * 10 + digit_value(at(b, j)));
    let a = num(area, 3);
    a != 0 && a != 666 && a < 900 && num(group, 2) != 0 && num(serial, 4) != 0
}

// ---- phone ----

/// NANP area code and exchange: first digit 2–9 and not an `N11` service code.
pub(super) fn nanp_parts_valid(b: &[u8], area: usize, exchange: usize) -> bool {
    let part = |i: usize| matches!(at(b, i), b'2'..=b'9') && !(at(b, i + 1) == b'1' && at(b, i + 2) == b'1');
    part(area) && part(exchange)
}

/// `415-555-0134`, `415.555.0134`, `415 555 0134`, `(415) 555-0134`, optionally led by
/// `1-`/`1 `/`1.`.
/// A bare digit run is never a phone in text: it is far more often an order id.
pub(super) fn nanp_at(b: &[u8], pos: usize) -> Option<usize> {
    if at(b, pos) == b'1' && matches!(at(b, pos + 1), b'-' | b'.' | b' ') {
        if let Some(end) = nanp_body(b, pos + 2).filter(|&e| end_ok(b, e)) {
            return Some(end);
        }
    }
    nanp_body(b, pos).filter(|&e| end_ok(b, e))
}

pub(super) fn nanp_body(b: &[u8], pos: usize) -> Option<usize> {
    let (area, exchange, sep_at) = if at(b, pos) == b'(' {
        if !(digits_at(b, pos + 1, 3) && at(b, pos + 4) == b')') {
            return None;
        }
        let ex = if at(b, pos + 5) == b' ' { pos + 6 } else { pos + 5 };
        (pos + 1, ex, ex + 3)
    } else {
        let sep = at(b, pos + 3);
        if !(digits_at(b, pos, 3) && matches!(sep, b'-' | b'.' | b' ') && at(b, pos + 7) == sep) {
            return None;
        }
        (pos, pos + 4, pos + 7)
    };
    let sep = at(b, sep_at);
    let shaped = digits_at(b, exchange, 3) && matches!(sep, b'-' | b'.' | b' ') && digits_at(b, sep_at + 1, 4);
    (shaped && nanp_parts_valid(b, area, exchange)).then_some(sep_at + 5)
}

/// E.164 written with a `+`: country code first digit 1–9, 8–15 digits in all, single
/// spaces, dashes or dots between groups, and parentheses around one group
/// (`+1 (415) 555-0134`, `+44 (0)20 7946 0958`). An unbroken run past 15 digits is not
/// a phone; a grouped one that already held 8 digits is several numbers in a row, and is
/// masked whole rather than guessing where the first one ends.
pub(super) fn e164_at(b: &[u8], pos: usize) -> Option<usize> {
    let p = prev(b, pos);
    if is_alnum(p) || !matches!(at(b, pos + 1), b'1'..=b'9') {
        return None;
    }
    let mut i = pos + 1;
    let mut digits = 0usize;
    let mut end = i;
    let mut open = false;
    // Digits at the last group boundary: past 15 digits the run is only kept when a
    // boundary already held a full number (several numbers in a row), then masked whole.
    let mut cut: Option<usize> = None;
    loop {
        let c = at(b, i);
        if is_digit(c) {
            digits += 1;
            if digits > 15 && cut.is_none_or(|d| d < 8) {
                return None;
            }
            i += 1;
            end = i;
        } else if matches!(c, b' ' | b'-' | b'.') && !open && (is_digit(at(b, i + 1)) || at(b, i + 1) == b'(') {
            cut = Some(digits);
            i += 1;
        } else if c == b'(' && !open && is_digit(at(b, i + 1)) {
            open = true;
            i += 1;
        } else if c == b')' && open && is_digit(prev(b, i)) {
            open = false;
            i += 1;
        } else {
            break;
        }
    }
    (digits >= 8 && !open && end_ok(b, end)).then_some(end)
}

// ---- credit card ----

/// Visa 4, Mastercard 2/5, Amex/Diners/JCB 3, Discover/UnionPay 6: the first digits of
/// the networks that issue 13–19 digit cards. Excludes `1…` millisecond timestamps.
pub(super) fn card_network_digit(c: u8) -> bool {
    matches!(c, b'2'..=b'6')
}

/// Whether the digits at `pos` start with a prefix a card network issues: Visa 4,
/// Mastercard 51–55 and 2221–2720, Amex 34/37, Diners 300–305/36/38, JCB 3528–3589,
/// Discover 6011/644–649/65, UnionPay 62.
pub(super) fn issuer_prefix(b: &[u8], pos: usize) -> bool {
    let num = |n: usize| (pos..pos + n).fold(0u32, |acc, j| acc * 10 + digit_value(at(b, j)));
    if !digits_at(b, pos, 4) {
        return false;
    }
    let (two, three, four) = (num(2), num(3), num(4));
    matches!(two, 40..=49 | 51..=55 | 34 | 37 | 36 | 38 | 65 | 62)
        || (2221..=2720).contains(&four)
        || (300..=305).contains(&three)
        || (3528..=3589).contains(&four)
        || four == 6011
        || (644..=649).contains(&three)
}

/// A quick look at digits right after a letter: only an SSN (`123-45-`, `123 45 `) or a
/// card with an issuer prefix (13+ digits, or a group of 4 and a separator) may start
/// there. Keeps hashes and letter-prefixed ids, full of such digits, cheap to scan.
pub(super) fn glued_plausible(b: &[u8], pos: usize) -> bool {
    let sep = at(b, pos + 3);
    if !digits_at(b, pos, 3) {
        return false;
    }
    if matches!(sep, b'-' | b' ') {
        return digits_at(b, pos + 4, 2) && at(b, pos + 6) == sep;
    }
    let grouped = matches!(at(b, pos + 4), b' ' | b'-' | b'.' | b'_') && is_digit(at(b, pos + 5));
    is_digit(sep) && (grouped || digits_at(b, pos + 4, 9)) && issuer_prefix(b, pos)
}

pub(super) fn luhn_valid(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.rev().enumerate() {
        let mut d = digit_value(c);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// 13–19 digits, either one unbroken run or groups split by single spaces, dashes, dots or
/// underscores (one kind per number) with a first group of 4 and further groups of 3–6 (4-4-4-4, 4-6-5,
/// 4-4-4-4-3), or a short last group of 2 (14-digit Diners cards written 4-4-4-2).
/// Luhn-valid. A grouped number may be followed by more groups (`… 2024`): the longest
/// valid prefix ending on a group boundary wins.
pub(super) fn card_at(b: &[u8], pos: usize) -> Option<usize> {
    if !card_network_digit(at(b, pos)) {
        return None;
    }
    let first = run(b, pos, is_digit);
    if first >= 13 {
        let end = pos + first;
        let valid = first <= 19 && value_end_ok(b, end) && luhn_valid(b.get(pos..end)?.iter().copied());
        return valid.then_some(end);
    }
    let sep = at(b, pos + first);
    if first != 4 || !matches!(sep, b' ' | b'-' | b'.' | b'_') {
        return None;
    }
    // Group boundaries as (digits so far, end offset); at most 19 digits fit in 6 groups.
    let mut ends = [(0usize, 0usize); 6];
    let mut n = 0usize;
    let mut total = first;
    let mut i = pos + first;
    while at(b, i) == sep && is_digit(at(b, i + 1)) && n < ends.len() {
        let len = run(b, i + 1, is_digit);
        if !(2..=6).contains(&len) || total + len > 19 {
            break;
        }
        total += len;
        i += 1 + len;
        if let Some(slot) = ends.get_mut(n) {
            *slot = (total, i);
        }
        n += 1;
        // A 2-digit group can only be the last one of a number.
        if len == 2 {
            break;
        }
    }
    ends.get(..n)?.iter().rev().find_map(|&(digits, end)| {
        let span = b.get(pos..end)?;
        let valid = digits >= 13 && value_end_ok(b, end) && luhn_valid(span.iter().copied().filter(|c| is_digit(*c)));
        valid.then_some(end)
    })
}

//! IBANs (ISO 13616): shape, length and the mod-97 check.

use super::bytes::{at, digit_value, digits_at, is_alnum, is_upper_alnum, run};

/// Country code (2 capitals), 2 check digits, then an upper-case alphanumeric BBAN,
/// either unbroken or in space-separated groups of 4 (the printed form); 15–34
/// characters; mod-97 equal to 1. Lower-case IBANs are not detected.
pub(super) fn iban_at(b: &[u8], pos: usize) -> Option<usize> {
    let shaped = at(b, pos).is_ascii_uppercase() && at(b, pos + 1).is_ascii_uppercase() && digits_at(b, pos + 2, 2);
    if !shaped {
        return None;
    }
    let check =
        |end: usize, len: usize| (15..=34).contains(&len) && !is_alnum(at(b, end)) && iban_mod97_ok(b, pos, end);
    if at(b, pos + 4) != b' ' {
        let len = 4 + run(b, pos + 4, is_upper_alnum);
        let end = pos + len;
        return check(end, len).then_some(end);
    }
    let mut ends = [(0usize, 0usize); 8];
    let mut n = 0usize;
    let mut len = 4usize;
    let mut i = pos + 4;
    while at(b, i) == b' ' && n < ends.len() {
        let g = run(b, i + 1, is_upper_alnum);
        if g == 0 || g > 4 || len + g > 34 {
            break;
        }
        len += g;
        i += 1 + g;
        if let Some(slot) = ends.get_mut(n) {
            *slot = (len, i);
        }
        n += 1;
        if g < 4 {
            break;
        }
    }
    ends.get(..n)?.iter().rev().find_map(|&(len, end)| check(end, len).then_some(end))
}

/// ISO 13616 check: move the first four characters to the end, read letters as 10–35,
/// and the resulting number mod 97 must be 1. Spaces are skipped.
fn iban_mod97_ok(b: &[u8], start: usize, end: usize) -> bool {
    let Some(chars) = b.get(start..end) else { return false };
    let (head, tail) = chars.split_at(chars.len().min(4));
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + digit_value(c)) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            b' ' => rem,
            _ => return false,
        };
    }
    rem == 1
}

//! E-mail addresses, found from their `@`: the local part is walked back, the domain
//! forward.

use super::bytes::{at, is_alnum, prev, run};

/// Local-part characters; bytes of non-ASCII characters count too (RFC 6531 addresses
/// such as `zoë@…`), and since only ASCII ends a run, a run never ends mid-character.
fn is_local_char(c: u8) -> bool {
    is_alnum(c) || c >= 0x80 || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label_char(c: u8) -> bool {
    is_alnum(c) || c >= 0x80 || c == b'-'
}

/// Found from its `@`: the local part (at most 64 characters, RFC 5321) is walked back
/// no further than `floor` (the end of the previous detection), the domain needs two or
/// more labels of letters, digits and inner hyphens (internationalised labels allowed),
/// and an ASCII alphabetic TLD of 2+ letters.
pub(super) fn email_at(b: &[u8], pos: usize, floor: usize) -> Option<(usize, usize)> {
    let lo = floor.max(pos.saturating_sub(64));
    let mut start = pos;
    while start > lo && is_local_char(prev(b, start)) {
        start -= 1;
    }
    if start == lo && lo > floor && is_local_char(prev(b, lo)) {
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
        let len = run(b, i, is_label_char);
        if len == 0 || len > 63 || at(b, i) == b'-' || at(b, i + len - 1) == b'-' || i + len - domain_start > 253 {
            break;
        }
        labels += 1;
        let label = b.get(i..i + len)?;
        if labels >= 2 && len >= 2 && label.iter().all(u8::is_ascii_alphabetic) {
            best = Some(i + len);
        }
        i += len;
        if at(b, i) == b'.' && is_alnum(at(b, i + 1)) {
            i += 1;
        } else {
            break;
        }
    }
    best.map(|end| (start, end))
}

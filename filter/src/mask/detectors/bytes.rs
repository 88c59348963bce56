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

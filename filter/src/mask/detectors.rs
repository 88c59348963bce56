//! The built-in detectors: email, credit card, US SSN, phone, IBAN, JWT, API keys and
//! private keys.
//!
//! One pass over a string finds every built-in detection. A 256-entry table says which
//! detector family a byte can start (digits, `+`, `(`, `@`, a few key-prefix letters,
//! `-`); the scan skips every other byte, and only at a candidate position does the
//! family's hand-written matcher run, validating as it matches (Luhn, mod-97, SSN ranges,
//! NANP rules). Hand-written matchers rather than a regex per detector because they
//! confirm a candidate in a handful of byte reads, never backtrack, and every read is
//! bounded, so a hostile body (`@@@@`, `sk-sk-sk-`, endless digits) stays linear.
//!
//! Boundaries are ASCII: a detection never starts right after, or ends right before, an
//! ASCII letter or digit, so PII-shaped runs inside longer identifiers (hashes, UUIDs,
//! order ids) are left alone. Non-ASCII characters count as boundaries.

/// A built-in detector. The discriminant is the canonical order used for `kinds()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Email,
    CreditCard,
    UsSsn,
    Phone,
    Iban,
    Jwt,
    ApiKey,
    PrivateKey,
}

impl Builtin {
    pub const ALL: [Builtin; 8] = [
        Builtin::Email,
        Builtin::CreditCard,
        Builtin::UsSsn,
        Builtin::Phone,
        Builtin::Iban,
        Builtin::Jwt,
        Builtin::ApiKey,
        Builtin::PrivateKey,
    ];

    /// The config name, which is also the `{kind}` in replacements and stat names.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::CreditCard => "credit_card",
            Builtin::UsSsn => "us_ssn",
            Builtin::Phone => "phone",
            Builtin::Iban => "iban",
            Builtin::Jwt => "jwt",
            Builtin::ApiKey => "api_key",
            Builtin::PrivateKey => "private_key",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A detection: byte range `start..end` of the scanned string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub kind: Builtin,
}

/// Detector families a byte can start (low bits of a table entry); 0 = "not a candidate".
const F_DIGIT: u8 = 1; // us_ssn, phone (NANP), credit_card
const F_PLUS: u8 = 2; // phone (E.164)
const F_PAREN: u8 = 3; // phone "(415) 555-0134"
const F_AT: u8 = 4; // email (the local part is found walking back)
const F_UPPER: u8 = 5; // iban, AWS and Google keys
const F_LOWER: u8 = 6; // jwt `eyJ`, GitHub/Slack/Stripe/OpenAI key prefixes
const F_DASH: u8 = 7; // private_key `-----BEGIN`
const FAMILY: u8 = 0b0111;
/// The family only starts a detection where no ASCII letter or digit precedes.
const AT_WORD_START: u8 = 0b1000;
/// The byte is an ASCII letter or digit (whatever the family).
const WORD: u8 = 0b1_0000;

/// The enabled built-ins of one profile, with the candidate table derived from them.
#[derive(Clone)]
pub struct Detectors {
    enabled: u8,
    table: [u8; 256],
}

impl std::fmt::Debug for Detectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Builtin::ALL.iter().filter(|b| self.is_enabled(**b)).map(|b| b.name()).collect();
        f.debug_struct("Detectors").field("enabled", &names).finish()
    }
}

impl Detectors {
    pub fn new(enabled: &[Builtin]) -> Detectors {
        let mut bits = 0u8;
        for b in enabled {
            bits |= b.bit();
        }
        let mut d = Detectors { enabled: bits, table: [0; 256] };
        for (b, slot) in d.table.iter_mut().enumerate() {
            if u8::try_from(b).is_ok_and(is_alnum) {
                *slot = WORD;
            }
        }
        let on = |b: Builtin| bits & b.bit() != 0;
        let mut set = |bytes: &[u8], family: u8| {
            let start = if matches!(family, F_AT | F_DASH) { 0 } else { AT_WORD_START };
            for &b in bytes {
                if let Some(slot) = d.table.get_mut(usize::from(b)) {
                    *slot |= family | start;
                }
            }
        };
        if on(Builtin::CreditCard) || on(Builtin::UsSsn) || on(Builtin::Phone) {
            set(b"0123456789", F_DIGIT);
        }
        if on(Builtin::Phone) {
            set(b"+", F_PLUS);
            set(b"(", F_PAREN);
        }
        if on(Builtin::Email) {
            set(b"@", F_AT);
        }
        if on(Builtin::Iban) {
            set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", F_UPPER);
        } else if on(Builtin::ApiKey) {
            set(b"A", F_UPPER);
        }
        if on(Builtin::Jwt) {
            set(b"e", F_LOWER);
        }
        if on(Builtin::ApiKey) {
            set(b"gxsr", F_LOWER);
        }
        if on(Builtin::PrivateKey) {
            set(b"-", F_DASH);
        }
        d
    }

    pub fn is_enabled(&self, b: Builtin) -> bool {
        self.enabled & b.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.enabled == 0
    }

    /// The first detection starting at or after byte `from` of `s`. Bytes before `from`
    /// are only looked at as context (boundaries), never as part of a detection.
    #[inline]
    pub fn find(&self, s: &str, from: usize) -> Option<Hit> {
        if self.enabled == 0 {
            return None;
        }
        let bytes = s.as_bytes();
        let mut i = from;
        while let Some(pos) = self.next_candidate(bytes, i) {
            if let Some(hit) = self.try_at(s, pos, from) {
                return Some(hit);
            }
            i = pos + 1;
        }
        None
    }

    /// The hot loop: the next byte at or after `from` that can start a detection. Letter,
    /// digit, `+` and `(` families only count at a word start, so the inside of words and
    /// digit runs costs one table read per byte.
    #[inline]
    fn next_candidate(&self, bytes: &[u8], from: usize) -> Option<usize> {
        let rest = bytes.get(from..)?;
        let mut prev_word = is_alnum(prev(bytes, from));
        for (k, &c) in rest.iter().enumerate() {
            let t = self.entry(c);
            if t & FAMILY != 0 && (t & AT_WORD_START == 0 || !prev_word) && plausible(bytes, from + k, t & FAMILY) {
                return Some(from + k);
            }
            prev_word = t & WORD != 0;
        }
        None
    }

    fn entry(&self, b: u8) -> u8 {
        self.table.get(usize::from(b)).copied().unwrap_or(0)
    }

    /// Runs the matchers of the family of the byte at `pos`; kept out of line so the
    /// scan loop stays small.
    #[inline(never)]
    fn try_at(&self, s: &str, pos: usize, floor: usize) -> Option<Hit> {
        let b = s.as_bytes();
        let hit = |end: usize, kind: Builtin| Some(Hit { start: pos, end, kind });
        match self.entry(at(b, pos)) & FAMILY {
            F_DIGIT => {
                if !digit_start_ok(b, pos) {
                    return None;
                }
                // The leading digit run tells the shapes apart: `AAA-`/`NXX-` (3),
                // `1-NXX-…` (1), a grouped card `4111 …` (4), an unbroken card (13–19).
                let on = |d: Builtin| self.is_enabled(d);
                match run(b, pos, is_digit) {
                    3 => {
                        if let Some(end) = ssn_at(b, pos).filter(|_| on(Builtin::UsSsn)) {
                            return hit(end, Builtin::UsSsn);
                        }
                        nanp_at(b, pos).filter(|_| on(Builtin::Phone)).and_then(|end| hit(end, Builtin::Phone))
                    }
                    1 => nanp_at(b, pos).filter(|_| on(Builtin::Phone)).and_then(|end| hit(end, Builtin::Phone)),
                    4 | 13..=19 => card_at(b, pos)
                        .filter(|_| on(Builtin::CreditCard))
                        .and_then(|end| hit(end, Builtin::CreditCard)),
                    _ => None,
                }
            }
            F_PLUS => e164_at(b, pos).and_then(|end| hit(end, Builtin::Phone)),
            F_PAREN => {
                if is_alnum(prev(b, pos)) {
                    return None;
                }
                nanp_body(b, pos).filter(|&end| end_ok(b, end)).and_then(|end| hit(end, Builtin::Phone))
            }
            F_AT => email_at(b, pos, floor).map(|(start, end)| Hit { start, end, kind: Builtin::Email }),
            F_UPPER => {
                if is_alnum(prev(b, pos)) {
                    return None;
                }
                if self.is_enabled(Builtin::ApiKey) {
                    if let Some(end) = upper_key_at(b, pos) {
                        return hit(end, Builtin::ApiKey);
                    }
                }
                if self.is_enabled(Builtin::Iban) {
                    if let Some(end) = iban_at(b, pos) {
                        return hit(end, Builtin::Iban);
                    }
                }
                None
            }
            F_LOWER => {
                let p = prev(b, pos);
                if is_alnum(p) || matches!(p, b'_' | b'-' | b'.') {
                    return None;
                }
                if self.is_enabled(Builtin::Jwt) {
                    if let Some(end) = jwt_at(b, pos) {
                        return hit(end, Builtin::Jwt);
                    }
                }
                if self.is_enabled(Builtin::ApiKey) {
                    if let Some(end) = lower_key_at(b, pos) {
                        return hit(end, Builtin::ApiKey);
                    }
                }
                None
            }
            F_DASH => private_key_at(s, pos).map(|end| Hit { start: pos, end, kind: Builtin::PrivateKey }),
            _ => None,
        }
    }

    /// Whether a JSON integer's digits, taken as one whole value, are a card number, an
    /// SSN or a phone number. A number carries no separators, so the whole-value forms
    /// apply: 13–19 digits passing Luhn with a card-network first digit (2–6); exactly 9
    /// digits in valid SSN ranges; 10 NANP digits, or 11 with a leading `1`.
    pub fn classify_integer(&self, digits: &[u8]) -> Option<Builtin> {
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits.len();
        if self.is_enabled(Builtin::CreditCard)
            && (13..=19).contains(&n)
            && card_network_digit(at(digits, 0))
            && luhn_valid(digits.iter().copied())
        {
            return Some(Builtin::CreditCard);
        }
        if self.is_enabled(Builtin::UsSsn) && n == 9 && ssn_parts_valid(digits, 0, 3, 5) {
            return Some(Builtin::UsSsn);
        }
        if self.is_enabled(Builtin::Phone) {
            let nanp = match n {
                10 => nanp_parts_valid(digits, 0, 3),
                11 => at(digits, 0) == b'1' && nanp_parts_valid(digits, 1, 4),
                _ => false,
            };
            if nanp {
                return Some(Builtin::Phone);
            }
        }
        None
    }
}

/// A two-to-five byte look at a candidate that rules out most word starts and short
/// numbers before the full matcher runs: key and JWT prefixes have a fixed second letter,
/// IBANs and upper-case key prefixes a second capital, and every number-shaped detection
/// starts with `1` + separator (`1-415-…`) or three digits then a separator or more digits.
#[inline]
fn plausible(b: &[u8], pos: usize, family: u8) -> bool {
    match family {
        F_LOWER => matches!(at(b, pos + 1), b'y' | b'h' | b'i' | b'o' | b'k'),
        F_UPPER => at(b, pos + 1).is_ascii_uppercase(),
        F_DIGIT => {
            let third = at(b, pos + 3);
            (is_digit(at(b, pos + 1))
                && is_digit(at(b, pos + 2))
                && (is_digit(third) || matches!(third, b'-' | b'.' | b' ')))
                || (at(b, pos) == b'1' && matches!(at(b, pos + 1), b'-' | b'.' | b' '))
        }
        _ => true,
    }
}

// ---- byte helpers: every read goes through `at`, which yields 0 past either end ----

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn prev(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| at(b, j))
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_upper_alnum(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

fn is_b64url(c: u8) -> bool {
    is_alnum(c) || c == b'-' || c == b'_'
}

fn starts_with(b: &[u8], i: usize, prefix: &[u8]) -> bool {
    b.get(i..).is_some_and(|rest| rest.starts_with(prefix))
}

/// Length of the run of bytes satisfying `f` starting at `i`.
fn run(b: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(i..).map_or(0, |rest| rest.iter().take_while(|&&c| f(c)).count())
}

fn digits_at(b: &[u8], i: usize, n: usize) -> bool {
    (i..i + n).all(|j| is_digit(at(b, j)))
}

/// A number-shaped detection must not start inside a longer token: not after a letter or
/// digit, nor after `-`/`.` that follows a digit (`1-123-45-6789`, `3.123-45-6789`).
fn digit_start_ok(b: &[u8], pos: usize) -> bool {
    let p = prev(b, pos);
    if is_alnum(p) {
        return false;
    }
    let pp = pos.checked_sub(2).map_or(0, |j| at(b, j));
    !(matches!(p, b'-' | b'.') && is_digit(pp))
}

/// The mirror of [`digit_start_ok`] at the end, plus `@` (the run is an email's local part).
fn end_ok(b: &[u8], end: usize) -> bool {
    let n = at(b, end);
    if is_alnum(n) || n == b'@' {
        return false;
    }
    !(matches!(n, b'-' | b'.') && is_digit(at(b, end + 1)))
}

fn digit_value(c: u8) -> u32 {
    u32::from(c.wrapping_sub(b'0'))
}

// ---- US SSN ----

/// `AAA-GG-SSSS` or `AAA GG SSSS` (one separator kind). A bare run of 9 digits is not an
/// SSN in text: too many ids, amounts and zip+4 codes look like one.
fn ssn_at(b: &[u8], pos: usize) -> Option<usize> {
    let sep = at(b, pos + 3);
    let shaped = digits_at(b, pos, 3)
        && matches!(sep, b'-' | b' ')
        && digits_at(b, pos + 4, 2)
        && at(b, pos + 6) == sep
        && digits_at(b, pos + 7, 4);
    let end = pos + 11;
    (shaped && ssn_parts_valid(b, pos, pos + 4, pos + 7) && end_ok(b, end)).then_some(end)
}

/// Area not 000, 666 or 900–999; group not 00; serial not 0000 (never issued).
fn ssn_parts_valid(b: &[u8], area: usize, group: usize, serial: usize) -> bool {
    let num = |i: usize, n: usize| (i..i + n).fold(0u32, |acc, j| acc * 10 + digit_value(at(b, j)));
    let a = num(area, 3);
    a != 0 && a != 666 && a < 900 && num(group, 2) != 0 && num(serial, 4) != 0
}

// ---- phone ----

/// NANP area code and exchange: first digit 2–9 and not an `N11` service code.
fn nanp_parts_valid(b: &[u8], area: usize, exchange: usize) -> bool {
    let part = |i: usize| matches!(at(b, i), b'2'..=b'9') && !(at(b, i + 1) == b'1' && at(b, i + 2) == b'1');
    part(area) && part(exchange)
}

/// `415-555-0134`, `415.555.0134`, `(415) 555-0134`, optionally led by `1-`/`1 `/`1.`.
/// A bare digit run is never a phone in text: it is far more often an order id.
fn nanp_at(b: &[u8], pos: usize) -> Option<usize> {
    if at(b, pos) == b'1' && matches!(at(b, pos + 1), b'-' | b'.' | b' ') {
        if let Some(end) = nanp_body(b, pos + 2).filter(|&e| end_ok(b, e)) {
            return Some(end);
        }
    }
    nanp_body(b, pos).filter(|&e| end_ok(b, e))
}

fn nanp_body(b: &[u8], pos: usize) -> Option<usize> {
    let (area, exchange, sep_at) = if at(b, pos) == b'(' {
        if !(digits_at(b, pos + 1, 3) && at(b, pos + 4) == b')') {
            return None;
        }
        let ex = if at(b, pos + 5) == b' ' { pos + 6 } else { pos + 5 };
        (pos + 1, ex, ex + 3)
    } else {
        let sep = at(b, pos + 3);
        if !(digits_at(b, pos, 3) && matches!(sep, b'-' | b'.') && at(b, pos + 7) == sep) {
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
fn e164_at(b: &[u8], pos: usize) -> Option<usize> {
    let p = prev(b, pos);
    if is_alnum(p) || p == b'+' || !matches!(at(b, pos + 1), b'1'..=b'9') {
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
fn card_network_digit(c: u8) -> bool {
    matches!(c, b'2'..=b'6')
}

fn luhn_valid(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
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

/// 13–19 digits, either one unbroken run or groups split by single spaces or dashes (one
/// kind per number) with a first group of 4 and further groups of 3–6 (4-4-4-4, 4-6-5,
/// 4-4-4-4-3), or a short last group of 2 (14-digit Diners cards written 4-4-4-2).
/// Luhn-valid. A grouped number may be followed by more groups (`… 2024`): the longest
/// valid prefix ending on a group boundary wins.
fn card_at(b: &[u8], pos: usize) -> Option<usize> {
    if !card_network_digit(at(b, pos)) {
        return None;
    }
    let first = run(b, pos, is_digit);
    if first >= 13 {
        let end = pos + first;
        let valid = first <= 19 && end_ok(b, end) && luhn_valid(b.get(pos..end)?.iter().copied());
        return valid.then_some(end);
    }
    let sep = at(b, pos + first);
    if first != 4 || !matches!(sep, b' ' | b'-') {
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
        let valid = digits >= 13 && end_ok(b, end) && luhn_valid(span.iter().copied().filter(|c| is_digit(*c)));
        valid.then_some(end)
    })
}

// ---- IBAN ----

/// Country code (2 capitals), 2 check digits, then an upper-case alphanumeric BBAN,
/// either unbroken or in space-separated groups of 4 (the printed form); 15–34
/// characters; mod-97 equal to 1. Lower-case IBANs are not detected.
fn iban_at(b: &[u8], pos: usize) -> Option<usize> {
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

// ---- JWT ----

/// `eyJ…` header (base64url of `{"`), `.`, payload, `.`, signature (may be empty for an
/// unsecured token); up to five segments so a JWE is covered whole.
fn jwt_at(b: &[u8], pos: usize) -> Option<usize> {
    if !starts_with(b, pos, b"eyJ") {
        return None;
    }
    let header = run(b, pos, is_b64url);
    if header < 10 || at(b, pos + header) != b'.' {
        return None;
    }
    let p = pos + header + 1;
    let payload = run(b, p, is_b64url);
    if payload < 2 || at(b, p + payload) != b'.' {
        return None;
    }
    let mut end = p + payload + 1;
    end += run(b, end, is_b64url);
    for _ in 0..2 {
        if at(b, end) == b'.' && is_b64url(at(b, end + 1)) {
            end += 1 + run(b, end + 1, is_b64url);
        }
    }
    Some(end)
}

// ---- API keys ----

/// AWS access key ids (`AKIA`/`ASIA` + 16 upper-case alphanumerics) and Google API keys
/// (`AIza` + 35 base64url characters).
fn upper_key_at(b: &[u8], pos: usize) -> Option<usize> {
    if starts_with(b, pos, b"AKIA") || starts_with(b, pos, b"ASIA") {
        let end = pos + 20;
        let exact = run(b, pos + 4, is_upper_alnum) == 16 && !is_alnum(at(b, end));
        return exact.then_some(end);
    }
    if starts_with(b, pos, b"AIza") {
        let end = pos + 39;
        return (run(b, pos + 4, is_b64url) == 35).then_some(end);
    }
    None
}

/// GitHub (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Slack (`xox[abprs]-`),
/// Stripe secret/restricted live keys (`sk_live_`, `rk_live_`) and OpenAI-style `sk-`
/// keys. The body lengths are minimums real keys exceed and prose does not.
fn lower_key_at(b: &[u8], pos: usize) -> Option<usize> {
    let body = |prefix: usize, f: fn(u8) -> bool, min: usize| {
        let len = run(b, pos + prefix, f);
        (len >= min && at(b, pos + prefix + len) != b'@').then_some(pos + prefix + len)
    };
    match at(b, pos) {
        b'g' => {
            if starts_with(b, pos, b"github_pat_") {
                return body(11, |c| is_alnum(c) || c == b'_', 22);
            }
            let ghx = starts_with(b, pos, b"gh")
                && matches!(at(b, pos + 2), b'p' | b'o' | b'u' | b's' | b'r')
                && at(b, pos + 3) == b'_';
            if ghx {
                return body(4, is_alnum, 30);
            }
            None
        }
        b'x' => {
            let slack = starts_with(b, pos, b"xox")
                && matches!(at(b, pos + 3), b'a' | b'b' | b'p' | b'r' | b's')
                && at(b, pos + 4) == b'-';
            if slack {
                return body(5, |c| is_alnum(c) || c == b'-', 10);
            }
            None
        }
        b's' | b'r' => {
            if starts_with(b, pos + 1, b"k_live_") {
                return body(8, is_alnum, 16);
            }
            if at(b, pos) == b's' && starts_with(b, pos + 1, b"k-") {
                let end = body(3, is_b64url, 32)?;
                let key = b.get(pos + 3..end)?;
                // Random keys mix all three classes; slugs (`sk-learn-…`) do not.
                let mixed = key.iter().any(u8::is_ascii_uppercase)
                    && key.iter().any(u8::is_ascii_lowercase)
                    && key.iter().any(u8::is_ascii_digit);
                return mixed.then_some(end);
            }
            None
        }
        _ => None,
    }
}

// ---- email ----

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
fn email_at(b: &[u8], pos: usize, floor: usize) -> Option<(usize, usize)> {
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

// ---- private key ----

/// A PEM label naming a private key: `[A-Z0-9 ]*PRIVATE KEY` (RSA, EC, DSA, OPENSSH,
/// ENCRYPTED, plain) or `PGP PRIVATE KEY BLOCK`, closed by `-----`. Returns the offset
/// just past the closing dashes.
fn pem_label_end(b: &[u8], label_start: usize) -> Option<usize> {
    let len = run(b, label_start, |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' ').min(64);
    let label = b.get(label_start..label_start + len)?;
    let names_key = label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK");
    (names_key && starts_with(b, label_start + len, b"-----")).then_some(label_start + len + 5)
}

/// `-----BEGIN … PRIVATE KEY-----` through the matching `-----END … PRIVATE KEY-----`.
/// A key whose END line is missing (a truncated body) is masked to the end of the string:
/// half a private key is still a secret.
fn private_key_at(s: &str, pos: usize) -> Option<usize> {
    let b = s.as_bytes();
    if !starts_with(b, pos, b"-----BEGIN ") {
        return None;
    }
    let mut search = pem_label_end(b, pos + 11)?;
    while let Some(found) = s.get(search..).and_then(|rest| rest.find("-----END ")) {
        let end_line = search + found;
        if let Some(end) = pem_label_end(b, end_line + 9) {
            return Some(end);
        }
        search = end_line + 9;
    }
    Some(s.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        Detectors::new(&Builtin::ALL)
    }

    /// Every detection in `s`, as (kind name, matched text).
    fn hits(s: &str) -> Vec<(&'static str, String)> {
        let d = all();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(h) = d.find(s, from) {
            out.push((h.kind.name(), s[h.start..h.end].to_string()));
            from = h.end;
        }
        out
    }

    fn only(s: &str) -> (&'static str, String) {
        let h = hits(s);
        assert_eq!(h.len(), 1, "expected exactly one detection in {s:?}, got {h:?}");
        h.into_iter().next().unwrap()
    }

    #[test]
    fn detects_plain_and_tagged_emails() {
        assert_eq!(only("mail alice@example.com now"), ("email", "alice@example.com".into()));
        assert_eq!(only("<bob.smith+tag@mail.example.co.uk>."), ("email", "bob.smith+tag@mail.example.co.uk".into()));
        assert_eq!(only("x:j_doe-1@sub-domain.example.org"), ("email", "j_doe-1@sub-domain.example.org".into()));
        assert_eq!(only("an zoë@bücher.de"), ("email", "zoë@bücher.de".into()));
    }

    #[test]
    fn rejects_email_lookalikes() {
        assert!(hits("@handle and user@localhost and a@b.c and me@host.123").is_empty());
        assert!(hits("npm i @scope/pkg@1.2.3").is_empty());
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(hits(&long_local).is_empty(), "local parts over 64 characters are not emails");
    }

    #[test]
    fn detects_luhn_valid_cards_in_common_layouts() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "378282246310005",
            "3782 822463 10005",
            "6011000990139424",
        ] {
            assert_eq!(only(&format!("card: {card}.")), ("credit_card", card.to_string()));
        }
    }

    #[test]
    fn detects_fourteen_digit_diners_card_written_with_a_short_last_group() {
        assert_eq!(only("card 3852 0000 0232 37."), ("credit_card", "3852 0000 0232 37".into()));
        assert_eq!(only("card 3852-0000-0232-37"), ("credit_card", "3852-0000-0232-37".into()));
        assert!(hits("3852 0000 0232 38").is_empty(), "Luhn still applies");
        assert!(hits("4111 1111 12").is_empty(), "too few digits");
    }

    #[test]
    fn card_followed_by_expiry_group_is_cut_at_the_group_boundary() {
        assert_eq!(only("4111 1111 1111 1111 2029"), ("credit_card", "4111 1111 1111 1111".into()));
    }

    #[test]
    fn sixteen_digits_failing_luhn_are_not_a_card() {
        assert!(hits("4111111111111112").is_empty());
        assert!(hits("4111 1111 1111 1112").is_empty());
    }

    #[test]
    fn long_digit_runs_and_timestamps_are_not_cards() {
        // 20 digits (too long), a 13-digit millisecond timestamp, mixed separators.
        assert!(hits("41111111111111111111").is_empty());
        assert!(hits("ts 1718000000000").is_empty());
        assert!(hits("4111-1111 1111-1111").is_empty());
        assert!(hits("x4111111111111111").is_empty(), "inside a token");
    }

    #[test]
    fn detects_ssn_with_dashes_or_spaces() {
        assert_eq!(only("SSN: 123-45-6789"), ("us_ssn", "123-45-6789".into()));
        assert_eq!(only("ssn 123 45 6789,"), ("us_ssn", "123 45 6789".into()));
    }

    #[test]
    fn ssn_with_never_issued_parts_is_not_masked() {
        for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"] {
            assert!(hits(bad).is_empty(), "{bad} must not be an SSN");
        }
    }

    #[test]
    fn bare_nine_digits_and_longer_dashed_runs_are_not_ssns() {
        assert!(hits("123456789").is_empty());
        assert!(hits("123-45-6789-1").is_empty());
        assert!(hits("1-123-45-6789").is_empty());
        assert!(hits("123-45-6789x").is_empty());
    }

    #[test]
    fn detects_nanp_and_e164_phones() {
        for phone in [
            "(415) 555-0134",
            "415-555-0134",
            "415.555.0134",
            "1-415-555-0134",
            "(415)555-0134",
            "+1 415 555 0134",
            "+14155550134",
            "+44 20 7946 0958",
            "+1 (415) 555-0134",
            "+44 (0)20 7946 0958",
        ] {
            assert_eq!(only(&format!("call {phone} today")), ("phone", phone.to_string()));
        }
    }

    #[test]
    fn order_ids_and_digit_runs_are_not_phones() {
        assert!(hits("order 4155550134 shipped").is_empty());
        assert!(hits("order #41555501341234").is_empty());
        assert!(hits("+123").is_empty(), "too short for E.164");
        assert!(hits("+1234567890123456").is_empty(), "too long for E.164");
        assert!(hits("911-555-0134").is_empty(), "N11 area code");
        assert!(hits("415-155-0134").is_empty(), "exchange must start 2-9");
        assert!(hits("2+14155550134").is_empty(), "arithmetic, not a phone");
    }

    #[test]
    fn e164_numbers_in_a_row_are_masked_whole() {
        assert_eq!(only("+1 415 555 0134 415 555 0135."), ("phone", "+1 415 555 0134 415 555 0135".into()));
    }

    #[test]
    fn detects_valid_ibans_compact_and_grouped() {
        assert_eq!(only("IBAN DE89370400440532013000."), ("iban", "DE89370400440532013000".into()));
        assert_eq!(only("to GB82 WEST 1234 5698 7654 32 please"), ("iban", "GB82 WEST 1234 5698 7654 32".into()));
    }

    #[test]
    fn iban_with_wrong_checksum_is_not_masked() {
        assert!(hits("DE88370400440532013000").is_empty());
        assert!(hits("GB82 WEST 1234 5698 7654 33").is_empty());
    }

    #[test]
    fn detects_jwts_including_unsecured_ones() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        assert_eq!(only(&format!("Bearer {jwt}")), ("jwt", jwt.to_string()));
        let unsecured = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.";
        assert_eq!(only(unsecured), ("jwt", unsecured.to_string()));
    }

    #[test]
    fn base64_json_without_dots_is_not_a_jwt() {
        assert!(hits("eyJhbGciOiJIUzI1NiJ9").is_empty());
        assert!(hits("xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig").is_empty());
    }

    #[test]
    fn detects_each_api_key_family() {
        let keys = [
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            "ASIAY34FZKBOKMUTVV7A".to_string(),
            format!("ghp_{}", "a1B2c3D4e5".repeat(4).get(..36).unwrap()),
            format!("github_pat_11ABCDEFG0{}", "x_Y9".repeat(10)),
            "xoxb-123456789012-abcdefABCDEF".to_string(),
            format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc"),
            format!("rk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc"),
            format!("AIza{}", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
            format!("sk-{}", "proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
        ];
        for key in keys {
            assert_eq!(only(&format!("key={key} end")), ("api_key", key.clone()));
        }
    }

    #[test]
    fn uuids_git_shas_and_slugs_are_not_api_keys() {
        assert!(hits("123e4567-e89b-12d3-a456-426614174000").is_empty());
        assert!(hits("commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904").is_empty());
        assert!(hits("e83c5163316f89bfbde7d9ab23ca2e25604af290").is_empty());
        assert!(hits("see sk-learn-preprocessing-standard-scaler-docs").is_empty());
        assert!(hits("AKIAIOSFODNN7EXAMPL").is_empty(), "one character short");
        assert!(hits("sk_test_4eC39HqLyjWDarjtT1zdp7dc").is_empty(), "test keys are not live secrets");
    }

    #[test]
    fn detects_multiline_private_keys_of_every_label() {
        for label in
            ["RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PRIVATE KEY"]
        {
            let pem = format!("-----BEGIN {label}-----\nMIIEpAIBAAKCAQEA\nabc123==\n-----END {label}-----");
            assert_eq!(only(&format!("key:\n{pem}\ntrailing")), ("private_key", pem.clone()));
        }
    }

    #[test]
    fn truncated_private_key_is_masked_to_the_end() {
        let s = "x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
        let (kind, text) = only(s);
        assert_eq!(kind, "private_key");
        assert!(text.starts_with("-----BEGIN") && s.ends_with(&text));
    }

    #[test]
    fn certificates_and_public_keys_are_not_private_keys() {
        assert!(hits("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_empty());
        assert!(hits("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----").is_empty());
    }

    #[test]
    fn only_enabled_detectors_fire() {
        let d = Detectors::new(&[Builtin::Email]);
        assert_eq!(d.find("4111111111111111 alice@example.com", 0).map(|h| h.kind), Some(Builtin::Email));
        assert_eq!(Detectors::new(&[]).find("alice@example.com", 0), None);
    }

    #[test]
    fn integers_are_classified_as_whole_values() {
        let d = all();
        assert_eq!(d.classify_integer(b"4111111111111111"), Some(Builtin::CreditCard));
        assert_eq!(d.classify_integer(b"4111111111111112"), None);
        assert_eq!(d.classify_integer(b"123456789"), Some(Builtin::UsSsn));
        assert_eq!(d.classify_integer(b"666456789"), None);
        assert_eq!(d.classify_integer(b"4155550134"), Some(Builtin::Phone));
        assert_eq!(d.classify_integer(b"14155550134"), Some(Builtin::Phone));
        assert_eq!(d.classify_integer(b"1718000000"), None, "unix timestamps start with 1");
        assert_eq!(d.classify_integer(b"42"), None);
    }

    #[test]
    fn hostile_repetitions_do_not_match_and_stay_fast() {
        let parts = ["@a.", "a@", "sk-", "1-", "eyJ.", "+1 ", "ghp_", "-----BEGIN ", "(1"];
        for p in parts {
            let junk = format!(" {}", p.repeat(20_000));
            assert!(hits(&junk).is_empty(), "{p}");
        }
    }
}

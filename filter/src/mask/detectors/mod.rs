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
//! Boundaries: a detection never starts right after, or ends right before, an ASCII digit,
//! nor (except cards and SSNs, see `numbers`) an ASCII letter, so phone- or key-shaped runs
//! inside longer identifiers (hashes, UUIDs, order ids) are left alone. Every other byte
//! is a boundary: ASCII punctuation and symbols, and non-ASCII characters (dashes, `…`,
//! `«»`, invisible characters, letters of other scripts); e-mail addresses, which may
//! hold non-ASCII letters, end at non-ASCII punctuation (`email`). Invisible characters
//! *inside* a value are handled by the masker, which also scans a view without them.
//!
//! Layout: this module holds the scan (the byte table, [`Detectors::find`] and the
//! dispatch to a family's matchers); each detector family has its own file (`numbers`,
//! `email`, `iban`, `secrets`), and `bytes` holds the bounded byte reads they all use.
//! The family files only import `bytes`, never this module.

mod bytes;
mod email;
mod iban;
mod numbers;
mod secrets;

pub(super) use bytes::is_invisible;
use bytes::{at, is_alnum, is_digit, prev, run};
use email::email_at;
use iban::iban_at;
use numbers::{
    card_at, card_network_digit, digit_start_ok, e164_at, end_ok, glued_plausible, issuer_prefix, luhn_valid, nanp_at,
    nanp_body, nanp_parts_valid, ssn_at, ssn_parts_valid,
};
use secrets::{jwt_at, lower_key_at, private_key_at, upper_key_at};

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
/// The family only starts a detection where no ASCII digit precedes (digits: a card or an
/// SSN may follow a letter).
const AFTER_NON_DIGIT: u8 = 0b1_0000;
/// The byte is an ASCII letter or digit (whatever the family): it blocks `AT_WORD_START`
/// in the byte after it. Two bits above that flag, so [`blocks`] is one shift.
const WORD: u8 = AT_WORD_START << 2;
/// The byte is an ASCII digit: it blocks `AFTER_NON_DIGIT` in the byte after it.
const DIGIT: u8 = AFTER_NON_DIGIT << 2;

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
            if u8::try_from(b).is_ok_and(is_digit) {
                *slot |= DIGIT;
            }
        }
        let on = |b: Builtin| bits & b.bit() != 0;
        let mut set = |bytes: &[u8], family: u8| {
            let start = match family {
                F_AT | F_DASH => 0,
                F_DIGIT => AFTER_NON_DIGIT,
                _ => AT_WORD_START,
            };
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
    /// `+` and `(` families only count at a word start and digits only after a non-digit,
    /// so the inside of words and digit runs costs one table read per byte.
    #[inline]
    fn next_candidate(&self, bytes: &[u8], from: usize) -> Option<usize> {
        let rest = bytes.get(from..)?;
        // A preceding letter or digit blocks AT_WORD_START; a preceding digit also blocks
        // AFTER_NON_DIGIT: the entry of the previous byte, shifted onto those flags.
        let mut blocked = blocks(self.entry(prev(bytes, from)));
        for (k, &c) in rest.iter().enumerate() {
            let t = self.entry(c);
            if t & FAMILY != 0 && t & blocked == 0 && plausible(bytes, from + k, t & FAMILY) {
                return Some(from + k);
            }
            blocked = blocks(t);
        }
        None
    }

    fn entry(&self, b: u8) -> u8 {
        self.table.get(usize::from(b)).copied().unwrap_or(0)
    }

    /// Runs the matchers of the family of the byte at `pos`; kept out of line so the
    /// scan loop stays small. A value followed by `@` and an e-mail domain is the local
    /// part of an address (`415-555-0134@example.com`): the whole address is the detection.
    /// Followed by `@` and anything else, it is still the value (`4111…@`, `sk_live_…@`).
    /// The same holds for an address (`a@b.cc@d.ee`: the second domain is not left out).
    #[inline(never)]
    fn try_at(&self, s: &str, pos: usize, floor: usize) -> Option<Hit> {
        let mut hit = self.try_family(s, pos, floor)?;
        let b = s.as_bytes();
        while at(b, hit.end) == b'@' && self.is_enabled(Builtin::Email) {
            let Some((start, end)) = email_at(b, hit.end, floor) else { break };
            hit = Hit { start: start.min(hit.start), end, kind: Builtin::Email };
        }
        // A JWT after `@` reads as a domain (`-@eyJ….eyJ….sig`) whose TLD ends inside the
        // token: the address is masked through the token's end.
        if hit.kind == Builtin::Email && self.is_enabled(Builtin::Jwt) {
            if let Some(end) = jwt_in_domain(b, hit.start, hit.end).filter(|&end| end > hit.end) {
                hit.end = end;
            }
        }
        Some(hit)
    }

    /// The matchers themselves, inlined into [`Detectors::try_at`]: a call per candidate
    /// costs more than the `@` look after it.
    #[inline(always)]
    fn try_family(&self, s: &str, pos: usize, floor: usize) -> Option<Hit> {
        let b = s.as_bytes();
        let hit = |end: usize, kind: Builtin| Some(Hit { start: pos, end, kind });
        match self.entry(at(b, pos)) & FAMILY {
            F_DIGIT => {
                // After a letter only cards and SSNs are looked for (see `numbers`).
                let glued = prev(b, pos).is_ascii_alphabetic();
                if !glued && !digit_start_ok(b, pos) {
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
                        nanp_at(b, pos)
                            .filter(|_| on(Builtin::Phone) && !glued)
                            .and_then(|end| hit(end, Builtin::Phone))
                    }
                    1 => nanp_at(b, pos)
                        .filter(|_| on(Builtin::Phone) && !glued)
                        .and_then(|end| hit(end, Builtin::Phone)),
                    4 | 13..=19 => card_at(b, pos)
                        .filter(|_| on(Builtin::CreditCard) && (!glued || issuer_prefix(b, pos)))
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
                // `-`, `_` and `.` before a key are boundaries like any punctuation
                // (`-ghp_…`, `.eyJ…`): the prefixes and body lengths keep slugs out.
                if is_alnum(prev(b, pos)) {
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

/// The end of a JWT starting at a label of the address `b[start..end]` (after its `@` or a
/// `.`). Most addresses hold no `eyJ`: one pass over their bytes.
fn jwt_in_domain(b: &[u8], start: usize, end: usize) -> Option<usize> {
    let span = b.get(start..end)?;
    let mut from = 0;
    while let Some(k) = span.get(from..)?.windows(3).position(|w| w == b"eyJ") {
        let i = start + from + k;
        if matches!(prev(b, i), b'@' | b'.') {
            if let Some(token_end) = jwt_at(b, i) {
                return Some(token_end);
            }
        }
        from += k + 1;
    }
    None
}

/// The start flags that a byte with table entry `t` blocks in the byte after it.
#[inline]
fn blocks(t: u8) -> u8 {
    (t >> 2) & (AT_WORD_START | AFTER_NON_DIGIT)
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
        F_DIGIT if prev(b, pos).is_ascii_alphabetic() => glued_plausible(b, pos),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;

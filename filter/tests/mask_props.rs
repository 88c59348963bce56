//! Property-based tests of response masking (issue 14, point 3), through the public API.
//!
//! Generators build every built-in detector's values with valid checksums and in every
//! format the detectors promise (Luhn-valid cards of each network, grouped or not; SSNs;
//! NANP and international phones with dashes, dots, spaces and parentheses; e-mail
//! addresses, internationalised ones included; IBANs with a valid mod-97 check; API keys,
//! JWTs, PEM private keys), then put them into random contexts: ASCII and Unicode
//! punctuation, dashes, symbols, emoji, letters of other scripts and line breaks around
//! them, invisible characters (ZWSP, ZWNJ, ZWJ, soft hyphen, BOM, word joiner) around and
//! *inside* them, letters glued to the kinds that promise it (cards, SSNs, e-mails), other
//! values next to them, repetitions, and decoys taken from the no-PII corpus of the
//! masking benchmark. The texts are masked as text, as JSON strings written with random
//! escapes (and as member names), and streamed in random chunks.
//!
//! Invariants:
//! - no generated value survives: once the JSON is decoded, invisible characters are
//!   removed, and the replacements, decoys and glued letters are taken out, no ASCII
//!   letter or digit is left (contexts hold none of their own, so any left is a piece of a
//!   value, which also catches a value masked only in part, `[REDACTED:email].uk`);
//! - every decoy comes back intact;
//! - masking is idempotent (masking the output changes nothing), as text and as JSON;
//! - the output is valid JSON;
//! - a text body streamed in random chunks is masked as if it came at once;
//! - JSON integers that are cards, SSNs or NANP phone numbers are masked, other numbers stay.
//!
//! Bounded for CI: 128 cases per property unless `PROPTEST_CASES` says otherwise
//! (`scripts/fuzz/mask-props.sh` runs long).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use airlock_filter::mask::{compile_profile, MaskProfile, MaskProfileSpec};
use airlock_filter::stream::{StreamKind, StreamLimits, StreamMasker};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::Value;

#[path = "support/proptest_config.rs"]
mod proptest_config;
use proptest_config::config;

fn all() -> MaskProfile {
    let spec: MaskProfileSpec = serde_json::from_str(r#"{"detectors":["all"]}"#).unwrap();
    compile_profile(spec, "mask_profiles.props").unwrap()
}

const INVISIBLE: &[char] = &['\u{200b}', '\u{200c}', '\u{200d}', '\u{ad}', '\u{feff}', '\u{2060}'];

fn visible(s: &str) -> String {
    s.chars().filter(|c| !INVISIBLE.contains(c)).collect()
}

// ---- values ----

/// The generated value and the glue it may take: cards, SSNs and e-mails are promised to
/// be found with ASCII letters touching them; phones, keys and IBANs are not (README,
/// "Letters glued to a value").
#[derive(Clone, Debug)]
struct Val {
    text: String,
    glue_ok: bool,
}

fn digit_chars(d: &[u8]) -> String {
    d.iter().map(|&x| char::from(b'0' + x)).collect()
}

/// Appends the Luhn check digit to `d`.
fn with_luhn(mut d: Vec<u8>) -> Vec<u8> {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    d.push(((10 - sum % 10) % 10) as u8);
    d
}

/// Issuer ranges (low, high of the prefix) and the lengths cards in them have.
const NETWORKS: &[(u32, u32, &[usize])] = &[
    (4, 4, &[13, 16, 19]),       // Visa
    (51, 55, &[16]),             // Mastercard
    (2221, 2720, &[16]),         // Mastercard 2-series
    (34, 34, &[15]),             // Amex
    (37, 37, &[15]),             // Amex
    (300, 305, &[14]),           // Diners
    (36, 36, &[14]),             // Diners
    (38, 38, &[14, 16]),         // Diners
    (3528, 3589, &[16, 19]),     // JCB
    (6011, 6011, &[16, 19]),     // Discover
    (644, 649, &[16]),           // Discover
    (65, 65, &[16]),             // Discover
    (62, 62, &[16, 17, 18, 19]), // UnionPay
];

/// Group sizes of the printed form of a card of `len` digits.
fn card_groups(len: usize, alt: bool) -> &'static [usize] {
    match (len, alt) {
        (13, _) => &[4, 4, 5],
        (14, false) => &[4, 6, 4],
        (14, true) => &[4, 4, 4, 2],
        (15, _) => &[4, 6, 5],
        (17, _) => &[4, 4, 4, 5],
        (18, _) => &[4, 4, 4, 6],
        (19, _) => &[4, 4, 4, 4, 3],
        _ => &[4, 4, 4, 4],
    }
}

fn card() -> impl Strategy<Value = Val> {
    (
        any::<Index>(),
        any::<Index>(),
        any::<u32>(),
        vec(0u8..10, 19),
        select(vec!["", " ", "-", ".", "_"]),
        any::<bool>(),
    )
        .prop_map(|(net, len, within, body, sep, alt)| {
            let (lo, hi, lens) = NETWORKS[net.index(NETWORKS.len())];
            let len = lens[len.index(lens.len())];
            let prefix = lo + within % (hi - lo + 1);
            let mut d: Vec<u8> = prefix.to_string().bytes().map(|c| c - b'0').collect();
            d.extend(body.iter().take(len - 1 - d.len()));
            let digits = digit_chars(&with_luhn(d));
            let text = if sep.is_empty() {
                digits
            } else {
                let mut parts = Vec::new();
                let mut at = 0;
                for g in card_groups(len, alt) {
                    parts.push(&digits[at..at + g]);
                    at += g;
                }
                parts.join(sep)
            };
            Val { text, glue_ok: true }
        })
}

fn ssn() -> impl Strategy<Value = Val> {
    (1u32..900, 1u32..100, 1u32..10000, select(vec!["-", " "]))
        .prop_filter_map("666 is never issued", |(a, g, s, sep)| {
            (a != 666).then(|| Val { text: format!("{a:03}{sep}{g:02}{sep}{s:04}"), glue_ok: true })
        })
}

/// A NANP area code or exchange: 2–9 first, not an `N11` service code.
fn nanp_part() -> impl Strategy<Value = String> {
    (2u32..10, 0u32..100).prop_filter_map("N11", |(n, xx)| (xx != 11).then(|| format!("{n}{xx:02}")))
}

fn phone() -> impl Strategy<Value = Val> {
    let nanp = (nanp_part(), nanp_part(), 0u32..10000, 0usize..12).prop_map(|(a, e, l, style)| {
        let l = format!("{l:04}");
        match style {
            0 => format!("{a}-{e}-{l}"),
            1 => format!("{a}.{e}.{l}"),
            2 => format!("{a} {e} {l}"),
            3 => format!("({a}) {e}-{l}"),
            4 => format!("({a}){e}-{l}"),
            5 => format!("({a}) {e} {l}"),
            6 => format!("1-{a}-{e}-{l}"),
            7 => format!("1 {a} {e} {l}"),
            8 => format!("+1 {a} {e} {l}"),
            9 => format!("+1 ({a}) {e}-{l}"),
            10 => format!("+1-{a}-{e}-{l}"),
            _ => format!("+1{a}{e}{l}"),
        }
    });
    // International: a country code of 1–3 digits (first 1–9), then 7–12 digits in groups.
    let e164 = (
        1u32..10,
        vec(0u8..10, 0..=2),
        vec(vec(0u8..10, 1..=4), 2..=4),
        select(vec![" ", "-", ".", ""]),
        any::<bool>(),
    )
        .prop_filter_map("8–15 digits", |(first, cc, groups, sep, trunk)| {
            let total = 1 + cc.len() + groups.iter().map(Vec::len).sum::<usize>();
            if !(8..=15).contains(&total) {
                return None;
            }
            let cc = format!("{first}{}", digit_chars(&cc));
            let rest: Vec<String> = groups.iter().map(|g| digit_chars(g)).collect();
            let body = rest.join(sep);
            // `+44 (0)20 …`: the trunk prefix in parentheses, printed form only.
            if trunk && sep == " " {
                Some(format!("+{cc} (0){body}"))
            } else {
                Some(format!("+{cc}{}{body}", if sep.is_empty() { "" } else { sep }))
            }
        });
    prop_oneof![nanp, e164].prop_map(|text| Val { text, glue_ok: false })
}

fn email() -> impl Strategy<Value = Val> {
    let word = |min: usize, max: usize| vec(select(b"abcdefghijklmnopqrstuvwxyz0123456789".to_vec()), min..=max);
    let local =
        (vec((word(1, 8), select(vec!["", ".", "_", "+", "-"])), 1..=3), any::<bool>()).prop_map(|(parts, upper)| {
            let mut s = String::new();
            for (i, (w, sep)) in parts.iter().enumerate() {
                if i > 0 {
                    s.push_str(if sep.is_empty() { "." } else { sep });
                }
                s.push_str(std::str::from_utf8(w).unwrap());
            }
            if upper {
                s = s.to_uppercase();
            }
            s
        });
    let label = (word(1, 10), any::<bool>()).prop_map(|(w, hyphen)| {
        let w = String::from_utf8(w).unwrap();
        if hyphen && w.len() > 2 {
            format!("{}-{}", &w[..1], &w[1..])
        } else {
            w
        }
    });
    let tld = vec(select(b"abcdefghijklmnopqrstuvwxyz".to_vec()), 2..=6).prop_map(|t| String::from_utf8(t).unwrap());
    let idn = select(vec!["zoë@bücher.de", "José.Núñez@correo.es", "почта@пример.рф.com", "用户@例子.cn"]);
    prop_oneof![
        4 => (local, vec(label, 1..=3), tld).prop_map(|(l, labels, t)| format!("{l}@{}.{t}", labels.join("."))),
        1 => idn.prop_map(str::to_string),
    ]
    .prop_map(|text| Val { text, glue_ok: true })
}

/// IBAN lengths of a few countries.
const IBAN_COUNTRIES: &[(&str, usize)] =
    &[("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("IT", 27), ("CH", 21), ("NO", 15), ("BE", 16)];

fn iban_check(country: &str, bban: &str) -> u32 {
    let mut rem = 0u32;
    for c in bban.chars().chain(country.chars()).chain("00".chars()) {
        rem = match c {
            '0'..='9' => (rem * 10 + c.to_digit(10).unwrap()) % 97,
            _ => (rem * 100 + (c as u32 - 'A' as u32) + 10) % 97,
        };
    }
    98 - rem
}

fn iban() -> impl Strategy<Value = Val> {
    (any::<Index>(), vec(select(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".to_vec()), 30), any::<bool>())
        .prop_map(|(country, chars, grouped)| {
            let (cc, len) = IBAN_COUNTRIES[country.index(IBAN_COUNTRIES.len())];
            let bban: String = chars.iter().take(len - 4).map(|&c| char::from(c)).collect();
            let iban = format!("{cc}{:02}{bban}", iban_check(cc, &bban));
            let text = if grouped {
                iban.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
            } else {
                iban
            };
            Val { text, glue_ok: false }
        })
}

fn chars_of(set: &'static [u8], n: usize) -> impl Strategy<Value = String> {
    vec(select(set), n).prop_map(|v| String::from_utf8(v).unwrap())
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn key() -> impl Strategy<Value = Val> {
    prop_oneof![
        (select(vec!["AKIA", "ASIA"]), chars_of(UPPER_ALNUM, 16)).prop_map(|(p, b)| format!("{p}{b}")),
        chars_of(B64URL, 35).prop_map(|b| format!("AIza{b}")),
        (select(vec!["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), chars_of(ALNUM, 36))
            .prop_map(|(p, b)| format!("{p}{b}")),
        chars_of(ALNUM, 60).prop_map(|b| format!("github_pat_11{}_{}", &b[..20], &b[20..])),
        (select(vec!["xoxb", "xoxp", "xoxa"]), 0u64..1_000_000_000_000, chars_of(ALNUM, 24))
            .prop_map(|(p, n, b)| format!("{p}-{n:012}-{b}")),
        (select(vec!["sk_live_", "rk_live_"]), chars_of(ALNUM, 24)).prop_map(|(p, b)| format!("{p}{b}")),
        // OpenAI-style: random keys mix upper, lower and digits (forced at the start).
        chars_of(B64URL, 40).prop_map(|b| format!("sk-proj-Aa1{b}")),
    ]
    .prop_map(|text| Val { text, glue_ok: false })
}

fn jwt() -> impl Strategy<Value = Val> {
    (chars_of(B64URL, 20), chars_of(B64URL, 30), chars_of(B64URL, 43))
        .prop_map(|(h, p, s)| Val { text: format!("eyJ{h}.eyJ{p}.{s}"), glue_ok: false })
}

fn private_key() -> impl Strategy<Value = Val> {
    (
        select(vec!["RSA ", "EC ", "OPENSSH ", ""]),
        vec(chars_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 64), 1..4),
    )
        .prop_map(|(label, lines)| Val {
            text: format!("-----BEGIN {label}PRIVATE KEY-----\n{}\n-----END {label}PRIVATE KEY-----", lines.join("\n")),
            glue_ok: false,
        })
}

fn value() -> impl Strategy<Value = Val> {
    prop_oneof![
        3 => card(),
        2 => ssn(),
        3 => phone(),
        3 => email(),
        2 => iban(),
        2 => key(),
        1 => jwt(),
        1 => private_key(),
    ]
}

/// Invisible characters put inside a value at random character boundaries.
fn with_invisibles_inside(v: &str, at: &[(Index, Index)]) -> String {
    let mut chars: Vec<char> = v.chars().collect();
    for (pos, which) in at {
        let i = pos.index(chars.len() + 1);
        chars.insert(i, INVISIBLE[which.index(INVISIBLE.len())]);
    }
    chars.into_iter().collect()
}

/// `v` with one of its ASCII characters written as a JSON or C escape, an HTML character
/// reference or URL percent-encoding, which masking reads through (`alice\u0040…`).
fn with_escape(v: &str, at: Index, style: Index) -> String {
    let ascii: Vec<usize> = v.char_indices().filter(|(_, c)| c.is_ascii_graphic()).map(|(i, _)| i).collect();
    if ascii.is_empty() {
        return v.to_string();
    }
    let i = ascii[at.index(ascii.len())];
    let c = v.as_bytes()[i];
    let escaped = match style.index(5) {
        0 => format!("\\u{c:04x}"),
        1 => format!("\\x{c:02X}"),
        2 => format!("&#{c};"),
        3 => format!("&#x{c:x};"),
        _ => format!("%{c:02X}"),
    };
    format!("{}{escaped}{}", &v[..i], &v[i + 1..])
}

// ---- contexts ----

/// What may touch a value on either side: ASCII punctuation and symbols, Unicode dashes,
/// quotes and punctuation, symbols and emoji, spaces and line breaks, letters of other
/// scripts (no ASCII letter or digit: see the survival invariant).
const TOUCH: &[&str] = &[
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "—",
    "–",
    "-",
    "--",
    "‒",
    "―",
    "‐",
    "…",
    "»",
    "«",
    "›",
    "‹",
    "·",
    "•",
    "‘",
    "’",
    "“",
    "”",
    "„",
    "¡",
    "¿",
    "、",
    "。",
    "「",
    "」",
    "【",
    "】",
    "（",
    "）",
    "：",
    "，",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    ",",
    ";",
    ":",
    "!",
    "?",
    "\"",
    "'",
    "/",
    "\\",
    "|",
    "*",
    "#",
    "&",
    "%",
    "$",
    "€",
    "£",
    "¥",
    "→",
    "⇒",
    "✓",
    "★",
    "😀",
    "👉",
    "=",
    "~",
    "^",
    "`",
    "_",
    ".",
    "+",
    "@",
    "§",
    "°",
    "±",
    "×",
    "\u{a0}",
    "\u{2009}",
    "\u{3000}",
    "дом",
    "Ωμέγα",
    "名前",
    "連絡先",
    "مرحبا",
    "नमस्ते",
    "שלום",
    "한국어",
];

/// Between two values or decoys, at least one of these: they cannot join two numbers into
/// one (`-`, `.`, `_`, a space or `(` can: `0134-4111…` is one longer number), nor be
/// part of an e-mail's local part, so the neighbours stay apart.
const APART: &[&str] = &[
    ", ", "; ", "\n", "—", "…", "»", "«", "、", "。", "「", "」", "!", "?", "|", "*", "#", "=", "→", "😀", "\"", "'",
    "<", ">", "[", "]", "{", "}", "~", "^", "`", "$", "€", "§", "：", "，",
];

/// ASCII letters glued to values that promise to be found with them (upper case: the
/// generated values that take glue hold no upper-case runs of their own but e-mails, which
/// then swallow the glue into the address).
const GLUE: &[&str] = &["CC", "X", "ID", "SSN", "NO", "Z"];

/// Decoys from the shapes of the no-PII corpus of the masking benchmark (hashes, UUIDs,
/// letter-prefixed order and invoice ids, timestamps, SKUs, file names, IPs, versions,
/// base64, ISBNs, partial keys and addresses): none may be masked, wherever they are.
const DECOYS: &[&str] = &[
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "123e4567-e89b-42d3-a456-426614174000",
    "ORD482910573621",
    "INV20240115000123",
    "SKU12345678XL",
    "1Z999AA10123456784",
    "v2.14.3-rc7",
    "10.20.30.40",
    "IMG_20240115_123456.jpg",
    "1700000000000",
    "Customer 1234",
    "order 4829105736",
    "2024-01-15 12:30:45",
    "3.14159",
    "ISBN 978-3-16-148410-0",
    "user at example dot com",
    "name@localhost",
    "sk-learn",
    "ghp_short",
    "AKIA",
    "eyJhbGciOi",
    "DE89",
    "-----BEGIN CERTIFICATE-----",
    "dGhpcyBpcyBub3QgYSBzZWNyZXQ=",
    "zip 94105",
    "room 404",
];

#[derive(Clone, Debug)]
enum Piece {
    Value(Val),
    Decoy(&'static str),
}

/// One piece of text with what touches it.
#[derive(Clone, Debug)]
struct Segment {
    piece: Piece,
    /// Invisible characters inserted inside a value.
    inside: Vec<(Index, Index)>,
    /// One ASCII character of a value written as an escape a reader decodes.
    escape: Option<(Index, Index)>,
    before: String,
    after: String,
    glue_before: Option<&'static str>,
    glue_after: Option<&'static str>,
    repeat: usize,
}

fn touch() -> impl Strategy<Value = String> {
    (vec(select(TOUCH), 0..=2), vec(select(INVISIBLE), 0..=2), any::<bool>()).prop_map(|(vis, inv, inv_first)| {
        let vis: String = vis.concat();
        let inv: String = inv.into_iter().collect();
        if inv_first {
            inv + &vis
        } else {
            vis + &inv
        }
    })
}

fn segment() -> impl Strategy<Value = Segment> {
    let piece = prop_oneof![4 => value().prop_map(Piece::Value), 1 => select(DECOYS).prop_map(Piece::Decoy)];
    (
        piece,
        vec((any::<Index>(), any::<Index>()), 0..=2),
        touch(),
        touch(),
        proptest::option::weighted(0.15, select(GLUE)),
        proptest::option::weighted(0.15, select(GLUE)),
        prop_oneof![6 => Just(1usize), 1 => 2usize..=3],
        proptest::option::weighted(0.2, (any::<Index>(), any::<Index>())),
    )
        .prop_map(|(piece, inside, before, after, glue_before, glue_after, repeat, escape)| {
            let glue_ok = matches!(&piece, Piece::Value(v) if v.glue_ok);
            let is_value = matches!(piece, Piece::Value(_));
            let inside = if is_value { inside } else { Vec::new() };
            // A `+` right before digits writes an international phone number (`+10.20.30.40`
            // has 8 digits in groups): decoys are not given one.
            let before = if matches!(piece, Piece::Decoy(_)) { before.replace('+', "") } else { before };
            // An escape lead before a value with an escape in it can make one escape of its
            // own with the value's first characters (`\\` + `\u0034…`, `&#` + `4&#48;…`):
            // no reader then sees the value, which is not what the test is about.
            let escape = escape.filter(|_| !before.contains(['\\', '&', '%']));
            Segment {
                piece,
                inside,
                escape: escape.filter(|_| is_value),
                before,
                after,
                glue_before: glue_before.filter(|_| glue_ok),
                glue_after: glue_after.filter(|_| glue_ok),
                repeat,
            }
        })
}

/// A generated text and what it holds.
#[derive(Clone, Debug)]
struct Doc {
    text: String,
    values: Vec<String>,
    decoys: Vec<&'static str>,
}

fn doc() -> impl Strategy<Value = Doc> {
    (vec(segment(), 1..=6), vec(select(APART), 6)).prop_map(|(segments, apart)| {
        let mut doc = Doc { text: String::new(), values: Vec::new(), decoys: Vec::new() };
        for (i, s) in segments.iter().enumerate() {
            for _ in 0..s.repeat {
                if !doc.text.is_empty() {
                    doc.text.push_str(apart[i % apart.len()]);
                }
                doc.text.push_str(&s.before);
                doc.text.push_str(s.glue_before.unwrap_or(""));
                match &s.piece {
                    Piece::Value(v) => {
                        let text = with_invisibles_inside(&v.text, &s.inside);
                        // See `segment`: what precedes (a neighbour's context too) must
                        // hold no escape lead that could join the value's escape.
                        let near: String = doc.text.chars().rev().take(4).collect();
                        let escape = s.escape.filter(|_| !near.contains(['\\', '&', '%']));
                        doc.text.push_str(&escape.map_or(text.clone(), |(at, style)| with_escape(&text, at, style)));
                        doc.values.push(v.text.clone());
                    }
                    Piece::Decoy(d) => {
                        doc.text.push_str(d);
                        doc.decoys.push(d);
                    }
                }
                doc.text.push_str(s.glue_after.unwrap_or(""));
                doc.text.push_str(&s.after);
            }
        }
        doc
    })
}

// ---- invariants ----

/// What is left of a client's view of `out` once the replacements, the decoys and the
/// glue are taken out: it must hold no ASCII letter or digit (a piece of some value).
fn leftover(out: &str, decoys: &[&str]) -> String {
    let mut rest = visible(out);
    for kind in ["email", "credit_card", "us_ssn", "phone", "iban", "jwt", "api_key", "private_key"] {
        rest = rest.replace(&format!("[REDACTED:{kind}]"), " ");
    }
    for d in decoys {
        rest = rest.replacen(d, " ", 1);
    }
    for g in GLUE {
        rest = rest.replace(g, " ");
    }
    rest
}

fn assert_nothing_survives(out: &str, doc: &Doc) -> Result<(), TestCaseError> {
    let view = visible(out);
    for d in &doc.decoys {
        prop_assert!(view.contains(d), "decoy {d:?} was masked: {out:?}");
    }
    let rest = leftover(out, &doc.decoys);
    let piece: String = rest.chars().filter(char::is_ascii_alphanumeric).collect();
    prop_assert!(piece.is_empty(), "pieces {piece:?} of values {:?} survived in {out:?}", doc.values);
    Ok(())
}

/// `s` as a JSON string literal, each character written as-is or as an escape at random.
fn json_string(s: &str, escapes: &[bool]) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let escape = escapes.get(i % escapes.len().max(1)).copied().unwrap_or(false);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if escape => out.push_str("\\n"),
            '/' if escape => out.push_str("\\/"),
            c if (c as u32) < 0x20 || escape => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn stream_text(p: &MaskProfile, text: &str, cuts: &[Index]) -> String {
    let b = text.as_bytes();
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(b.len() + 1)).collect();
    at.push(b.len());
    at.sort_unstable();
    let mut m = StreamMasker::new(StreamKind::Text, StreamLimits::default());
    let mut out = Vec::new();
    let mut last = 0;
    for &c in &at {
        m.push(p, &b[last..c], &mut out).unwrap();
        last = c;
    }
    m.finish(p, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_generated_value_survives_text_masking_and_masking_again_changes_nothing(doc in doc()) {
        let p = all();
        let (out, _) = p.mask_text(&doc.text);
        assert_nothing_survives(&out, &doc)?;
        let (again, _) = p.mask_text(&out);
        prop_assert_eq!(again.as_ref(), out.as_ref(), "masking the output again changed it");
    }

    #[test]
    fn no_generated_value_survives_json_masking_whatever_the_escapes_and_the_output_is_valid_json(
        doc in doc(),
        key in doc(),
        escapes in vec(prop::bool::weighted(0.2), 1..16),
    ) {
        let p = all();
        let body = format!(
            r#"{{"rows":[[{}, 7]],{}:{{"note":{}}}}}"#,
            json_string(&doc.text, &escapes),
            json_string(&key.text, &escapes),
            json_string(&doc.text, &[false]),
        );
        prop_assert!(serde_json::from_str::<Value>(&body).is_ok(), "the generated body is JSON: {}", body);
        let (out, _) = p.mask_json(body.as_bytes()).unwrap();
        let out = String::from_utf8(out).unwrap();
        let parsed: Value =
            serde_json::from_str(&out).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {out}")))?;
        let cell = parsed["rows"][0][0].as_str().unwrap();
        assert_nothing_survives(cell, &doc)?;
        let members = parsed.as_object().unwrap();
        prop_assert_eq!(members.len(), 2, "{}", out);
        let (name, member) = members.iter().find(|(k, _)| k.as_str() != "rows").unwrap();
        assert_nothing_survives(name, &key)?;
        assert_nothing_survives(member["note"].as_str().unwrap(), &doc)?;
        let (again, _) = p.mask_json(out.as_bytes()).unwrap();
        prop_assert_eq!(String::from_utf8(again).unwrap(), out, "masking the output again changed it");
    }

    #[test]
    fn a_text_body_streamed_in_random_chunks_is_masked_as_if_it_came_at_once(
        doc in doc(),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let p = all();
        let whole = p.mask_text(&doc.text).0.into_owned();
        prop_assert_eq!(stream_text(&p, &doc.text, &cuts), whole);
    }
}

/// The digits of a card, an SSN or a NANP phone number, as a JSON integer carries them
/// (an SSN of area 001–099 is no 9-digit integer: JSON has no leading zeros).
fn number() -> impl Strategy<Value = String> {
    let digits = |v: Val| v.text.chars().filter(char::is_ascii_digit).collect::<String>();
    prop_oneof![
        card().prop_map(digits),
        ssn().prop_map(digits).prop_filter("no leading zero", |d| !d.starts_with('0')),
        (nanp_part(), nanp_part(), 0u32..10000, any::<bool>())
            .prop_map(|(a, e, l, one)| { format!("{}{a}{e}{l:04}", if one { "1" } else { "" }) }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_integers_that_are_cards_ssns_or_phones_are_masked_and_other_numbers_stay(
        values in vec(number(), 1..6),
        // Below 9 digits, or 13-digit millisecond timestamps (a leading 1 is no card network).
        others in vec(prop_oneof![0u64..100_000_000, 1_000_000_000_000u64..2_000_000_000_000], 0..6),
    ) {
        let p = all();
        let mut items: Vec<String> = values.clone();
        items.extend(others.iter().map(u64::to_string));
        let body = format!("[{}]", items.join(","));
        let (out, _) = p.mask_json(body.as_bytes()).unwrap();
        let parsed: Vec<Value> = serde_json::from_slice(&out).unwrap();
        for (i, v) in parsed.iter().enumerate() {
            if i < values.len() {
                prop_assert!(v.as_str().is_some_and(|s| s.starts_with("[REDACTED:")), "{} -> {}", values[i], v);
            } else {
                prop_assert_eq!(v.as_u64(), Some(others[i - values.len()]));
            }
        }
        let (again, _) = p.mask_json(&out).unwrap();
        prop_assert_eq!(again, out);
    }
}

#[test]
fn every_decoy_alone_is_left_as_it_is() {
    let p = all();
    for d in DECOYS {
        assert_eq!(p.mask_text(d).0, *d);
        let body = format!("[{}]", json_string(d, &[false]));
        assert_eq!(String::from_utf8(p.mask_json(body.as_bytes()).unwrap().0).unwrap(), body);
    }
}

//! Secrets: JWTs, API keys of the common providers, and PEM private keys. Each is
//! recognised by a fixed prefix (`eyJ`, `AKIA`, `ghp_`, `-----BEGIN `, …) and a body of
//! a minimum length, which prose and identifiers do not reach.

use super::bytes::{at, is_alnum, is_b64url, is_invisible, is_upper_alnum, run, starts_with};

// ---- JWT ----

/// `eyJ…` header (base64url of `{"`), `.`, payload, `.`, signature (may be empty for an
/// unsecured token); up to five segments so a JWE is covered whole.
pub(super) fn jwt_at(b: &[u8], pos: usize) -> Option<usize> {
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
/// (`AIza` + 35 base64url characters, or more).
pub(super) fn upper_key_at(b: &[u8], pos: usize) -> Option<usize> {
    if starts_with(b, pos, b"AKIA") || starts_with(b, pos, b"ASIA") {
        let end = pos + 20;
        let exact = run(b, pos + 4, is_upper_alnum) == 16 && !is_alnum(at(b, end));
        return exact.then_some(end);
    }
    // 35 base64url characters, but `-` and `_` are base64url too: one glued after the key
    // (`AIza…_`) lengthens the run, which is then masked whole.
    if starts_with(b, pos, b"AIza") {
        let len = run(b, pos + 4, is_b64url);
        return (len >= 35).then_some(pos + 4 + len);
    }
    None
}

/// GitHub (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Slack (`xox[abprs]-`),
/// Stripe secret/restricted live keys (`sk_live_`, `rk_live_`) and OpenAI-style `sk-`
/// keys. The body lengths are minimums real keys exceed and prose does not.
pub(super) fn lower_key_at(b: &[u8], pos: usize) -> Option<usize> {
    let body = |prefix: usize, f: fn(u8) -> bool, min: usize| {
        let len = run(b, pos + prefix, f);
        (len >= min).then_some(pos + prefix + len)
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
/// half a private key is still a secret. A key with invisible characters or escape leads
/// (`\`, `&`, `%`, which base64 never holds) in it is left to the masker's decoded view,
/// where it is found whole or truncated: an END line with one inside it is not seen here,
/// so this scan would run on to a later key's END line or to the end, and take what lies
/// between.
pub(super) fn private_key_at(s: &str, pos: usize) -> Option<usize> {
    if !starts_with(s.as_bytes(), pos, b"-----BEGIN ") {
        return None;
    }
    private_key_end(s, pos)
}

/// The rest of [`private_key_at`], out of line: every `-` of a text (dates, phone numbers)
/// is a candidate, so the quick check above is what the scan pays, and the scan's code
/// stays small.
#[inline(never)]
fn private_key_end(s: &str, pos: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut search = pem_label_end(b, pos + 11)?;
    let mut end = s.len();
    while let Some(found) = s.get(search..).and_then(|rest| rest.find("-----END ")) {
        let end_line = search + found;
        if let Some(found) = pem_label_end(b, end_line + 9) {
            end = found;
            break;
        }
        search = end_line + 9;
    }
    let hides =
        s.get(pos..end).is_some_and(|key| key.chars().any(|c| is_invisible(c) || matches!(c, '\\' | '&' | '%')));
    (!hides).then_some(end)
}

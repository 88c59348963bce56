//! JSON string escapes: decoding them before detection, and writing text back into a
//! JSON string. A leaf module.

/// Bytes that end the fast scan inside a string: `"`, `\` and control characters.
/// (Indexing here runs at compile time, where it cannot fail at run time.)
#[allow(clippy::indexing_slicing)]
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Whether `c` is one of the bytes of [`STRING_STOP`].
pub(super) fn stop(c: u8) -> bool {
    STRING_STOP.get(usize::from(c)).copied().unwrap_or(false)
}

/// Decodes the escapes of a string body already validated by `scan_string` into `out`.
/// A lone surrogate (legal in JSON, not representable in UTF-8) becomes U+FFFD.
pub(super) fn decode_escapes(raw: &str, out: &mut String) {
    out.clear();
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let esc = rest.get(i + 1..).unwrap_or_default();
        let mut consumed = 2;
        match esc.as_bytes().first() {
            Some(b'n') => out.push('\n'),
            Some(b't') => out.push('\t'),
            Some(b'r') => out.push('\r'),
            Some(b'b') => out.push('\u{8}'),
            Some(b'f') => out.push('\u{c}'),
            Some(b'u') => {
                let hi = hex4(esc.get(1..5));
                consumed = 6;
                let c = match hi {
                    Some(hi @ 0xD800..=0xDBFF) => {
                        let lo = esc.get(5..7).filter(|s| *s == "\\u").and_then(|_| hex4(esc.get(7..11)));
                        match lo {
                            Some(lo @ 0xDC00..=0xDFFF) => {
                                consumed = 12;
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            }
                            _ => None,
                        }
                    }
                    Some(cp) => char::from_u32(cp),
                    None => None,
                };
                out.push(c.unwrap_or('\u{FFFD}'));
            }
            Some(&c) => out.push(char::from(c)),
            None => consumed = 1,
        }
        rest = rest.get(i + consumed..).unwrap_or_default();
    }
    out.push_str(rest);
}

fn hex4(s: Option<&str>) -> Option<u32> {
    let s = s?;
    if s.len() != 4 {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Appends `s` as it is: text taken from an escape-free string of the body, which JSON
/// already forbids to hold anything needing an escape.
pub(super) fn write_verbatim(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// Appends `s` JSON-escaped (without quotes): `"`, `\` and control characters.
pub(crate) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if !stop(c) {
            continue;
        }
        out.extend_from_slice(bytes.get(last..i).unwrap_or_default());
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let hex = |n: u8| HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(c >> 4), hex(c)]);
            }
        }
        last = i + 1;
    }
    out.extend_from_slice(bytes.get(last..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn decodes_surrogate_pairs_and_replaces_lone_surrogates() {
        let mut out = String::new();
        decode_escapes(r"a\u00e9\ud83d\ude00\ud800x\udc00\n\/", &mut out);
        assert_eq!(out, "aé😀\u{FFFD}x\u{FFFD}\n/");
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        write_escaped(&mut out, "a\"b\\c\u{1}\té");
        assert_eq!(String::from_utf8(out).unwrap(), r#"a\"b\\c\u0001\té"#);
    }
}

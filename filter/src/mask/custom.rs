//! Custom detectors: operator-supplied regexes, compiled once with bounded size.
//!
//! A regex search has a fixed cost per call, which adds up over the thousands of short
//! strings of a JSON body. So a JSON body is first searched once as a whole: a regex
//! that matches nowhere in the raw body cannot match inside any string of it that has no
//! escapes (such a string's text is a slice of the body, and the quotes around it look
//! like any non-word character to `\b`). Only patterns with `^`/`$`/`\A`/`\z` anchors,
//! which see the quotes differently, skip that shortcut; strings with escapes are always
//! searched, as their decoded text is not in the body.

use regex::{Regex, RegexBuilder};

use super::detectors::Builtin;
use super::FIELD_KIND;

/// Compiled size limit of one custom regex: keeps a VM's memory bounded.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug)]
pub struct CustomDetector {
    pub regex: Regex,
    /// Counter slot (index in `kinds`).
    pub slot: usize,
    /// No anchors: a miss on the whole body rules out every escape-free string.
    pub body_gate: bool,
}

impl CustomDetector {
    pub fn compile(pattern: &str, slot: usize) -> Result<CustomDetector, String> {
        let regex = RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))?;
        if regex.is_match("") {
            return Err("regex matches the empty string; it must match at least one character".into());
        }
        Ok(CustomDetector { regex, slot, body_gate: !has_anchor(pattern) })
    }

    /// Whether the regex may match in an escape-free string of a body whose text is `body`.
    pub fn may_match_in(&self, body: &str) -> bool {
        !self.body_gate || self.regex.is_match(body)
    }

    /// The first non-empty match at or after `from`. Empty matches (possible with
    /// look-arounds such as `\b`, although the empty string itself is rejected) are skipped.
    pub fn find(&self, s: &str, from: usize) -> Option<(usize, usize)> {
        let mut at = from;
        loop {
            if at > s.len() {
                return None;
            }
            let m = self.regex.find_at(s, at)?;
            if m.end() > m.start() {
                return Some((m.start(), m.end()));
            }
            at = m.end() + s.get(m.end()..).and_then(|r| r.chars().next()).map_or(1, char::len_utf8);
        }
    }
}

/// A custom name ends up in `{kind}` and in Envoy stat names.
pub fn check_name(name: &str, taken: &[String]) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(format!("`{name}` must be 1–64 characters of a-z, 0-9, `_` and `-` (it becomes a stat name)"));
    }
    if Builtin::from_name(name).is_some() || name == "all" || name == FIELD_KIND {
        return Err(format!("`{name}` is reserved for a built-in kind; pick another name"));
    }
    if taken.iter().any(|k| k == name) {
        return Err(format!("`{name}` is used by another custom detector of this profile"));
    }
    Ok(())
}

/// Whether `pattern` may contain a start/end anchor (`^`, `$`, `\A`, `\z`) outside a
/// character class. Errs towards "yes" (e.g. inside `(?x)` comments): a wrong "yes" only
/// costs speed, a wrong "no" would miss a match.
fn has_anchor(pattern: &str) -> bool {
    let mut chars = pattern.chars().peekable();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            // An escape consumes the next character; only `\A` and `\z` are anchors.
            '\\' if matches!(chars.next(), Some('A' | 'z')) && class_depth == 0 => return true,
            '[' => {
                class_depth += 1;
                // `[^`, `[]` and `[^]` open a class with a literal `^`/`]`.
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                }
            }
            ']' if class_depth > 0 => class_depth -= 1,
            '^' | '$' if class_depth == 0 => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn anchors_outside_classes_are_found() {
        for p in ["^EMP", "EMP$", r"\AEMP", r"EMP\z", "(a|^b)", "[a]^", "(?m)^x"] {
            assert!(has_anchor(p), "{p}");
        }
    }

    #[test]
    fn negated_classes_and_escaped_carets_are_not_anchors() {
        for p in ["EMP-[^ ]+", r"a\^b", r"\$[0-9]+", "[]^]x", "[^]$]y", "[[:alpha:]^]", r"\bEMP-\d{6}\b"] {
            assert!(!has_anchor(p), "{p}");
        }
    }

    #[test]
    fn body_gate_skips_only_gateable_patterns() {
        let plain = CustomDetector::compile(r"EMP-\d{6}", 0).unwrap();
        assert!(!plain.may_match_in(r#"{"a":"none here"}"#));
        assert!(plain.may_match_in(r#"{"a":"id EMP-123456"}"#));
        let anchored = CustomDetector::compile(r"^EMP-\d{6}$", 0).unwrap();
        assert!(anchored.may_match_in(r#"{"a":"none here"}"#), "anchored patterns are always searched");
    }

    #[test]
    fn word_boundaries_at_string_edges_agree_with_the_body() {
        let d = CustomDetector::compile(r"\bEMP\d\b", 0).unwrap();
        let body = r#"{"a":"EMP1"}"#;
        assert!(d.find("EMP1", 0).is_some());
        assert!(d.may_match_in(body));
    }
}

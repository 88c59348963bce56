//! The HTTP target (`:path`) in the form policy rules match on: percent-encoding, dot
//! segments, duplicate slashes and backslashes are the classic ways to walk around a
//! path rule, so they are decoded and resolved before any rule looks at the path.

use std::borrow::Cow;
use std::fmt;

/// How many times the path is percent-decoded at most. Three rounds catch double and
/// triple encoding (`%252e%252e`); anything still encoded after that is rejected,
/// since no legitimate client needs four layers.
const MAX_DECODE_ROUNDS: usize = 3;

/// The request target in the form policy rules match on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestTarget {
    /// Decoded, dot-segment-free path; always starts with `/`. Case is preserved
    /// (case-insensitive matching is a matcher option).
    pub path: String,
    /// Query parameters in order, names and values decoded (`+` is a space).
    /// Repeated names are kept as separate entries.
    pub query: Vec<(String, String)>,
}

/// Which part of the target a [`TargetError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPart {
    Path,
    Query,
}

impl fmt::Display for TargetPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetPart::Path => "path",
            TargetPart::Query => "query string",
        })
    }
}

/// Why a request target was refused. Messages never echo the target itself: it may
/// carry tokens or personal data in its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// After percent-decoding, the bytes are not valid UTF-8.
    InvalidUtf8(TargetPart),
    /// After percent-decoding, the path holds NUL or another control character,
    /// which upstreams truncate or interpret differently.
    ControlCharacter,
    /// The path is still percent-encoded after the maximum number of decoding rounds.
    NestedEncoding,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::InvalidUtf8(part) => {
                write!(f, "the request {part} is not valid UTF-8 after percent-decoding")
            }
            TargetError::ControlCharacter => f.write_str(
                "the request path contains a control character (such as NUL, CR or LF) \
                 after percent-decoding",
            ),
            TargetError::NestedEncoding => write!(
                f,
                "the request path is still percent-encoded after {MAX_DECODE_ROUNDS} rounds of \
                 decoding; send it encoded at most once"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// Normalises an HTTP `:path` (path plus optional `?query`, possibly a `#fragment`).
///
/// Path: percent-decoded until stable (at most 3 rounds; deeper nesting is refused), then
/// `\` read as `/`, empty segments dropped, `.` and `..` resolved without climbing above
/// the root, a leading `/` guaranteed and a trailing `/` kept. A segment whose part
/// before `;` is `.` or `..` (`..;jsessionid`) is also a dot segment, because Java
/// servlet containers strip such path parameters before resolving.
///
/// Query: split on `&` and the first `=`, `+` read as a space, decoded once.
pub fn normalize_target(raw: &str) -> Result<RequestTarget, TargetError> {
    let without_fragment = raw.split_once('#').map_or(raw, |(before, _)| before);
    let (raw_path, raw_query) = match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    };
    let path = normalize_path(raw_path)?;
    let query = match raw_query {
        Some(q) => parse_query(q)?,
        None => Vec::new(),
    };
    Ok(RequestTarget { path, query })
}

fn normalize_path(raw: &str) -> Result<String, TargetError> {
    let decoded = decode_path(raw)?;
    if decoded.chars().any(char::is_control) {
        return Err(TargetError::ControlCharacter);
    }
    Ok(resolve_segments(&decoded))
}

/// Percent-decodes repeatedly; borrows when there is nothing to decode.
fn decode_path(raw: &str) -> Result<Cow<'_, str>, TargetError> {
    if !has_escape(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut bytes = raw.as_bytes().to_vec();
    let mut rounds = 0;
    while rounds < MAX_DECODE_ROUNDS && has_escape(&bytes) {
        bytes = percent_decode(&bytes, false);
        rounds += 1;
    }
    if has_escape(&bytes) {
        return Err(TargetError::NestedEncoding);
    }
    String::from_utf8(bytes).map(Cow::Owned).map_err(|_| TargetError::InvalidUtf8(TargetPart::Path))
}

/// Rebuilds the path from its segments, resolving dot segments (RFC 3986 section 5.2.4)
/// and never going above the root.
fn resolve_segments(decoded: &str) -> String {
    let mut out = String::with_capacity(decoded.len() + 1);
    // Whether the path ends with a slash: "/a/" and "/a/." both name a directory.
    let mut trailing_slash = false;
    for segment in decoded.split(['/', '\\']) {
        let bare = segment.split_once(';').map_or(segment, |(before, _)| before);
        if segment.is_empty() || bare == "." {
            trailing_slash = true;
        } else if bare == ".." {
            if let Some(cut) = out.rfind('/') {
                out.truncate(cut);
            }
            trailing_slash = true;
        } else {
            out.push('/');
            out.push_str(segment);
            trailing_slash = false;
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

fn parse_query(raw: &str) -> Result<Vec<(String, String)>, TargetError> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_query_part(name)?, decode_query_part(value)?))
        })
        .collect()
}

fn decode_query_part(part: &str) -> Result<String, TargetError> {
    if !part.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(part.to_owned());
    }
    String::from_utf8(percent_decode(part.as_bytes(), true)).map_err(|_| TargetError::InvalidUtf8(TargetPart::Query))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape starting at `bytes[0]` stands for.
fn escape_at(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b'%', hi, lo, ..] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

fn has_escape(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| bytes.get(i..).and_then(escape_at).is_some())
}

/// One round of percent-decoding. Malformed escapes (`%zz`, a lone `%`) stay literal,
/// as most servers treat them.
fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if let Some(decoded) = input.get(i..).and_then(escape_at) {
            out.push(decoded);
            i += 3;
        } else {
            out.push(if plus_is_space && b == b'+' { b' ' } else { b });
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        normalize_target(raw).unwrap().path
    }

    #[test]
    fn decodes_encoded_dot_segments_before_resolving_them() {
        assert_eq!(path("/api/%2e%2e/admin"), "/admin");
        assert_eq!(path("/api/%2E%2E/admin"), "/admin");
    }

    #[test]
    fn decodes_double_encoded_dot_segments() {
        assert_eq!(path("/api/%252e%252e/admin"), "/admin");
        assert_eq!(path("/api/%25252e%25252e/admin"), "/admin");
    }

    #[test]
    fn rejects_encoding_nested_deeper_than_three_rounds() {
        assert_eq!(normalize_target("/a/%2525252e"), Err(TargetError::NestedEncoding));
    }

    #[test]
    fn collapses_duplicate_slashes() {
        assert_eq!(path("//admin///users//"), "/admin/users/");
    }

    #[test]
    fn removes_single_dot_segments() {
        assert_eq!(path("/./admin/./users"), "/admin/users");
        assert_eq!(path("/admin/."), "/admin/");
    }

    #[test]
    fn reads_backslash_and_its_encoding_as_slash() {
        assert_eq!(path("/api\\..\\admin"), "/admin");
        assert_eq!(path("/api%5c..%5cadmin"), "/admin");
    }

    #[test]
    fn encoded_slash_separates_segments() {
        assert_eq!(path("/api%2f..%2fadmin"), "/admin");
    }

    #[test]
    fn never_climbs_above_root() {
        assert_eq!(path("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(path("/a/../../.."), "/");
    }

    #[test]
    fn keeps_directory_slash_after_dot_dot() {
        assert_eq!(path("/a/b/.."), "/a/");
    }

    #[test]
    fn treats_servlet_path_parameter_dot_dot_as_dot_segment() {
        assert_eq!(path("/public/..;/admin"), "/admin");
        assert_eq!(path("/public/..;jsessionid=1/admin"), "/admin");
        assert_eq!(path("/a;v=1/b"), "/a;v=1/b");
    }

    #[test]
    fn adds_leading_slash_and_handles_empty_path() {
        assert_eq!(path(""), "/");
        assert_eq!(path("admin"), "/admin");
        assert_eq!(path("?x=1"), "/");
    }

    #[test]
    fn preserves_case() {
        assert_eq!(path("/Admin/Users"), "/Admin/Users");
    }

    #[test]
    fn rejects_encoded_nul() {
        assert_eq!(normalize_target("/file%00.txt"), Err(TargetError::ControlCharacter));
    }

    #[test]
    fn rejects_encoded_newline_and_double_encoded_nul() {
        assert_eq!(normalize_target("/a%0d%0aSet-Cookie"), Err(TargetError::ControlCharacter));
        assert_eq!(normalize_target("/a%2500"), Err(TargetError::ControlCharacter));
    }

    #[test]
    fn rejects_invalid_utf8_in_path() {
        assert_eq!(normalize_target("/caf%e9"), Err(TargetError::InvalidUtf8(TargetPart::Path)));
    }

    #[test]
    fn accepts_encoded_utf8_in_path() {
        assert_eq!(path("/caf%C3%A9"), "/café");
    }

    #[test]
    fn leaves_malformed_escapes_literal() {
        assert_eq!(path("/100%zz/%"), "/100%zz/%");
    }

    #[test]
    fn drops_fragment() {
        let t = normalize_target("/a/b#/../../admin").unwrap();
        assert_eq!(t.path, "/a/b");
        let t = normalize_target("/a?x=1#frag").unwrap();
        assert_eq!(t.query, vec![("x".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn splits_query_at_first_question_mark_and_first_equals() {
        let t = normalize_target("/search?q=a=b?c&flag&&x=").unwrap();
        assert_eq!(t.path, "/search");
        assert_eq!(
            t.query,
            vec![
                ("q".to_owned(), "a=b?c".to_owned()),
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn decodes_query_once_with_plus_as_space() {
        let t = normalize_target("/q?sql=DROP+TABLE%20users&pct=%252e&plus=%2B&na%6De=v").unwrap();
        assert_eq!(
            t.query,
            vec![
                ("sql".to_owned(), "DROP TABLE users".to_owned()),
                ("pct".to_owned(), "%2e".to_owned()),
                ("plus".to_owned(), "+".to_owned()),
                ("name".to_owned(), "v".to_owned()),
            ]
        );
    }

    #[test]
    fn query_does_not_affect_path_normalisation() {
        assert_eq!(path("/a/b?next=/../admin"), "/a/b");
    }

    #[test]
    fn rejects_invalid_utf8_in_query() {
        assert_eq!(normalize_target("/q?x=%ff"), Err(TargetError::InvalidUtf8(TargetPart::Query)));
    }

    #[test]
    fn target_error_messages_do_not_echo_the_target() {
        let secret = "/x%00?token=s3cr3t";
        let message = normalize_target(secret).unwrap_err().to_string();
        assert!(!message.contains("s3cr3t"));
        assert!(message.contains("control character"));
    }
}

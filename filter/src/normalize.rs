//! Canonical forms of what a request asks for, so that policy rules match what the
//! upstream will act on rather than how the client chose to spell it.
//!
//! Two inputs are normalised:
//! - the HTTP target (`:path`): percent-encoding, dot segments, duplicate slashes and
//!   backslashes are the classic ways to walk around a path rule;
//! - SQL text: comments, whitespace and case are the classic ways to walk around a
//!   keyword rule such as `\bdrop\s+table\b`.
//!
//! Neither is a parser. Both err towards revealing *more* to the matcher: a deny rule
//! should see the dangerous form whatever spelling was used.

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
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| TargetError::InvalidUtf8(TargetPart::Path))
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
    String::from_utf8(percent_decode(part.as_bytes(), true))
        .map_err(|_| TargetError::InvalidUtf8(TargetPart::Query))
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

/// How one SQL dialect reads comments and quotes. Each field names a lexical rule on
/// which real databases disagree; an attacker picks the disagreement that hides a
/// statement from us, so [`sql_readings`] reads the text under every profile.
#[derive(Debug, Clone, Copy)]
struct Dialect {
    /// Track quoted strings and identifiers at all (comment markers inside them are text).
    quotes: bool,
    /// `\` escapes the next character inside `'...'` and `"..."` (MySQL default mode).
    backslash_escapes: bool,
    /// `` `ident` `` is quoted (MySQL, SQLite).
    backticks: bool,
    /// `[ident]` is quoted (SQL Server, SQLite).
    brackets: bool,
    /// `$$...$$` / `$tag$...$tag$` strings and `E'...'` escape strings (PostgreSQL).
    postgres_strings: bool,
    /// `#` starts a line comment (MySQL).
    hash_comments: bool,
    /// `--` only starts a comment when followed by whitespace or the end (MySQL).
    dash_needs_space: bool,
    /// `/* /* */ */` nests (PostgreSQL, SQL Server).
    nested_comments: bool,
}

/// The reading [`normalize_sql`] documents: quotes ignored, every comment syntax honoured.
const PLAIN: Dialect = Dialect {
    quotes: false,
    backslash_escapes: false,
    backticks: false,
    brackets: false,
    postgres_strings: false,
    hash_comments: true,
    dash_needs_space: false,
    nested_comments: false,
};

const MYSQL: Dialect = Dialect {
    quotes: true,
    backslash_escapes: true,
    backticks: true,
    brackets: false,
    postgres_strings: false,
    hash_comments: true,
    dash_needs_space: true,
    nested_comments: false,
};

/// SQLite, Oracle and MySQL with `NO_BACKSLASH_ESCAPES`.
const STANDARD: Dialect = Dialect {
    quotes: true,
    backslash_escapes: false,
    backticks: true,
    brackets: true,
    postgres_strings: false,
    hash_comments: false,
    dash_needs_space: false,
    nested_comments: false,
};

const POSTGRES: Dialect = Dialect {
    quotes: true,
    backslash_escapes: false,
    backticks: false,
    brackets: false,
    postgres_strings: true,
    hash_comments: false,
    dash_needs_space: false,
    nested_comments: true,
};

const SQL_SERVER: Dialect = Dialect {
    quotes: true,
    backslash_escapes: false,
    backticks: false,
    brackets: true,
    postgres_strings: false,
    hash_comments: false,
    dash_needs_space: false,
    nested_comments: true,
};

/// Normalises SQL text for keyword matching: `/* */` comments become one space (the
/// inner text of MySQL's executable `/*! */` and of optimizer hints `/*+ */` is kept,
/// since the database runs it), `--` and `#` line comments are dropped, every run of
/// whitespace (Unicode included) becomes one space, and the result is trimmed and
/// lowercased. Quotes are not tracked; see [`sql_readings`] for the quote-aware forms
/// the policy matcher also uses.
pub fn normalize_sql(text: &str) -> String {
    read_sql(text, PLAIN)
}

/// Every distinct normalised reading of `text`: the [`normalize_sql`] form plus one per
/// dialect family (MySQL, standard/SQLite, PostgreSQL, SQL Server), deduplicated.
///
/// Why several: whether `--` inside `'...'` starts a comment, whether `\'` ends a string,
/// whether `#` is a comment or an operator, whether comments nest, all differ between
/// databases, and each difference lets a statement hide inside what one reading takes
/// for a comment. A deny rule matches if *any* reading shows the statement; an allow
/// rule must match *every* reading. Text without comment markers has one reading.
pub fn sql_readings(text: &str) -> Vec<String> {
    let plain = read_sql(text, PLAIN);
    if !has_comment_marker(text) {
        return vec![plain];
    }
    let mut readings = vec![plain];
    for dialect in [MYSQL, STANDARD, POSTGRES, SQL_SERVER] {
        let reading = read_sql(text, dialect);
        if !readings.contains(&reading) {
            readings.push(reading);
        }
    }
    readings
}

/// Without any of these, no dialect removes anything, so all readings coincide.
fn has_comment_marker(text: &str) -> bool {
    text.contains("--") || text.contains("/*") || text.contains('#')
}

/// Builds the lowercased, whitespace-collapsed output of [`read_sql`].
struct Collapser {
    out: String,
    pending_space: bool,
}

impl Collapser {
    fn space(&mut self) {
        self.pending_space = true;
    }

    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.pending_space = true;
            return;
        }
        if self.pending_space && !self.out.is_empty() {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.out.extend(c.to_lowercase());
    }
}

/// What the lexer is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// `'`, `"` or `` ` ``; the flag says whether `\` escapes.
    Char(char, bool),
    /// `[ ... ]`.
    Bracket,
    /// `$tag$ ... $tag$`; the byte range of the delimiter in the input.
    Dollar(usize, usize),
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Length in bytes of a PostgreSQL dollar-quote delimiter (`$$`, `$tag$`) at the start
/// of `rest`, if there is one.
fn dollar_delimiter(rest: &str) -> Option<usize> {
    let after = rest.strip_prefix('$')?;
    let tag_len = after
        .char_indices()
        .take_while(|&(i, c)| if i == 0 { c.is_alphabetic() || c == '_' } else { c.is_alphanumeric() || c == '_' })
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    after.get(tag_len..)?.starts_with('$').then_some(tag_len + 2)
}

fn read_sql(text: &str, d: Dialect) -> String {
    let mut out = Collapser { out: String::with_capacity(text.len()), pending_space: false };
    let mut quote: Option<Quote> = None;
    // Inside `/*! ... */` or `/*+ ... */`: its text is SQL, its closing `*/` a space.
    let mut in_executable_comment = false;
    let mut prev: Option<char> = None;
    let mut i = 0;
    while let Some(rest) = text.get(i..) {
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        let next = chars.next();
        let mut step = c.len_utf8();

        if let Some(q) = quote {
            match q {
                Quote::Char(close, backslash) => {
                    if backslash && c == '\\' {
                        out.push(c);
                        if let Some(n) = next {
                            out.push(n);
                            step += n.len_utf8();
                        }
                    } else if c == close && next == Some(close) {
                        out.push(c);
                        out.push(close);
                        step += close.len_utf8();
                    } else {
                        out.push(c);
                        if c == close {
                            quote = None;
                        }
                    }
                }
                Quote::Bracket => {
                    out.push(c);
                    if c == ']' {
                        if next == Some(']') {
                            out.push(']');
                            step += 1;
                        } else {
                            quote = None;
                        }
                    }
                }
                Quote::Dollar(start, end) => {
                    let delimiter = text.get(start..end).unwrap_or("$$");
                    if rest.starts_with(delimiter) {
                        delimiter.chars().for_each(|ch| out.push(ch));
                        step = delimiter.len();
                        quote = None;
                    } else {
                        out.push(c);
                    }
                }
            }
        } else if c == '/' && next == Some('*') {
            step = skip_block_comment(rest, d.nested_comments, &mut in_executable_comment);
            out.space();
        } else if c == '*' && next == Some('/') && in_executable_comment {
            in_executable_comment = false;
            step = 2;
            out.space();
        } else if (c == '-' && next == Some('-') && (!d.dash_needs_space || next_is_space_or_end(rest)))
            || (c == '#' && d.hash_comments)
        {
            // A line comment ends at LF or CR: ending at either reveals more text, never less.
            step = rest.find(['\n', '\r']).unwrap_or(rest.len());
            out.space();
        } else if d.quotes && (c == '\'' || c == '"') {
            let escape_string = d.postgres_strings
                && c == '\''
                && matches!(prev, Some('e' | 'E'))
                && !text.get(..i.saturating_sub(1)).and_then(|s| s.chars().next_back()).is_some_and(is_ident_char);
            quote = Some(Quote::Char(c, d.backslash_escapes || escape_string));
            out.push(c);
        } else if d.quotes && d.backticks && c == '`' {
            quote = Some(Quote::Char('`', false));
            out.push(c);
        } else if d.quotes && d.brackets && c == '[' {
            quote = Some(Quote::Bracket);
            out.push(c);
        } else if d.quotes && d.postgres_strings && c == '$' && !prev.is_some_and(is_ident_char) {
            if let Some(len) = dollar_delimiter(rest) {
                quote = Some(Quote::Dollar(i, i + len));
                rest.get(..len).unwrap_or("").chars().for_each(|ch| out.push(ch));
                step = len;
            } else {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        prev = text.get(i..i + step).and_then(|s| s.chars().next_back());
        i += step;
    }
    out.out
}

/// MySQL needs whitespace (or a control character, or the end) after `--`.
fn next_is_space_or_end(rest: &str) -> bool {
    rest.get(2..).and_then(|s| s.chars().next()).is_none_or(|c| c.is_whitespace() || c.is_control())
}

/// Length of the block comment at the start of `rest` (which begins with `/*`). For an
/// executable `/*!` (with optional version digits) or hint `/*+` comment only the opener
/// is consumed and `in_executable` is set, so its contents are read as SQL. An
/// unterminated comment runs to the end, as the database would treat it.
fn skip_block_comment(rest: &str, nested: bool, in_executable: &mut bool) -> usize {
    let body = rest.get(2..).unwrap_or("");
    if let Some(after_bang) = body.strip_prefix('!') {
        *in_executable = true;
        let digits = after_bang.bytes().take_while(u8::is_ascii_digit).count();
        return 3 + digits;
    }
    if body.starts_with('+') {
        *in_executable = true;
        return 3;
    }
    let mut depth = 1usize;
    let mut j = 0;
    let bytes = body.as_bytes();
    while j < bytes.len() {
        match (bytes.get(j), bytes.get(j + 1)) {
            (Some(b'*'), Some(b'/')) => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return 2 + j;
                }
            }
            (Some(b'/'), Some(b'*')) if nested => {
                depth += 1;
                j += 2;
            }
            _ => j += 1,
        }
    }
    rest.len()
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

    #[test]
    fn sql_block_comment_becomes_a_space() {
        assert_eq!(normalize_sql("DROP/**/TABLE users"), "drop table users");
        assert_eq!(normalize_sql("DROP/* multi\nline */TABLE"), "drop table");
    }

    #[test]
    fn sql_whitespace_runs_collapse_including_unicode() {
        assert_eq!(normalize_sql("  drop\n\t\r\x0b\x0ctable\u{a0}\u{2003}x  "), "drop table x");
    }

    #[test]
    fn sql_line_comments_are_dropped() {
        assert_eq!(normalize_sql("DROP -- x\nTABLE"), "drop table");
        assert_eq!(normalize_sql("DROP # x\nTABLE"), "drop table");
        assert_eq!(normalize_sql("select 1 -- trailing"), "select 1");
    }

    #[test]
    fn sql_executable_and_hint_comments_keep_their_text() {
        assert_eq!(normalize_sql("/*!DROP*/ TABLE"), "drop table");
        assert_eq!(normalize_sql("/*!50000DROP*/TABLE t"), "drop table t");
        assert_eq!(normalize_sql("SELECT /*+ INDEX(t) */ * FROM t"), "select index(t) * from t");
    }

    #[test]
    fn sql_is_lowercased_and_trimmed() {
        assert_eq!(normalize_sql("  DrOp TaBlE  "), "drop table");
    }

    #[test]
    fn sql_unterminated_comment_swallows_the_rest() {
        assert_eq!(normalize_sql("select 1 /* drop table"), "select 1");
    }

    #[test]
    fn sql_readings_without_comment_markers_are_one() {
        assert_eq!(sql_readings("SELECT 'a' FROM t"), vec!["select 'a' from t".to_owned()]);
    }

    fn any_reading_contains(text: &str, needle: &str) -> bool {
        sql_readings(text).iter().any(|r| r.contains(needle))
    }

    #[test]
    fn sql_comment_marker_inside_string_cannot_hide_a_statement() {
        let sql = "SELECT '--'; DROP TABLE users";
        assert!(!normalize_sql(sql).contains("drop table"));
        assert!(any_reading_contains(sql, "drop table"));
    }

    #[test]
    fn sql_backslash_quote_cannot_hide_a_statement_from_either_escaping_rule() {
        // PostgreSQL/SQLite: 'x\' ends the string; MySQL: it does not.
        assert!(any_reading_contains("SELECT '--\\' ; DROP/**/TABLE t; --'", "drop table"));
        assert!(any_reading_contains("SELECT 'x\\' , '; DROP/**/TABLE t; -- '", "drop table"));
    }

    #[test]
    fn sql_hash_is_an_operator_outside_mysql() {
        assert!(any_reading_contains("SELECT 1 # 2; DROP TABLE t", "drop table"));
    }

    #[test]
    fn sql_mysql_dash_dash_needs_a_space() {
        assert!(any_reading_contains("SELECT 1--1; DROP TABLE t", "drop table"));
    }

    #[test]
    fn sql_nested_and_flat_comments_both_read() {
        // PostgreSQL nests: the comment ends at the second */.
        assert!(any_reading_contains("DROP/* /* */ */TABLE t", "drop table"));
        // SQLite/MySQL do not: the comment ends at the first */.
        assert!(any_reading_contains("DROP/* /* */TABLE t", "drop table"));
    }

    #[test]
    fn sql_postgres_dollar_and_escape_strings_are_strings() {
        assert!(any_reading_contains("SELECT $$'$$, '--'; DROP/* /* */ */TABLE t; --'", "drop table"));
        assert!(any_reading_contains("SELECT E'\\'', '--'; DROP/* /* */ */TABLE t; --'", "drop table"));
    }

    #[test]
    fn sql_server_brackets_are_identifiers() {
        assert!(any_reading_contains("SELECT [--], 1; DROP/* /* */ */TABLE t", "drop table"));
    }

    #[test]
    fn sql_readings_keep_string_content() {
        let readings = sql_readings("SELECT '/* keep */' -- c\nFROM t");
        assert!(readings.contains(&"select '/* keep */' from t".to_owned()));
        assert!(readings.contains(&"select ' ' from t".to_owned()));
    }

    #[test]
    fn dollar_delimiter_recognises_tags() {
        assert_eq!(dollar_delimiter("$$x"), Some(2));
        assert_eq!(dollar_delimiter("$fn$x"), Some(4));
        assert_eq!(dollar_delimiter("$1"), None);
        assert_eq!(dollar_delimiter("$a b$"), None);
    }
}

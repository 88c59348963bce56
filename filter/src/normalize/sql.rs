//! SQL text in the form keyword rules match on: comments, whitespace and case are the
//! classic ways to walk around a rule such as `\bdrop\s+table\b`, and the dialects
//! disagree on what a comment or a string is, so the text is read once per dialect family.

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

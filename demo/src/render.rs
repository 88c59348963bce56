//! Renders `envoy/envoy.yaml`: substitutes `{{NAME}}` placeholders and optionally drops the
//! Airlock filter section (bare mode).
//!
//! The renderer is deliberately strict: a placeholder left without a value, or a value for
//! a name the template does not contain, is an error naming every offender, because a
//! half-rendered bootstrap only fails later inside Envoy with a far less helpful message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Comment line (trimmed) that opens the section holding the Airlock filter.
pub const FILTER_BEGIN: &str = "# airlock-filter-begin";
/// Comment line (trimmed) that closes the section holding the Airlock filter.
pub const FILTER_END: &str = "# airlock-filter-end";

/// Whether the rendered bootstrap keeps the Airlock filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Keep the filter section (the normal deployment).
    WithFilter,
    /// Drop the lines between the filter markers: the same proxy without Airlock, for
    /// smoke tests and baseline benchmarks.
    Bare,
}

/// Why a template could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderError {
    /// Placeholders left without a value and/or values for names the template lacks.
    Placeholders { missing: Vec<String>, unknown: Vec<String> },
    /// `{{` without a closing `}}` on the same line.
    Unterminated { line: usize },
    /// A placeholder name that is not `UPPER_SNAKE_CASE`.
    BadName { line: usize, name: String },
    /// A multi-line value for a placeholder that shares its line with other text, where
    /// indenting it correctly is impossible.
    MultiLineInline { line: usize, name: String },
    /// The filter markers are missing, nested or unbalanced.
    Markers { line: usize, problem: &'static str },
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Placeholders { missing, unknown } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!(
                        "template placeholders without a value: {} (give each one a value, e.g. --set {}=...)",
                        missing.join(", "),
                        missing.first().map(String::as_str).unwrap_or("NAME")
                    ));
                }
                if !unknown.is_empty() {
                    parts.push(format!(
                        "values given for names the template does not contain: {} (check the spelling)",
                        unknown.join(", ")
                    ));
                }
                f.write_str(&parts.join("; "))
            }
            RenderError::Unterminated { line } => {
                write!(f, "line {line}: `{{{{` without a closing `}}}}`")
            }
            RenderError::BadName { line, name } => {
                write!(f, "line {line}: placeholder name {name:?} is not UPPER_SNAKE_CASE (A-Z, 0-9, _)")
            }
            RenderError::MultiLineInline { line, name } => write!(
                f,
                "line {line}: the value of {name} spans several lines, so the placeholder must stand alone on its \
                    line (inside a `|` block scalar)"
            ),
            RenderError::Markers { line, problem } => {
                write!(f, "line {line}: filter section markers: {problem}")
            }
        }
    }
}

impl std::error::Error for RenderError {}

/// Names of all placeholders in `template`, whether or not inside the filter section.
pub fn placeholders(template: &str) -> Result<BTreeSet<String>, RenderError> {
    let mut names = BTreeSet::new();
    for (idx, line) in template.lines().enumerate() {
        for token in scan_line(line, idx + 1)? {
            if let Token::Placeholder(name) = token {
                names.insert(name.to_string());
            }
        }
    }
    Ok(names)
}

/// Renders `template` with `values`.
///
/// Multi-line values (the plugin JSON) are trimmed and every line is indented to the
/// indentation of the placeholder's line, which must contain nothing else. In
/// [`FilterMode::Bare`] the filter section is dropped, and placeholders that only occur
/// there (WASM_PATH, PLUGIN_CONFIG) need no value; giving them one is not an error.
pub fn render(template: &str, values: &BTreeMap<String, String>, mode: FilterMode) -> Result<String, RenderError> {
    let all = placeholders(template)?;
    let unknown: Vec<String> = values.keys().filter(|k| !all.contains(*k)).cloned().collect();

    let mut out = String::with_capacity(template.len() + values.values().map(String::len).sum::<usize>());
    let mut missing = BTreeSet::new();
    let mut in_filter: Option<usize> = None;
    let mut saw_filter = false;

    for (idx, line) in template.lines().enumerate() {
        let lineno = idx + 1;
        let trimmed = line.trim();
        if trimmed == FILTER_BEGIN {
            if in_filter.is_some() {
                return Err(RenderError::Markers { line: lineno, problem: "nested begin marker" });
            }
            in_filter = Some(lineno);
            saw_filter = true;
        } else if trimmed == FILTER_END {
            if in_filter.take().is_none() {
                return Err(RenderError::Markers { line: lineno, problem: "end marker without a begin marker" });
            }
            if mode == FilterMode::Bare {
                continue;
            }
        }
        if mode == FilterMode::Bare && in_filter.is_some() {
            continue;
        }
        render_line(line, lineno, values, &mut missing, &mut out)?;
    }
    if let Some(line) = in_filter {
        return Err(RenderError::Markers { line, problem: "begin marker without an end marker" });
    }
    if mode == FilterMode::Bare && !saw_filter {
        return Err(RenderError::Markers {
            line: 0,
            problem: "bare mode needs the filter section, but the template has no markers",
        });
    }
    if !missing.is_empty() || !unknown.is_empty() {
        return Err(RenderError::Placeholders { missing: missing.into_iter().collect(), unknown });
    }
    Ok(out)
}

fn render_line(
    line: &str,
    lineno: usize,
    values: &BTreeMap<String, String>,
    missing: &mut BTreeSet<String>,
    out: &mut String,
) -> Result<(), RenderError> {
    let tokens = scan_line(line, lineno)?;
    // A placeholder alone on its line: block form, every value line gets the indentation.
    if let [Token::Text(indent), Token::Placeholder(name), Token::Text(rest)] = tokens.as_slice() {
        if indent.trim().is_empty() && rest.trim().is_empty() {
            match values.get(*name) {
                Some(value) => {
                    for value_line in value.trim().lines() {
                        if !value_line.trim().is_empty() {
                            out.push_str(indent);
                            out.push_str(value_line.trim_end());
                        }
                        out.push('\n');
                    }
                }
                None => {
                    missing.insert((*name).to_string());
                }
            }
            return Ok(());
        }
    }
    for token in tokens {
        match token {
            Token::Text(text) => out.push_str(text),
            Token::Placeholder(name) => match values.get(name) {
                Some(value) if value.contains('\n') => {
                    return Err(RenderError::MultiLineInline { line: lineno, name: name.to_string() })
                }
                Some(value) => out.push_str(value),
                None => {
                    missing.insert(name.to_string());
                }
            },
        }
    }
    out.push('\n');
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits one line into text and placeholders; always starts and ends with a `Text`
/// (possibly empty), so a lone placeholder is exactly `[Text, Placeholder, Text]`.
fn scan_line(line: &str, lineno: usize) -> Result<Vec<Token<'_>>, RenderError> {
    let mut tokens = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find("{{") {
        let (before, after_open) = rest.split_at(open);
        tokens.push(Token::Text(before));
        let inner = after_open.get(2..).unwrap_or("");
        let close = inner.find("}}").ok_or(RenderError::Unterminated { line: lineno })?;
        let (name, after) = inner.split_at(close);
        if !is_valid_name(name) {
            return Err(RenderError::BadName { line: lineno, name: name.to_string() });
        }
        tokens.push(Token::Placeholder(name));
        rest = after.get(2..).unwrap_or("");
    }
    tokens.push(Token::Text(rest));
    Ok(tokens)
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const TEMPLATE: &str = "port: {{PORT}}\nfilters:\n# airlock-filter-begin\n- wasm: \"{{WASM_PATH}}\"\n  value: \
        |\n    {{PLUGIN_CONFIG}}\n# airlock-filter-end\n- router\n";

    #[test]
    fn indents_every_line_of_a_block_value_to_the_placeholder_column() {
        let out = render(
            TEMPLATE,
            &vals(&[("PORT", "80"), ("WASM_PATH", "/a.wasm"), ("PLUGIN_CONFIG", "{\n  \"a\": 1,\n\n  \"b\": 2\n}\n")]),
            FilterMode::WithFilter,
        )
        .unwrap();
        assert!(
            out.contains("  value: |\n    {\n      \"a\": 1,\n\n      \"b\": 2\n    }\n# airlock-filter-end"),
            "{out}"
        );
        assert!(out.starts_with("port: 80\n"));
    }

    #[test]
    fn bare_mode_drops_the_filter_section_and_its_placeholders() {
        let out = render(TEMPLATE, &vals(&[("PORT", "80")]), FilterMode::Bare).unwrap();
        assert_eq!(out, "port: 80\nfilters:\n- router\n");
    }

    #[test]
    fn bare_mode_accepts_values_for_placeholders_of_the_dropped_section() {
        let out = render(TEMPLATE, &vals(&[("PORT", "1"), ("WASM_PATH", "/x")]), FilterMode::Bare).unwrap();
        assert!(!out.contains("/x"));
    }

    #[test]
    fn names_every_missing_and_unknown_placeholder() {
        let err = render(TEMPLATE, &vals(&[("PORTT", "80")]), FilterMode::WithFilter).unwrap_err();
        assert_eq!(
            err,
            RenderError::Placeholders {
                missing: vec!["PLUGIN_CONFIG".into(), "PORT".into(), "WASM_PATH".into()],
                unknown: vec!["PORTT".into()],
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("PLUGIN_CONFIG, PORT, WASM_PATH") && msg.contains("PORTT"), "{msg}");
    }

    #[test]
    fn rejects_multi_line_value_next_to_other_text() {
        let err = render("a: {{X}}\n", &vals(&[("X", "1\n2")]), FilterMode::WithFilter).unwrap_err();
        assert_eq!(err, RenderError::MultiLineInline { line: 1, name: "X".into() });
    }

    #[test]
    fn rejects_unterminated_and_lowercase_placeholders() {
        assert_eq!(placeholders("ok\na: {{X\n").unwrap_err(), RenderError::Unterminated { line: 2 });
        assert!(matches!(placeholders("{{x}}").unwrap_err(), RenderError::BadName { line: 1, .. }));
    }

    #[test]
    fn rejects_unbalanced_filter_markers() {
        let err = render("# airlock-filter-begin\na\n", &BTreeMap::new(), FilterMode::Bare).unwrap_err();
        assert!(matches!(err, RenderError::Markers { line: 1, .. }));
        let err = render("a\n  # airlock-filter-end\n", &BTreeMap::new(), FilterMode::WithFilter).unwrap_err();
        assert!(matches!(err, RenderError::Markers { line: 2, .. }));
    }

    #[test]
    fn substitutes_several_placeholders_on_one_line() {
        let out = render("{{A}}:{{B}}/{{A}}\n", &vals(&[("A", "h"), ("B", "1")]), FilterMode::WithFilter).unwrap();
        assert_eq!(out, "h:1/h\n");
    }

    #[test]
    fn shipped_template_has_exactly_the_documented_placeholders() {
        let template = include_str!("../../envoy/envoy.yaml");
        let names: Vec<String> = placeholders(template).unwrap().into_iter().collect();
        assert_eq!(
            names,
            ["ADMIN_PORT", "CONTROL_PORT", "JWKS_PORT", "LISTEN_PORT", "PLUGIN_CONFIG", "UPSTREAM_PORT", "WASM_PATH"]
        );
        let bare = render(
            template,
            &vals(&[
                ("ADMIN_PORT", "1"),
                ("LISTEN_PORT", "2"),
                ("UPSTREAM_PORT", "3"),
                ("JWKS_PORT", "4"),
                ("CONTROL_PORT", "5"),
            ]),
            FilterMode::Bare,
        )
        .unwrap();
        assert!(!bare.contains("envoy.extensions.filters.http.wasm") && bare.contains("envoy.filters.http.router"));
    }
}

//! Compiled string matchers and the fail-closed way their verdicts combine.
//!
//! A condition often sees several values at once: a header sent twice, a query
//! parameter repeated, the strings under a JSON pointer, the elements of a JSON-RPC
//! batch, the SQL readings of one text. Whichever way those are quantified, an attacker
//! would pick the value that suits them. So every such set is combined by the rule's
//! [`Quantifier`]: deny/approve rules hold if the condition holds for *any* value,
//! allow rules only if it holds for *every* value.

use std::ops::ControlFlow;

use regex::{Regex, RegexBuilder};

use super::spec::{Action, MatcherFields, Normalize};
use crate::config_error::ConfigError;
use crate::normalize::sql_readings;

/// Compiled program size limit per regex: keeps a hostile or careless pattern from
/// eating the VM's memory (Wasm memory never shrinks), while fitting any sane rule.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache limit per regex, for the same reason.
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// Receives values one by one; breaking stops the producer early.
pub type Sink<'s> = dyn FnMut(&str) -> ControlFlow<()> + 's;

/// How a set of per-value verdicts becomes one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// Holds if any value holds (deny / approve rules: easier to trigger).
    Any,
    /// Holds only if every value holds (allow rules: harder to trigger).
    All,
}

impl Quantifier {
    pub fn for_action(action: Action) -> Self {
        match action {
            Action::Allow => Quantifier::All,
            Action::Deny | Action::Approve => Quantifier::Any,
        }
    }

    pub(super) fn flip(self) -> Self {
        match self {
            Quantifier::Any => Quantifier::All,
            Quantifier::All => Quantifier::Any,
        }
    }

    /// Judges each value `visit` feeds with `test` and combines the verdicts, stopping the
    /// producer at the first one that settles the result. `None` when it fed no value.
    pub fn judge_each(self, visit: impl FnOnce(&mut Sink<'_>), mut test: impl FnMut(&str) -> bool) -> Option<bool> {
        let mut verdict = None;
        visit(&mut |value| {
            let holds = test(value);
            verdict = Some(holds);
            // Any: one true settles it; All: one false does.
            if holds == (self == Quantifier::Any) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        verdict
    }

    /// Combines verdicts, stopping at the first one that settles the result. `None`
    /// when there was nothing to combine.
    pub fn combine(self, verdicts: impl IntoIterator<Item = bool>) -> Option<bool> {
        let mut seen = false;
        for v in verdicts {
            seen = true;
            match (self, v) {
                (Quantifier::Any, true) => return Some(true),
                (Quantifier::All, false) => return Some(false),
                _ => {}
            }
        }
        seen.then_some(self == Quantifier::All)
    }
}

#[derive(Debug)]
enum Kind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    AnyOf(Vec<String>),
    /// User regexes, and every literal kind when matching is case-insensitive (the regex
    /// engine does Unicode case folding without allocating per request).
    Regex(Regex),
}

/// A compiled `StringMatcherSpec`.
#[derive(Debug)]
pub struct StringMatcher {
    kind: Kind,
    sql: bool,
    negate: bool,
}

impl StringMatcher {
    /// Compiles the matcher fields; `field` is the config path of the object holding them.
    pub(crate) fn compile(f: MatcherFields<'_>, field: &str) -> Result<Self, ConfigError> {
        let literals = [
            ("exact", f.exact),
            ("prefix", f.prefix),
            ("suffix", f.suffix),
            ("contains", f.contains),
            ("regex", f.regex),
        ];
        let mut set: Vec<&str> = literals.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n).collect();
        if f.any_of.is_some() {
            set.push("any_of");
        }
        match set.as_slice() {
            [] => {
                return Err(ConfigError::new(
                    field,
                    "needs one of `exact`, `prefix`, `suffix`, `contains`, `regex` or `any_of`",
                ))
            }
            [_] => {}
            [first, second, ..] => {
                return Err(ConfigError::new(
                    field,
                    format!("sets both `{first}` and `{second}`; set exactly one matcher kind"),
                ))
            }
        }

        let sql = f.normalize == Normalize::Sql;
        // SQL readings are lowercased, so a case-sensitive pattern with capitals could
        // never match them.
        let case_insensitive = f.case_insensitive || sql;

        let literal_field = |name: &str| format!("{field}.{name}");
        let check_literal = |name: &str, value: &str, allow_empty: bool| -> Result<(), ConfigError> {
            if value.is_empty() && !allow_empty {
                return Err(ConfigError::new(
                    literal_field(name),
                    "is empty and would match every value; remove the condition instead",
                ));
            }
            if sql && has_unnormalised_whitespace(value) {
                return Err(ConfigError::new(
                    literal_field(name),
                    "`normalize: sql` turns every whitespace run into one space, so this pattern \
                     could never match; write single spaces",
                ));
            }
            Ok(())
        };

        let kind = if let Some(pattern) = f.regex {
            Kind::Regex(build_regex(pattern, case_insensitive, &literal_field("regex"))?)
        } else if let Some(values) = f.any_of {
            if values.is_empty() {
                return Err(ConfigError::new(literal_field("any_of"), "is empty; list at least one value"));
            }
            for (i, v) in values.iter().enumerate() {
                check_literal(&format!("any_of[{i}]"), v, true)?;
            }
            if case_insensitive {
                let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
                let pattern = format!(r"\A(?:{})\z", alternatives.join("|"));
                Kind::Regex(build_regex(&pattern, true, &literal_field("any_of"))?)
            } else {
                Kind::AnyOf(values.to_vec())
            }
        } else {
            // Exactly one literal is set (checked above).
            let (name, value, anchored) = match (f.exact, f.prefix, f.suffix, f.contains) {
                (Some(v), ..) => ("exact", v, (r"\A", r"\z")),
                (_, Some(v), ..) => ("prefix", v, (r"\A", "")),
                (_, _, Some(v), _) => ("suffix", v, ("", r"\z")),
                (.., Some(v)) => ("contains", v, ("", "")),
                _ => return Err(ConfigError::new(field, "needs a matcher kind")),
            };
            check_literal(name, value, name == "exact")?;
            if case_insensitive {
                let pattern = format!("{}(?:{}){}", anchored.0, regex::escape(value), anchored.1);
                Kind::Regex(build_regex(&pattern, true, &literal_field(name))?)
            } else {
                let v = value.to_owned();
                match name {
                    "exact" => Kind::Exact(v),
                    "prefix" => Kind::Prefix(v),
                    "suffix" => Kind::Suffix(v),
                    _ => Kind::Contains(v),
                }
            }
        };
        Ok(StringMatcher { kind, sql, negate: f.negate })
    }

    fn kind_matches(&self, text: &str) -> bool {
        match &self.kind {
            Kind::Exact(v) => text == v,
            Kind::Prefix(v) => text.starts_with(v.as_str()),
            Kind::Suffix(v) => text.ends_with(v.as_str()),
            Kind::Contains(v) => text.contains(v.as_str()),
            Kind::AnyOf(vs) => vs.iter().any(|v| v == text),
            Kind::Regex(r) => r.is_match(text),
        }
    }

    /// Whether the pattern (not negated) hits `value`. With `normalize: sql` the value's
    /// SQL readings are combined by `q`.
    fn hits(&self, value: &str, q: Quantifier) -> bool {
        if !self.sql {
            return self.kind_matches(value);
        }
        q.combine(sql_readings(value).iter().map(|r| self.kind_matches(r))).unwrap_or(false)
    }

    /// The inner quantifier that makes `negate XOR hits` lean the rule's way: a negated
    /// deny condition must hold if *some* reading fails the pattern, so the pattern
    /// itself is then judged over *all* readings.
    fn inner(&self, mode: Quantifier) -> Quantifier {
        if self.negate {
            mode.flip()
        } else {
            mode
        }
    }

    /// The verdict for one value, `negate` applied.
    pub fn test(&self, value: &str, mode: Quantifier) -> bool {
        self.hits(value, self.inner(mode)) != self.negate
    }

    /// The verdict over a set of values, each judged by [`test`](Self::test) and combined
    /// by `mode`. With no value at all the pattern cannot hit, so the condition holds
    /// exactly when negated ("is not X" is true of a missing value).
    ///
    /// `visit` feeds the values to the callback and stops when it breaks.
    pub fn judge_each(&self, mode: Quantifier, visit: impl FnOnce(&mut Sink<'_>)) -> bool {
        mode.judge_each(visit, |value| self.test(value, mode)).unwrap_or(self.negate)
    }

    /// The verdict for "the pattern hits somewhere among these values", `negate` applied
    /// to the whole (a negated `anywhere` means "nowhere").
    pub fn judge_somewhere(&self, mode: Quantifier, visit: impl FnOnce(&mut Sink<'_>)) -> bool {
        let q = self.inner(mode);
        let mut hit = false;
        visit(&mut |value| {
            if self.hits(value, q) {
                hit = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        hit != self.negate
    }
}

fn build_regex(pattern: &str, case_insensitive: bool, field: &str) -> Result<Regex, ConfigError> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| ConfigError::new(field, format!("invalid regex: {e}")))
}

/// Whitespace that SQL normalisation would have rewritten: anything but single spaces.
fn has_unnormalised_whitespace(s: &str) -> bool {
    s.contains("  ") || s.chars().any(|c| c.is_whitespace() && c != ' ')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::spec::StringMatcherSpec;

    fn matcher(json: &str) -> StringMatcher {
        let spec: StringMatcherSpec = serde_json::from_str(json).unwrap();
        StringMatcher::compile(spec.matcher_fields(), "m").unwrap()
    }

    fn compile_err(json: &str) -> ConfigError {
        let spec: StringMatcherSpec = serde_json::from_str(json).unwrap();
        StringMatcher::compile(spec.matcher_fields(), "rules[0].when.path").unwrap_err()
    }

    fn values<'a>(vs: &'a [&'a str]) -> impl FnOnce(&mut Sink<'_>) + 'a {
        move |f| {
            for v in vs {
                if f(v).is_break() {
                    return;
                }
            }
        }
    }

    #[test]
    fn literal_kinds_match_case_sensitively_by_default() {
        assert!(matcher(r#"{"exact":"/a"}"#).test("/a", Quantifier::Any));
        assert!(!matcher(r#"{"exact":"/a"}"#).test("/A", Quantifier::Any));
        assert!(matcher(r#"{"prefix":"/api/"}"#).test("/api/x", Quantifier::Any));
        assert!(matcher(r#"{"suffix":".json"}"#).test("/a.json", Quantifier::Any));
        assert!(matcher(r#"{"contains":"admin"}"#).test("/x/admin/y", Quantifier::Any));
        assert!(matcher(r#"{"any_of":["a","b"]}"#).test("b", Quantifier::Any));
        assert!(!matcher(r#"{"any_of":["a","b"]}"#).test("ab", Quantifier::Any));
    }

    #[test]
    fn case_insensitive_literals_fold_unicode_and_stay_anchored() {
        let m = matcher(r#"{"exact":"/Admin.Ä","case_insensitive":true}"#);
        assert!(m.test("/aDMIN.ä", Quantifier::Any));
        assert!(!m.test("/admin.ä/x", Quantifier::Any));
        assert!(!m.test("/adminXä", Quantifier::Any), "the dot must stay literal");
        let m = matcher(r#"{"any_of":["GET","Head"],"case_insensitive":true}"#);
        assert!(m.test("head", Quantifier::Any));
        assert!(!m.test("gethead", Quantifier::Any));
    }

    #[test]
    fn regex_is_unanchored_and_honours_case_option() {
        assert!(matcher(r#"{"regex":"dr[o]p"}"#).test("xx drop yy", Quantifier::Any));
        assert!(!matcher(r#"{"regex":"drop"}"#).test("DROP", Quantifier::Any));
        assert!(matcher(r#"{"regex":"drop","case_insensitive":true}"#).test("DROP", Quantifier::Any));
    }

    #[test]
    fn negate_inverts_a_single_value() {
        let m = matcher(r#"{"exact":"prod","negate":true}"#);
        assert!(m.test("staging", Quantifier::Any));
        assert!(!m.test("prod", Quantifier::Any));
    }

    #[test]
    fn sql_normalisation_implies_case_insensitive_and_sees_through_comments() {
        let m = matcher(r#"{"contains":"DROP TABLE","normalize":"sql"}"#);
        assert!(m.test("dRoP/**/tAbLe x", Quantifier::Any));
    }

    #[test]
    fn sql_readings_lean_by_quantifier() {
        // Only the quote-aware readings show the statement.
        let sql = "SELECT '--'; DROP TABLE t";
        let m = matcher(r#"{"regex":"drop\\s+table","normalize":"sql"}"#);
        assert!(m.test(sql, Quantifier::Any));
        assert!(!m.test(sql, Quantifier::All));
        let negated = matcher(r#"{"regex":"drop\\s+table","normalize":"sql","negate":true}"#);
        // Deny mode: "some reading lacks it" holds; allow mode: "no reading has it" fails.
        assert!(negated.test(sql, Quantifier::Any));
        assert!(!negated.test(sql, Quantifier::All));
    }

    #[test]
    fn judge_each_uses_any_for_deny_and_all_for_allow() {
        let m = matcher(r#"{"exact":"ok"}"#);
        assert!(m.judge_each(Quantifier::Any, values(&["bad", "ok"])));
        assert!(!m.judge_each(Quantifier::All, values(&["bad", "ok"])));
        assert!(m.judge_each(Quantifier::All, values(&["ok", "ok"])));
    }

    #[test]
    fn judge_each_without_values_holds_only_when_negated() {
        assert!(!matcher(r#"{"exact":"x"}"#).judge_each(Quantifier::All, values(&[])));
        assert!(!matcher(r#"{"exact":"x"}"#).judge_each(Quantifier::Any, values(&[])));
        assert!(matcher(r#"{"exact":"x","negate":true}"#).judge_each(Quantifier::Any, values(&[])));
    }

    #[test]
    fn negated_judge_each_leans_fail_closed() {
        let m = matcher(r#"{"exact":"staging","negate":true}"#);
        // Deny: some value is not staging.
        assert!(m.judge_each(Quantifier::Any, values(&["staging", "prod"])));
        // Allow: every value is not staging.
        assert!(!m.judge_each(Quantifier::All, values(&["staging", "prod"])));
    }

    #[test]
    fn judge_somewhere_negated_means_nowhere() {
        let m = matcher(r#"{"contains":"drop","negate":true}"#);
        assert!(!m.judge_somewhere(Quantifier::Any, values(&["a", "drop it"])));
        assert!(m.judge_somewhere(Quantifier::All, values(&["a", "b"])));
    }

    #[test]
    fn rejects_two_matcher_kinds() {
        let e = compile_err(r#"{"exact":"a","regex":"b"}"#);
        assert_eq!(e.field, "rules[0].when.path");
        assert!(e.problem.contains("`exact` and `regex`"), "{}", e.problem);
    }

    #[test]
    fn rejects_no_matcher_kind() {
        let e = compile_err(r#"{"negate":true}"#);
        assert_eq!(e.field, "rules[0].when.path");
    }

    #[test]
    fn rejects_bad_regex_at_regex_field() {
        let e = compile_err(r#"{"regex":"(unclosed"}"#);
        assert_eq!(e.field, "rules[0].when.path.regex");
        assert!(e.problem.starts_with("invalid regex"));
    }

    #[test]
    fn rejects_regex_over_size_limit() {
        let e = compile_err(r#"{"regex":"\\w{1000}\\w{1000}\\w{1000}"}"#);
        assert_eq!(e.field, "rules[0].when.path.regex");
    }

    #[test]
    fn rejects_empty_any_of_and_empty_contains() {
        assert_eq!(compile_err(r#"{"any_of":[]}"#).field, "rules[0].when.path.any_of");
        assert_eq!(compile_err(r#"{"contains":""}"#).field, "rules[0].when.path.contains");
    }

    #[test]
    fn rejects_sql_literal_that_could_never_match() {
        let e = compile_err(r#"{"contains":"drop  table","normalize":"sql"}"#);
        assert_eq!(e.field, "rules[0].when.path.contains");
        assert_eq!(compile_err(r#"{"any_of":["a","b\tc"],"normalize":"sql"}"#).field, "rules[0].when.path.any_of[1]");
    }
}

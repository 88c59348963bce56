//! Conditions on the request body: JSON pointers, "anywhere in the document", the raw
//! text, the MCP `tools/call` tool name and `resources/read` URI; what is found there is
//! tested by a string matcher or read as SQL (`sql`).

use std::cell::OnceCell;
use std::ops::ControlFlow;

use serde_json::Value;

use super::matcher::{Quantifier, Sink, StringMatcher};
use super::spec::BodyConditionSpec;
use super::sql::{SqlCondition, SqlDefaults, SqlMemo};
use super::Body;
use crate::config_error::ConfigError;

/// What one policy evaluation computes from the body at most once, however many rules
/// ask: the JSON text of a JSON body (for `raw`), the SQL analyses (for `sql`).
#[derive(Default)]
pub(crate) struct Memo {
    canonical: OnceCell<String>,
    pub(crate) sql: SqlMemo,
}

/// One step of a compiled JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// An object member, or an array index when the text is a canonical index.
    Key { name: String, index: Option<usize> },
    /// `*`: every array element or object member.
    Wildcard,
}

/// An RFC 6901 JSON pointer, extended with `*` segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    segments: Vec<Segment>,
    /// As configured, for explanations.
    text: String,
}

impl JsonPointer {
    /// Parses `""` (the whole document) or `/a/b~1c/0/*`. A literal member named `*`
    /// cannot be addressed: the wildcard takes that spelling.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(JsonPointer { segments: Vec::new(), text: String::new() });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err("must be empty or start with `/` (RFC 6901), e.g. `/params/arguments/sql`".into());
        };
        let segments = rest
            .split('/')
            .map(|raw| {
                if raw == "*" {
                    return Ok(Segment::Wildcard);
                }
                let name = unescape_segment(raw)?;
                Ok(Segment::Key { index: array_index(&name), name })
            })
            .collect::<Result<_, String>>()?;
        Ok(JsonPointer { segments, text: text.to_string() })
    }

    /// Feeds every value the pointer reaches to `f`, stopping when it breaks.
    fn visit<'v>(&self, root: &'v Value, f: &mut dyn FnMut(&'v Value) -> ControlFlow<()>) -> ControlFlow<()> {
        visit_from(&self.segments, root, f)
    }
}

fn visit_from<'v>(
    segments: &[Segment],
    value: &'v Value,
    f: &mut dyn FnMut(&'v Value) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some((first, rest)) = segments.split_first() else {
        return f(value);
    };
    match (first, value) {
        (Segment::Wildcard, Value::Array(items)) => {
            for item in items {
                visit_from(rest, item, f)?;
            }
            ControlFlow::Continue(())
        }
        (Segment::Wildcard, Value::Object(members)) => {
            for member in members.values() {
                visit_from(rest, member, f)?;
            }
            ControlFlow::Continue(())
        }
        (Segment::Key { name, .. }, Value::Object(members)) => match members.get(name) {
            Some(member) => visit_from(rest, member, f),
            None => ControlFlow::Continue(()),
        },
        (Segment::Key { index: Some(i), .. }, Value::Array(items)) => match items.get(*i) {
            Some(item) => visit_from(rest, item, f),
            None => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    }
}

fn unescape_segment(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err("has a `~` not followed by `0` or `1`; write `~0` for `~` and `~1` for `/`".into()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// RFC 6901 array indices: `0` or digits without a leading zero.
fn array_index(s: &str) -> Option<usize> {
    let canonical = s == "0" || (!s.starts_with('0') && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Feeds the scalar leaves under `value` to `f`: strings as they are, numbers,
/// booleans and null as their JSON text. With `keys`, object keys too.
fn visit_leaves(value: &Value, keys: bool, f: &mut Sink<'_>) -> ControlFlow<()> {
    match value {
        Value::String(s) => f(s),
        Value::Number(n) => f(&n.to_string()),
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        Value::Null => f("null"),
        Value::Array(items) => {
            for item in items {
                visit_leaves(item, keys, f)?;
            }
            ControlFlow::Continue(())
        }
        Value::Object(members) => {
            for (key, member) in members {
                if keys {
                    f(key)?;
                }
                visit_leaves(member, keys, f)?;
            }
            ControlFlow::Continue(())
        }
    }
}

/// Where a body condition looks.
#[derive(Debug)]
enum Target {
    Pointer(JsonPointer),
    Anywhere,
    Raw,
    /// A parameter of one MCP request method: `params.name` of `tools/call` and
    /// `prompts/get`, `params.uri` of `resources/read`.
    Mcp(McpParam),
}

/// The MCP request parameters rules can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum McpParam {
    /// `mcp_tool`: the tool a `tools/call` runs.
    ToolName,
    /// `mcp_resource`: the URI a `resources/read` reads.
    ResourceUri,
    /// `mcp_prompt`: the prompt a `prompts/get` gets.
    PromptName,
}

impl McpParam {
    fn method_and_param(self) -> (&'static str, &'static str) {
        match self {
            McpParam::ToolName => ("tools/call", "name"),
            McpParam::ResourceUri => ("resources/read", "uri"),
            McpParam::PromptName => ("prompts/get", "name"),
        }
    }
}

/// What one `sql` condition read in one text of a body.
#[derive(Debug)]
pub struct SqlReading {
    /// The JSON pointer it was found at, or `the body`.
    pub place: String,
    pub dialect: &'static str,
    pub analysis: Result<crate::sql::Analysis, crate::sql::Unparsable>,
    /// The condition asks how the text uses sensitive columns (`sensitive`).
    pub judges_sensitive: bool,
}

impl std::fmt::Display for SqlReading {
    /// `sql at /sql (sqlite): statements [delete], effects [write], …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sql at {} ({}): ", self.place, self.dialect)?;
        match &self.analysis {
            Ok(analysis) => write!(f, "{analysis}"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

/// How the values a condition reaches are judged.
#[derive(Debug)]
enum Test {
    Matcher(StringMatcher),
    Sql(SqlCondition),
}

impl Test {
    /// The verdict for one text.
    fn text(&self, text: &str, mode: Quantifier, memo: &Memo) -> bool {
        match self {
            Test::Matcher(m) => m.test(text, mode),
            Test::Sql(c) => c.holds(text, mode, &memo.sql),
        }
    }

    /// The verdict over the values `visit` feeds, combined by `mode`; no value at all
    /// holds only for a negated matcher (see `StringMatcher::judge_each`).
    fn each(&self, mode: Quantifier, memo: &Memo, visit: impl FnOnce(&mut Sink<'_>)) -> bool {
        match self {
            Test::Matcher(m) => m.judge_each(mode, visit),
            // No SQL at all is not SQL that matches.
            Test::Sql(c) => mode.judge_each(visit, |text| c.holds(text, mode, &memo.sql)).unwrap_or(false),
        }
    }
}

/// A compiled body condition (also used for `mcp_tool` and `mcp_resource`).
#[derive(Debug)]
pub struct BodyCondition {
    target: Target,
    test: Test,
}

impl BodyCondition {
    /// `defaults` are the config's for `sql` conditions.
    pub(crate) fn compile(spec: &BodyConditionSpec, defaults: &SqlDefaults, field: &str) -> Result<Self, ConfigError> {
        let mut targets = Vec::new();
        if spec.json_pointer.is_some() {
            targets.push("json_pointer");
        }
        if spec.anywhere {
            targets.push("anywhere");
        }
        if spec.raw {
            targets.push("raw");
        }
        let target = match (targets.as_slice(), &spec.json_pointer) {
            (["json_pointer"], Some(pointer)) => Target::Pointer(
                JsonPointer::parse(pointer).map_err(|p| ConfigError::new(format!("{field}.json_pointer"), p))?,
            ),
            (["anywhere"], _) => Target::Anywhere,
            (["raw"], _) => Target::Raw,
            ([], _) => {
                return Err(ConfigError::new(field, "needs one of `json_pointer`, `anywhere: true` or `raw: true`"))
            }
            (list, _) => {
                return Err(ConfigError::new(
                    field,
                    format!("sets {}; set exactly one of `json_pointer`, `anywhere`, `raw`", list.join(" and ")),
                ))
            }
        };
        let test = match &spec.sql {
            None => Test::Matcher(StringMatcher::compile(spec.matcher_fields(), field)?),
            Some(_) if spec.matcher_fields().any_set() => {
                return Err(ConfigError::new(
                    field,
                    "sets `sql` and a string matcher; a condition reads its value one way: \
                     split it into two conditions",
                ))
            }
            Some(_) if matches!(target, Target::Anywhere) => {
                return Err(ConfigError::new(
                    format!("{field}.sql"),
                    "needs the field that holds the SQL: use `json_pointer` (or `raw: true` for a text body), \
                     not `anywhere`",
                ))
            }
            Some(sql) => Test::Sql(SqlCondition::compile(sql, defaults, &format!("{field}.sql"))?),
        };
        Ok(BodyCondition { target, test })
    }

    pub(crate) fn mcp(param: McpParam, matcher: StringMatcher) -> Self {
        BodyCondition { target: Target::Mcp(param), test: Test::Matcher(matcher) }
    }

    /// For a `sql` condition, what the SQL it reads in `body` is, text by text, so
    /// `airlock check-config` and refusals can say what a rule matched on.
    pub(crate) fn sql_readings(&self, body: Body<'_>, out: &mut Vec<SqlReading>) {
        let Test::Sql(condition) = &self.test else { return };
        let mut describe = |place: &str, text: &str| {
            out.push(SqlReading {
                place: place.to_string(),
                dialect: condition.dialect().name(),
                analysis: crate::sql::analyze(text, condition.dialect(), condition.sensitive_columns()),
                judges_sensitive: condition.judges_sensitive(),
            });
        };
        match (&self.target, body) {
            (Target::Raw, Body::NotJson(text)) => describe("the body", text),
            (Target::Pointer(pointer), Body::Json(root)) => {
                let documents = match root {
                    Value::Array(items) if !items.is_empty() => items.as_slice(),
                    document => std::slice::from_ref(document),
                };
                for document in documents {
                    let _ = pointer.visit(document, &mut |v| {
                        visit_leaves(v, false, &mut |text| {
                            describe(&pointer.text, text);
                            ControlFlow::Continue(())
                        })
                    });
                }
            }
            _ => {}
        }
    }

    /// Whether the condition holds for `body`, leaning by `mode` (see the module docs
    /// of `policy`).
    pub(crate) fn holds(&self, body: Body<'_>, mode: Quantifier, memo: &Memo) -> bool {
        // What a condition that cannot be evaluated resolves to: deny/approve match,
        // allow does not.
        let fail_closed = mode == Quantifier::Any;
        match (&self.target, body) {
            // Callers only evaluate body conditions once the body was read.
            (_, Body::NotRead) => fail_closed,
            (_, Body::Unreadable) => fail_closed,
            (Target::Raw, Body::Empty) => self.test.text("", mode, memo),
            (Target::Raw, Body::NotJson(text)) => self.test.text(text, mode, memo),
            (Target::Raw, Body::Json(value)) => {
                // The body's own bytes are not at hand; its canonical serialisation is
                // at least as revealing (`\u0044ROP` comes out as `DROP`).
                let text = memo.canonical.get_or_init(|| serde_json::to_string(value).unwrap_or_default());
                self.test.text(text, mode, memo)
            }
            (_, Body::Empty) => false,
            (_, Body::NotJson(_)) => fail_closed,
            (_, Body::Json(root)) => match root {
                // A JSON-RPC batch: judge each message, so an allowed call cannot
                // carry a dangerous one beside it.
                Value::Array(items) if !items.is_empty() => mode
                    .combine(items.iter().map(|item| self.holds_in_document(item, mode, memo)))
                    .unwrap_or(fail_closed),
                document => self.holds_in_document(document, mode, memo),
            },
        }
    }

    fn holds_in_document(&self, document: &Value, mode: Quantifier, memo: &Memo) -> bool {
        match (&self.target, &self.test) {
            (Target::Pointer(pointer), test) => test.each(mode, memo, |f| {
                let _ = pointer.visit(document, &mut |v| visit_leaves(v, false, f));
            }),
            (Target::Anywhere, Test::Matcher(m)) => m.judge_somewhere(mode, |f| {
                let _ = visit_leaves(document, true, f);
            }),
            (Target::Mcp(param), test) => {
                let (method, name) = param.method_and_param();
                // Another method entirely: neither "tool X" nor "a tool other than X".
                document.get("method").and_then(Value::as_str) == Some(method)
                    && test.each(mode, memo, |f| {
                        if let Some(value) = document.get("params").and_then(|p| p.get(name)) {
                            let _ = visit_leaves(value, false, f);
                        }
                    })
            }
            // Raw is handled on the whole body, before documents are split; `sql` is
            // never compiled with `anywhere`.
            (Target::Raw, _) | (Target::Anywhere, Test::Sql(_)) => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointer_values(pointer: &str, doc: &Value) -> Vec<Value> {
        let p = JsonPointer::parse(pointer).unwrap();
        let mut out = Vec::new();
        let _ = p.visit(doc, &mut |v| {
            out.push(v.clone());
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn pointer_follows_members_and_indices() {
        let doc = json!({"a": {"b/c": [10, {"~x": "hit"}]}});
        assert_eq!(pointer_values("/a/b~1c/1/~0x", &doc), vec![json!("hit")]);
        assert_eq!(pointer_values("/a/b~1c/0", &doc), vec![json!(10)]);
        assert_eq!(pointer_values("", &doc), vec![doc.clone()]);
    }

    #[test]
    fn pointer_rejects_non_canonical_indices() {
        let doc = json!({"a": [1, 2]});
        assert!(pointer_values("/a/01", &doc).is_empty());
        assert!(pointer_values("/a/-", &doc).is_empty());
        assert!(pointer_values("/a/5", &doc).is_empty());
    }

    #[test]
    fn pointer_numeric_segment_still_names_object_members() {
        let doc = json!({"0": "zero"});
        assert_eq!(pointer_values("/0", &doc), vec![json!("zero")]);
    }

    #[test]
    fn pointer_wildcard_spans_arrays_and_objects() {
        let doc = json!({"calls": [{"sql": "a"}, {"sql": "b"}], "m": {"x": {"sql": "c"}, "y": {}}});
        assert_eq!(pointer_values("/calls/*/sql", &doc), vec![json!("a"), json!("b")]);
        assert_eq!(pointer_values("/m/*/sql", &doc), vec![json!("c")]);
    }

    #[test]
    fn pointer_parse_errors_are_actionable() {
        assert!(JsonPointer::parse("params/name").unwrap_err().contains("start with `/`"));
        assert!(JsonPointer::parse("/a~2").unwrap_err().contains("`~0`"));
    }

    #[test]
    fn leaves_render_scalars_as_json_text_and_keys_on_request() {
        let doc = json!({"k": [1.5, true, null, "s"]});
        let mut seen = Vec::new();
        let _ = visit_leaves(&doc, true, &mut |s| {
            seen.push(s.to_owned());
            ControlFlow::Continue(())
        });
        assert_eq!(seen, vec!["k", "1.5", "true", "null", "s"]);
    }
}

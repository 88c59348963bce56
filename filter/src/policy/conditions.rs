//! A rule's `when` block compiled: the request-level conditions, the body conditions,
//! and the `any` / `not` blocks nested in it.
//!
//! A block is judged three-valued so that order of evaluation stays what the policy
//! promises: `Some(false)` and `Some(true)` settle it, `None` means "it turns on the
//! body, which is not read yet". Request-level conditions are judged first, so a block
//! whose request conditions fail is `Some(false)` without the body.
//!
//! `not` flips the rule's quantifier for what it holds: a deny rule's `not` block must be
//! *harder* to hold (so the rule is easier to trigger), which is the allow rule's lean.
//! Fail closed therefore survives negation: a deny rule with `not: {body: ...}` against an
//! unreadable body holds.

use super::body::{BodyCondition, McpParam, Memo, SqlReading};
use super::matcher::{Quantifier, StringMatcher};
use super::spec::{GroupsSpec, HeaderConditionSpec, MatchSpec, QueryConditionSpec, StringMatcherSpec};
use super::sql::SqlDefaults;
use super::{Body, RequestFacts};
use crate::config_error::ConfigError;

/// Deepest nesting of `any` / `not` blocks: any real policy fits, and a limit keeps a
/// config from costing the VM's stack.
const MAX_NESTING: usize = 8;

#[derive(Debug)]
struct HeaderCondition {
    /// Lower-case.
    name: String,
    /// `None`: the header must be absent.
    matcher: Option<StringMatcher>,
}

#[derive(Debug)]
struct QueryCondition {
    name: String,
    matcher: StringMatcher,
}

#[derive(Debug)]
enum Groups {
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

/// A compiled `when` block; all present conditions must hold.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    subjects: Option<StringMatcher>,
    groups: Option<Groups>,
    /// Upper-case.
    methods: Option<Vec<String>>,
    path: Option<StringMatcher>,
    headers: Vec<HeaderCondition>,
    query: Vec<QueryCondition>,
    /// `mcp_tool`, `mcp_resource` and `mcp_prompt` (if any), then the `body` conditions.
    body: Vec<BodyCondition>,
    /// Empty: no `any` block.
    any: Vec<Conditions>,
    not: Option<Box<Conditions>>,
}

impl Conditions {
    /// Compiles `spec`; `field` is its config path (`rules[2].when`).
    /// `sql` holds the defaults of its `sql` conditions.
    pub(super) fn compile(spec: MatchSpec, sql: &SqlDefaults, field: &str) -> Result<Self, ConfigError> {
        Self::compile_nested(spec, sql, field, 0)
    }

    fn compile_nested(spec: MatchSpec, sql: &SqlDefaults, w: &str, depth: usize) -> Result<Self, ConfigError> {
        if depth > MAX_NESTING {
            return Err(ConfigError::new(w, format!("nests `any` / `not` deeper than {MAX_NESTING} levels")));
        }
        let matcher =
            |s: &StringMatcherSpec, sub: &str| StringMatcher::compile(s.matcher_fields(), &format!("{w}.{sub}"));
        let subjects = spec.subjects.as_ref().map(|s| matcher(s, "subjects")).transpose()?;
        let path = spec.path.as_ref().map(|s| matcher(s, "path")).transpose()?;
        let groups = spec.groups.map(|g| compile_groups(g, &format!("{w}.groups"))).transpose()?;
        let methods = spec.methods.map(|m| compile_methods(m, &format!("{w}.methods"))).transpose()?;
        let headers = compile_each(&spec.headers, &format!("{w}.headers"), compile_header)?;
        let query = compile_each(&spec.query, &format!("{w}.query"), compile_query)?;
        let mut body = compile_each(&spec.body, &format!("{w}.body"), |b, f| BodyCondition::compile(b, sql, f))?;
        // First: a name check is cheaper than pointer walks and SQL readings.
        if let Some(prompt) = &spec.mcp_prompt {
            body.insert(0, BodyCondition::mcp(McpParam::PromptName, matcher(prompt, "mcp_prompt")?));
        }
        if let Some(uri) = &spec.mcp_resource {
            body.insert(0, BodyCondition::mcp(McpParam::ResourceUri, matcher(uri, "mcp_resource")?));
        }
        if let Some(tool) = &spec.mcp_tool {
            body.insert(0, BodyCondition::mcp(McpParam::ToolName, matcher(tool, "mcp_tool")?));
        }
        let any = match spec.any {
            None => Vec::new(),
            Some(blocks) if blocks.is_empty() => {
                return Err(ConfigError::new(
                    format!("{w}.any"),
                    "is empty; list at least one block of conditions or remove `any`",
                ));
            }
            Some(blocks) => blocks
                .into_iter()
                .enumerate()
                .map(|(i, b)| Self::compile_nested(b, sql, &format!("{w}.any[{i}]"), depth + 1))
                .collect::<Result<_, _>>()?,
        };
        let not = spec
            .not
            .map(|b| Self::compile_nested(*b, sql, &format!("{w}.not"), depth + 1).map(Box::new))
            .transpose()?;
        Ok(Conditions { subjects, groups, methods, path, headers, query, body, any, not })
    }

    /// Whether anything in the block, nested blocks included, looks at the body.
    pub(super) fn needs_body(&self) -> bool {
        !self.body.is_empty()
            || self.any.iter().any(Conditions::needs_body)
            || self.not.as_ref().is_some_and(|n| n.needs_body())
    }

    /// What the block's `sql` conditions, nested ones included, read in `body`.
    pub(super) fn sql_readings(&self, body: Body<'_>, out: &mut Vec<SqlReading>) {
        self.body.iter().for_each(|c| c.sql_readings(body, out));
        self.any.iter().for_each(|block| block.sql_readings(body, out));
        if let Some(not) = &self.not {
            not.sql_readings(body, out);
        }
    }

    /// Judges the block; `None` only while the body is [`Body::NotRead`] and the answer
    /// turns on it. `memo` keeps what the evaluation computes from the body once.
    pub(super) fn judge(
        &self,
        facts: &RequestFacts<'_>,
        body: Body<'_>,
        mode: Quantifier,
        memo: &Memo,
    ) -> Option<bool> {
        if !self.request_conditions_hold(facts, mode) {
            return Some(false);
        }
        let body_holds = if self.body.is_empty() {
            Some(true)
        } else if matches!(body, Body::NotRead) {
            None
        } else {
            Some(self.body.iter().all(|c| c.holds(body, mode, memo)))
        };
        // Most blocks have no nested ones: settled here, without the walk below.
        if body_holds == Some(false) || (self.any.is_empty() && self.not.is_none()) {
            return body_holds;
        }
        // Unknowns are kept until the end: a nested block that fails settles the block
        // without the body.
        let mut unknown = body_holds.is_none();
        if !self.any.is_empty() {
            let mut some_unknown = false;
            let mut held = false;
            for block in &self.any {
                match block.judge(facts, body, mode, memo) {
                    Some(true) => {
                        held = true;
                        break;
                    }
                    Some(false) => {}
                    None => some_unknown = true,
                }
            }
            if !held {
                if !some_unknown {
                    return Some(false);
                }
                unknown = true;
            }
        }
        if let Some(not) = &self.not {
            match not.judge(facts, body, mode.flip(), memo) {
                Some(true) => return Some(false),
                Some(false) => {}
                None => unknown = true,
            }
        }
        (!unknown).then_some(true)
    }

    /// Identity, method, path, header and query conditions.
    #[inline]
    fn request_conditions_hold(&self, facts: &RequestFacts<'_>, mode: Quantifier) -> bool {
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(facts.method)) {
                return false;
            }
        }
        if let Some(path) = &self.path {
            if !path.test(&facts.target.path, mode) {
                return false;
            }
        }
        if self.subjects.is_some() || self.groups.is_some() {
            let Some(identity) = facts.identity else {
                return false;
            };
            if let Some(subjects) = &self.subjects {
                if !subjects.test(&identity.subject, mode) {
                    return false;
                }
            }
            let in_groups = match &self.groups {
                None => true,
                Some(Groups::AnyOf(gs)) => gs.iter().any(|g| identity.in_group(g)),
                Some(Groups::AllOf(gs)) => gs.iter().all(|g| identity.in_group(g)),
            };
            if !in_groups {
                return false;
            }
        }
        let headers_hold = self.headers.iter().all(|cond| {
            let mut values = facts.headers.values(&cond.name);
            match &cond.matcher {
                None => values.next().is_none(),
                Some(m) => m.judge_each(mode, |f| {
                    let _ = values.try_for_each(f);
                }),
            }
        });
        headers_hold
            && self.query.iter().all(|cond| {
                cond.matcher.judge_each(mode, |f| {
                    let _ = facts.target.query.iter().filter(|(n, _)| *n == cond.name).try_for_each(|(_, v)| f(v));
                })
            })
    }
}

/// Compiles each entry of a config list; errors name the entry (`…headers[2].name`).
fn compile_each<S, T>(
    specs: &[S],
    field: &str,
    compile: impl Fn(&S, &str) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    specs.iter().enumerate().map(|(i, s)| compile(s, &format!("{field}[{i}]"))).collect()
}

fn compile_groups(spec: GroupsSpec, field: &str) -> Result<Groups, ConfigError> {
    let (groups, key) = match spec {
        GroupsSpec::AnyOf(g) => (Groups::AnyOf(g), "any_of"),
        GroupsSpec::AllOf(g) => (Groups::AllOf(g), "all_of"),
    };
    let (Groups::AnyOf(list) | Groups::AllOf(list)) = &groups;
    if list.is_empty() {
        return Err(ConfigError::new(format!("{field}.{key}"), "is empty; list at least one group"));
    }
    Ok(groups)
}

fn compile_methods(methods: Vec<String>, field: &str) -> Result<Vec<String>, ConfigError> {
    if methods.is_empty() {
        return Err(ConfigError::new(field, "is empty; list at least one method or remove `methods`"));
    }
    methods
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    format!("`{m}` is not an HTTP method name (letters only, e.g. `GET`)"),
                ));
            }
            Ok(m.to_ascii_uppercase())
        })
        .collect()
}

fn check_header_name(name: &str, field: &str) -> Result<(), ConfigError> {
    let token = name.strip_prefix(':').unwrap_or(name);
    let valid =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(field, format!("`{name}` is not a valid HTTP header name")))
    }
}

fn compile_header(spec: &HeaderConditionSpec, field: &str) -> Result<HeaderCondition, ConfigError> {
    check_header_name(&spec.name, &format!("{field}.name"))?;
    let name = spec.name.to_ascii_lowercase();
    if spec.absent {
        if spec.matcher_fields().any_set() {
            return Err(ConfigError::new(
                field,
                "`absent: true` takes no matcher fields; use a separate condition to match the value",
            ));
        }
        return Ok(HeaderCondition { name, matcher: None });
    }
    Ok(HeaderCondition { name, matcher: Some(StringMatcher::compile(spec.matcher_fields(), field)?) })
}

fn compile_query(spec: &QueryConditionSpec, field: &str) -> Result<QueryCondition, ConfigError> {
    if spec.name.is_empty() {
        return Err(ConfigError::new(format!("{field}.name"), "is empty; name the query parameter"));
    }
    Ok(QueryCondition { name: spec.name.clone(), matcher: StringMatcher::compile(spec.matcher_fields(), field)? })
}

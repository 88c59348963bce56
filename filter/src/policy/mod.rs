//! The policy engine: ordered rules compiled once at config load, evaluated per request.
//!
//! # Semantics
//! - **Order.** Rules are tried in order and the first that matches decides; when none
//!   matches, the policy's default action does. A `dry_run` rule that matches is
//!   reported in [`Decision::dry_run`] and then skipped, so observing a rule never
//!   changes what happens to the request.
//! - **Conditions.** All of a rule's conditions must hold (AND); the entries of one list
//!   (`methods`, `any_of`, `groups.any_of`) are alternatives (OR). A rule without
//!   conditions matches every request. `any` holds when one of its blocks holds, `not`
//!   when its block does not (see `conditions` for how negation keeps fail closed).
//! - **Identity.** `subjects` and `groups` only hold for an authenticated caller; an
//!   anonymous request satisfies neither, negated or not.
//! - **Body.** A rule's request-level conditions (identity, method, path, headers,
//!   query) are checked first. If they fail the rule is skipped without the body, so a
//!   request no body rule concerns is never buffered. If they hold and the rule has
//!   body conditions (`body`, `mcp_tool`, `mcp_resource`) while the body is [`Body::NotRead`], the
//!   answer is [`Evaluation::NeedBody`], even if a later rule would match without
//!   the body: order is part of the policy.
//! - **Fail closed.** A JSON condition against a body that is not JSON
//!   ([`Body::NotJson`], [`Body::Unreadable`]) holds for deny/approve rules and fails
//!   for allow rules. Against [`Body::Empty`] JSON conditions fail. `raw` conditions
//!   read an empty body as `""` and a JSON body as its compact serialisation (escapes
//!   decoded, so `\u0044ROP` reads `DROP`).
//! - **Several values, one verdict.** Wherever a condition sees several values (a
//!   repeated header or query parameter, the values under a JSON pointer or inside the
//!   object/array it reaches, the messages of a JSON-RPC batch, the SQL readings of a
//!   text), deny/approve rules hold if the condition holds for **any** of them and
//!   allow rules only if it holds for **every** one, so an allowed value cannot smuggle
//!   a dangerous one beside it. `negate` applies per value before combining: a negated
//!   deny condition holds if *some* value is not X; a negated allow condition holds if
//!   *no* value is X. A missing value (absent header, pointer that reaches nothing)
//!   never matches a pattern, so only a negated condition holds for it.
//! - **`anywhere`** asks whether the pattern occurs somewhere in the document (string
//!   values, object keys, scalars as JSON text); negated, that it occurs nowhere.
//! - **`mcp_tool`** holds for a JSON-RPC message whose `method` is `tools/call` and whose
//!   `params.name` matches; negated, for a `tools/call` of any *other* tool. Messages
//!   that are not tool calls never satisfy it. `mcp_resource` is the same for the
//!   `params.uri` of `resources/read`, `mcp_prompt` for the `params.name` of `prompts/get`.
//! - **Batches.** A body whose root is a non-empty array is a JSON-RPC batch: JSON
//!   conditions (pointers are relative to each message) are judged per message and
//!   combined as above.

mod body;
mod conditions;
mod matcher;
pub mod spec;
mod sql;
mod sql_result;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;

use std::collections::HashMap;

pub(crate) use body::Memo;
pub use body::SqlReading;
use conditions::Conditions;
use matcher::Quantifier;
pub use spec::{
    Action, BodyConditionSpec, GroupsSpec, HeaderConditionSpec, MatchSpec, Normalize, QueryConditionSpec, RuleSpec,
    StringMatcherSpec,
};
pub use sql::{OnUnparsable, SqlConditionSpec, SqlDefaults};
pub use sql_result::{NotReadable, SqlResult, SqlResultSpec};

use crate::approval::{self, ApprovalSettings};
use crate::config_error::ConfigError;
use crate::headers::HeaderList;
use crate::identity::Identity;
use crate::limit::Limit;
use crate::normalize::RequestTarget;

/// Longest accepted rule name; it becomes part of Envoy stat names.
const MAX_RULE_NAME_LEN: usize = 100;

/// What the policy is asked about, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub target: &'a RequestTarget,
    /// Request headers with lower-case names; a repeated header appears repeatedly.
    pub headers: &'a HeaderList,
    /// The verified caller, if any.
    pub identity: Option<&'a Identity>,
}

/// The request body as far as the filter has it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Not buffered (yet): body conditions cannot be evaluated.
    NotRead,
    /// The request has no body.
    Empty,
    /// A body that parsed as JSON.
    Json(&'a serde_json::Value),
    /// UTF-8 text that is not JSON.
    NotJson(&'a str),
    /// Not UTF-8.
    Unreadable,
}

/// Outcome of [`Policy::evaluate`].
#[derive(Debug, Clone, Copy)]
pub enum Evaluation<'p> {
    Decided(Decision<'p>),
    /// A rule that may decide needs the body: buffer it and evaluate again.
    NeedBody,
}

/// A policy decision.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'p> {
    /// The rule that decided; `None` when the default action applied.
    pub rule: Option<&'p Rule>,
    pub action: Action,
    /// The first dry-run rule that matched before the decision, to be reported (stats,
    /// audit) as "would have" without being enforced.
    pub dry_run: Option<&'p Rule>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    name: String,
    action: Action,
    dry_run: bool,
    mask_profile: Option<usize>,
    approval: Option<ApprovalSettings>,
    limit: Option<Limit>,
    sql_result: Option<SqlResult>,
    mode: Quantifier,
    when: Conditions,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn action(&self) -> Action {
        self.action
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Index into the `mask_profiles` given to [`compile`].
    pub fn mask_profile(&self) -> Option<usize> {
        self.mask_profile
    }

    /// Set exactly on `approve` rules.
    pub fn approval(&self) -> Option<&ApprovalSettings> {
        self.approval.as_ref()
    }

    /// The rate limit on requests this rule decides; never on `deny` or dry-run rules.
    pub fn limit(&self) -> Option<&Limit> {
        self.limit.as_ref()
    }

    /// The route answers SQL whose rows are masked by column (`sql_result`).
    pub fn sql_result(&self) -> Option<&SqlResult> {
        self.sql_result.as_ref()
    }

    /// Whether the rule can only be decided with the request body.
    pub fn needs_body(&self) -> bool {
        self.when.needs_body() || self.sql_result.is_some()
    }

    /// What each of the rule's `sql` conditions reads in `body`, one reading per SQL text.
    pub fn sql_readings(&self, body: Body<'_>) -> Vec<SqlReading> {
        let mut out = Vec::new();
        self.when.sql_readings(body, &mut out);
        out
    }
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    default_action: Action,
}

impl Policy {
    /// Decides what happens to a request; see the module docs for the semantics.
    pub fn evaluate<'p>(&'p self, facts: &RequestFacts<'_>, body: Body<'_>) -> Evaluation<'p> {
        self.evaluate_with(facts, body, &Memo::default())
    }

    /// [`Policy::evaluate`], keeping what it computed from the body in `memo` for the
    /// caller (the SQL analyses that `sql_result` reads again).
    pub(crate) fn evaluate_with<'p>(&'p self, facts: &RequestFacts<'_>, body: Body<'_>, memo: &Memo) -> Evaluation<'p> {
        let mut dry_run = None;
        for rule in &self.rules {
            match rule.when.judge(facts, body, rule.mode, memo) {
                Some(true) => {}
                Some(false) => continue,
                None => return Evaluation::NeedBody,
            }
            // Its answer is masked by what the query selects: decided on the body.
            if rule.sql_result.is_some() && matches!(body, Body::NotRead) {
                return Evaluation::NeedBody;
            }
            if rule.dry_run {
                dry_run = dry_run.or(Some(rule));
                continue;
            }
            return Evaluation::Decided(Decision { rule: Some(rule), action: rule.action, dry_run });
        }
        Evaluation::Decided(Decision { rule: None, action: self.default_action, dry_run })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// Whether any rule can ask for the body; if none can, the filter never buffers.
    pub fn may_need_body(&self) -> bool {
        self.rules.iter().any(Rule::needs_body)
    }
}

/// Compiles rules once at config load. `field` is the config path of the rule list
/// (`"rules"`); errors name the exact offending field, e.g. `rules[1].when.path.regex`.
/// `mask_profiles` are the names a rule's `mask` may refer to; `sql` holds the dialect
/// of `sql` conditions that name none and the sensitive columns.
pub fn compile(
    rules: Vec<RuleSpec>,
    default_action: Action,
    mask_profiles: &[&str],
    sql: &SqlDefaults,
    field: &str,
) -> Result<Policy, ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(first) = seen.insert(rule.name.as_str(), i) {
            return Err(ConfigError::new(
                format!("{field}[{i}].name"),
                format!("duplicate rule name `{}` (also used by {field}[{first}]); names must be unique", rule.name),
            ));
        }
    }
    let rules: Vec<Rule> = rules
        .into_iter()
        .enumerate()
        .map(|(i, spec)| compile_rule(spec, mask_profiles, sql, &format!("{field}[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(Policy { rules, default_action })
}

fn compile_rule(spec: RuleSpec, mask_profiles: &[&str], sql: &SqlDefaults, field: &str) -> Result<Rule, ConfigError> {
    check_rule_name(&spec.name, &format!("{field}.name"))?;
    let mask_profile = match &spec.mask {
        None => None,
        Some(name) => Some(mask_profiles.iter().position(|p| p == name).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.mask"),
                if mask_profiles.is_empty() {
                    format!("unknown mask profile `{name}`: no mask profiles are configured")
                } else {
                    format!("unknown mask profile `{name}`; configured profiles: {}", mask_profiles.join(", "))
                },
            )
        })?),
    };
    let approval = match (spec.action, spec.approval) {
        (Action::Approve, Some(a)) => Some(approval::compile(a, &format!("{field}.approval"))?),
        (Action::Approve, None) => {
            return Err(ConfigError::new(
                format!("{field}.approval"),
                "an `approve` rule needs an `approval` block (mode, approvers)",
            ));
        }
        (_, Some(_)) => {
            return Err(ConfigError::new(format!("{field}.approval"), "only `approve` rules take an `approval` block"));
        }
        (_, None) => None,
    };
    let limit = match spec.limit {
        None => None,
        Some(_) if spec.action == Action::Deny => {
            return Err(ConfigError::new(
                format!("{field}.limit"),
                "a `deny` rule refuses every request it matches: a limit on it would never apply",
            ));
        }
        Some(_) if spec.dry_run => {
            return Err(ConfigError::new(
                format!("{field}.limit"),
                "a `dry_run` rule never decides a request: a limit on it would never apply",
            ));
        }
        Some(l) => Some(Limit::compile(l, &format!("{field}.limit"))?),
    };
    let sql_result = match &spec.sql_result {
        None => None,
        Some(_) if spec.action == Action::Deny => {
            return Err(ConfigError::new(
                format!("{field}.sql_result"),
                "a `deny` rule answers nothing: only `allow` and `approve` rules mask SQL results",
            ))
        }
        Some(_) if mask_profile.is_none() => {
            return Err(ConfigError::new(
                format!("{field}.sql_result"),
                "needs the rule's `mask` profile too: it masks the rest of the answer and writes the replacement",
            ))
        }
        Some(r) => Some(SqlResult::compile(r, sql, &format!("{field}.sql_result"))?),
    };
    let when = Conditions::compile(spec.when, sql, &format!("{field}.when"))?;

    Ok(Rule {
        name: spec.name,
        action: spec.action,
        dry_run: spec.dry_run,
        mask_profile,
        approval,
        limit,
        sql_result,
        mode: Quantifier::for_action(spec.action),
        when,
    })
}

fn check_rule_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_RULE_NAME_LEN {
        return Err(ConfigError::new(field, format!("must be 1 to {MAX_RULE_NAME_LEN} characters long")));
    }
    if !name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')) {
        return Err(ConfigError::new(
            field,
            format!("`{name}` may only use a-z, 0-9, `_`, `.` and `-`, since it names Envoy stats"),
        ));
    }
    Ok(())
}

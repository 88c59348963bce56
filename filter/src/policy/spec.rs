//! The policy part of the plugin config as operators write it (JSON), before
//! compilation. Unknown fields are rejected so a typo (`"negated"`) fails the load
//! instead of silently widening a rule.

use serde::Deserialize;

/// What a matching rule does with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward the request.
    Allow,
    /// Refuse the request.
    Deny,
    /// Hold the request until a human approves it.
    Approve,
}

impl Action {
    /// The config spelling, also used in stats and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Approve => "approve",
        }
    }
}

/// How a value is rewritten before a matcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Match the value as it is.
    #[default]
    None,
    /// Match every normalised SQL reading of the value (comments removed, whitespace
    /// collapsed, lowercased; see `crate::normalize::sql_readings`). Implies
    /// `case_insensitive`.
    Sql,
}

/// One policy rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique, `[a-z0-9_.-]+`: it names the rule's Envoy stats.
    pub name: String,
    pub action: Action,
    /// Record what the rule would have done, without doing it.
    #[serde(default)]
    pub dry_run: bool,
    /// Conditions; the default matches every request.
    #[serde(default)]
    pub when: MatchSpec,
    /// Name of the response-masking profile applied when this rule decides.
    #[serde(default)]
    pub mask: Option<String>,
    /// Required on `approve` rules: who approves, how, and for how long.
    #[serde(default)]
    pub approval: Option<crate::approval::ApprovalSpec>,
    /// A rate limit on the requests this rule decides (`allow` and `approve` rules).
    #[serde(default)]
    pub limit: Option<crate::limit::LimitSpec>,
    /// The route answers SQL: where the query is and how its rows come back, so they
    /// are masked by column (`sensitive_columns`).
    #[serde(default)]
    pub sql_result: Option<super::SqlResultSpec>,
}

/// The conditions of a rule; all present conditions must hold.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSpec {
    /// On the verified token's subject.
    pub subjects: Option<StringMatcherSpec>,
    /// On the verified token's groups.
    pub groups: Option<GroupsSpec>,
    /// HTTP methods, any of which matches; compared upper-case.
    pub methods: Option<Vec<String>>,
    /// On the normalised path.
    pub path: Option<StringMatcherSpec>,
    pub headers: Vec<HeaderConditionSpec>,
    pub query: Vec<QueryConditionSpec>,
    pub body: Vec<BodyConditionSpec>,
    /// On the tool name of a JSON-RPC `tools/call` request (MCP).
    pub mcp_tool: Option<StringMatcherSpec>,
    /// On the URI of a JSON-RPC `resources/read` request (MCP).
    pub mcp_resource: Option<StringMatcherSpec>,
    /// On the prompt name of a JSON-RPC `prompts/get` request (MCP).
    pub mcp_prompt: Option<StringMatcherSpec>,
    /// Alternatives: holds when at least one of these blocks holds (each block is a full
    /// set of conditions, ANDed like this one), so one rule covers several shapes.
    pub any: Option<Vec<MatchSpec>>,
    /// Holds when this block does not.
    pub not: Option<Box<MatchSpec>>,
}

/// Group membership: `{"any_of": [...]}` or `{"all_of": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupsSpec {
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

/// The matcher fields, borrowed from whichever spec struct carries them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatcherFields<'a> {
    pub exact: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub suffix: Option<&'a str>,
    pub contains: Option<&'a str>,
    pub regex: Option<&'a str>,
    pub any_of: Option<&'a [String]>,
    pub case_insensitive: bool,
    pub normalize: Normalize,
    pub negate: bool,
}

impl MatcherFields<'_> {
    /// Whether any field is set, options included.
    pub fn any_set(&self) -> bool {
        self.exact.is_some()
            || self.prefix.is_some()
            || self.suffix.is_some()
            || self.contains.is_some()
            || self.regex.is_some()
            || self.any_of.is_some()
            || self.case_insensitive
            || self.normalize != Normalize::None
            || self.negate
    }
}

/// Declares a spec struct that carries the string-matcher fields inline next to its own.
/// Serde's `flatten` cannot be combined with `deny_unknown_fields`, so the fields are
/// spelled out in each struct instead.
macro_rules! with_matcher_fields {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// The value equals this string.
            #[serde(default)]
            pub exact: Option<String>,
            /// The value starts with this string.
            #[serde(default)]
            pub prefix: Option<String>,
            /// The value ends with this string.
            #[serde(default)]
            pub suffix: Option<String>,
            /// The value contains this string.
            #[serde(default)]
            pub contains: Option<String>,
            /// The value matches this regular expression (unanchored; use `^` / `$`).
            #[serde(default)]
            pub regex: Option<String>,
            /// The value equals one of these strings.
            #[serde(default)]
            pub any_of: Option<Vec<String>>,
            #[serde(default)]
            pub case_insensitive: bool,
            #[serde(default)]
            pub normalize: Normalize,
            /// Invert the condition.
            #[serde(default)]
            pub negate: bool,
        }

        impl $name {
            pub(crate) fn matcher_fields(&self) -> MatcherFields<'_> {
                MatcherFields {
                    exact: self.exact.as_deref(),
                    prefix: self.prefix.as_deref(),
                    suffix: self.suffix.as_deref(),
                    contains: self.contains.as_deref(),
                    regex: self.regex.as_deref(),
                    any_of: self.any_of.as_deref(),
                    case_insensitive: self.case_insensitive,
                    normalize: self.normalize,
                    negate: self.negate,
                }
            }
        }
    };
}

with_matcher_fields! {
    /// Exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex`, `any_of`, plus
    /// the options `case_insensitive`, `normalize` and `negate`.
    pub struct StringMatcherSpec {}
}

with_matcher_fields! {
    /// A request header: `{"name": "x-env", "exact": "prod"}` or
    /// `{"name": "x-debug", "absent": true}`. Names are case-insensitive.
    pub struct HeaderConditionSpec {
        pub name: String,
        /// The header is not sent at all (no matcher fields allowed then).
        #[serde(default)]
        pub absent: bool,
    }
}

with_matcher_fields! {
    /// A decoded query parameter: `{"name": "force", "exact": "true"}`.
    pub struct QueryConditionSpec {
        pub name: String,
    }
}

with_matcher_fields! {
    /// A request-body condition: exactly one of `json_pointer`, `anywhere: true` or
    /// `raw: true`, plus matcher fields or a `sql` condition.
    pub struct BodyConditionSpec {
        /// RFC 6901 pointer; a `*` segment stands for every array element / object member.
        #[serde(default)]
        pub json_pointer: Option<String>,
        /// Every string value, object key and scalar in the JSON document.
        #[serde(default)]
        pub anywhere: bool,
        /// The whole body as UTF-8 text.
        #[serde(default)]
        pub raw: bool,
        /// Read the value as SQL instead of matching it as a string (no matcher fields then).
        #[serde(default)]
        pub sql: Option<super::sql::SqlConditionSpec>,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rule_defaults_to_no_dry_run_no_mask_and_match_everything() {
        let rule: RuleSpec = serde_json::from_str(r#"{"name":"r","action":"deny"}"#).unwrap();
        assert_eq!(rule.action, Action::Deny);
        assert!(!rule.dry_run);
        assert_eq!(rule.mask, None);
        assert_eq!(rule.when, MatchSpec::default());
    }

    #[test]
    fn unknown_field_in_flattened_matcher_is_rejected() {
        let err =
            serde_json::from_str::<HeaderConditionSpec>(r#"{"name":"x","exact":"a","negated":true}"#).unwrap_err();
        assert!(err.to_string().contains("negated"), "{err}");
    }

    #[test]
    fn unknown_action_is_rejected() {
        assert!(serde_json::from_str::<RuleSpec>(r#"{"name":"r","action":"block"}"#).is_err());
    }

    #[test]
    fn groups_spec_reads_any_of_and_all_of() {
        let g: GroupsSpec = serde_json::from_str(r#"{"all_of":["a","b"]}"#).unwrap();
        assert_eq!(g, GroupsSpec::AllOf(vec!["a".into(), "b".into()]));
        assert!(serde_json::from_str::<GroupsSpec>(r#"{"one_of":["a"]}"#).is_err());
    }

    #[test]
    fn body_condition_reads_matcher_fields_inline() {
        let b: BodyConditionSpec =
            serde_json::from_str(r#"{"json_pointer":"/params/arguments/sql","regex":"drop","normalize":"sql"}"#)
                .unwrap();
        assert_eq!(b.json_pointer.as_deref(), Some("/params/arguments/sql"));
        assert_eq!(b.matcher_fields().regex, Some("drop"));
        assert_eq!(b.normalize, Normalize::Sql);
    }
}

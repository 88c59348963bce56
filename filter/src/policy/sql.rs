//! The `sql` condition: a body field read as SQL by a real parser (see `crate::sql`), so a
//! rule says "writes", "DDL", "touches `payments`" or "deletes every row" instead of a
//! pattern that misses a write in a CTE and trips on `'drop table'` inside a literal.
//!
//! Each facet is a set of values — the statement kinds, the effects, the tables found
//! anywhere in the text — judged like every other multi-valued condition: a deny/approve
//! rule holds if *any* value is listed, an allow rule only if *every* value is, so
//! `allow effects: [read]` cannot pass `SELECT 1; DROP TABLE t`. Facets combine with AND.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Deserialize;

use super::matcher::Quantifier;
use crate::config_error::ConfigError;
use crate::sql::{self, Analysis, Dialect, Effect, Effects, Kind, Kinds, SensitiveColumns, Table, Unparsable, UseKind};

/// What the config says about SQL for every condition: the dialect of those that name
/// none (`sql_dialect`), and the sensitive columns (`sensitive_columns`).
#[derive(Debug, Clone, Default)]
pub struct SqlDefaults {
    pub dialect: String,
    pub sensitive: Rc<SensitiveColumns>,
}

impl SqlDefaults {
    pub fn dialect(name: &str) -> SqlDefaults {
        SqlDefaults { dialect: name.to_string(), sensitive: Rc::default() }
    }
}

/// `{"effects": ["write"], "tables": ["payments"], "dialect": "sqlite", …}` under a body
/// condition's `sql`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConditionSpec {
    /// `read`, `write`, `ddl`, `admin`.
    #[serde(default)]
    pub effects: Option<Vec<String>>,
    /// Statement kinds: `select`, `insert`, `update`, `delete`, `drop`, …
    #[serde(default)]
    pub statements: Option<Vec<String>>,
    /// Table names, `table` (any schema) or `schema.table`; compared unquoted, lower-case.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// `true`: some `UPDATE` / `DELETE` has no `WHERE` or an always-true one.
    #[serde(default)]
    pub unbounded: Option<bool>,
    /// How the text uses the config's `sensitive_columns`: `column` (returned as is),
    /// `transform` (computed from), `predicate` (filters, joins, groups or orders by).
    #[serde(default)]
    pub sensitive: Option<Vec<String>>,
    /// Overrides the config's `sql_dialect` (default `generic`).
    #[serde(default)]
    pub dialect: Option<String>,
    /// What SQL that does not parse means: `match` or `no_match`. Default: `match` for
    /// deny/approve rules (fail closed), `no_match` for allow rules.
    #[serde(default)]
    pub on_unparsable: Option<OnUnparsable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnparsable {
    Match,
    NoMatch,
}

/// A compiled `sql` condition.
#[derive(Debug)]
pub struct SqlCondition {
    effects: Option<Effects>,
    statements: Option<Kinds>,
    tables: Option<Vec<Table>>,
    unbounded: bool,
    /// The use kinds listed, by `UseKind as usize`.
    sensitive: Option<[bool; 3]>,
    columns: Rc<SensitiveColumns>,
    dialect: Dialect,
    on_unparsable: Option<OnUnparsable>,
}

impl SqlCondition {
    /// `field` is the condition's config path (`rules[1].when.body[0].sql`).
    pub(crate) fn compile(spec: &SqlConditionSpec, defaults: &SqlDefaults, field: &str) -> Result<Self, ConfigError> {
        let effects = spec
            .effects
            .as_deref()
            .map(|names| {
                let mut set = Effects::default();
                for (i, name) in non_empty(names, &format!("{field}.effects"))?.iter().enumerate() {
                    set.insert(Effect::named(name).ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}.effects[{i}]"),
                            format!("unknown effect `{name}`; effects are read, write, ddl, admin"),
                        )
                    })?);
                }
                Ok(set)
            })
            .transpose()?;
        let statements = spec
            .statements
            .as_deref()
            .map(|names| {
                let mut set = Kinds::default();
                for (i, name) in non_empty(names, &format!("{field}.statements"))?.iter().enumerate() {
                    set.insert(Kind::named(name).ok_or_else(|| {
                        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                        ConfigError::new(
                            format!("{field}.statements[{i}]"),
                            format!("unknown statement kind `{name}`; kinds are {}", known.join(", ")),
                        )
                    })?);
                }
                Ok(set)
            })
            .transpose()?;
        let tables = spec
            .tables
            .as_deref()
            .map(|names| {
                non_empty(names, &format!("{field}.tables"))?
                    .iter()
                    .enumerate()
                    .map(|(i, name)| table_name(name, &format!("{field}.tables[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let unbounded = match spec.unbounded {
            None => false,
            Some(true) => true,
            Some(false) => {
                return Err(ConfigError::new(
                    format!("{field}.unbounded"),
                    "only `true` is meaningful; for \"bounded\" put the condition under `not`",
                ))
            }
        };
        let sensitive = spec
            .sensitive
            .as_deref()
            .map(|names| {
                let names = non_empty(names, &format!("{field}.sensitive"))?;
                if defaults.sensitive.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.sensitive"),
                        "no `sensitive_columns` are configured, so no use of them can be found",
                    ));
                }
                let mut set = [false; 3];
                for (i, name) in names.iter().enumerate() {
                    let kind = UseKind::named(name).ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}.sensitive[{i}]"),
                            format!("unknown use `{name}`; uses are column, transform, predicate"),
                        )
                    })?;
                    if let Some(slot) = set.get_mut(kind as usize) {
                        *slot = true;
                    }
                }
                Ok(set)
            })
            .transpose()?;
        if effects.is_none() && statements.is_none() && tables.is_none() && !unbounded && sensitive.is_none() {
            return Err(ConfigError::new(
                field,
                "says nothing about the SQL; give at least one of `effects`, `statements`, `tables`, `unbounded`, \
                 `sensitive`",
            ));
        }
        let dialect_field = if spec.dialect.is_some() { format!("{field}.dialect") } else { "sql_dialect".into() };
        let dialect_name = spec.dialect.as_deref().unwrap_or(&defaults.dialect);
        let dialect = Dialect::named(dialect_name).ok_or_else(|| {
            ConfigError::new(
                dialect_field,
                format!("unknown SQL dialect `{dialect_name}`; dialects are {}", sql::DIALECTS.join(", ")),
            )
        })?;
        Ok(SqlCondition {
            effects,
            statements,
            tables,
            unbounded,
            sensitive,
            columns: Rc::clone(&defaults.sensitive),
            dialect,
            on_unparsable: spec.on_unparsable,
        })
    }

    pub(crate) fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    pub(crate) fn sensitive_columns(&self) -> &SensitiveColumns {
        &self.columns
    }

    pub(crate) fn judges_sensitive(&self) -> bool {
        self.sensitive.is_some()
    }

    /// Whether the condition holds for one SQL text, leaning by `mode`.
    pub(crate) fn holds(&self, text: &str, mode: Quantifier, memo: &SqlMemo) -> bool {
        memo.with(text, &self.dialect, &self.columns, |analysis| match analysis {
            Ok(a) => self.holds_for(a, mode),
            Err(_) => {
                let fail_closed = mode == Quantifier::Any;
                match self.on_unparsable {
                    Some(OnUnparsable::Match) => true,
                    Some(OnUnparsable::NoMatch) => false,
                    None => fail_closed,
                }
            }
        })
    }

    fn holds_for(&self, a: &Analysis, mode: Quantifier) -> bool {
        let listed = |values: &mut dyn Iterator<Item = bool>| mode.combine(values).unwrap_or(false);
        if let Some(wanted) = self.effects {
            if !listed(&mut a.effects.iter().map(|e| wanted.contains(e))) {
                return false;
            }
        }
        if let Some(wanted) = self.statements {
            if !listed(&mut a.kinds.iter().map(|k| wanted.contains(k))) {
                return false;
            }
        }
        if let Some(wanted) = &self.tables {
            if !listed(&mut a.tables.iter().map(|t| wanted.iter().any(|w| w.matches(t)))) {
                return false;
            }
        }
        if let Some(wanted) = self.sensitive {
            let listed_use = |kind: UseKind| wanted.get(kind as usize).copied().unwrap_or(false);
            if !listed(&mut a.columns.uses.iter().map(|u| listed_use(u.kind))) {
                return false;
            }
        }
        !self.unbounded || a.unbounded
    }
}

fn non_empty<'a>(list: &'a [String], field: &str) -> Result<&'a [String], ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(field, "is empty; list at least one entry or remove it"));
    }
    Ok(list)
}

fn table_name(text: &str, field: &str) -> Result<Table, ConfigError> {
    Table::parse(text).ok_or_else(|| ConfigError::new(field, format!("`{text}` is not `table` or `schema.table`")))
}

/// Analyses made during one policy evaluation, so that several rules reading the same
/// field parse it once. Keyed by the text's address: the body outlives the evaluation.
#[derive(Default)]
pub(crate) struct SqlMemo {
    entries: RefCell<Vec<MemoEntry>>,
}

struct MemoEntry {
    address: usize,
    len: usize,
    dialect: &'static str,
    analysis: Result<Analysis, Unparsable>,
}

impl SqlMemo {
    pub(crate) fn with<T>(
        &self,
        text: &str,
        dialect: &Dialect,
        sensitive: &SensitiveColumns,
        f: impl FnOnce(&Result<Analysis, Unparsable>) -> T,
    ) -> T {
        let (address, len) = (text.as_ptr() as usize, text.len());
        let found = |e: &MemoEntry| e.address == address && e.len == len && e.dialect == dialect.name();
        if let Some(entry) = self.entries.borrow().iter().find(|e| found(e)) {
            return f(&entry.analysis);
        }
        let analysis = sql::analyze(text, dialect, sensitive);
        let out = f(&analysis);
        self.entries.borrow_mut().push(MemoEntry { address, len, dialect: dialect.name(), analysis });
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn condition(json: &str) -> SqlCondition {
        SqlCondition::compile(&serde_json::from_str(json).unwrap(), &SqlDefaults::dialect("generic"), "c").unwrap()
    }

    fn compile_err(json: &str) -> ConfigError {
        SqlCondition::compile(
            &serde_json::from_str(json).unwrap(),
            &SqlDefaults::dialect("generic"),
            "rules[0].when.body[0].sql",
        )
        .unwrap_err()
    }

    fn holds(c: &SqlCondition, sql: &str, mode: Quantifier) -> bool {
        c.holds(sql, mode, &SqlMemo::default())
    }

    #[test]
    fn deny_side_holds_when_any_effect_is_listed() {
        let ddl = condition(r#"{"effects": ["ddl"]}"#);
        assert!(holds(&ddl, "SELECT 1; DROP TABLE t", Quantifier::Any));
        assert!(!holds(&ddl, "SELECT 'drop table t'", Quantifier::Any));
    }

    #[test]
    fn allow_side_holds_only_when_every_effect_is_listed() {
        let reads = condition(r#"{"effects": ["read"]}"#);
        assert!(holds(&reads, "SELECT * FROM t WHERE x = 'delete from t'", Quantifier::All));
        assert!(!holds(&reads, "SELECT 1; DELETE FROM t WHERE id = 1", Quantifier::All));
        assert!(!holds(&reads, "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Quantifier::All));
    }

    #[test]
    fn tables_match_any_schema_unless_the_rule_names_one() {
        let payments = condition(r#"{"tables": ["Payments"]}"#);
        for sql in ["SELECT * FROM \"Payments\"", "SELECT * FROM main.payments", "SELECT * FROM PAYMENTS"] {
            assert!(holds(&payments, sql, Quantifier::Any), "{sql}");
        }
        let main_only = condition(r#"{"tables": ["main.payments"]}"#);
        assert!(holds(&main_only, "SELECT * FROM main.payments", Quantifier::Any));
        assert!(!holds(&main_only, "SELECT * FROM other.payments", Quantifier::Any));
        assert!(!holds(&main_only, "SELECT * FROM payments", Quantifier::Any));
        let bracketed = SqlCondition::compile(
            &serde_json::from_str(r#"{"tables": ["payments"], "dialect": "mssql"}"#).unwrap(),
            &SqlDefaults::dialect("generic"),
            "c",
        )
        .unwrap();
        assert!(holds(&bracketed, "SELECT * FROM [dbo].[Payments]", Quantifier::Any));
    }

    #[test]
    fn facets_combine_with_and() {
        let writes_to_customers = condition(r#"{"effects": ["write"], "tables": ["customers"]}"#);
        assert!(holds(&writes_to_customers, "UPDATE customers SET a = 1 WHERE id = 2", Quantifier::Any));
        assert!(!holds(&writes_to_customers, "UPDATE orders SET a = 1 WHERE id = 2", Quantifier::Any));
        assert!(!holds(&writes_to_customers, "SELECT * FROM customers", Quantifier::Any));
    }

    #[test]
    fn unbounded_holds_for_a_missing_or_always_true_where() {
        let unbounded = condition(r#"{"unbounded": true}"#);
        assert!(holds(&unbounded, "DELETE FROM t", Quantifier::Any));
        assert!(holds(&unbounded, "UPDATE t SET a = 1 WHERE 1=1", Quantifier::Any));
        assert!(!holds(&unbounded, "DELETE FROM t WHERE id = 4", Quantifier::Any));
    }

    #[test]
    fn unparsable_sql_matches_deny_rules_and_not_allow_rules_unless_configured() {
        let c = condition(r#"{"effects": ["ddl"]}"#);
        assert!(holds(&c, "DROP TABLE", Quantifier::Any));
        assert!(!holds(&c, "DROP TABLE", Quantifier::All));
        let lenient = condition(r#"{"effects": ["ddl"], "on_unparsable": "no_match"}"#);
        assert!(!holds(&lenient, "DROP TABLE", Quantifier::Any));
        let strict = condition(r#"{"effects": ["read"], "on_unparsable": "match"}"#);
        assert!(holds(&strict, "SELEC 1", Quantifier::All));
    }

    #[test]
    fn config_errors_name_the_field_and_the_choices() {
        let err = compile_err(r#"{"effects": ["writes"]}"#);
        assert_eq!(err.field, "rules[0].when.body[0].sql.effects[0]");
        assert!(err.to_string().contains("read, write, ddl, admin"), "{err}");
        let err = compile_err(r#"{"statements": ["select", "nuke"]}"#);
        assert_eq!(err.field, "rules[0].when.body[0].sql.statements[1]");
        let err = compile_err(r#"{"effects": ["ddl"], "dialect": "cobol"}"#);
        assert_eq!(err.field, "rules[0].when.body[0].sql.dialect");
        assert!(err.to_string().contains("postgresql"), "{err}");
        assert_eq!(compile_err(r#"{"tables": ["a.b.c"]}"#).field, "rules[0].when.body[0].sql.tables[0]");
        assert_eq!(compile_err(r#"{"tables": []}"#).field, "rules[0].when.body[0].sql.tables");
        assert_eq!(compile_err(r#"{"unbounded": false}"#).field, "rules[0].when.body[0].sql.unbounded");
        assert_eq!(compile_err(r#"{"dialect": "sqlite"}"#).field, "rules[0].when.body[0].sql");
    }

    #[test]
    fn memo_parses_a_text_once_per_dialect() {
        let memo = SqlMemo::default();
        let text = String::from("DELETE FROM t");
        let generic = Dialect::generic();
        let none = SensitiveColumns::default();
        let first = memo.with(&text, &generic, &none, |a| a.clone());
        let again = memo.with(&text, &generic, &none, |a| a.clone());
        assert_eq!(first, again);
        assert_eq!(memo.entries.borrow().len(), 1);
        let sqlite = Dialect::named("sqlite").unwrap();
        memo.with(&text, &sqlite, &none, |_| ());
        assert_eq!(memo.entries.borrow().len(), 2);
    }
}

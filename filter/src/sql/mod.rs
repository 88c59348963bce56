//! SQL understood, not grepped: a statement parsed by a real SQL parser (`sqlparser`) and
//! reduced to what a policy asks about it — the kinds of statement it runs, the worst
//! effect it can have, the tables it touches, and whether it changes rows without a bound.
//!
//! Why a parser rather than patterns: a keyword inside a string literal or a comment is
//! not a statement (`SELECT 'drop table'` reads), while a write hidden in a CTE, a
//! subquery or a second statement is one (`WITH d AS (DELETE …) SELECT …` writes). Only
//! the syntax tree tells the two apart.
//!
//! Everything found anywhere in the text counts: every statement of a multi-statement
//! body, every nested statement (CTE bodies, `EXPLAIN`'s target, `PREPARE`'s body), every
//! table in every clause. The effect of the whole is the worst effect of its parts, and a
//! statement this module does not know is an `admin` statement, so new syntax fails
//! towards the strictest rules.

mod always_true;
mod classify;
mod columns;
mod visit;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod columns_tests;

use std::fmt;

pub use columns::{Column, ColumnUses, SensitiveColumns, Use, UseKind};
use sqlparser::dialect::Dialect as ParserDialect;
use sqlparser::parser::Parser;

/// Nesting depth the parser accepts before giving up (parentheses, subqueries). Deeper
/// SQL does not parse, which rules treat as configured (`on_unparsable`); the bound keeps
/// a hostile body from exhausting the VM's stack.
const RECURSION_LIMIT: usize = 40;

/// The SQL dialect a text is parsed in: a config name (`generic`, `postgresql`, `mysql`,
/// `sqlite`, `mssql`, …) resolved once at config load.
pub struct Dialect {
    name: &'static str,
    parser: Box<dyn ParserDialect>,
}

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Dialect {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// The dialect names a config may use, in the order error messages list them.
pub const DIALECTS: &[&str] = &[
    "generic",
    "postgresql",
    "mysql",
    "sqlite",
    "mssql",
    "snowflake",
    "bigquery",
    "redshift",
    "duckdb",
    "clickhouse",
    "hive",
    "databricks",
    "oracle",
    "ansi",
];

impl Dialect {
    /// The dialect named `name` (`postgres` is accepted for `postgresql`).
    pub fn named(name: &str) -> Option<Dialect> {
        let name = if name.eq_ignore_ascii_case("postgres") { "postgresql" } else { name };
        let canonical = DIALECTS.iter().copied().find(|d| d.eq_ignore_ascii_case(name))?;
        let parser = sqlparser::dialect::dialect_from_str(canonical)?;
        Some(Dialect { name: canonical, parser })
    }

    pub fn generic() -> Dialect {
        Dialect { name: "generic", parser: Box::new(sqlparser::dialect::GenericDialect {}) }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What a statement can do, from harmless to dangerous; a text's effect is the worst of
/// its statements' and expressions' effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Reads data (`SELECT`, `SHOW`, `EXPLAIN` of a read, transaction control).
    Read,
    /// Changes rows (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `COPY … FROM STDIN`, `nextval`).
    Write,
    /// Changes the schema (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `SELECT … INTO`).
    Ddl,
    /// Changes who may do what or reaches outside the database: grants and roles,
    /// `ATTACH`, `PRAGMA`, `SET`, `LOAD`, `COPY` to/from files and programs, server
    /// functions such as `pg_read_file` or `load_extension`, and every statement kind this
    /// module does not know.
    Admin,
}

impl Effect {
    pub const ALL: [Effect; 4] = [Effect::Read, Effect::Write, Effect::Ddl, Effect::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Ddl => "ddl",
            Effect::Admin => "admin",
        }
    }

    pub fn named(name: &str) -> Option<Effect> {
        Effect::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The kinds of statement a rule can name; several statement types share a kind
/// (`CREATE TABLE` and `CREATE VIEW` are both `create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Create,
    Alter,
    Drop,
    Truncate,
    Comment,
    Grant,
    Revoke,
    Attach,
    Detach,
    Pragma,
    Set,
    Copy,
    Load,
    Explain,
    Show,
    Transaction,
    Call,
    Execute,
    Prepare,
    Use,
    Lock,
    Kill,
    Maintenance,
    Cursor,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 30] = [
        Kind::Select,
        Kind::Insert,
        Kind::Update,
        Kind::Delete,
        Kind::Merge,
        Kind::Create,
        Kind::Alter,
        Kind::Drop,
        Kind::Truncate,
        Kind::Comment,
        Kind::Grant,
        Kind::Revoke,
        Kind::Attach,
        Kind::Detach,
        Kind::Pragma,
        Kind::Set,
        Kind::Copy,
        Kind::Load,
        Kind::Explain,
        Kind::Show,
        Kind::Transaction,
        Kind::Call,
        Kind::Execute,
        Kind::Prepare,
        Kind::Use,
        Kind::Lock,
        Kind::Kill,
        Kind::Maintenance,
        Kind::Cursor,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Merge => "merge",
            Kind::Create => "create",
            Kind::Alter => "alter",
            Kind::Drop => "drop",
            Kind::Truncate => "truncate",
            Kind::Comment => "comment",
            Kind::Grant => "grant",
            Kind::Revoke => "revoke",
            Kind::Attach => "attach",
            Kind::Detach => "detach",
            Kind::Pragma => "pragma",
            Kind::Set => "set",
            Kind::Copy => "copy",
            Kind::Load => "load",
            Kind::Explain => "explain",
            Kind::Show => "show",
            Kind::Transaction => "transaction",
            Kind::Call => "call",
            Kind::Execute => "execute",
            Kind::Prepare => "prepare",
            Kind::Use => "use",
            Kind::Lock => "lock",
            Kind::Kill => "kill",
            Kind::Maintenance => "maintenance",
            Kind::Cursor => "cursor",
            Kind::Other => "other",
        }
    }

    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of [`Kind`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds(u32);

impl Kinds {
    pub fn insert(&mut self, kind: Kind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

/// A set of [`Effect`]s: every effect something in the text has, not only the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects(u8);

impl Effects {
    pub fn insert(&mut self, effect: Effect) {
        self.0 |= 1 << (effect as u8);
    }

    pub fn contains(self, effect: Effect) -> bool {
        self.0 & (1 << (effect as u8)) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Effect> {
        Effect::ALL.into_iter().filter(move |e| self.contains(*e))
    }

    /// The worst effect present; `None` for an empty text.
    pub fn worst(self) -> Option<Effect> {
        self.iter().last()
    }
}

/// A table named in the text, identifiers unquoted and lower-cased (`"Payments"`,
/// `[payments]` and `` `payments` `` are all `payments`), with its schema if qualified.
/// Lower-casing also folds names that a case-sensitive database keeps apart: a rule on
/// `payments` then also matches a table `PAYMENTS`, which errs on the side of matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: Option<String>,
    pub name: String,
}

impl Table {
    /// `payments`, `main.payments`, `"Payments"` or `[dbo].[payments]` as a config writes
    /// it: quotes removed and lower-cased, as the analysis reports names.
    pub fn parse(text: &str) -> Option<Table> {
        let parts: Vec<String> = text.split('.').map(unquoted_lower).collect();
        match parts.as_slice() {
            [name] if !name.is_empty() => Some(Table { schema: None, name: name.clone() }),
            [schema, name] if !schema.is_empty() && !name.is_empty() => {
                Some(Table { schema: Some(schema.clone()), name: name.clone() })
            }
            _ => None,
        }
    }

    /// Whether `table`, found in a text, is this one of a config: a config's table
    /// without a schema matches it in any schema.
    pub fn matches(&self, table: &Table) -> bool {
        self.name == table.name && self.schema.as_ref().is_none_or(|s| table.schema.as_ref() == Some(s))
    }
}

/// An identifier as a config writes it, quotes (`"`, `` ` ``, `[ ]`) removed, lower-cased.
pub fn unquoted_lower(part: &str) -> String {
    let part = part.trim();
    let unquoted = [('"', '"'), ('`', '`'), ('[', ']')]
        .iter()
        .find_map(|(open, close)| part.strip_prefix(*open).and_then(|p| p.strip_suffix(*close)))
        .unwrap_or(part);
    unquoted.to_lowercase()
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What a SQL text does, as far as a policy asks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    pub kinds: Kinds,
    pub effects: Effects,
    /// Each table once, in order of first appearance.
    pub tables: Vec<Table>,
    /// Some `UPDATE` or `DELETE` has no `WHERE`, or one that is always true (`1=1`).
    pub unbounded: bool,
    /// What the text does with the config's sensitive columns (empty without them).
    pub columns: ColumnUses,
}

impl fmt::Display for Analysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: Vec<String>| if items.is_empty() { "none".to_string() } else { items.join(", ") };
        write!(
            f,
            "statements [{}], effects [{}], tables [{}]",
            list(self.kinds.iter().map(|k| k.as_str().to_string()).collect()),
            list(self.effects.iter().map(|e| e.as_str().to_string()).collect()),
            list(self.tables.iter().map(Table::to_string).collect()),
        )?;
        if self.unbounded {
            f.write_str(", unbounded")?;
        }
        if !self.columns.uses.is_empty() {
            let uses: Vec<String> = self.columns.uses.iter().map(|u| format!("{} {u}", u.kind.as_str())).collect();
            write!(f, ", sensitive columns [{}]", uses.join("; "))?;
        }
        Ok(())
    }
}

/// Why a text was not analysed: the parser's own message, which names the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsable(pub String);

impl fmt::Display for Unparsable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "does not parse as SQL: {}", self.0)
    }
}

/// Parses `sql` in `dialect` and analyses every statement in it, following the
/// `sensitive` columns through it. A text without any statement (empty, only comments
/// or semicolons) does not parse either: an empty query reaching a database is not
/// something a policy can call a read.
pub fn analyze(sql: &str, dialect: &Dialect, sensitive: &SensitiveColumns) -> Result<Analysis, Unparsable> {
    let statements = Parser::new(&*dialect.parser)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| Unparsable(e.to_string()))?;
    if statements.is_empty() {
        return Err(Unparsable("no statement".into()));
    }
    let mut analysis = classify::analyze_statements(&statements);
    if !sensitive.is_empty() {
        analysis.columns = columns::column_uses(&statements, sensitive);
    }
    Ok(analysis)
}

//! A rule's `sql_result`: the route answers SQL queries, and its rows are masked by
//! column. The rule says where the request holds the SQL and how the answer lays out
//! its rows; the config's `sensitive_columns` say what to protect.
//!
//! From the parsed query the filter knows which result columns carry a sensitive
//! column's value unchanged (masked by name in the answer, whatever their alias) and
//! whether anything is computed from one or filters by one, which masking cannot undo:
//! such a query is refused under an `allow` rule, and answered (still masked by name)
//! once a human approved it under an `approve` rule. SQL that does not parse, or a body
//! without the SQL, is refused under either: what to mask cannot be known.

use std::rc::Rc;

use serde::Deserialize;

use super::sql::{SqlDefaults, SqlMemo};
use super::Body;
use crate::config_error::ConfigError;
use crate::mask::ResultShape;
use crate::sql::{Analysis, ColumnUses, Dialect, SensitiveColumns, Unparsable};

/// `{"sql": "/sql", "columns": "/columns", "rows": "/rows"}`, or `"objects": "/rows"` for
/// an array of objects keyed by column name; `raw_sql: true` for a text body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlResultSpec {
    /// RFC 6901 pointer to the SQL string in a JSON request body.
    #[serde(default)]
    pub sql: Option<String>,
    /// The whole (text) request body is the SQL.
    #[serde(default)]
    pub raw_sql: bool,
    /// Pointer to the array of column names, with `rows` an array of arrays.
    #[serde(default)]
    pub columns: Option<String>,
    #[serde(default)]
    pub rows: Option<String>,
    /// Pointer to an array of objects, one per row, keyed by column name.
    #[serde(default)]
    pub objects: Option<String>,
    /// Overrides the config's `sql_dialect`.
    #[serde(default)]
    pub dialect: Option<String>,
}

/// Where the request carries its SQL.
#[derive(Debug)]
enum Source {
    Pointer(String),
    Raw,
}

#[derive(Debug)]
pub struct SqlResult {
    source: Source,
    shape: ResultShape,
    dialect: Dialect,
    sensitive: Rc<SensitiveColumns>,
}

/// Why a request on such a route cannot be answered, whatever its approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReadable {
    /// The body has no SQL where the rule says.
    Missing {
        place: String,
    },
    Unparsable {
        place: String,
        dialect: &'static str,
    },
}

impl std::fmt::Display for NotReadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReadable::Missing { place } => write!(f, "the request has no SQL text at {place}"),
            NotReadable::Unparsable { place, dialect } => {
                write!(f, "the SQL at {place} does not parse as {dialect} SQL")
            }
        }
    }
}

fn pointer(text: &str, field: &str) -> Result<String, ConfigError> {
    if text.is_empty() || text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(ConfigError::new(field, format!("`{text}` is not a JSON pointer: it must be empty or start with `/`")))
    }
}

impl SqlResult {
    /// `field` is the config path (`rules[3].sql_result`).
    pub(crate) fn compile(spec: &SqlResultSpec, defaults: &SqlDefaults, field: &str) -> Result<Self, ConfigError> {
        let source = match (&spec.sql, spec.raw_sql) {
            (Some(p), false) => Source::Pointer(pointer(p, &format!("{field}.sql"))?),
            (None, true) => Source::Raw,
            (Some(_), true) => return Err(ConfigError::new(field, "sets both `sql` and `raw_sql`; set one")),
            (None, false) => {
                return Err(ConfigError::new(
                    field,
                    "needs `sql` (a JSON pointer to the SQL in the request) or `raw_sql: true`",
                ))
            }
        };
        let shape = match (&spec.columns, &spec.rows, &spec.objects) {
            (Some(columns), Some(rows), None) => ResultShape::ColumnsRows {
                columns: pointer(columns, &format!("{field}.columns"))?,
                rows: pointer(rows, &format!("{field}.rows"))?,
            },
            (None, None, Some(objects)) => {
                ResultShape::Objects { rows: pointer(objects, &format!("{field}.objects"))? }
            }
            _ => {
                return Err(ConfigError::new(
                    field,
                    "needs the answer's layout: `columns` and `rows` (column names, rows as arrays), or `objects` \
                     (rows as objects keyed by column name)",
                ))
            }
        };
        if defaults.sensitive.is_empty() {
            return Err(ConfigError::new(
                field,
                "no `sensitive_columns` are configured: there is nothing to mask by column",
            ));
        }
        let dialect_name = spec.dialect.as_deref().unwrap_or(&defaults.dialect);
        let dialect = Dialect::named(dialect_name).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.dialect"),
                format!("unknown SQL dialect `{dialect_name}`; dialects are {}", crate::sql::DIALECTS.join(", ")),
            )
        })?;
        Ok(SqlResult { source, shape, dialect, sensitive: Rc::clone(&defaults.sensitive) })
    }

    pub fn shape(&self) -> &ResultShape {
        &self.shape
    }

    fn place(&self) -> String {
        match &self.source {
            Source::Pointer(p) => format!("`{p}`"),
            Source::Raw => "the request body".into(),
        }
    }

    /// What the request's SQL does with sensitive columns, analysed once with whatever
    /// `sql` conditions read the same text.
    pub(crate) fn read(&self, body: Body<'_>, memo: &SqlMemo) -> Result<ColumnUses, NotReadable> {
        let text = match (&self.source, body) {
            (Source::Pointer(p), Body::Json(doc)) => doc.pointer(p).and_then(|v| v.as_str()),
            (Source::Raw, Body::NotJson(text)) => Some(text),
            _ => None,
        };
        let Some(text) = text else {
            return Err(NotReadable::Missing { place: self.place() });
        };
        let analysed = |a: &Result<Analysis, Unparsable>| a.as_ref().map(|a| a.columns.clone()).map_err(|_| ());
        memo.with(text, &self.dialect, &self.sensitive, analysed)
            .map_err(|()| NotReadable::Unparsable { place: self.place(), dialect: self.dialect.name() })
    }
}

//! Masking by SQL result column: the values of the result columns a query returns a
//! sensitive column in (`sql::ColumnUses::returned`) are replaced whatever they hold,
//! then the whole answer is masked as any JSON answer is.
//!
//! The answer's layout is the route's (`sql_result` of its rule). The cells to replace
//! become JSON pointers for the one masking walk: with `columns` + `rows`, the indices
//! of the sensitive names in the column list (`/rows/*/2`); with `objects`, the member
//! names of the rows that are sensitive names in any case (`/rows/*/Email`). So the rows
//! are copied byte for byte where nothing is masked, numbers included.

use serde_json::Value;

use super::{MaskCounts, MaskError, MaskProfile, MAX_DEPTH};

/// How an upstream lays out the rows of a SQL answer; pointers are RFC 6901.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultShape {
    /// `{"columns": ["id", "email"], "rows": [[1, "a@x.io"], …]}`.
    ColumnsRows { columns: String, rows: String },
    /// `{"rows": [{"id": 1, "email": "a@x.io"}, …]}` (`rows` may be `""`: the answer is
    /// the array).
    Objects { rows: String },
}

impl MaskProfile {
    /// Masks a JSON answer laid out as `shape`, replacing every value of the result
    /// columns named `columns` (lower-case; names compare case-insensitively) as kind
    /// `column`, and everything else as [`MaskProfile::mask_json`] does. An answer
    /// without that layout (an error) is masked by the profile alone: it has no rows.
    /// More sensitive cells than masking can address at once is an error, never a pass.
    pub fn mask_sql_result(
        &self,
        body: &[u8],
        shape: &ResultShape,
        columns: &[String],
    ) -> Result<(Vec<u8>, MaskCounts), MaskError> {
        if columns.is_empty() {
            return self.mask_json(body);
        }
        let doc: Value = match serde_json::from_slice(body) {
            Ok(doc) => doc,
            // The walker says what is wrong; if it finds nothing wrong, the reader that
            // would have told the cells apart did: refuse rather than guess.
            Err(_) => {
                self.mask_json(body)?;
                return Err(MaskError::TooDeep);
            }
        };
        let cells = cell_pointers(&doc, shape, columns);
        let pointers = self.pointers.with(&cells, MAX_DEPTH).ok_or(MaskError::TooDeep)?;
        super::json::mask(self, body, &pointers, self.pointers.len())
    }
}

/// The pointers of the cells of sensitive columns in `doc`.
fn cell_pointers(doc: &Value, shape: &ResultShape, columns: &[String]) -> Vec<String> {
    let sensitive = |name: &str| {
        let name = name.to_lowercase();
        columns.iter().any(|c| *c == name)
    };
    let mut out = Vec::new();
    match shape {
        ResultShape::ColumnsRows { columns: names, rows } => {
            let Some(Value::Array(names)) = doc.pointer(names) else { return out };
            for (i, name) in names.iter().enumerate() {
                // A column name that is not a string cannot be told: masked too.
                if name.as_str().is_none_or(sensitive) {
                    out.push(format!("{rows}/*/{i}"));
                }
            }
        }
        ResultShape::Objects { rows } => {
            let Some(Value::Array(items)) = doc.pointer(rows) else { return out };
            for item in items {
                let Value::Object(row) = item else { continue };
                for key in row.keys().filter(|k| sensitive(k)) {
                    let pointer = format!("{rows}/*/{}", key.replace('~', "~0").replace('/', "~1"));
                    if !out.contains(&pointer) {
                        out.push(pointer);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{compile_profile, MaskProfileSpec};
    use super::*;

    fn profile() -> MaskProfile {
        let spec: MaskProfileSpec = serde_json::from_value(serde_json::json!({"detectors": ["email"]})).unwrap();
        compile_profile(spec, "p").unwrap()
    }

    fn masked(body: &str, shape: &ResultShape, columns: &[&str]) -> String {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let (out, _) = profile().mask_sql_result(body.as_bytes(), shape, &columns).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn columns_rows() -> ResultShape {
        ResultShape::ColumnsRows { columns: "/columns".into(), rows: "/rows".into() }
    }

    #[test]
    fn masks_every_cell_of_a_sensitive_column_whatever_it_holds() {
        let body = r#"{"columns":["id","A","b"],"rows":[[1,"4111 1111",12345678901234567890123],[2,null,1.50]]}"#;
        assert_eq!(
            masked(body, &columns_rows(), &["a"]),
            r#"{"columns":["id","A","b"],"rows":[[1,"[REDACTED:column]",12345678901234567890123],[2,"[REDACTED:column]",1.50]]}"#
        );
    }

    #[test]
    fn masks_members_of_row_objects_in_any_case_and_the_rest_by_detectors() {
        let body = r#"[{"id":1,"Email":"x","note":"mail bob@example.com"},{"id":2,"EMAIL":"y"}]"#;
        let shape = ResultShape::Objects { rows: String::new() };
        assert_eq!(
            masked(body, &shape, &["email"]),
            r#"[{"id":1,"Email":"[REDACTED:column]","note":"mail [REDACTED:email]"},{"id":2,"EMAIL":"[REDACTED:column]"}]"#
        );
    }

    #[test]
    fn an_answer_without_the_layout_is_masked_by_the_profile_alone() {
        let body = r#"{"error":"no such column: bob@example.com"}"#;
        assert_eq!(masked(body, &columns_rows(), &["email"]), r#"{"error":"no such column: [REDACTED:email]"}"#);
    }

    #[test]
    fn invalid_json_is_an_error() {
        let columns = vec!["email".to_string()];
        assert!(profile().mask_sql_result(b"{\"rows\":[", &columns_rows(), &columns).is_err());
    }
}

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
        let cells = match cell_pointers(body, shape, columns) {
            Ok(cells) => cells,
            // The walker says what is wrong; if it finds nothing wrong, the reader that
            // would have told the cells apart did: refuse rather than guess.
            Err(_) => {
                self.mask_json(body)?;
                return Err(MaskError::TooDeep);
            }
        };
        let pointers = self.pointers.with(&cells, MAX_DEPTH).ok_or(MaskError::TooDeep)?;
        super::json::mask(self, body, &pointers, self.pointers.len())
    }
}

/// The pointers of the cells of sensitive columns in `body`. Only what the layout
/// names is read (the column list, or the member names of row objects); the rest of the
/// document is skipped unparsed, at the speed of validating it.
fn cell_pointers(body: &[u8], shape: &ResultShape, columns: &[String]) -> Result<Vec<String>, serde_json::Error> {
    let sensitive = |name: &str| {
        let name = name.to_lowercase();
        columns.contains(&name)
    };
    let mut out = Vec::new();
    match shape {
        ResultShape::ColumnsRows { columns: names, rows } => {
            let found = read_at(body, names, Target::Value)?;
            let Some(Found::Value(Value::Array(names))) = found else { return Ok(out) };
            for (i, name) in names.iter().enumerate() {
                // A column name that is not a string cannot be told: masked too.
                if name.as_str().is_none_or(sensitive) {
                    out.push(format!("{rows}/*/{i}"));
                }
            }
        }
        ResultShape::Objects { rows } => {
            let Some(Found::Keys(keys)) = read_at(body, rows, Target::RowKeys)? else { return Ok(out) };
            for key in keys.iter().filter(|k| sensitive(k)) {
                out.push(format!("{rows}/*/{}", key.replace('~', "~0").replace('/', "~1")));
            }
        }
    }
    Ok(out)
}

/// What to read at the pointer.
#[derive(Clone, Copy)]
enum Target {
    Value,
    /// The distinct member names of the objects of an array.
    RowKeys,
}

enum Found {
    Value(Value),
    Keys(Vec<String>),
}

/// Reads `target` at RFC 6901 `pointer` in `body`; `None` when nothing is there.
fn read_at(body: &[u8], pointer: &str, target: Target) -> Result<Option<Found>, serde_json::Error> {
    let path: Vec<String> = match pointer.strip_prefix('/') {
        None => Vec::new(),
        Some(rest) => rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = serde::de::DeserializeSeed::deserialize(At { path: &path, target }, &mut de)?;
    de.end()?;
    Ok(found)
}

/// Descends along `path`, skipping every member and element off it.
struct At<'p> {
    path: &'p [String],
    target: Target,
}

impl<'de> serde::de::DeserializeSeed<'de> for At<'_> {
    type Value = Option<Found>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match (self.path, self.target) {
            ([], Target::Value) => Ok(Some(Found::Value(serde::Deserialize::deserialize(d)?))),
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for At<'_> {
    type Value = Option<Found>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    /// Along the path, the member named next; at its end (row keys wanted), nothing.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (head, rest) = self.path.split_first().map_or(("", &[][..]), |(h, r)| (h.as_str(), r));
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !self.path.is_empty() && key == head && found.is_none() {
                found = map.next_value_seed(At { path: rest, target: self.target })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    /// Along the path, the element at the next index; at its end, the rows' member names.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.path.is_empty() {
            let mut keys: Vec<String> = Vec::new();
            while seq.next_element_seed(RowKeysOf(&mut keys))?.is_some() {}
            return Ok(Some(Found::Keys(keys)));
        }
        let (head, rest) = self.path.split_first().map_or(("", &[][..]), |(h, r)| (h.as_str(), r));
        let wanted: Option<usize> = head.parse().ok();
        let (mut i, mut found) = (0usize, None);
        loop {
            let next = if Some(i) == wanted {
                seq.next_element_seed(At { path: rest, target: self.target })?.map(|f| found = f)
            } else {
                seq.next_element::<serde::de::IgnoredAny>()?.map(|_| ())
            };
            if next.is_none() {
                return Ok(found);
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One row: its member names join `keys`, its values are skipped.
struct RowKeysOf<'k>(&'k mut Vec<String>);

impl<'de> serde::de::DeserializeSeed<'de> for RowKeysOf<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowKeysOf<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !self.0.iter().any(|k| *k == key) {
                self.0.push(key.into_owned());
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
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
            concat!(
                r#"{"columns":["id","A","b"],"rows":[[1,"[REDACTED:column]",12345678901234567890123],"#,
                r#"[2,"[REDACTED:column]",1.50]]}"#
            )
        );
    }

    #[test]
    fn masks_members_of_row_objects_in_any_case_and_the_rest_by_detectors() {
        let body = r#"[{"id":1,"Email":"x","note":"mail bob@example.com"},{"id":2,"EMAIL":"y"}]"#;
        let shape = ResultShape::Objects { rows: String::new() };
        assert_eq!(
            masked(body, &shape, &["email"]),
            concat!(
                r#"[{"id":1,"Email":"[REDACTED:column]","note":"mail [REDACTED:email]"},"#,
                r#"{"id":2,"EMAIL":"[REDACTED:column]"}]"#
            )
        );
    }

    #[test]
    fn an_answer_without_the_layout_is_masked_by_the_profile_alone() {
        let body = r#"{"error":"no such column: bob@example.com"}"#;
        assert_eq!(masked(body, &columns_rows(), &["email"]), r#"{"error":"no such column: [REDACTED:email]"}"#);
    }

    #[test]
    fn a_layout_of_other_types_or_nested_elsewhere_masks_nothing_by_column() {
        for body in [r#"{"columns":"email","rows":5}"#, r#"{"data":{"columns":["email"],"rows":[["x"]]}}"#] {
            assert_eq!(masked(body, &columns_rows(), &["email"]), body);
        }
        let nested = ResultShape::Objects { rows: "/data/rows".into() };
        let body = r#"{"data":{"rows":[{"a~b":1,"E/mail":"x"}],"n":1},"more":[1,{"E/mail":"y"}]}"#;
        assert_eq!(
            masked(body, &nested, &["e/mail"]),
            r#"{"data":{"rows":[{"a~b":1,"E/mail":"[REDACTED:column]"}],"n":1},"more":[1,{"E/mail":"y"}]}"#
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        let columns = vec!["email".to_string()];
        assert!(profile().mask_sql_result(b"{\"rows\":[", &columns_rows(), &columns).is_err());
    }
}

//! JSON pointers (RFC 6901) with a `*` segment wildcard, matched while the JSON walker
//! descends, so no path string is ever built per value.
//!
//! The walker carries a bit set of the pointers whose segments so far equal the path it
//! is on; descending into a member or element narrows the set and says whether a pointer
//! ends exactly there. With no pointers configured the set is empty and every step is a
//! single comparison.

use crate::config_error::ConfigError;

/// At most this many pointers per profile: one bit each in [`PathState`].
pub const MAX_POINTERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `*`: any member name or array index.
    Any,
    /// A member name; `index` is set when the name is also a valid array index (`0`, `12`).
    Name { name: String, index: Option<usize> },
}

impl Segment {
    fn matches_member(&self, key: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name { name, .. } => name == key,
        }
    }

    fn matches_element(&self, i: usize) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name { index, .. } => *index == Some(i),
        }
    }
}

/// The pointers still matching the path walked so far (bit `i` = pointer `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathState(u64);

#[derive(Debug, Clone, Default)]
pub struct Pointers {
    list: Vec<Vec<Segment>>,
}

impl Pointers {
    /// Compiles `specs`; `field` is the config path of the list (`…pointers`).
    pub fn compile(specs: &[String], field: &str, max_depth: usize) -> Result<Pointers, ConfigError> {
        if specs.len() > MAX_POINTERS {
            return Err(ConfigError::new(field, format!("at most {MAX_POINTERS} pointers per profile")));
        }
        let mut list = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let here = format!("{field}[{i}]");
            let Some(rest) = spec.strip_prefix('/') else {
                return Err(ConfigError::new(
                    here,
                    format!(
                        "`{spec}` is not a JSON pointer: it must start with `/` (the whole body cannot be a target)"
                    ),
                ));
            };
            let mut segments = Vec::new();
            for raw in rest.split('/') {
                segments.push(parse_segment(raw).map_err(|problem| ConfigError::new(here.clone(), problem))?);
            }
            if segments.len() > max_depth {
                return Err(ConfigError::new(
                    here,
                    format!("pointer is deeper than the {max_depth} levels masking accepts"),
                ));
            }
            list.push(segments);
        }
        Ok(Pointers { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// These pointers and `extra` ones (RFC 6901 text, `*` a wildcard), the extra ones
    /// numbered after these; `None` when they do not parse or are too many.
    pub fn with(&self, extra: &[String], max_depth: usize) -> Option<Pointers> {
        let extra = Pointers::compile(extra, "", max_depth).ok()?;
        let list: Vec<Vec<Segment>> = self.list.iter().chain(&extra.list).cloned().collect();
        (list.len() <= MAX_POINTERS).then_some(Pointers { list })
    }

    /// The state at the document root: every pointer is still a candidate.
    pub fn root(&self) -> PathState {
        match self.list.len() {
            0 => PathState(0),
            n if n >= 64 => PathState(u64::MAX),
            n => PathState((1u64 << n) - 1),
        }
    }

    /// Steps from a value at `depth` (its path has `depth` segments) into member `key`:
    /// returns the child's state and the first pointer that names exactly that member.
    pub fn member(&self, state: PathState, depth: usize, key: &str) -> (PathState, Option<usize>) {
        self.step(state, depth, |seg| seg.matches_member(key))
    }

    /// As [`Pointers::member`], into array element `index`.
    pub fn element(&self, state: PathState, depth: usize, index: usize) -> (PathState, Option<usize>) {
        self.step(state, depth, |seg| seg.matches_element(index))
    }

    fn step(&self, state: PathState, depth: usize, matches: impl Fn(&Segment) -> bool) -> (PathState, Option<usize>) {
        let mut child = 0u64;
        let mut hit = None;
        let mut bits = state.0;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(segments) = self.list.get(i) else { continue };
            if segments.get(depth).is_some_and(&matches) {
                if segments.len() == depth + 1 {
                    hit = hit.or(Some(i));
                } else {
                    child |= 1 << i;
                }
            }
        }
        (PathState(child), hit)
    }
}

fn parse_segment(raw: &str) -> Result<Segment, String> {
    if raw == "*" {
        return Ok(Segment::Any);
    }
    let mut name = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            name.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => name.push('~'),
            Some('1') => name.push('/'),
            _ => return Err(format!("`~` in segment `{raw}` must be followed by 0 (for `~`) or 1 (for `/`)")),
        }
    }
    let canonical_index =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && (name == "0" || !name.starts_with('0'));
    let index = if canonical_index { name.parse().ok() } else { None };
    Ok(Segment::Name { name, index })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn compile(specs: &[&str]) -> Result<Pointers, ConfigError> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        Pointers::compile(&specs, "p.pointers", 128)
    }

    #[test]
    fn wildcard_matches_any_member_or_index() {
        let p = compile(&["/customers/*/dob"]).unwrap();
        let (s, hit) = p.member(p.root(), 0, "customers");
        assert!(hit.is_none());
        let (s, hit) = p.element(s, 1, 7);
        assert!(hit.is_none());
        assert_eq!(p.member(s, 2, "dob").1, Some(0));
        assert!(p.member(s, 2, "name").1.is_none());
    }

    #[test]
    fn numeric_segment_matches_index_and_member_name() {
        let p = compile(&["/items/0"]).unwrap();
        let (s, _) = p.member(p.root(), 0, "items");
        assert!(p.element(s, 1, 0).1.is_some());
        assert!(p.element(s, 1, 1).1.is_none());
        assert!(p.member(s, 1, "0").1.is_some());
    }

    #[test]
    fn escapes_decode_tilde_and_slash() {
        let p = compile(&["/a~1b/c~0d"]).unwrap();
        let (s, _) = p.member(p.root(), 0, "a/b");
        assert!(p.member(s, 1, "c~d").1.is_some());
    }

    #[test]
    fn rejects_pointers_without_leading_slash_or_with_bad_escapes() {
        let e = compile(&["/ok", "customers/*"]).unwrap_err();
        assert_eq!(e.field, "p.pointers[1]");
        let e = compile(&["/a~2"]).unwrap_err();
        assert!(e.problem.contains('~'), "{}", e.problem);
        assert!(compile(&[""]).is_err());
    }

    #[test]
    fn empty_pointer_set_never_matches() {
        let p = compile(&[]).unwrap();
        assert_eq!(p.root(), PathState(0));
        assert_eq!(p.member(p.root(), 0, "x"), (PathState(0), None));
    }
}

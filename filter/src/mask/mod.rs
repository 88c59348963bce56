//! Response masking: redacts PII and secrets in response bodies before they leave the
//! proxy, with built-in detectors, custom regexes, and JSON member names / pointers.
//!
//! A profile is compiled once at config load ([`compile_profile`]); per request the filter
//! calls [`MaskProfile::mask_json`] for JSON bodies (structure-aware: parsed, walked and
//! re-serialised, so escapes cannot hide PII and the output is always valid JSON) or
//! [`MaskProfile::mask_text`] for other text. Both report per-kind counts for Envoy stats.
//!
//! Speed (the budget is ≥150 MB/s inside Envoy's V8): built-ins share one table-driven
//! scan per string and confirm candidates with hand-written validators (`detectors`);
//! custom regexes are first tried once on the whole JSON body and skipped for its plain
//! strings when they match nowhere (`custom`); the JSON walker copies unchanged input in
//! bulk (`json`). A string without a detection costs no allocation; a body costs its
//! output buffer, plus the counts once something is masked.
//!
//! Decisions worth knowing: member *names* are scanned too (maps keyed by email leak
//! otherwise), so masking can produce duplicate names, which JSON allows; a bare 9-digit
//! run in text is not an SSN and a bare 10-digit run is not a phone (order ids), but a
//! JSON *integer* that is exactly such a number is masked (`mask_numbers`).

mod custom;
mod decoded;
mod detectors;
mod json;

/// Invisible characters, which the cut rule of the stream masker must see through.
pub(crate) use decoded::{invisible_at, invisible_before, starts_escape};
/// A text as a reader sees it (escapes decoded one level, invisible characters left out),
/// with the way back to the text's offsets: the stream masker locates private keys in it
/// as the masker finds them.
pub(crate) struct ReaderView(Decoded);

impl ReaderView {
    /// `None` when a reader sees the text as it is.
    pub(crate) fn of(s: &str) -> Option<ReaderView> {
        let mut view = Decoded::default();
        view.decode(s).then_some(ReaderView(view))
    }

    /// The text without its invisible characters only, escapes left as they are: where an
    /// escape is still arriving, the decoded view reads it as another character
    /// (`&#8` of `&#84;`), this one keeps it visible as an escape.
    pub(crate) fn without_invisibles(s: &str) -> Option<ReaderView> {
        let mut view = Decoded::default();
        view.build(s, 0).then_some(ReaderView(view))
    }

    pub(crate) fn text(&self) -> &str {
        &self.0.text
    }

    /// The offset in the source of byte `i` of the view (the source's length for the end).
    pub(crate) fn source(&self, i: usize) -> usize {
        self.0.source_span(i, i).0
    }
}

/// Text written into a JSON string: one escaper for the masker and the stream masker.
pub(crate) use json::write_escaped;
mod columns;
mod matches;
mod paths;

pub use columns::ResultShape;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use crate::config_error::ConfigError;
use custom::CustomDetector;
use decoded::Decoded;
use detectors::{Builtin, Detectors};
use matches::{Found, Matches, Pending, Sources, ALL_CUSTOM};
use paths::Pointers;

/// JSON nesting deeper than this is refused ([`MaskError::TooDeep`]) rather than walked:
/// it bounds recursion (no stack overflow in the Wasm VM) and real APIs never come close.
pub const MAX_DEPTH: usize = 128;

/// Custom detectors per profile. Each one is a regex search over every string, so the
/// bound keeps per-request cost predictable (and each fits a bit of a `u32`).
pub const MAX_CUSTOM_DETECTORS: usize = 16;

const MAX_REPLACEMENT_LEN: usize = 256;

/// The `{kind}` of values masked because of `fields` or `pointers`.
pub const FIELD_KIND: &str = "field";

/// The `{kind}` of values masked because their SQL result column is a sensitive column.
pub const COLUMN_KIND: &str = "column";

fn default_replacement() -> String {
    "[REDACTED:{kind}]".to_string()
}

fn default_true() -> bool {
    true
}

/// A masking profile as written in the plugin config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskProfileSpec {
    /// Built-in detectors by name, or `all`.
    #[serde(default)]
    pub detectors: Vec<String>,
    #[serde(default)]
    pub custom: Vec<CustomDetectorSpec>,
    /// JSON member names (case-insensitive) whose whole value is replaced wherever they occur.
    #[serde(default)]
    pub fields: Vec<String>,
    /// JSON pointers, `*` matching any one segment, whose value is replaced.
    #[serde(default)]
    pub pointers: Vec<String>,
    /// `{kind}` becomes the detector or custom name, or `field`.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// Whether JSON integers whose digits form a card, an SSN or a NANP phone number are
    /// replaced. On by default; turn off when numeric ids of 9–11 digits get masked.
    #[serde(default = "default_true")]
    pub mask_numbers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorSpec {
    /// Used as `{kind}` and in stat names: `a-z`, `0-9`, `_`, `-`.
    pub name: String,
    /// Rust `regex` syntax; must not match the empty string.
    pub regex: String,
}

/// The rendered replacement of one kind, as text and JSON-escaped (without quotes).
#[derive(Debug)]
struct Replacement {
    text: String,
    json_inner: Vec<u8>,
}

/// A compiled masking profile, shared read-only by every request of a VM.
#[derive(Debug)]
pub struct MaskProfile {
    detectors: Detectors,
    /// Kind index of each built-in, by `Builtin as usize` (meaningful only if enabled).
    builtin_slots: [usize; 8],
    custom: Vec<CustomDetector>,
    /// Lower-cased, sorted, deduplicated.
    fields: Vec<String>,
    /// Lengths of the ASCII `fields` ([`length_bit`]): most member names are rejected on
    /// their length alone.
    field_lengths: u64,
    pointers: Pointers,
    mask_numbers: bool,
    kinds: Vec<String>,
    replacements: Vec<Replacement>,
    field_slot: usize,
    column_slot: usize,
}

/// Compiles and validates a profile; `field` is its config path (`mask_profiles.pii`).
pub fn compile_profile(spec: MaskProfileSpec, field: &str) -> Result<MaskProfile, ConfigError> {
    let enabled = parse_detectors(&spec.detectors, field)?;
    let detectors = Detectors::new(&enabled);
    let mut kinds: Vec<String> = Vec::new();
    let mut builtin_slots = [0usize; 8];
    for b in Builtin::ALL {
        if detectors.is_enabled(b) {
            if let Some(slot) = builtin_slots.get_mut(b as usize) {
                *slot = kinds.len();
            }
            kinds.push(b.name().to_string());
        }
    }

    if spec.custom.len() > MAX_CUSTOM_DETECTORS {
        return Err(ConfigError::new(
            format!("{field}.custom"),
            format!("at most {MAX_CUSTOM_DETECTORS} custom detectors per profile"),
        ));
    }
    let mut custom = Vec::with_capacity(spec.custom.len());
    for (i, c) in spec.custom.iter().enumerate() {
        let here = format!("{field}.custom[{i}]");
        custom::check_name(&c.name, &kinds).map_err(|problem| ConfigError::new(format!("{here}.name"), problem))?;
        let detector = CustomDetector::compile(&c.regex, kinds.len())
            .map_err(|problem| ConfigError::new(format!("{here}.regex"), problem))?;
        custom.push(detector);
        kinds.push(c.name.clone());
    }

    let mut fields = Vec::with_capacity(spec.fields.len());
    for (i, name) in spec.fields.iter().enumerate() {
        if name.is_empty() {
            return Err(ConfigError::new(format!("{field}.fields[{i}]"), "member name must not be empty"));
        }
        fields.push(name.to_lowercase());
    }
    fields.sort();
    fields.dedup();
    let field_lengths = fields.iter().filter(|f| f.is_ascii()).fold(0, |m, f| m | length_bit(f.len()));

    let pointers = Pointers::compile(&spec.pointers, &format!("{field}.pointers"), MAX_DEPTH)?;

    if detectors.is_empty() && custom.is_empty() && fields.is_empty() && pointers.is_empty() {
        return Err(ConfigError::new(
            field,
            "profile masks nothing: set at least one of `detectors`, `custom`, `fields` or `pointers`",
        ));
    }

    let field_slot = kinds.len();
    kinds.push(FIELD_KIND.to_string());
    let column_slot = kinds.len();
    kinds.push(COLUMN_KIND.to_string());
    check_replacement(&spec.replacement)
        .map_err(|problem| ConfigError::new(format!("{field}.replacement"), problem))?;
    let replacements = kinds
        .iter()
        .map(|kind| {
            let text = spec.replacement.replace("{kind}", kind);
            let mut json_inner = Vec::with_capacity(text.len());
            json::write_escaped(&mut json_inner, &text);
            Replacement { text, json_inner }
        })
        .collect();

    Ok(MaskProfile {
        detectors,
        builtin_slots,
        custom,
        fields,
        field_lengths,
        pointers,
        mask_numbers: spec.mask_numbers,
        kinds,
        replacements,
        field_slot,
        column_slot,
    })
}

fn parse_detectors(names: &[String], field: &str) -> Result<Vec<Builtin>, ConfigError> {
    let mut enabled = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if name == "all" {
            enabled.extend(Builtin::ALL);
            continue;
        }
        let Some(b) = Builtin::from_name(name) else {
            let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
            return Err(ConfigError::new(
                format!("{field}.detectors[{i}]"),
                format!("unknown detector `{name}`; expected one of {} or `all`", known.join(", ")),
            ));
        };
        enabled.push(b);
    }
    Ok(enabled)
}

fn check_replacement(template: &str) -> Result<(), String> {
    if template.len() > MAX_REPLACEMENT_LEN {
        return Err(format!("must be at most {MAX_REPLACEMENT_LEN} bytes"));
    }
    if template.replace("{kind}", "").contains(['{', '}']) {
        return Err("the only placeholder is `{kind}`; remove other `{` and `}`".into());
    }
    Ok(())
}

impl MaskProfile {
    /// Whether some values are masked by their place in a JSON document (`fields`,
    /// `pointers`): text masking cannot do that, so a body that claims to be JSON but is
    /// not must be refused rather than masked as text. (Not `kinds()`: the `field` kind
    /// is always listed, so that its counter exists.)
    pub fn masks_by_structure(&self) -> bool {
        !self.fields.is_empty() || !self.pointers.is_empty()
    }

    /// Every kind this profile can count: enabled built-ins (canonical order), custom
    /// detectors (config order), then `field` and `column`. The index is the counter slot.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// Masks a JSON body: string values (and member names) through the detectors,
    /// integers that are whole card/SSN/phone numbers, and the whole value of members
    /// named in `fields` or addressed by `pointers`. Member order is kept and the output is
    /// compact valid JSON. Unchanged strings and numbers are copied byte for byte.
    pub fn mask_json(&self, body: &[u8]) -> Result<(Vec<u8>, MaskCounts), MaskError> {
        json::mask(self, body, &self.pointers, usize::MAX)
    }

    /// Masks a non-JSON text body in place: every detection is replaced by its kind's
    /// replacement, including values a reader decodes from escapes (`decoded`).
    /// Borrowed (no allocation) when nothing matched.
    pub fn mask_text<'t>(&self, text: &'t str) -> (Cow<'t, str>, MaskCounts) {
        let mut pending = [Pending::Stale; MAX_CUSTOM_DETECTORS];
        let mut view = Decoded::default();
        if let Some(found) = self.decoded_detections(text, ALL_CUSTOM, &mut pending, &mut view) {
            return self.replace_in_text(text, found.into_iter());
        }
        match self.detections(text, ALL_CUSTOM, &mut pending) {
            Some((first, rest)) => self.replace_in_text(text, std::iter::once(first).chain(rest)),
            None => (Cow::Borrowed(text), MaskCounts::default()),
        }
    }

    fn replace_in_text<'t>(&self, text: &'t str, found: impl Iterator<Item = Found>) -> (Cow<'t, str>, MaskCounts) {
        let mut counts = MaskCounts::default();
        let mut found = found.peekable();
        if found.peek().is_none() {
            return (Cow::Borrowed(text), counts);
        }
        let mut out = String::with_capacity(text.len() + 32);
        let mut last = 0;
        for m in found {
            out.push_str(text.get(last..m.start).unwrap_or_default());
            out.push_str(self.replacement(m.slot).map_or("", |r| r.text.as_str()));
            counts.add(m.slot, self.kinds.len());
            last = m.end;
        }
        out.push_str(text.get(last..).unwrap_or_default());
        (Cow::Owned(out), counts)
    }

    /// The detections of `s` and of what a reader decodes from it, as spans of `s`, in
    /// order and merged where they overlap (so a value seen both ways counts once). `None`
    /// when `s` has nothing to decode: the caller then takes the allocation-free path.
    /// Custom detectors run on the decoded view whatever `custom` says: its text is not
    /// the body's, which `custom` was gated on.
    fn decoded_detections(
        &self,
        s: &str,
        custom: u32,
        pending: &mut [Pending],
        view: &mut Decoded,
    ) -> Option<Vec<Found>> {
        if !view.decode(s) {
            return None;
        }
        let mut found: Vec<Found> = match self.detections(s, custom, pending) {
            Some((first, rest)) => std::iter::once(first).chain(rest).collect(),
            None => Vec::new(),
        };
        self.push_view_detections(view, pending, &mut found);
        let singles: Vec<u8> = view.single_reader_views().collect();
        for families in singles {
            if view.build(s, families) {
                self.push_view_detections(view, pending, &mut found);
            }
        }
        found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut merged: Vec<Found> = Vec::with_capacity(found.len());
        for f in found {
            match merged.last_mut() {
                Some(last) if f.start < last.end => last.end = last.end.max(f.end),
                _ => merged.push(f),
            }
        }
        Some(merged)
    }

    /// The detections of a view's text, as spans of its source.
    fn push_view_detections(&self, view: &Decoded, pending: &mut [Pending], found: &mut Vec<Found>) {
        if let Some((first, rest)) = self.detections(&view.text, ALL_CUSTOM, pending) {
            for m in std::iter::once(first).chain(rest) {
                let (start, end) = view.source_span(m.start, m.end);
                found.push(Found { start, end, slot: m.slot });
            }
        }
    }

    fn replacement(&self, slot: usize) -> Option<&Replacement> {
        self.replacements.get(slot)
    }

    /// The first detection of `s` and an iterator over the rest; see [`matches::detections`].
    #[inline]
    fn detections<'p, 's, 'c>(
        &'p self,
        s: &'s str,
        custom: u32,
        pending: &'c mut [Pending],
    ) -> Option<(Found, Matches<'p, 's, 'c>)> {
        let sources = Sources {
            detectors: &self.detectors,
            custom: &self.custom,
            builtin_slots: &self.builtin_slots,
            fallback_slot: self.field_slot,
        };
        matches::detections(sources, s, custom, pending)
    }

    /// Custom detectors (bit per index) that may match in the escape-free strings of a
    /// JSON body whose text is `body`; see `custom`.
    fn custom_in_body(&self, body: &str) -> u32 {
        self.custom.iter().enumerate().filter(|(_, c)| c.may_match_in(body)).fold(0, |m, (i, _)| m | 1 << i)
    }

    fn builtin_slot(&self, b: Builtin) -> usize {
        self.builtin_slots.get(b as usize).copied().unwrap_or(self.field_slot)
    }

    /// Whether a member name is listed in `fields` (Unicode case-insensitive). Runs for
    /// every member name of every body, so ASCII names (nearly all) are first filtered by
    /// length and then compared without allocating.
    fn is_masked_field(&self, key: &str) -> bool {
        if self.fields.is_empty() {
            return false;
        }
        if key.is_ascii() {
            if self.field_lengths & length_bit(key.len()) == 0 {
                return false;
            }
            return self.fields.iter().any(|f| f.len() == key.len() && f.eq_ignore_ascii_case(key));
        }
        self.fields.iter().any(|f| key.chars().flat_map(char::to_lowercase).eq(f.chars()))
    }
}

/// Bit of a name length in [`MaskProfile::field_lengths`] (63 stands for 63 and longer).
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// How many values of each kind were masked, aligned with [`MaskProfile::kinds`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCounts {
    /// Empty until the first masked value, so a clean body costs no allocation.
    per_kind: Vec<u64>,
}

impl MaskCounts {
    fn add(&mut self, slot: usize, kinds: usize) {
        if self.per_kind.is_empty() {
            self.per_kind = vec![0; kinds];
        }
        if let Some(n) = self.per_kind.get_mut(slot) {
            *n += 1;
        }
    }

    /// Adds `other`'s counts to these (the pieces of one stream).
    pub(crate) fn merge(&mut self, other: &MaskCounts) {
        for (kind, n) in other.iter() {
            if self.per_kind.len() <= kind {
                self.per_kind.resize(kind + 1, 0);
            }
            if let Some(slot) = self.per_kind.get_mut(kind) {
                *slot += n;
            }
        }
    }

    /// Values masked in all.
    pub fn total(&self) -> u64 {
        self.per_kind.iter().sum()
    }

    /// Values masked of the kind at `kind` index.
    pub fn get(&self, kind: usize) -> u64 {
        self.per_kind.get(kind).copied().unwrap_or(0)
    }

    /// `(kind index, count)` for every kind with at least one masked value.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.per_kind.iter().copied().enumerate().filter(|&(_, n)| n > 0)
    }
}

/// A body that cannot be masked. The filter must not pass it through unmasked; the
/// messages name the problem and position only, never body contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskError {
    InvalidJson(JsonSyntaxError),
    InvalidUtf8,
    TooDeep,
}

/// Where and why a body is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonSyntaxError {
    /// Byte offset in the body.
    pub offset: usize,
    pub problem: &'static str,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::InvalidJson(e) => write!(
                f,
                "response body declared as JSON is not valid JSON ({} at byte {}), so it cannot be masked",
                e.problem, e.offset
            ),
            MaskError::InvalidUtf8 => write!(f, "response body is not valid UTF-8, so it cannot be masked"),
            MaskError::TooDeep => {
                write!(f, "response body nests JSON deeper than {MAX_DEPTH} levels, so it cannot be masked")
            }
        }
    }
}

impl std::error::Error for MaskError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;

//! Streaming masking: response bodies that arrive chunk by chunk (server-sent events,
//! NDJSON, chunked text) are masked as they arrive, with bounded memory, and released
//! at once except for what could still turn into a detection.
//!
//! ```
//! use airlock_filter::mask::{compile_profile, MaskProfileSpec};
//! use airlock_filter::stream::{StreamKind, StreamLimits, StreamMasker};
//!
//! let spec: MaskProfileSpec = serde_json::from_str(r#"{"detectors":["all"]}"#).unwrap();
//! let profile = compile_profile(spec, "mask_profiles.pii").unwrap();
//! let mut masker = StreamMasker::new(StreamKind::Sse, StreamLimits::default());
//! let mut out = Vec::new();
//! // Each response-body callback: feed the new bytes, send what comes out instead.
//! let first = r#"data: {"choices":[{"index":0,"delta":{"content":"mail alice@exa"}}]}"#;
//! masker.push(&profile, format!("{first}\n\n").as_bytes(), &mut out).unwrap();
//! let second = r#"data: {"choices":[{"index":0,"delta":{"content":"mple.com now"}}]}"#;
//! masker.push(&profile, format!("{second}\n\n").as_bytes(), &mut out).unwrap();
//! // End of stream: the held-back rest.
//! masker.finish(&profile, &mut out).unwrap();
//! let sent = String::from_utf8(out).unwrap();
//! assert!(!sent.contains("alice@") && sent.contains("[REDACTED:email]"));
//! assert_eq!(masker.take_counts().total(), 1);
//! ```
//!
//! - [`sse`]: event framing per the WHATWG standard; JSON data masked structure-aware;
//!   non-JSON data is one text across events.
//! - [`ndjson`]: line by line, structure-aware.
//! - [`text`]: a plain text body.
//! - [`deltas`]: the deltas of LLM streaming APIs (OpenAI chat completions and Responses,
//!   Anthropic Messages, Ollama), joined into the texts the client assembles.
//! - [`tail`]: which part of a text can be released, and why that is safe.
//!
//! Fail closed: every error ([`StreamError`]) means nothing more may be sent from this
//! stream (the caller ends it); the masker then refuses every further call. What a call
//! that fails had written to `out` is removed. Nothing is ever released unmasked.
//!
//! For the response-body callback: choose the kind once from the response's
//! `content-type` ([`StreamKind::from_content_type`]), drop `content-length` (the masked
//! body differs in size), then on every callback replace the bytes that arrived with what
//! [`StreamMasker::push`] appends (often less, sometimes more: held-back text is released
//! later), calling [`StreamMasker::finish`] at end of stream; add
//! [`StreamMasker::take_counts`] to the counters. On an error, send nothing more: for SSE
//! an `event: error` with the reply JSON can end the stream (it is a complete event, so
//! the client is not left with a partial one), then reset or close it.

mod deltas;
mod ndjson;
mod scan;
mod sse;
mod tail;
mod text;

use std::fmt;

use crate::mask::{MaskCounts, MaskError, MaskProfile};
use crate::reply::Code;
use tail::CutRule;

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `text/event-stream`.
    Sse,
    /// `application/x-ndjson`, `application/jsonl` and the like.
    Ndjson,
    /// Any other text, masked as one text.
    Text,
}

impl StreamKind {
    /// The framing a `content-type` header value announces, if it is a streaming one
    /// (SSE or NDJSON); parameters (`; charset=utf-8`) and case are ignored. Other types
    /// are for the caller to decide (JSON bodies are masked whole, text as [`Text`](StreamKind::Text)).
    pub fn from_content_type(content_type: &str) -> Option<StreamKind> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let is = |t: &str| essence.eq_ignore_ascii_case(t);
        if is("text/event-stream") {
            return Some(StreamKind::Sse);
        }
        let ndjson = [
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            "application/x-jsonlines",
            "application/jsonlines",
        ];
        ndjson.iter().any(|t| is(t)).then_some(StreamKind::Ndjson)
    }
}

/// Per-stream memory bounds. Over any of them the stream fails ([`StreamError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// An SSE event or NDJSON line: the bytes buffered until it is complete, and the
    /// size of one that arrives whole (so the outcome never depends on how it is cut).
    pub max_buffered_bytes: usize,
    /// Text held back, over all the texts of the stream.
    pub max_held_bytes: usize,
    /// Texts open at once (choices × tool calls, content blocks, …).
    pub max_texts: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits { max_buffered_bytes: 1 << 20, max_held_bytes: 64 << 10, max_texts: 64 }
    }
}

/// Why a stream cannot go on. Messages name the limit or the problem, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// An SSE event or NDJSON line is longer than `max_buffered_bytes`.
    EventTooLarge { limit: usize },
    /// The held-back text grew past `max_held_bytes` (a word, number or private key that
    /// does not end, or a line when custom detectors are in use).
    HeldTooLarge { limit: usize },
    /// More than `max_texts` texts open at once.
    TooManyTexts { limit: usize },
    /// An NDJSON line that is not JSON, or SSE data that looks like JSON and is not while
    /// the profile masks by structure.
    InvalidJson,
    /// Not UTF-8 (NDJSON, text), nested too deep, …
    NotMaskable(MaskError),
    /// `push` or `finish` after `finish`.
    Finished,
}

impl StreamError {
    /// The reply code of the answer an agent gets (`response_too_large` for limits,
    /// else `response_not_maskable`).
    pub fn code(&self) -> Code {
        match self {
            StreamError::EventTooLarge { .. } | StreamError::HeldTooLarge { .. } | StreamError::TooManyTexts { .. } => {
                Code::ResponseTooLarge
            }
            _ => Code::ResponseNotMaskable,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::EventTooLarge { limit } => {
                write!(f, "a streamed event or line is larger than {limit} bytes, so it cannot be masked")
            }
            StreamError::HeldTooLarge { limit } => {
                write!(f, "more than {limit} bytes of streamed text would have to be held back to mask it safely")
            }
            StreamError::TooManyTexts { limit } => {
                write!(f, "the stream interleaves more than {limit} texts, so it cannot be masked")
            }
            StreamError::InvalidJson => write!(f, "a streamed message declared as JSON is not valid JSON"),
            StreamError::NotMaskable(e) => write!(f, "{e}"),
            StreamError::Finished => write!(f, "the stream has already ended"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Masked values by kind, aligned with [`MaskProfile::kinds`]: the masker's own counts,
/// summed over the pieces of a stream.
pub type StreamCounts = MaskCounts;

/// Accumulates [`MaskCounts`].
#[derive(Debug, Default)]
pub(crate) struct Counter(StreamCounts);

impl Counter {
    pub(crate) fn add(&mut self, counts: &MaskCounts) {
        self.0.merge(counts);
    }
}

/// What the parts need for one call.
pub(crate) struct Cx<'a> {
    profile: &'a MaskProfile,
    rule: CutRule,
    counts: &'a mut Counter,
    limits: &'a StreamLimits,
}

#[derive(Debug)]
enum Framer {
    Sse(Box<sse::Sse>),
    Ndjson(Box<ndjson::Ndjson>),
    Text(Box<text::Text>),
}

/// Masks one response body as it streams. Create one per response; pass the same
/// profile to every call.
#[derive(Debug)]
pub struct StreamMasker {
    framer: Framer,
    limits: StreamLimits,
    counts: Counter,
    failed: Option<StreamError>,
}

impl StreamMasker {
    pub fn new(kind: StreamKind, limits: StreamLimits) -> StreamMasker {
        let framer = match kind {
            StreamKind::Sse => Framer::Sse(Box::default()),
            StreamKind::Ndjson => Framer::Ndjson(Box::default()),
            StreamKind::Text => Framer::Text(Box::default()),
        };
        StreamMasker { framer, limits, counts: Counter::default(), failed: None }
    }

    /// Takes the next bytes of the body and appends to `out` the masked bytes that can be
    /// sent now (possibly none). On error nothing is appended, and the stream must end.
    pub fn push(&mut self, profile: &MaskProfile, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.run(profile, out, |framer, cx, out| match framer {
            Framer::Sse(s) => s.push(cx, chunk, out),
            Framer::Ndjson(s) => s.push(cx, chunk, out),
            Framer::Text(s) => s.push(cx, chunk, out),
        })
    }

    /// The body has ended: appends to `out` everything still held back, masked.
    pub fn finish(&mut self, profile: &MaskProfile, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let r = self.run(profile, out, |framer, cx, out| match framer {
            Framer::Sse(s) => s.finish(cx, out),
            Framer::Ndjson(s) => s.finish(cx, out),
            Framer::Text(s) => s.finish(cx, out),
        });
        if r.is_ok() {
            self.failed = Some(StreamError::Finished);
        }
        r
    }

    fn run(
        &mut self,
        profile: &MaskProfile,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut Framer, &mut Cx<'_>, &mut Vec<u8>) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let start = out.len();
        let mut cx =
            Cx { profile, rule: CutRule::for_profile(profile), counts: &mut self.counts, limits: &self.limits };
        let r = f(&mut self.framer, &mut cx, out);
        if let Err(e) = r {
            out.truncate(start);
            self.failed = Some(e);
        }
        r
    }

    /// Values masked since the last call, by kind (for the `masked.<profile>.<kind>` counters).
    pub fn take_counts(&mut self) -> StreamCounts {
        std::mem::take(&mut self.counts.0)
    }

    /// Bytes of an unfinished event or line buffered now.
    pub fn buffered_bytes(&self) -> usize {
        match &self.framer {
            Framer::Sse(s) => s.buffered(),
            Framer::Ndjson(s) => s.buffered(),
            Framer::Text(s) => s.buffered(),
        }
    }

    /// Bytes of text held back now.
    pub fn held_bytes(&self) -> usize {
        match &self.framer {
            Framer::Sse(s) => s.held(),
            Framer::Ndjson(s) => s.held(),
            Framer::Text(s) => s.held(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;

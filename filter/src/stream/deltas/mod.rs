//! Text that continues across messages: the deltas of streaming LLM APIs, which a client
//! joins into one text, and plain SSE `data:` text.
//!
//! Each such text (an OpenAI choice's `delta.content`, one tool call's `arguments`, an
//! Anthropic content block, a Responses output part, …) has a [`Tail`]. A message's delta
//! is appended to its text's tail; what the tail can release is masked and written back
//! into the message in place of the delta; the rest waits for the next delta of the same
//! text. When the text ends (`finish_reason`, `content_block_stop`,
//! `response.output_text.done`, `done: true`, `[DONE]`, end of stream), the masked
//! remainder goes out: in the closing message itself when that message carries a delta
//! of the text, else in a message made for it (shaped like the text's last delta) just
//! before the closing message.
//!
//! The rest of each message is masked structure-aware by `mask_json`, with the delta
//! strings replaced by `""` while it runs; the released text is then put where `""` is in
//! the masked output. If masking by structure (`fields`, `pointers`) replaced the member,
//! the replacement stays and the text of that member is not sent at all.
//!
//! A message that does not match these APIs (an MCP JSON-RPC message, any other JSON) is
//! masked on its own, structure-aware.

mod framing;
mod keys;

use super::scan::{self, Message, Val};
use super::tail::{mask_into, Tail};
use super::{Cx, StreamError};
use crate::mask::MaskCounts;
use framing::made_message;
pub(super) use framing::{write_data_lines, Framing};
use keys::{Close, Family, Field, Key, Loc, Slot, NONE};

/// A message made for a text's end is shaped like the text's last delta message, kept
/// here as masked; a larger last message is not kept (a minimal message is made instead),
/// so memory stays bounded by `max_texts` × this.
const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

#[derive(Debug)]
struct Entry {
    key: Key,
    tail: Tail,
    /// The masked JSON of the text's last delta message (with `""` for the delta).
    template: Vec<u8>,
    /// SSE event type (masked) of that message.
    event: String,
    /// Anthropic: the delta member (`text`, `partial_json`, `thinking`).
    member: &'static str,
    /// Masking by structure replaced this text's member in its last message: its text
    /// is not sent (the replacement is, in its place).
    by_structure: bool,
}

/// Every open text of one stream.
#[derive(Debug, Default)]
pub(super) struct Texts {
    entries: Vec<Entry>,
    scan_in: Message,
    scan_out: Message,
    slots: Vec<Slot>,
    closes: Vec<Close>,
    blanked: Vec<u8>,
    decoded: String,
    released: String,
    splices: Vec<(usize, usize, usize)>,
    main: Vec<u8>,
    envelope: Envelope,
}

/// The last message with its deltas blanked, and what masking made of it. LLM streams
/// wrap every delta in the same envelope (id, model, created, …), so it is masked once
/// and reused while it stays byte for byte the same: that masking was most of an
/// event's cost.
#[derive(Debug, Default)]
struct Envelope {
    blanked: Vec<u8>,
    masked: Vec<u8>,
    counts: MaskCounts,
}

impl Texts {
    /// Bytes of text held back, over all texts.
    pub(super) fn held(&self) -> usize {
        self.entries.iter().map(|e| e.tail.len()).sum()
    }

    fn entry(&mut self, key: &Key, cx: &Cx<'_>) -> Result<usize, StreamError> {
        if let Some(i) = self.entries.iter().position(|e| e.key == *key) {
            return Ok(i);
        }
        if self.entries.len() >= cx.limits.max_texts {
            return Err(StreamError::TooManyTexts { limit: cx.limits.max_texts });
        }
        self.entries.push(Entry {
            key: key.clone(),
            tail: Tail::default(),
            template: Vec::new(),
            event: String::new(),
            member: "text",
            by_structure: false,
        });
        Ok(self.entries.len() - 1)
    }

    fn check_held(&self, cx: &Cx<'_>) -> Result<(), StreamError> {
        if self.held() > cx.limits.max_held_bytes {
            return Err(StreamError::HeldTooLarge { limit: cx.limits.max_held_bytes });
        }
        Ok(())
    }

    /// Non-JSON SSE data: appended to the one plain text of the stream; the part that can
    /// be released is masked and appended to `released`.
    pub(super) fn plain(
        &mut self,
        cx: &mut Cx<'_>,
        text: &str,
        event: &str,
        released: &mut String,
    ) -> Result<(), StreamError> {
        let key = Key::new(Family::Plain, Field::Plain, 0);
        let i = self.entry(&key, cx)?;
        if let Some(e) = self.entries.get_mut(i) {
            e.tail.push(text);
            e.tail.release(cx.profile, cx.rule, cx.counts, released);
            e.event.clear();
            e.event.push_str(event);
        }
        self.check_held(cx)
    }

    /// Ends every text: their masked remainders are written as made messages.
    pub(super) fn close_all(&mut self, cx: &mut Cx<'_>, framing: Framing, out: &mut Vec<u8>) {
        let mut entries = std::mem::take(&mut self.entries);
        for e in &mut entries {
            self.flush_entry(cx, e, framing, out);
        }
        entries.clear();
        self.entries = entries;
    }

    /// Masks one JSON message. `Ok(None)` if it is not JSON (nothing was changed); else
    /// the masked message, with any made messages already written to `out` before it.
    /// `event` is the (masked) SSE event type of the message.
    pub(super) fn message(
        &mut self,
        cx: &mut Cx<'_>,
        data: &[u8],
        event: &str,
        framing: Framing,
        out: &mut Vec<u8>,
    ) -> Result<Option<&[u8]>, StreamError> {
        if scan::scan(data, &mut self.scan_in).is_none() {
            return Ok(None);
        }
        self.collect(data);
        if self.slots.len() > cx.limits.max_texts {
            return Err(StreamError::TooManyTexts { limit: cx.limits.max_texts });
        }
        self.dedup_slots();
        if self.slots.is_empty() && self.closes.is_empty() {
            return match cx.profile.mask_json(data) {
                Ok((masked, counts)) => {
                    cx.counts.add(&counts);
                    self.main = masked;
                    Ok(Some(&self.main))
                }
                Err(e) => not_json(e),
            };
        }

        // Decode every delta before changing any state (a bad escape: not JSON).
        self.slots.sort_by_key(|s| s.val.start);
        self.decoded.clear();
        for s in &mut self.slots {
            let Some(text) = scan::decode(data, &s.val) else { return Ok(None) };
            let start = self.decoded.len();
            self.decoded.push_str(&text);
            s.text = (start, self.decoded.len());
        }

        // The message with every delta replaced by "", masked.
        self.blanked.clear();
        let mut copied = 0;
        for s in &self.slots {
            self.blanked.extend_from_slice(data.get(copied..s.val.start).unwrap_or_default());
            self.blanked.extend_from_slice(b"\"\"");
            copied = s.val.end;
        }
        self.blanked.extend_from_slice(data.get(copied..).unwrap_or_default());
        let masked = if self.envelope.blanked == self.blanked {
            // The same values are masked again in this message: counted again.
            cx.counts.add(&self.envelope.counts);
            self.envelope.masked.clone()
        } else {
            match cx.profile.mask_json(&self.blanked) {
                Ok((masked, counts)) => {
                    cx.counts.add(&counts);
                    self.envelope.blanked.clone_from(&self.blanked);
                    self.envelope.masked.clone_from(&masked);
                    self.envelope.counts = counts;
                    masked
                }
                Err(e) => return not_json(e),
            }
        };

        // Feed each delta to its text; release what can be released (all of it if the
        // message also ends the text).
        self.released.clear();
        for n in 0..self.slots.len() {
            let Some(slot) = self.slots.get(n) else { continue };
            let closes = self.closes.iter().any(|c| c.covers(&slot.key));
            let text = slot.text;
            let i = self.entry(&slot.key.clone(), cx)?;
            let start = self.released.len();
            if let (Some(e), Some(text)) = (self.entries.get_mut(i), self.decoded.get(text.0..text.1)) {
                e.tail.push(text);
                if closes {
                    e.tail.flush(cx.profile, cx.counts, &mut self.released);
                } else {
                    e.tail.release(cx.profile, cx.rule, cx.counts, &mut self.released);
                }
            }
            if let Some(slot) = self.slots.get_mut(n) {
                slot.out = (start, self.released.len());
                slot.entry = i;
            }
        }

        // Put the released text where "" is in the masked message.
        let _ = scan::scan(&masked, &mut self.scan_out);
        self.splices.clear();
        for s in &self.slots {
            let Some(e) = self.entries.get_mut(s.entry) else { continue };
            // Not "" any more: masking by structure replaced the member (the latest
            // message decides what happens to the text's end).
            let here = s.loc.find(&self.scan_out).filter(Val::is_empty_str);
            e.by_structure = here.is_none();
            if let Some(v) = here {
                self.splices.push((v.start, s.out.0, s.out.1));
            }
            e.event.clear();
            e.event.push_str(event);
            e.member = match s.loc {
                Loc::DeltaPartialJson => "partial_json",
                Loc::DeltaThinking => "thinking",
                _ => "text",
            };
        }
        self.splices.sort_unstable();
        self.main.clear();
        let mut copied = 0;
        for &(at, from, to) in &self.splices {
            self.main.extend_from_slice(masked.get(copied..at).unwrap_or_default());
            self.main.push(b'"');
            crate::mask::write_escaped(&mut self.main, self.released.get(from..to).unwrap_or_default());
            self.main.push(b'"');
            copied = at + 2;
        }
        self.main.extend_from_slice(masked.get(copied..).unwrap_or_default());

        // The masked message is the template of its texts' made messages (moved into the
        // last one's entry, copied for the others).
        let mut masked = Some(masked).filter(|m| m.len() <= MAX_TEMPLATE_BYTES);
        for (n, s) in self.slots.iter().enumerate().rev() {
            let Some(e) = self.entries.get_mut(s.entry) else { continue };
            match masked.take() {
                Some(m) if n == 0 => e.template = m,
                Some(m) => {
                    e.template.clear();
                    e.template.extend_from_slice(&m);
                    masked = Some(m);
                }
                None => e.template.clear(),
            }
        }

        // Texts this message ends and that had no delta in it: made messages first.
        let closes = std::mem::take(&mut self.closes);
        if !closes.is_empty() {
            let mut entries = std::mem::take(&mut self.entries);
            entries.retain_mut(|e| {
                if !closes.iter().any(|c| c.covers(&e.key)) {
                    return true;
                }
                if !self.slots.iter().any(|s| s.key == e.key) {
                    self.flush_entry(cx, e, framing, out);
                }
                false
            });
            self.entries = entries;
        }
        self.closes = closes;
        self.check_held(cx)?;
        Ok(Some(&self.main))
    }

    /// Writes the masked remainder of a text that ends, as a made message.
    fn flush_entry(&mut self, cx: &mut Cx<'_>, e: &mut Entry, framing: Framing, out: &mut Vec<u8>) {
        if e.tail.is_empty() {
            return;
        }
        let mut text = String::new();
        e.tail.flush(cx.profile, cx.counts, &mut text);
        if e.by_structure || text.is_empty() {
            return;
        }
        if e.key.family == Family::Plain {
            if framing == Framing::Sse {
                if !e.event.is_empty() {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(e.event.as_bytes());
                    out.push(b'\n');
                }
                write_data_lines(out, &text);
                out.push(b'\n');
            }
            return;
        }
        if let Ok(json) = serde_json::to_vec(&made_message(e, text)) {
            framing.write_json(out, &e.event, &json);
        }
    }

    /// Finds the deltas and the ends of texts in the scanned message.
    fn collect(&mut self, src: &[u8]) {
        self.slots.clear();
        self.closes.clear();
        let m = &self.scan_in;
        if !m.object || m.jsonrpc {
            return;
        }
        let slot = |key: Key, loc: Loc, val: Option<Val>| {
            val.filter(Val::is_str).map(|val| Slot { key, loc, val, text: (0, 0), out: (0, 0), entry: 0 })
        };
        let ty = m.type_.as_ref().and_then(|v| scan::decode(src, v));
        let ty = ty.as_deref().unwrap_or("");

        // OpenAI chat completions (and legacy completions).
        for c in &m.choices {
            let a = scan::uint(src, c.index.as_ref()).unwrap_or(c.pos as u64);
            let fields = [
                (Field::Content, c.content),
                (Field::ReasoningContent, c.reasoning_content),
                (Field::Reasoning, c.reasoning),
                (Field::Refusal, c.refusal),
                (Field::LegacyText, c.text),
            ];
            for (field, val) in fields {
                self.slots.extend(slot(Key::new(Family::Chat, field, a), Loc::Choice(c.pos, field), val));
            }
            for t in &c.tools {
                let mut key = Key::new(Family::Chat, Field::ToolArguments, a);
                key.b = scan::uint(src, t.index.as_ref()).unwrap_or(t.pos as u64);
                self.slots.extend(slot(key, Loc::Tool(c.pos, t.pos), t.arguments));
            }
            if c.finish_reason.is_some_and(|v| v.is_str()) {
                self.closes.push(Close::Choice(a));
            }
        }

        // OpenAI Responses.
        if let Some(rest) = ty.strip_prefix("response.") {
            let item = m.item_id.as_ref().and_then(|v| scan::decode(src, v)).map(|s| s.into_owned());
            let a = scan::uint(src, m.output_index.as_ref()).unwrap_or(NONE);
            let b = scan::uint(src, m.content_index.as_ref()).unwrap_or(NONE);
            let c = scan::uint(src, m.summary_index.as_ref()).unwrap_or(NONE);
            if let Some(base) = ty.strip_suffix(".delta") {
                let mut key = Key::new(Family::Responses, Field::Delta, a);
                key.b = b;
                key.c = c;
                key.name = format!("{base}\0{}", item.as_deref().unwrap_or(""));
                self.slots.extend(slot(key, Loc::Delta, m.delta));
            } else if let Some(base) = ty.strip_suffix(".done") {
                // A part or item ending ends every text in it, whatever its type.
                let any = matches!(
                    base,
                    "response.content_part" | "response.output_item" | "response.reasoning_summary_part"
                );
                let base = (!any).then(|| base.to_string());
                self.closes.push(Close::Responses { base, item, a, b, c });
            } else if matches!(rest, "completed" | "incomplete" | "failed") {
                self.closes.push(Close::All(Some(Family::Responses)));
            }
        }

        // Anthropic Messages.
        let index = scan::uint(src, m.index.as_ref()).unwrap_or(0);
        match ty {
            "content_block_delta" => {
                let key = Key::new(Family::Anthropic, Field::BlockText, index);
                let delta_type = m.delta_type.as_ref().and_then(|v| scan::decode(src, v));
                // One text per block, whatever kind of delta it streams.
                let (loc, val) = match delta_type.as_deref() {
                    Some("input_json_delta") => (Loc::DeltaPartialJson, m.delta_partial_json),
                    Some("thinking_delta") => (Loc::DeltaThinking, m.delta_thinking),
                    _ => (Loc::DeltaText, m.delta_text),
                };
                self.slots.extend(slot(key, loc, val));
            }
            "content_block_start" => {
                let key = Key::new(Family::Anthropic, Field::BlockText, index);
                self.slots.extend(slot(key, Loc::BlockText, m.block_text));
            }
            "content_block_stop" => self.closes.push(Close::Block(index)),
            "message_stop" => self.closes.push(Close::All(Some(Family::Anthropic))),
            _ => {}
        }

        // Ollama.
        if m.model.is_some() && m.created_at.is_some() && m.done.is_some() {
            let fields = [
                (Field::MessageContent, Loc::MessageContent, m.message_content),
                (Field::MessageThinking, Loc::MessageThinking, m.message_thinking),
                (Field::Response, Loc::Response, m.response),
                (Field::Thinking, Loc::Thinking, m.thinking),
            ];
            for (field, loc, val) in fields {
                self.slots.extend(slot(Key::new(Family::Ollama, field, 0), loc, val));
            }
            if m.done.is_some_and(|v| v.kind == scan::Kind::True) {
                self.closes.push(Close::All(Some(Family::Ollama)));
            }
        }
    }

    /// The same text twice in one message (duplicate members, choices with the same
    /// index): the later one wins, as in the client's parse. Quadratic: the caller bounds
    /// the number of slots first.
    fn dedup_slots(&mut self) {
        let mut n = 0;
        while n < self.slots.len() {
            let dup = self.slots.iter().skip(n + 1).any(|s| self.slots.get(n).is_some_and(|t| t.key == s.key));
            if dup {
                self.slots.remove(n);
            } else {
                n += 1;
            }
        }
    }
}

fn not_json(e: crate::mask::MaskError) -> Result<Option<&'static [u8]>, StreamError> {
    match e {
        crate::mask::MaskError::InvalidJson(_) => Ok(None),
        other => Err(StreamError::NotMaskable(other)),
    }
}

/// Masks `text` on its own (no joining), for single-line SSE fields and comments; line
/// breaks a replacement may contain become spaces.
pub(super) fn mask_line(cx: &mut Cx<'_>, text: &str, out: &mut String) {
    let start = out.len();
    mask_into(cx.profile, text, cx.counts, out);
    if out.get(start..).is_some_and(|s| s.contains(['\n', '\r'])) {
        let fixed = out.get(start..).unwrap_or_default().replace(['\n', '\r'], " ");
        out.truncate(start);
        out.push_str(&fixed);
    }
}

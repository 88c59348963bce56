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

use serde_json::{Map, Value};

use super::scan::{self, Message, Val};
use super::tail::{mask_into, Tail};
use super::{Cx, StreamError};

/// A message made for a text's end is shaped like the text's last delta message, kept
/// here as masked; a larger last message is not kept (a minimal message is made instead),
/// so memory stays bounded by `max_texts` × this.
const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Non-JSON SSE `data:`.
    Plain,
    /// OpenAI chat completions (`choices/*/delta`), and legacy completions (`choices/*/text`).
    Chat,
    /// OpenAI Responses API (`response.*.delta`).
    Responses,
    /// Anthropic Messages API (`content_block_delta`).
    Anthropic,
    /// Ollama (`/api/chat`, `/api/generate`).
    Ollama,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Plain,
    Content,
    ReasoningContent,
    Reasoning,
    Refusal,
    ToolArguments,
    LegacyText,
    Delta,
    BlockText,
    MessageContent,
    MessageThinking,
    Response,
    Thinking,
}

/// Which text a delta belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    family: Family,
    field: Field,
    /// Choice index (chat), content block index (Anthropic), output index (Responses).
    a: u64,
    /// Tool call index (chat), content index (Responses).
    b: u64,
    /// Summary index (Responses).
    c: u64,
    /// Responses: the event type without `.delta`, a NUL, and the item id.
    name: String,
}

const NONE: u64 = u64::MAX;

impl Key {
    fn new(family: Family, field: Field, a: u64) -> Key {
        Key { family, field, a, b: NONE, c: NONE, name: String::new() }
    }
}

/// Where a delta string is in a message (looked up again in the masked output).
#[derive(Clone, Copy, Debug)]
enum Loc {
    Choice(usize, Field),
    Tool(usize, usize),
    Delta,
    DeltaText,
    DeltaPartialJson,
    DeltaThinking,
    BlockText,
    MessageContent,
    MessageThinking,
    Response,
    Thinking,
}

impl Loc {
    fn find(self, m: &Message) -> Option<Val> {
        match self {
            Loc::Choice(pos, field) => {
                let c = m.choices.iter().rev().find(|c| c.pos == pos)?;
                match field {
                    Field::Content => c.content,
                    Field::ReasoningContent => c.reasoning_content,
                    Field::Reasoning => c.reasoning,
                    Field::Refusal => c.refusal,
                    Field::LegacyText => c.text,
                    _ => None,
                }
            }
            Loc::Tool(pos, tool) => {
                let c = m.choices.iter().rev().find(|c| c.pos == pos)?;
                c.tools.iter().rev().find(|t| t.pos == tool)?.arguments
            }
            Loc::Delta => m.delta,
            Loc::DeltaText => m.delta_text,
            Loc::DeltaPartialJson => m.delta_partial_json,
            Loc::DeltaThinking => m.delta_thinking,
            Loc::BlockText => m.block_text,
            Loc::MessageContent => m.message_content,
            Loc::MessageThinking => m.message_thinking,
            Loc::Response => m.response,
            Loc::Thinking => m.thinking,
        }
    }
}

/// A delta found in the message being processed.
#[derive(Debug)]
struct Slot {
    key: Key,
    loc: Loc,
    val: Val,
    /// The decoded delta, as a range of `Texts::decoded`.
    text: (usize, usize),
    /// The released (masked) text, as a range of `Texts::released`.
    out: (usize, usize),
    /// Index of the text's entry (valid until entries are removed at the end).
    entry: usize,
}

/// Which texts a message ends.
#[derive(Debug)]
enum Close {
    /// Every text of a family (`None`: of every family).
    All(Option<Family>),
    /// The texts of one chat choice.
    Choice(u64),
    /// One Anthropic content block.
    Block(u64),
    /// Responses texts: of the given base type (or any, if `None`), matching the ids
    /// the closing event names.
    Responses { base: Option<String>, item: Option<String>, a: u64, b: u64, c: u64 },
}

impl Close {
    fn covers(&self, k: &Key) -> bool {
        match self {
            Close::All(f) => f.is_none_or(|f| f == k.family),
            Close::Choice(i) => k.family == Family::Chat && k.a == *i,
            Close::Block(i) => k.family == Family::Anthropic && k.a == *i,
            Close::Responses { base, item, a, b, c } => {
                if k.family != Family::Responses {
                    return false;
                }
                let (k_base, k_item) = k.name.split_once('\0').unwrap_or((&k.name, ""));
                let same = |x: u64, y: u64| x == NONE || x == y;
                base.as_deref().is_none_or(|b| b == k_base)
                    && item.as_deref().is_none_or(|i| i == k_item)
                    && same(*a, k.a)
                    && same(*b, k.b)
                    && same(*c, k.c)
            }
        }
    }
}

/// How messages are framed in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Sse,
    Ndjson,
}

impl Framing {
    /// Writes one made message (no `id`: it is not the upstream's event).
    fn write_json(self, out: &mut Vec<u8>, event: &str, json: &[u8]) {
        match self {
            Framing::Sse => {
                if !event.is_empty() {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(event.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
            Framing::Ndjson => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
        }
    }
}

/// Writes `text` as SSE `data:` lines (every line break starts a new line, so the client
/// joins them back with `\n`).
pub(super) fn write_data_lines(out: &mut Vec<u8>, text: &str) {
    for line in text.split(['\n', '\r']) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

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
        let masked = match cx.profile.mask_json(&self.blanked) {
            Ok((masked, counts)) => {
                cx.counts.add(&counts);
                masked
            }
            Err(e) => return not_json(e),
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
            scan::write_escaped(&mut self.main, self.released.get(from..to).unwrap_or_default());
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

/// A message carrying `text` (already masked) as the next delta of `e`'s text, shaped
/// like the text's last delta message.
fn made_message(e: &Entry, text: String) -> Value {
    let template: Map<String, Value> = match serde_json::from_slice(&e.template) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let k = &e.key;
    let mut obj = Map::new();
    let keep = |obj: &mut Map<String, Value>, names: &[&str]| {
        for name in names {
            if let Some(v) = template.get(*name) {
                obj.insert((*name).to_string(), v.clone());
            }
        }
    };
    let num = |n: u64| Value::from(n);
    match k.family {
        Family::Chat => {
            for (name, v) in &template {
                if !matches!(name.as_str(), "choices" | "usage" | "obfuscation") {
                    obj.insert(name.clone(), v.clone());
                }
            }
            obj.entry("object").or_insert_with(|| Value::from("chat.completion.chunk"));
            let mut choice = Map::new();
            choice.insert("index".into(), num(k.a));
            let member = |name: &str, text: String| {
                let mut m = Map::new();
                m.insert(name.to_string(), Value::String(text));
                Value::Object(m)
            };
            match k.field {
                Field::LegacyText => {
                    choice.insert("text".into(), Value::String(text));
                }
                Field::ToolArguments => {
                    let mut call = Map::new();
                    call.insert("index".into(), num(k.b));
                    call.insert("function".into(), member("arguments", text));
                    let mut delta = Map::new();
                    delta.insert("tool_calls".into(), Value::Array(vec![Value::Object(call)]));
                    choice.insert("delta".into(), Value::Object(delta));
                }
                field => {
                    let name = match field {
                        Field::ReasoningContent => "reasoning_content",
                        Field::Reasoning => "reasoning",
                        Field::Refusal => "refusal",
                        _ => "content",
                    };
                    choice.insert("delta".into(), member(name, text));
                }
            }
            choice.insert("finish_reason".into(), Value::Null);
            obj.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
        }
        Family::Responses => {
            for (name, v) in &template {
                if !matches!(name.as_str(), "logprobs" | "obfuscation") {
                    obj.insert(name.clone(), v.clone());
                }
            }
            if !obj.contains_key("type") {
                let (base, item) = k.name.split_once('\0').unwrap_or((&k.name, ""));
                obj.insert("type".into(), Value::from(format!("{base}.delta")));
                obj.insert("item_id".into(), Value::from(item));
                for (name, n) in [("output_index", k.a), ("content_index", k.b), ("summary_index", k.c)] {
                    if n != NONE {
                        obj.insert(name.into(), num(n));
                    }
                }
            }
            obj.insert("delta".into(), Value::String(text));
        }
        Family::Anthropic => {
            let delta_type = match e.member {
                "partial_json" => "input_json_delta",
                "thinking" => "thinking_delta",
                _ => "text_delta",
            };
            obj.insert("type".into(), Value::from("content_block_delta"));
            obj.insert("index".into(), num(k.a));
            let mut delta = Map::new();
            delta.insert("type".into(), Value::from(delta_type));
            delta.insert(e.member.into(), Value::String(text));
            obj.insert("delta".into(), Value::Object(delta));
        }
        Family::Ollama => {
            keep(&mut obj, &["model", "created_at"]);
            let mut message = Map::new();
            message.insert("role".into(), Value::from("assistant"));
            match k.field {
                Field::MessageContent => {
                    message.insert("content".into(), Value::String(text));
                    obj.insert("message".into(), Value::Object(message));
                }
                Field::MessageThinking => {
                    message.insert("content".into(), Value::from(""));
                    message.insert("thinking".into(), Value::String(text));
                    obj.insert("message".into(), Value::Object(message));
                }
                Field::Thinking => {
                    obj.insert("response".into(), Value::from(""));
                    obj.insert("thinking".into(), Value::String(text));
                }
                _ => {
                    obj.insert("response".into(), Value::String(text));
                }
            }
            obj.insert("done".into(), Value::Bool(false));
        }
        Family::Plain => {}
    }
    Value::Object(obj)
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

//! One pass over a JSON message that notes where the members streaming APIs use for text
//! that continues across messages are, and the few members that say which text it is and
//! when it ends. Everything else is skipped (not validated: the message is validated by
//! [`MaskProfile::mask_json`](crate::mask::MaskProfile::mask_json) right after).
//!
//! The paths looked at (`*` = any array element):
//!
//! - OpenAI chat completions: `choices/*/{index, finish_reason, text}`,
//!   `choices/*/delta/{content, reasoning_content, reasoning, refusal}`,
//!   `choices/*/delta/tool_calls/*/{index, function/arguments}`
//! - OpenAI Responses: `type`, `delta`, `item_id`, `output_index`, `content_index`,
//!   `summary_index`
//! - Anthropic Messages: `type`, `index`, `delta/{type, text, partial_json, thinking}`,
//!   `content_block/{type, text}`
//! - Ollama: `model`, `created_at`, `done`, `response`, `thinking`,
//!   `message/{content, thinking}`
//!
//! When a member occurs twice in one object, the last one is kept, as JSON parsers do.

use std::borrow::Cow;

/// A JSON value's token: `start..end` of the message, quotes included for strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Val {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `escaped`: the string contains a backslash escape.
    Str {
        escaped: bool,
    },
    Number,
    Null,
    True,
    False,
    Object,
    Array,
}

impl Val {
    pub(super) fn is_str(&self) -> bool {
        matches!(self.kind, Kind::Str { .. })
    }

    /// The empty string `""`.
    pub(super) fn is_empty_str(&self) -> bool {
        self.is_str() && self.end == self.start + 2
    }
}

/// An element of `choices`.
#[derive(Debug, Default)]
pub(super) struct Choice {
    /// Position in the array.
    pub pos: usize,
    pub index: Option<Val>,
    pub finish_reason: Option<Val>,
    pub text: Option<Val>,
    pub content: Option<Val>,
    pub reasoning_content: Option<Val>,
    pub reasoning: Option<Val>,
    pub refusal: Option<Val>,
    pub tools: Vec<Tool>,
}

/// An element of `choices/*/delta/tool_calls`.
#[derive(Debug, Default)]
pub(super) struct Tool {
    pub pos: usize,
    pub index: Option<Val>,
    pub arguments: Option<Val>,
}

/// What one message says about streamed text. Reused from message to message.
#[derive(Debug, Default)]
pub(super) struct Message {
    pub object: bool,
    pub jsonrpc: bool,
    pub type_: Option<Val>,
    pub index: Option<Val>,
    pub item_id: Option<Val>,
    pub output_index: Option<Val>,
    pub content_index: Option<Val>,
    pub summary_index: Option<Val>,
    /// Top-level `delta` (a string in the Responses API, an object in Anthropic's).
    pub delta: Option<Val>,
    pub delta_type: Option<Val>,
    pub delta_text: Option<Val>,
    pub delta_partial_json: Option<Val>,
    pub delta_thinking: Option<Val>,
    pub block_type: Option<Val>,
    pub block_text: Option<Val>,
    pub model: Option<Val>,
    pub created_at: Option<Val>,
    pub done: Option<Val>,
    pub response: Option<Val>,
    pub thinking: Option<Val>,
    pub message_content: Option<Val>,
    pub message_thinking: Option<Val>,
    pub choices: Vec<Choice>,
}

impl Message {
    fn clear(&mut self) {
        let mut choices = std::mem::take(&mut self.choices);
        choices.clear();
        *self = Message { choices, ..Message::default() };
    }
}

/// Scans `src` into `m`. `None` if `src` is not shaped like JSON where it was looked at.
pub(super) fn scan(src: &[u8], m: &mut Message) -> Option<()> {
    m.clear();
    let mut p = Parser { b: src, i: 0 };
    if p.b.starts_with("\u{feff}".as_bytes()) {
        p.i = 3;
    }
    p.ws();
    if p.peek() == b'{' {
        m.object = true;
        p.top(m)?;
    } else {
        p.skip()?;
    }
    p.ws();
    (p.i == p.b.len()).then_some(())
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek() == c).then(|| self.i += 1)
    }

    /// A string token at the current position.
    fn string(&mut self) -> Option<Val> {
        let start = self.i;
        if self.peek() != b'"' {
            return None;
        }
        self.i += 1;
        let mut escaped = false;
        loop {
            match self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                _ => self.i += 1,
            }
        }
        self.i += 1;
        Some(Val { start, end: self.i, kind: Kind::Str { escaped } })
    }

    /// Skips any value, returning its token.
    fn skip(&mut self) -> Option<Val> {
        self.ws();
        let start = self.i;
        let kind = match self.peek() {
            b'"' => return self.string(),
            b'{' | b'[' => {
                let kind = if self.peek() == b'{' { Kind::Object } else { Kind::Array };
                let mut depth = 0usize;
                loop {
                    match self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                kind
            }
            b't' => self.literal(b"true", Kind::True)?,
            b'f' => self.literal(b"false", Kind::False)?,
            b'n' => self.literal(b"null", Kind::Null)?,
            b'-' | b'0'..=b'9' => {
                while matches!(self.peek(), b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    self.i += 1;
                }
                Kind::Number
            }
            _ => return None,
        };
        Some(Val { start, end: self.i, kind })
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<Kind> {
        let rest = self.b.get(self.i..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(kind)
    }

    /// Walks the members of the object at the current position, calling `f` with each
    /// decoded name; `f` must consume the member's value.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            let raw = self.b.get(key.start + 1..key.end - 1)?;
            // Names are compared as bytes; only an escaped one is decoded first.
            let decoded;
            let name = if key.kind == (Kind::Str { escaped: true }) {
                decoded = decode(self.b, &key)?;
                decoded.as_bytes()
            } else {
                raw
            };
            self.eat(b':')?;
            self.ws();
            f(self, name)?;
            self.ws();
            match self.peek() {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Walks the elements of the array at the current position; `f` gets the position.
    fn elements(&mut self, mut f: impl FnMut(&mut Self, usize) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek() == b']' {
            self.i += 1;
            return Some(());
        }
        let mut pos = 0;
        loop {
            self.ws();
            f(self, pos)?;
            pos += 1;
            self.ws();
            match self.peek() {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Calls `f` if the value here is an object, else skips it.
    fn object_or_skip(&mut self, f: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<Val> {
        let start = self.i;
        if self.peek() == b'{' {
            self.members(f)?;
            Some(Val { start, end: self.i, kind: Kind::Object })
        } else {
            self.skip()
        }
    }

    fn top(&mut self, m: &mut Message) -> Option<()> {
        self.members(|p, name| {
            let slot = match name {
                b"jsonrpc" => {
                    m.jsonrpc = true;
                    p.skip()?;
                    return Some(());
                }
                b"choices" => {
                    m.choices.clear();
                    if p.peek() == b'[' {
                        return p.elements(|p, pos| p.choice(m, pos));
                    }
                    p.skip()?;
                    return Some(());
                }
                b"delta" => {
                    m.delta_type = None;
                    m.delta_text = None;
                    m.delta_partial_json = None;
                    m.delta_thinking = None;
                    let v = p.object_or_skip(|p, name| {
                        let slot = match name {
                            b"type" => &mut m.delta_type,
                            b"text" => &mut m.delta_text,
                            b"partial_json" => &mut m.delta_partial_json,
                            b"thinking" => &mut m.delta_thinking,
                            _ => return p.skip().map(drop),
                        };
                        *slot = Some(p.skip()?);
                        Some(())
                    })?;
                    m.delta = Some(v);
                    return Some(());
                }
                b"content_block" => {
                    m.block_type = None;
                    m.block_text = None;
                    p.object_or_skip(|p, name| {
                        let slot = match name {
                            b"type" => &mut m.block_type,
                            b"text" => &mut m.block_text,
                            _ => return p.skip().map(drop),
                        };
                        *slot = Some(p.skip()?);
                        Some(())
                    })?;
                    return Some(());
                }
                b"message" => {
                    m.message_content = None;
                    m.message_thinking = None;
                    p.object_or_skip(|p, name| {
                        let slot = match name {
                            b"content" => &mut m.message_content,
                            b"thinking" => &mut m.message_thinking,
                            _ => return p.skip().map(drop),
                        };
                        *slot = Some(p.skip()?);
                        Some(())
                    })?;
                    return Some(());
                }
                b"type" => &mut m.type_,
                b"index" => &mut m.index,
                b"item_id" => &mut m.item_id,
                b"output_index" => &mut m.output_index,
                b"content_index" => &mut m.content_index,
                b"summary_index" => &mut m.summary_index,
                b"model" => &mut m.model,
                b"created_at" => &mut m.created_at,
                b"done" => &mut m.done,
                b"response" => &mut m.response,
                b"thinking" => &mut m.thinking,
                _ => return p.skip().map(drop),
            };
            *slot = Some(p.skip()?);
            Some(())
        })
    }

    fn choice(&mut self, m: &mut Message, pos: usize) -> Option<()> {
        if self.peek() != b'{' {
            return self.skip().map(drop);
        }
        let mut c = Choice { pos, ..Choice::default() };
        self.members(|p, name| {
            let slot = match name {
                b"index" => &mut c.index,
                b"finish_reason" => &mut c.finish_reason,
                b"text" => &mut c.text,
                b"delta" => {
                    c.content = None;
                    c.reasoning_content = None;
                    c.reasoning = None;
                    c.refusal = None;
                    c.tools.clear();
                    p.object_or_skip(|p, name| {
                        let slot = match name {
                            b"content" => &mut c.content,
                            b"reasoning_content" => &mut c.reasoning_content,
                            b"reasoning" => &mut c.reasoning,
                            b"refusal" => &mut c.refusal,
                            b"tool_calls" => {
                                c.tools.clear();
                                if p.peek() == b'[' {
                                    return p.elements(|p, pos| p.tool(&mut c.tools, pos));
                                }
                                return p.skip().map(drop);
                            }
                            _ => return p.skip().map(drop),
                        };
                        *slot = Some(p.skip()?);
                        Some(())
                    })?;
                    return Some(());
                }
                _ => return p.skip().map(drop),
            };
            *slot = Some(p.skip()?);
            Some(())
        })?;
        m.choices.push(c);
        Some(())
    }

    fn tool(&mut self, tools: &mut Vec<Tool>, pos: usize) -> Option<()> {
        if self.peek() != b'{' {
            return self.skip().map(drop);
        }
        let mut t = Tool { pos, ..Tool::default() };
        self.members(|p, name| match name {
            b"index" => {
                t.index = Some(p.skip()?);
                Some(())
            }
            b"function" => {
                t.arguments = None;
                p.object_or_skip(|p, name| {
                    if name == b"arguments" {
                        t.arguments = Some(p.skip()?);
                        Some(())
                    } else {
                        p.skip().map(drop)
                    }
                })?;
                Some(())
            }
            _ => p.skip().map(drop),
        })?;
        tools.push(t);
        Some(())
    }
}

/// A non-negative integer token's value.
pub(super) fn uint(src: &[u8], v: Option<&Val>) -> Option<u64> {
    let v = v?;
    if v.kind != Kind::Number {
        return None;
    }
    std::str::from_utf8(src.get(v.start..v.end)?).ok()?.parse().ok()
}

/// The text of a string token (escapes decoded; lone surrogates become U+FFFD, as the
/// masker decodes them). `None` if `v` is not a string or is malformed.
pub(super) fn decode<'s>(src: &'s [u8], v: &Val) -> Option<Cow<'s, str>> {
    let Kind::Str { escaped } = v.kind else { return None };
    let inner = std::str::from_utf8(src.get(v.start + 1..v.end.checked_sub(1)?)?).ok()?;
    if !escaped {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(&mut chars)?;
                if (0xd800..0xdc00).contains(&hi) {
                    // A high surrogate: a low one must follow, else it stands alone.
                    let rest = chars.as_str();
                    if let Some(lo) = rest.strip_prefix("\\u").and_then(|r| r.get(..4)).and_then(parse_hex4) {
                        if (0xdc00..0xe000).contains(&lo) {
                            chars = rest.get(6..)?.chars();
                            let cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                            continue;
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            _ => return None,
        }
    }
    Some(Cow::Owned(out))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let s = chars.as_str().get(..4)?;
    let v = parse_hex4(s)?;
    *chars = chars.as_str().get(4..)?.chars();
    Some(v)
}

fn parse_hex4(s: &str) -> Option<u32> {
    if s.len() != 4 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {

    /// Whether `v` is the string `s` (compared decoded).
    fn str_is(src: &[u8], v: Option<&Val>, s: &str) -> bool {
        v.and_then(|v| decode(src, v)).is_some_and(|d| d == s)
    }

    use super::*;

    fn text(src: &str, v: Option<Val>) -> String {
        decode(src.as_bytes(), &v.unwrap()).unwrap().into_owned()
    }

    #[test]
    fn finds_openai_chat_chunk_members() {
        let src = concat!(
            r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":1,"delta":{"role":"assistant","#,
            concat!(
                r#""content":"al\u0069ce","tool_calls":[{"index":2,"function":{"name":"f","arguments":"{\"a\":"}}]},"#,
                r#""finish_reason":null}]}"#
            )
        );
        let mut m = Message::default();
        scan(src.as_bytes(), &mut m).unwrap();
        assert_eq!(m.choices.len(), 1);
        let c = &m.choices[0];
        assert_eq!(uint(src.as_bytes(), c.index.as_ref()), Some(1));
        assert_eq!(text(src, c.content), "alice");
        assert_eq!(c.finish_reason.unwrap().kind, Kind::Null);
        assert_eq!(text(src, c.tools[0].arguments), "{\"a\":");
        assert_eq!(uint(src.as_bytes(), c.tools[0].index.as_ref()), Some(2));
    }

    #[test]
    fn finds_anthropic_and_responses_members() {
        let src = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
        let mut m = Message::default();
        scan(src.as_bytes(), &mut m).unwrap();
        assert!(str_is(src.as_bytes(), m.type_.as_ref(), "content_block_delta"));
        assert_eq!(text(src, m.delta_text), "hi");
        let src =
            r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"x"}"#;
        scan(src.as_bytes(), &mut m).unwrap();
        assert_eq!(text(src, m.delta), "x");
        assert!(m.delta_text.is_none());
    }

    #[test]
    fn last_duplicate_member_wins_and_garbage_is_refused() {
        let src = r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#;
        let mut m = Message::default();
        scan(src.as_bytes(), &mut m).unwrap();
        assert_eq!(text(src, m.choices[0].content), "b");
        for bad in [r#"{"a":}"#, r#"{"a" 1}"#, r#"{"a":"x"#, "[1,2", "{} x", r#"{"a":tru}"#] {
            assert!(scan(bad.as_bytes(), &mut m).is_none(), "{bad}");
        }
    }

    #[test]
    fn decodes_escapes_and_surrogates() {
        let src = r#""a\u00e9\ud83d\ude00\ud800x\n\/""#;
        let v = Val { start: 0, end: src.len(), kind: Kind::Str { escaped: true } };
        assert_eq!(decode(src.as_bytes(), &v).unwrap(), "aé😀\u{FFFD}x\n/");
        let mut out = Vec::new();
        crate::mask::write_escaped(&mut out, "a\"b\\c\u{1}\té");
        assert_eq!(String::from_utf8(out).unwrap(), r#"a\"b\\c\u0001\té"#);
    }
}

//! What identifies a text that continues across messages, where its delta sits in a
//! message, and which texts a message ends.

use super::super::scan::{Message, Val};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
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
pub(super) enum Field {
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
pub(super) struct Key {
    pub(super) family: Family,
    pub(super) field: Field,
    /// Choice index (chat), content block index (Anthropic), output index (Responses).
    pub(super) a: u64,
    /// Tool call index (chat), content index (Responses).
    pub(super) b: u64,
    /// Summary index (Responses).
    pub(super) c: u64,
    /// Responses: the event type without `.delta`, a NUL, and the item id.
    pub(super) name: String,
}

pub(super) const NONE: u64 = u64::MAX;

impl Key {
    pub(super) fn new(family: Family, field: Field, a: u64) -> Key {
        Key { family, field, a, b: NONE, c: NONE, name: String::new() }
    }
}

/// Where a delta string is in a message (looked up again in the masked output).
#[derive(Clone, Copy, Debug)]
pub(super) enum Loc {
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
    pub(super) fn find(self, m: &Message) -> Option<Val> {
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
pub(super) struct Slot {
    pub(super) key: Key,
    pub(super) loc: Loc,
    pub(super) val: Val,
    /// The decoded delta, as a range of `Texts::decoded`.
    pub(super) text: (usize, usize),
    /// The released (masked) text, as a range of `Texts::released`.
    pub(super) out: (usize, usize),
    /// Index of the text's entry (valid until entries are removed at the end).
    pub(super) entry: usize,
}

/// Which texts a message ends.
#[derive(Debug)]
pub(super) enum Close {
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
    pub(super) fn covers(&self, k: &Key) -> bool {
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

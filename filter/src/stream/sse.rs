//! Server-sent events, parsed as the WHATWG HTML standard ("9.2 Server-sent events")
//! says a client parses them, and written back masked.
//!
//! - Lines end with CRLF, LF or CR, and may be split across chunks at any byte (a CR at the
//!   end of a chunk may be the first half of a CRLF). One leading byte order mark is
//!   dropped.
//! - `data:` lines are joined with `\n`; `event:` and `id:` (ignored if it contains NUL)
//!   are kept, masked on their own; `retry:` is kept if it is digits only and masks to
//!   itself; other fields are dropped, as clients ignore them. One space after the colon
//!   is dropped. An event ends at a blank line; an event the stream
//!   ends in the middle of is discarded, as clients discard it.
//! - Comments (`:` lines) are masked on their own and written at once (keep-alives keep
//!   flowing).
//! - Bytes that are not UTF-8 become U+FFFD before masking, which is exactly what every
//!   client decodes them to (the standard mandates it), so what is masked is what the
//!   client would see.
//!
//! The data of an event is then, in order: `[DONE]` (every open text ends first), a JSON
//! object or array (see [`deltas`](super::deltas); MCP's Streamable HTTP messages are
//! masked one by one this way), or text, which continues from one event to the next as
//! one text (held back as in [`tail`](super::tail)). Data that looks like JSON (`{`, `[`)
//! but is not is refused when the profile masks by structure (`fields`, `pointers`, which
//! text masking cannot apply), else masked as text.
//!
//! Written events use `\n` line ends and `field: value` with one space.

use super::deltas::{mask_line, write_data_lines, Framing, Texts};
use super::{Cx, StreamError};

#[derive(Debug, Default)]
pub(super) struct Sse {
    /// The unfinished line carried over from earlier chunks.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting this one belongs to it.
    skip_lf: bool,
    /// The first line has been seen (the byte order mark is only looked for before).
    started: bool,
    /// The event being read.
    data: String,
    event: String,
    id: Option<String>,
    retry: Option<String>,
    texts: Texts,
    scratch: String,
    released: String,
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl Sse {
    pub(super) fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.event.len() + self.id.as_ref().map_or(0, String::len)
    }

    pub(super) fn held(&self) -> usize {
        self.texts.held()
    }

    fn check_buffered(&self, cx: &Cx<'_>) -> Result<(), StreamError> {
        if self.buffered() > cx.limits.max_buffered_bytes {
            return Err(StreamError::EventTooLarge { limit: cx.limits.max_buffered_bytes });
        }
        Ok(())
    }

    pub(super) fn push(&mut self, cx: &mut Cx<'_>, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.line.extend_from_slice(rest);
                break;
            };
            let (head, after) = rest.split_at(end);
            let mut next = after.get(1..).unwrap_or_default();
            if after.first() == Some(&b'\r') {
                match next.first() {
                    Some(b'\n') => next = next.get(1..).unwrap_or_default(),
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            // Every line is held to the limit, also one that came whole in this chunk, so
            // an event is refused or masked the same however the stream is cut.
            if self.line.is_empty() {
                self.check_line(cx, head)?;
                self.line_done(cx, head, out)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.check_line(cx, &line)?;
                let r = self.line_done(cx, &line, out);
                line.clear();
                self.line = line;
                r?;
            }
            rest = next;
        }
        self.check_buffered(cx)
    }

    fn check_line(&self, cx: &Cx<'_>, line: &[u8]) -> Result<(), StreamError> {
        if line.len() + self.buffered() > cx.limits.max_buffered_bytes {
            return Err(StreamError::EventTooLarge { limit: cx.limits.max_buffered_bytes });
        }
        Ok(())
    }

    /// End of stream: an unfinished event is discarded (as clients do); every open text
    /// ends.
    pub(super) fn finish(&mut self, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.line.clear();
        self.reset_event();
        self.texts.close_all(cx, Framing::Sse, out);
        Ok(())
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.event.clear();
        self.id = None;
        self.retry = None;
    }

    fn line_done(&mut self, cx: &mut Cx<'_>, line: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(cx, out);
        }
        // (`from_utf8` first: its ASCII fast path is much quicker than the lossy decoder.)
        let line = match std::str::from_utf8(line) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(line),
        };
        if let Some(comment) = line.strip_prefix(':') {
            self.scratch.clear();
            mask_line(cx, comment, &mut self.scratch);
            out.push(b':');
            out.extend_from_slice(self.scratch.as_bytes());
            out.push(b'\n');
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|c| c.is_ascii_digit()) => {
                self.retry = Some(value.to_string());
            }
            _ => {}
        }
        self.check_buffered(cx)
    }

    /// A blank line: the event is complete.
    fn dispatch(&mut self, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let result = self.dispatch_inner(cx, out);
        self.reset_event();
        result
    }

    fn dispatch_inner(&mut self, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        // The client strips the last `\n` of the joined data; no data means no event
        // (only `id` and `retry` take effect).
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let mut event = std::mem::take(&mut self.scratch);
        event.clear();
        mask_line(cx, &self.event, &mut event);
        let result = self.dispatch_data(cx, &event, out);
        self.scratch = event;
        result
    }

    fn dispatch_data(&mut self, cx: &mut Cx<'_>, event: &str, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let data = std::mem::take(&mut self.data);
        let result = self.dispatch_text(cx, event, &data, out);
        self.data = data;
        result
    }

    fn dispatch_text(
        &mut self,
        cx: &mut Cx<'_>,
        event: &str,
        data: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        let (id, retry) = (&self.id, &self.retry);
        if data.is_empty() {
            write_fields(cx, event, id, retry, out, true);
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            self.texts.close_all(cx, Framing::Sse, out);
            write_fields(cx, event, id, retry, out, false);
            write_data_lines(out, data);
            out.push(b'\n');
            return Ok(());
        }
        if data.trim_start().starts_with(['{', '[']) {
            // Made messages (ends of texts) are written to `out` before the message.
            if let Some(json) = self.texts.message(cx, data.as_bytes(), event, Framing::Sse, out)? {
                write_fields(cx, event, id, retry, out, false);
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
                return Ok(());
            }
            if cx.profile.masks_by_structure() {
                return Err(StreamError::InvalidJson);
            }
        }
        let released = &mut self.released;
        released.clear();
        self.texts.plain(cx, data, event, released)?;
        if released.is_empty() {
            // Everything is held back: only `id`/`retry` go out now.
            write_fields(cx, event, id, retry, out, true);
            return Ok(());
        }
        write_fields(cx, event, id, retry, out, false);
        write_data_lines(out, released);
        out.push(b'\n');
        Ok(())
    }
}

/// Writes `event`, `id` and `retry` of the current event; `alone`: the event has no data
/// to write, so the fields make an event of their own (written only if `id` or `retry` is
/// set).
fn write_fields(
    cx: &mut Cx<'_>,
    event: &str,
    id: &Option<String>,
    retry: &Option<String>,
    out: &mut Vec<u8>,
    alone: bool,
) {
    if alone && id.is_none() && retry.is_none() {
        return;
    }
    if !alone && !event.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        let mut masked = String::new();
        mask_line(cx, id, &mut masked);
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(masked.as_bytes());
        out.push(b'\n');
    }
    if let Some(retry) = retry {
        // Digits only, but a 16-digit card is digits too: dropped if anything is masked.
        let mut masked = String::new();
        mask_line(cx, retry, &mut masked);
        if masked == *retry {
            out.extend_from_slice(b"retry: ");
            out.extend_from_slice(retry.as_bytes());
            out.push(b'\n');
        }
    }
    if alone {
        out.push(b'\n');
    }
}

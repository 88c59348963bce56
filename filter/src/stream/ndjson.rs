//! Newline-delimited JSON (`application/x-ndjson`, `application/jsonl`): each line is a
//! JSON value, masked structure-aware on its own as soon as its line is complete (a line
//! split across chunks is put back together first). A `\r` before the `\n` is dropped;
//! blank lines are kept.
//!
//! Streamed LLM answers in NDJSON (Ollama's `/api/chat` and `/api/generate`) carry text
//! that continues from line to line; it is joined and held back like SSE deltas (see
//! [`deltas`](super::deltas)).
//!
//! A line that is not JSON ends the stream with an error (fail closed) rather than being
//! masked as text: a client parses it as JSON, and text masking does not see JSON escapes
//! (`alice\u0040example.com`). Likewise a line that is not UTF-8.

use super::deltas::{Framing, Texts};
use super::{Cx, StreamError};

#[derive(Debug, Default)]
pub(super) struct Ndjson {
    /// The unfinished line carried over from earlier chunks.
    line: Vec<u8>,
    texts: Texts,
}

impl Ndjson {
    pub(super) fn buffered(&self) -> usize {
        self.line.len()
    }

    pub(super) fn held(&self) -> usize {
        self.texts.held()
    }

    pub(super) fn push(&mut self, cx: &mut Cx<'_>, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&c| c == b'\n') {
            let (head, after) = rest.split_at(end);
            // A line that came whole in this chunk is held to the limit too, so a line is
            // refused or masked the same however the stream is cut.
            if self.line.is_empty() {
                self.check(cx, head.len())?;
                self.line_done(cx, head, out)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                let r = self.check(cx, line.len()).and_then(|()| self.line_done(cx, &line, out));
                line.clear();
                self.line = line;
                r?;
            }
            out.push(b'\n');
            rest = after.get(1..).unwrap_or_default();
        }
        self.line.extend_from_slice(rest);
        self.check(cx, self.line.len())
    }

    fn check(&self, cx: &Cx<'_>, len: usize) -> Result<(), StreamError> {
        if len > cx.limits.max_buffered_bytes {
            return Err(StreamError::EventTooLarge { limit: cx.limits.max_buffered_bytes });
        }
        Ok(())
    }

    /// End of stream: a last line without a line feed is masked (and given one); every
    /// open text ends.
    pub(super) fn finish(&mut self, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(cx, &line, out)?;
            out.push(b'\n');
        }
        self.texts.close_all(cx, Framing::Ndjson, out);
        Ok(())
    }

    /// Writes the masked line (without its line feed).
    fn line_done(&mut self, cx: &mut Cx<'_>, line: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r')) {
            return Ok(());
        }
        match self.texts.message(cx, line, "", Framing::Ndjson, out)? {
            Some(json) => {
                out.extend_from_slice(json);
                Ok(())
            }
            None => Err(StreamError::InvalidJson),
        }
    }
}

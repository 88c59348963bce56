//! A streamed text body (`text/plain`, chunked text of any kind): one text, held back and
//! released as in [`tail`](super::tail). A UTF-8 character split across chunks is put
//! back together; bytes that are not UTF-8 end the stream with an error (fail closed), as
//! a buffered text body that is not UTF-8 is refused.

use super::tail::Tail;
use super::{Cx, StreamError};
use crate::mask::MaskError;

#[derive(Debug, Default)]
pub(super) struct Text {
    /// The first bytes of a character whose last bytes have not arrived (at most 3).
    carry: Vec<u8>,
    tail: Tail,
    scratch: String,
}

impl Text {
    pub(super) fn buffered(&self) -> usize {
        self.carry.len()
    }

    pub(super) fn held(&self) -> usize {
        self.tail.len()
    }

    pub(super) fn push(&mut self, cx: &mut Cx<'_>, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let joined;
        let bytes = if self.carry.is_empty() {
            chunk
        } else {
            let mut b = std::mem::take(&mut self.carry);
            b.extend_from_slice(chunk);
            joined = b;
            joined.as_slice()
        };
        let valid = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) if e.error_len().is_none() => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                self.carry.extend_from_slice(rest);
                std::str::from_utf8(good).map_err(|_| StreamError::NotMaskable(MaskError::InvalidUtf8))?
            }
            Err(_) => return Err(StreamError::NotMaskable(MaskError::InvalidUtf8)),
        };
        self.tail.push(valid);
        self.scratch.clear();
        self.tail.release(cx.profile, cx.rule, cx.counts, &mut self.scratch);
        out.extend_from_slice(self.scratch.as_bytes());
        if self.tail.len() > cx.limits.max_held_bytes {
            return Err(StreamError::HeldTooLarge { limit: cx.limits.max_held_bytes });
        }
        Ok(())
    }

    pub(super) fn finish(&mut self, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if !self.carry.is_empty() {
            return Err(StreamError::NotMaskable(MaskError::InvalidUtf8));
        }
        self.scratch.clear();
        self.tail.flush(cx.profile, cx.counts, &mut self.scratch);
        out.extend_from_slice(self.scratch.as_bytes());
        Ok(())
    }
}

//! Body buffering, one type for both directions.
//!
//! Envoy keeps the bytes; the filter keeps count. Once buffering, each body callback
//! reports the total buffered so far, and the body is complete at end-of-stream — or at
//! the trailers callback, since with trailers (HTTP/2, gRPC) no body callback says so.

/// How far a body has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More is coming: keep buffering.
    Partial,
    /// All of it is buffered: this many bytes.
    Complete(usize),
    /// More than the limit: it cannot be inspected, so it must not pass.
    OverLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyBuffer {
    limit: usize,
    len: usize,
}

impl BodyBuffer {
    pub fn new(limit: usize) -> BodyBuffer {
        BodyBuffer { limit, len: 0 }
    }

    /// A body callback: `buffered` bytes so far.
    pub fn on_data(&mut self, buffered: usize, end_of_stream: bool) -> Progress {
        self.len = buffered;
        match (buffered > self.limit, end_of_stream) {
            (true, _) => Progress::OverLimit,
            (false, true) => Progress::Complete(buffered),
            (false, false) => Progress::Partial,
        }
    }

    /// The trailers callback: whatever is buffered is the whole body.
    pub fn on_trailers(&self) -> Progress {
        if self.len > self.limit {
            Progress::OverLimit
        } else {
            Progress::Complete(self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_complete_at_end_of_stream_or_at_the_trailers() {
        let mut body = BodyBuffer::new(10);
        assert_eq!(body.on_data(4, false), Progress::Partial);
        assert_eq!(body.on_data(8, true), Progress::Complete(8));
        let mut body = BodyBuffer::new(10);
        assert_eq!(body.on_data(6, false), Progress::Partial);
        assert_eq!(body.on_trailers(), Progress::Complete(6));
    }

    #[test]
    fn a_body_over_the_limit_is_reported_as_soon_as_it_is_seen() {
        let mut body = BodyBuffer::new(10);
        assert_eq!(body.on_data(11, false), Progress::OverLimit);
        assert_eq!(body.on_trailers(), Progress::OverLimit);
        assert_eq!(BodyBuffer::new(10).on_data(10, true), Progress::Complete(10));
    }
}

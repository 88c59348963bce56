//! Audit records: one per request, queued in the VM and shipped in batches by the root
//! context's timer to the control service, which chains them by hash.
//!
//! Nothing is lost silently: the queue is bounded, a drop is counted and logged, a failed
//! delivery keeps the batch and retries with backoff, and strict mode refuses new
//! requests while records cannot be delivered. Ingestion is idempotent by record id, so
//! a batch retried after a lost answer is not stored twice.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::config_error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSpec {
    enabled: bool,
    session_header: String,
    batch_size: usize,
    flush_interval_ms: u64,
    max_queued_records: usize,
    max_body_bytes: usize,
    strict: bool,
    shutdown_flush_ms: u64,
}

impl Default for AuditSpec {
    fn default() -> Self {
        AuditSpec {
            enabled: true,
            session_header: "x-airlock-session".into(),
            batch_size: 200,
            flush_interval_ms: 1000,
            max_queued_records: 10_000,
            max_body_bytes: 4096,
            strict: false,
            shutdown_flush_ms: 5000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub session_header: String,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub max_queued_records: usize,
    pub max_body_bytes: usize,
    pub strict: bool,
    /// How long the VM may hold up Envoy when it lets the VM go, to ship what is queued.
    pub shutdown_flush_ms: u64,
}

/// `None` when auditing is switched off.
pub fn compile(spec: AuditSpec, field: &str) -> Result<Option<AuditConfig>, ConfigError> {
    if !spec.enabled {
        return Ok(None);
    }
    let check = |ok: bool, sub: &str, problem: &str| {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::new(format!("{field}.{sub}"), problem))
        }
    };
    check((1..=5000).contains(&spec.batch_size), "batch_size", "must be between 1 and 5000")?;
    check((100..=60_000).contains(&spec.flush_interval_ms), "flush_interval_ms", "must be between 100 and 60000")?;
    check((1..=1_000_000).contains(&spec.max_queued_records), "max_queued_records", "must be between 1 and 1000000")?;
    check(spec.max_body_bytes <= 1 << 20, "max_body_bytes", "must be at most 1048576")?;
    check(spec.shutdown_flush_ms <= 60_000, "shutdown_flush_ms", "must be at most 60000")?;
    let header = spec.session_header.to_ascii_lowercase();
    check(
        !header.is_empty() && header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "session_header",
        "not a valid header name",
    )?;
    Ok(Some(AuditConfig {
        session_header: header,
        batch_size: spec.batch_size,
        flush_interval_ms: spec.flush_interval_ms,
        max_queued_records: spec.max_queued_records,
        max_body_bytes: spec.max_body_bytes,
        strict: spec.strict,
        shutdown_flush_ms: spec.shutdown_flush_ms,
    }))
}

/// Session ids longer than this are cut: the service indexes and lists them.
pub const MAX_SESSION_ID_BYTES: usize = 200;

/// Cuts text to at most `max` bytes on a character boundary.
pub fn excerpt(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The first `max` bytes (bodies are shown lossily as text after masking).
pub fn excerpt_bytes(bytes: &[u8], max: usize) -> &[u8] {
    bytes.get(..max.min(bytes.len())).unwrap_or_default()
}

/// Backoff after failed deliveries: 1 s doubling to 4 s. Short on purpose: records queue
/// while the service is down, and every second of backoff after it is back fills the
/// queue further (the soak measured 30 s of it as the risk of dropping records); a
/// delivery attempt every 4 s per worker is nothing to a service starting up.
const FIRST_BACKOFF_MS: u64 = 1000;
const MAX_BACKOFF_MS: u64 = 4_000;

/// Serialized records waiting for delivery, oldest first. The first `in_flight` are the
/// batch currently being shipped; they leave the queue only when the service acks them.
#[derive(Default)]
pub struct AuditQueue {
    records: VecDeque<String>,
    in_flight: usize,
    retry_at_ms: u64,
    backoff_ms: u64,
    failing: bool,
}

impl AuditQueue {
    /// `false` when the queue is full and the record was dropped (the caller counts it).
    pub fn push(&mut self, record: String, max: usize) -> bool {
        if self.records.len() >= max {
            return false;
        }
        self.records.push_back(record);
        true
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The last delivery failed and records are waiting: strict mode refuses traffic.
    pub fn is_failing(&self) -> bool {
        self.failing && !self.records.is_empty()
    }

    /// The next batch to ship, if one is due and none is in flight.
    pub fn next_batch(&mut self, now_ms: u64, batch_size: usize) -> Option<(String, usize)> {
        if self.in_flight > 0 || self.records.is_empty() || now_ms < self.retry_at_ms {
            return None;
        }
        let n = self.records.len().min(batch_size);
        let mut body = String::with_capacity(16 + self.records.iter().take(n).map(|r| r.len() + 1).sum::<usize>());
        body.push_str("{\"records\":[");
        for (i, r) in self.records.iter().take(n).enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(r);
        }
        body.push_str("]}");
        self.in_flight = n;
        Some((body, n))
    }

    pub fn delivered(&mut self) {
        self.records.drain(..self.in_flight.min(self.records.len()));
        self.in_flight = 0;
        self.failing = false;
        self.backoff_ms = 0;
        self.retry_at_ms = 0;
    }

    /// Lifts the backoff: the last chance to deliver is not the time to wait.
    pub fn retry_now(&mut self) {
        self.retry_at_ms = 0;
    }

    /// Empties the queue (the batch in flight too: its answer will find nobody) and says
    /// how many records went.
    pub fn abandon(&mut self) -> usize {
        let n = self.records.len();
        self.records.clear();
        self.in_flight = 0;
        n
    }

    pub fn failed(&mut self, now_ms: u64) {
        self.in_flight = 0;
        self.failing = true;
        self.backoff_ms =
            if self.backoff_ms == 0 { FIRST_BACKOFF_MS } else { (self.backoff_ms * 2).min(MAX_BACKOFF_MS) };
        self.retry_at_ms = now_ms + self.backoff_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_leaves_the_queue_only_when_delivered() {
        let mut q = AuditQueue::default();
        for i in 0..3 {
            assert!(q.push(format!("{{\"n\":{i}}}"), 10));
        }
        let (body, n) = q.next_batch(0, 2).unwrap();
        assert_eq!(n, 2);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["records"][1]["n"], 1);
        assert!(q.next_batch(0, 2).is_none(), "one batch in flight at a time");
        q.failed(0);
        assert!(q.is_failing());
        assert_eq!(q.len(), 3, "a failed batch is kept");
        assert!(q.next_batch(500, 2).is_none(), "backoff");
        let (body, _) = q.next_batch(1000, 2).unwrap();
        assert!(body.contains("\"n\":0"), "the same records are retried");
        q.delivered();
        assert_eq!(q.len(), 1);
        assert!(!q.is_failing());
    }

    #[test]
    fn full_queue_refuses_instead_of_growing() {
        let mut q = AuditQueue::default();
        assert!(q.push("{}".into(), 1));
        assert!(!q.push("{}".into(), 1));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_four_seconds() {
        let mut q = AuditQueue::default();
        q.push("{}".into(), 10);
        let mut waits = Vec::new();
        for _ in 0..7 {
            q.next_batch(u64::MAX / 2, 1);
            q.failed(0);
            waits.push(q.retry_at_ms);
        }
        assert_eq!(waits, vec![1000, 2000, 4000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn excerpt_cuts_on_a_character_boundary() {
        assert_eq!(excerpt("héllo", 2), "h");
        assert_eq!(excerpt("abc", 10), "abc");
    }

    #[test]
    fn audit_settings_are_validated_with_field_names() {
        let spec: AuditSpec = serde_json::from_value(serde_json::json!({"batch_size": 0})).unwrap();
        assert_eq!(compile(spec, "audit").unwrap_err().field, "audit.batch_size");
        let slow: AuditSpec = serde_json::from_value(serde_json::json!({"shutdown_flush_ms": 60_001})).unwrap();
        let e = compile(slow, "audit").unwrap_err();
        assert_eq!((e.field.as_str(), e.to_string().contains("at most 60000")), ("audit.shutdown_flush_ms", true));
        let off: AuditSpec = serde_json::from_value(serde_json::json!({"enabled": false})).unwrap();
        assert!(compile(off, "audit").unwrap().is_none());
    }
}

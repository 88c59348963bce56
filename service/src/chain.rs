//! The audit hash chain. Each stored record carries `hash = sha256(prev_hash || canonical
//! JSON of the record)`, where the canonical JSON includes the record's sequence number.
//! Changing a field breaks that record's hash; deleting or reordering records breaks the
//! link from one record's `prev_hash` to its predecessor's `hash`; truncating the tail is
//! caught by comparing the last hash with the separately stored chain head.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record: 64 zeros, so every link has the same shape.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record as the filter sends it and as the store keeps it: the wire type, whose
/// field order is the canonical order. serde_json writes struct fields in declaration
/// order, and strings with one fixed escaping, so the same values always give the same
/// bytes.
pub type AuditRecord = airlock_wire::AuditRecord<'static>;

/// The hashed form: the record plus its position, so moving a record changes its hash.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    record: &'a AuditRecord,
}

/// The chain hash of `record` stored at `seq` after a record whose hash is `prev_hash`.
pub fn record_hash(prev_hash: &str, seq: i64, record: &AuditRecord) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    // Serializing plain strings and integers into a Vec cannot fail; should serde ever
    // report an error, hashing the empty document still yields a hash that verification
    // will flag rather than a panic.
    let json = serde_json::to_vec(&Canonical { seq, record }).unwrap_or_default();
    hasher.update(&json);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_wire::{Code, Decision};

    fn sample() -> AuditRecord {
        AuditRecord {
            id: "r1".into(),
            time_ms: 1_700_000_000_000,
            subject: "agent-7".into(),
            groups: vec!["ci".to_string()].into(),
            session_id: "s1".into(),
            method: "POST".into(),
            path: "/sql".into(),
            request_body: Some("SELECT 1".into()),
            status: 200,
            response_body: Some("{\"ok\":true}".into()),
            decision: Decision::Allow,
            rule: Some("reads".into()),
            approval_id: None,
            latency_ms: 12,
            reason: None,
            credential: None,
        }
    }

    #[test]
    fn same_record_same_position_gives_same_hash() {
        assert_eq!(record_hash(GENESIS_HASH, 1, &sample()), record_hash(GENESIS_HASH, 1, &sample()));
    }

    #[test]
    fn changing_any_field_changes_the_hash() {
        let base = record_hash(GENESIS_HASH, 1, &sample());
        let mut r = sample();
        r.response_body = Some("{\"ok\":false}".into());
        assert_ne!(record_hash(GENESIS_HASH, 1, &r), base);
        let mut r = sample();
        r.groups.to_mut().push("admin".into());
        assert_ne!(record_hash(GENESIS_HASH, 1, &r), base);
    }

    #[test]
    fn moving_a_record_or_changing_its_predecessor_changes_the_hash() {
        let base = record_hash(GENESIS_HASH, 1, &sample());
        assert_ne!(record_hash(GENESIS_HASH, 2, &sample()), base);
        assert_ne!(record_hash(&base, 1, &sample()), base);
    }

    /// Pins the canonical form: chains stored by earlier versions must keep verifying, so
    /// field order, number and string encoding of a record may never change.
    #[test]
    fn a_known_record_has_a_known_hash() {
        let mut r = sample();
        r.status = 403;
        r.response_body = Some("{\"ok\":false}".into());
        r.decision = Decision::Refused(Code::DeniedByRule);
        r.rule = Some("no-deletes".into());
        r.reason = Some("clean up é".into());
        assert_eq!(
            record_hash(GENESIS_HASH, 7, &r),
            "51268a0121a858be6be886bb58f6ab83def5b279331be906fcf03510e433fb13"
        );
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        let h = record_hash(GENESIS_HASH, 1, &sample());
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}

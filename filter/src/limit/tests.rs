//! The counter against the mock host's shared data, which follows Envoy's CAS rules.

use super::*;
use crate::host::mock::{MockHost, SharedData};
use crate::host::{Callout, Level};
use crate::stats::MetricId;

const T0: u64 = 1_700_000_040_000; // a multiple of 60 s: the start of a minute window

fn limit(requests: u32, per_seconds: u64, by: By) -> Limit {
    Limit { requests, per_seconds, by }
}

fn who(subject: &str, groups: &[&str]) -> Identity {
    Identity::new(subject.to_string(), groups.iter().map(|g| g.to_string()).collect(), 0)
}

fn subject_hash(subject: &str) -> [u8; 32] {
    identity_hash(By::Subject, &who(subject, &[]), "")
}

fn count_at(host: &mut dyn Runtime, counter: &Counter, subject: &str, now_ms: u64) -> Outcome {
    counter.count(host, &subject_hash(subject), now_ms)
}

#[test]
fn allows_the_limit_then_refuses_until_the_window_ends() {
    let mut host = MockHost::default();
    let l = limit(3, 60, By::Subject);
    let counter = Counter::new("reads", &l);
    for i in 0..3 {
        assert_eq!(count_at(&mut host, &counter, "alice", T0 + i * 1000), Outcome::Counted, "request {i}");
    }
    // 10.5 s into the minute: 49.5 s remain, rounded up.
    assert_eq!(count_at(&mut host, &counter, "alice", T0 + 10_500), Outcome::Limited { retry_after_secs: 50 });
    assert_eq!(count_at(&mut host, &counter, "alice", T0 + 59_999), Outcome::Limited { retry_after_secs: 1 });
}

#[test]
fn a_new_window_starts_the_count_again_in_the_same_key() {
    let mut host = MockHost::default();
    let l = limit(1, 60, By::Subject);
    let counter = Counter::new("reads", &l);
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    assert!(matches!(count_at(&mut host, &counter, "alice", T0 + 30_000), Outcome::Limited { .. }));
    assert_eq!(count_at(&mut host, &counter, "alice", T0 + 60_000), Outcome::Counted);
    assert!(matches!(count_at(&mut host, &counter, "alice", T0 + 61_000), Outcome::Limited { .. }));
    // Many windows later, still one key: old windows are overwritten, not kept.
    for w in 2..50 {
        assert_eq!(count_at(&mut host, &counter, "alice", T0 + w * 60_000), Outcome::Counted);
    }
    assert_eq!(host.shared.borrow().len(), 1);
}

#[test]
fn refused_requests_do_not_extend_the_wait() {
    let mut host = MockHost::default();
    let l = limit(1, 10, By::Subject);
    let counter = Counter::new("reads", &l);
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    for i in 1..100 {
        assert!(matches!(count_at(&mut host, &counter, "alice", T0 + i * 10), Outcome::Limited { .. }));
    }
    assert_eq!(count_at(&mut host, &counter, "alice", T0 + 10_000), Outcome::Counted);
}

#[test]
fn each_identity_and_each_rule_has_its_own_count() {
    let mut host = MockHost::default();
    let l = limit(1, 60, By::Subject);
    let reads = Counter::new("reads", &l);
    let writes = Counter::new("writes", &l);
    assert_eq!(count_at(&mut host, &reads, "alice", T0), Outcome::Counted);
    assert!(matches!(count_at(&mut host, &reads, "alice", T0), Outcome::Limited { .. }));
    assert_eq!(count_at(&mut host, &reads, "bob", T0), Outcome::Counted);
    assert_eq!(count_at(&mut host, &writes, "alice", T0), Outcome::Counted);
}

#[test]
fn shared_data_keys_name_the_rule_never_the_identity() {
    let mut host = MockHost::default();
    let l = limit(5, 60, By::Subject);
    assert_eq!(count_at(&mut host, &Counter::new("reads", &l), "alice@example.com", T0), Outcome::Counted);
    let shared = host.shared.borrow();
    let (key, (value, _)) = shared.iter().next().unwrap();
    assert!(key.starts_with("airlock.limit.reads."), "{key}");
    assert!(!key.contains("alice") && !String::from_utf8_lossy(value).contains("alice"), "{key}");
}

#[test]
fn two_workers_sharing_the_data_count_together() {
    let shared = SharedData::default();
    let mut one = MockHost { shared: shared.clone(), ..MockHost::default() };
    let mut two = MockHost { shared, ..MockHost::default() };
    let l = limit(4, 60, By::Subject);
    let counter = Counter::new("reads", &l);
    for i in 0..2 {
        assert_eq!(count_at(&mut one, &counter, "alice", T0 + i), Outcome::Counted);
        assert_eq!(count_at(&mut two, &counter, "alice", T0 + i), Outcome::Counted);
    }
    assert!(matches!(count_at(&mut one, &counter, "alice", T0 + 5), Outcome::Limited { .. }));
    assert!(matches!(count_at(&mut two, &counter, "alice", T0 + 5), Outcome::Limited { .. }));
}

#[test]
fn a_worker_whose_clock_is_behind_counts_into_the_newer_window() {
    let shared = SharedData::default();
    let mut ahead = MockHost { shared: shared.clone(), ..MockHost::default() };
    let mut behind = MockHost { shared, ..MockHost::default() };
    let l = limit(2, 60, By::Subject);
    let counter = Counter::new("reads", &l);
    assert_eq!(count_at(&mut ahead, &counter, "alice", T0 + 60_001), Outcome::Counted);
    // 2 ms behind, still in the old window: the newer count is not reset, it is added to.
    assert_eq!(count_at(&mut behind, &counter, "alice", T0 + 59_999), Outcome::Counted);
    assert_eq!(
        count_at(&mut behind, &counter, "alice", T0 + 59_999),
        Outcome::Limited { retry_after_secs: 61 },
        "the wait is until the end of the newer window"
    );
}

/// A runtime whose shared data another worker writes to right before each of our writes
/// (`races` times), or that refuses writes.
struct Racing {
    host: MockHost,
    races: u32,
    refuse: bool,
}

impl Runtime for Racing {
    fn now_unix_ms(&self) -> u64 {
        self.host.now_unix_ms()
    }
    fn dispatch(&mut self, call: &Callout) -> Result<u32, String> {
        self.host.dispatch(call)
    }
    fn increment(&mut self, metric: MetricId, by: u64) {
        self.host.increment(metric, by);
    }
    fn log_enabled(&self, level: Level) -> bool {
        self.host.log_enabled(level)
    }
    fn log(&mut self, level: Level, message: &str) {
        self.host.log(level, message);
    }
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.host.shared_get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], version: Option<u32>) -> Result<bool, String> {
        if self.refuse {
            return Err("host refused to store shared data (status 9)".into());
        }
        if self.races > 0 {
            self.races -= 1;
            // The other worker counts its own request for the same identity.
            let (theirs, their_version) = self.host.shared_get(key).unwrap();
            let mut entry = Entry::parse(&theirs).unwrap();
            entry.count += 1;
            assert!(self.host.shared_set(key, &entry.bytes(), Some(their_version)).unwrap());
        }
        self.host.shared_set(key, value, version)
    }
}

#[test]
fn a_lost_race_is_retried_and_both_requests_are_counted() {
    let mut host = Racing { host: MockHost::default(), races: 0, refuse: false };
    let l = limit(4, 60, By::Subject);
    let counter = Counter::new("reads", &l);
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    host.races = 2;
    // Ours is the 2nd request; two racing writes from the other worker make it the 4th.
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    let value = host.host.shared.borrow().values().next().unwrap().0.clone();
    assert_eq!(Entry::parse(&value).unwrap().count, 4);
    // At the limit of 4 already: the next is refused.
    assert!(matches!(count_at(&mut host, &counter, "alice", T0), Outcome::Limited { .. }));
}

#[test]
fn a_count_that_keeps_changing_is_refused_not_let_through() {
    let mut host = Racing { host: MockHost::default(), races: 0, refuse: false };
    let l = limit(1000, 60, By::Subject);
    let counter = Counter::new("reads", &l);
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    host.races = MAX_ATTEMPTS;
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Uncounted(Failure::Contended));
    assert_eq!(host.races, 0, "it tried {MAX_ATTEMPTS} times");
}

#[test]
fn shared_data_that_refuses_writes_refuses_the_request() {
    let mut host = Racing { host: MockHost::default(), races: 0, refuse: true };
    let l = limit(10, 60, By::Subject);
    let outcome = count_at(&mut host, &Counter::new("reads", &l), "alice", T0);
    assert!(matches!(&outcome, Outcome::Uncounted(Failure::Host(p)) if p.contains("status 9")), "{outcome:?}");
}

#[test]
fn a_full_table_refuses_new_identities_until_their_window_ends() {
    let mut host = MockHost::default();
    let l = limit(10, 60, By::Subject);
    let counter = Counter { rule: "reads", limit: &l, slots: 2 };
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    assert_eq!(count_at(&mut host, &counter, "bob", T0), Outcome::Counted);
    assert_eq!(count_at(&mut host, &counter, "carol", T0), Outcome::Uncounted(Failure::TableFull));
    // The ones holding slots go on; next window the slots are free for anyone.
    assert_eq!(count_at(&mut host, &counter, "alice", T0 + 1), Outcome::Counted);
    assert_eq!(count_at(&mut host, &counter, "carol", T0 + 60_000), Outcome::Counted);
    assert_eq!(host.shared.borrow().len(), 2, "never more keys than slots");
}

#[test]
fn an_unreadable_slot_value_is_taken_over() {
    let mut host = MockHost::default();
    let l = limit(1, 60, By::Subject);
    let counter = Counter { rule: "reads", limit: &l, slots: 1 };
    host.shared_set("airlock.limit.reads.0", b"written by another build", None).unwrap();
    assert_eq!(count_at(&mut host, &counter, "alice", T0), Outcome::Counted);
    assert!(matches!(count_at(&mut host, &counter, "alice", T0), Outcome::Limited { .. }));
}

#[test]
fn groups_count_as_one_set_whatever_their_order() {
    let a = identity_hash(By::Group, &who("alice", &["ops", "dba"]), "");
    let b = identity_hash(By::Group, &who("bob", &["dba", "ops", "dba"]), "");
    let c = identity_hash(By::Group, &who("carol", &["dba"]), "");
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Length-prefixed: ["ab", "c"] is not ["a", "bc"].
    assert_ne!(
        identity_hash(By::Group, &who("x", &["ab", "c"]), ""),
        identity_hash(By::Group, &who("x", &["a", "bc"]), "")
    );
    // Callers without groups share one count, distinct from every subject's.
    assert_eq!(identity_hash(By::Group, &who("x", &[]), ""), identity_hash(By::Group, &who("y", &[]), ""));
    assert_ne!(identity_hash(By::Group, &who("", &[]), ""), identity_hash(By::Subject, &who("", &[]), ""));
}

#[test]
fn sessions_count_apart_from_subjects() {
    let alice = who("alice", &[]);
    assert_eq!(identity_hash(By::Session, &alice, "s-1"), identity_hash(By::Session, &who("bob", &[]), "s-1"));
    assert_ne!(identity_hash(By::Session, &alice, "s-1"), identity_hash(By::Session, &alice, "s-2"));
    assert_ne!(identity_hash(By::Session, &alice, "alice"), identity_hash(By::Subject, &alice, ""));
}

#[test]
fn limits_out_of_range_name_their_field() {
    let spec = |requests, per_seconds| LimitSpec { requests, per_seconds, by: By::Subject };
    let err = Limit::compile(spec(0, 60), "rules[3].limit").unwrap_err();
    assert_eq!(err.field, "rules[3].limit.requests");
    let err = Limit::compile(spec(u64::from(MAX_REQUESTS) + 1, 60), "rules[3].limit").unwrap_err();
    assert_eq!(err.field, "rules[3].limit.requests");
    let err = Limit::compile(spec(5, 0), "rules[3].limit").unwrap_err();
    assert_eq!(err.field, "rules[3].limit.per_seconds");
    let err = Limit::compile(spec(5, MAX_PER_SECONDS + 1), "rules[3].limit").unwrap_err();
    assert_eq!(err.field, "rules[3].limit.per_seconds");
    assert_eq!(Limit::compile(spec(5, 1), "x").unwrap(), limit(5, 1, By::Subject));
}

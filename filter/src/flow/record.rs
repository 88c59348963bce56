//! What became of a request — kept as the flow goes, written once at the end as one log
//! line and one audit record. Neither holds the query string in clear, headers, or
//! unmasked bodies.

use std::borrow::Cow;
use std::rc::Rc;

use airlock_wire::{AuditRecord, Decision};

use super::request::Request;
use crate::audit;
use crate::config::Config;
use crate::host::{Host, Level};
use crate::identity::Identity;
use crate::mask::MaskProfile;
use crate::vm_state::VmState;

#[derive(Default)]
pub struct Record {
    /// Known once the token is verified.
    pub identity: Option<Rc<Identity>>,
    /// The deciding rule (index); `None` for the default action or before a decision.
    pub rule: Option<usize>,
    /// `None` until decided: the record then says `incomplete`.
    pub decision: Option<Decision>,
    pub approval_id: Option<String>,
    /// The status the client got (0 when none was seen).
    pub status: u32,
    pub masked_values: u64,
    /// The answer as the audit record keeps it: the masked response, or the filter's own
    /// refusal (which says why, and never quotes a secret).
    pub masked_response: Option<String>,
    /// A dry-run rule matched: the log line says so even when the request was allowed.
    pub dry_run_reported: bool,
    /// The upstream (index in the config) whose credential the request was given.
    pub credential: Option<usize>,
}

/// The mask profile for bodies shown to approvers and stored in audit records: the
/// deciding rule's, else the config's record masker.
pub fn record_masker(config: &Config, rule: Option<usize>) -> &MaskProfile {
    rule.and_then(|i| config.policy.rules().get(i))
        .and_then(|r| r.mask_profile())
        .and_then(|i| config.mask_profile(i))
        .unwrap_or(&config.record_masker)
}

/// The context of a log line: which rule, who, what, and the ids to find the rest by.
/// The path is cut before the query, which may carry secrets.
pub fn describe(rule: Option<&str>, identity: Option<&Identity>, request: &Request, approval: Option<&str>) -> String {
    let rule = rule.unwrap_or("-");
    let subject = identity.map_or("-", |i| i.subject.as_str());
    let path = request.raw_path().split('?').next().filter(|p| !p.is_empty()).unwrap_or("-");
    let request_id = request.request_id().unwrap_or("-");
    let approval = approval.unwrap_or("-");
    format!(
        "rule={rule} subject={subject} method={} path={path} approval={approval} request_id={request_id}",
        request.method()
    )
}

impl Record {
    fn rule_name<'c>(&self, config: &'c Config) -> Option<&'c str> {
        self.rule.and_then(|i| config.policy.rules().get(i)).map(|r| r.name())
    }

    /// One log line per request, at info for refusals and dry-run reports and debug for
    /// the rest (so a busy gateway is not slowed by logging every allowed call), and one
    /// audit record.
    pub fn finish(&self, vm: &VmState, host: &mut dyn Host, request: &Request) {
        self.write_audit(vm, host, request);
        let level = match self.decision {
            Some(Decision::Allow) if !self.dry_run_reported => Level::Debug,
            _ => Level::Info,
        };
        if !host.log_enabled(level) {
            return;
        }
        let decision = self.decision.unwrap_or(Decision::Incomplete).as_str();
        let context =
            describe(self.rule_name(&vm.config), self.identity.as_deref(), request, self.approval_id.as_deref());
        host.log(level, &format!("airlock: decision={decision} masked={} {context}", self.masked_values));
    }

    fn write_audit(&self, vm: &VmState, host: &mut dyn Host, request: &Request) {
        let config = &vm.config;
        let Some(audit) = &config.audit else { return };
        let masker = record_masker(config, self.rule);
        let raw_path = request.raw_path();
        let path = if raw_path.starts_with('/') { Cow::Borrowed(raw_path) } else { Cow::Owned(format!("/{raw_path}")) };
        let (path, _) = masker.mask_text(audit::excerpt(&path, 8000));
        let request_body = request.body.as_deref().filter(|b| !b.is_empty()).map(|b| {
            let text = String::from_utf8_lossy(audit::excerpt_bytes(b, audit.max_body_bytes));
            Cow::Owned(masker.mask_text(&text).0.into_owned())
        });
        let identity = self.identity.as_deref();
        let method = if request.method().is_empty() { "GET" } else { request.method() };
        let record = AuditRecord {
            id: Cow::Owned(vm.next_record_id()),
            time_ms: request.started_ms,
            subject: Cow::Borrowed(identity.map_or("", |i| i.subject.as_str())),
            groups: Cow::Borrowed(identity.map_or(&[][..], |i| i.groups.as_slice())),
            session_id: Cow::Borrowed(request.session_id(config, identity)),
            method: Cow::Borrowed(method),
            path,
            request_body,
            status: self.status,
            response_body: self.masked_response.as_deref().map(Cow::Borrowed),
            decision: self.decision.unwrap_or(Decision::Incomplete),
            rule: self.rule_name(config).map(Cow::Borrowed),
            approval_id: self.approval_id.as_deref().map(Cow::Borrowed),
            latency_ms: host.now_unix_ms().saturating_sub(request.started_ms),
            reason: request.reason.as_deref().map(Cow::Borrowed),
            credential: self.credential.and_then(|i| config.upstreams.at(i)).map(|c| c.used(&config.upstreams)),
        };
        let Ok(line) = serde_json::to_string(&record) else { return };
        if vm.audit.borrow_mut().push(line, audit.max_queued_records) {
            host.increment(vm.stats.audit_records, 1);
        } else {
            host.increment(vm.stats.audit_dropped, 1);
            if let Some(total) = vm.note_audit_drop() {
                host.log(
                    Level::Warn,
                    &format!(
                        "airlock: audit queue full, {total} records dropped so far (is the control service down?)"
                    ),
                );
            }
        }
    }
}

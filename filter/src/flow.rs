//! One request's life through Airlock, written against the `Host` trait:
//! headers (token check, policy) → body (policy on the body) → approval → upstream →
//! response headers and body (masking) → log (audit record).
//!
//! Envoy's Wasm host turns "pause" in a headers callback into "stop everything": no body
//! callback arrives until the filter resumes, and resuming sends the headers on. So when a
//! decision needs the body, the headers callback *continues* and the body callbacks buffer
//! until the decision. The shipped Envoy configs put Envoy's `buffer` filter right after
//! Airlock so that continued headers wait there: nothing reaches the upstream before the
//! decision. Whatever must never reach the upstream (the agent's token, spoofed identity
//! headers) is removed in the headers callback, so that holds even without it.
//! The request pauses for callouts: a JWKS fetch, or the control service for approvals.

use std::borrow::Cow;
use std::rc::Rc;

use crate::approval::{self, ApprovalSettings, Mode, OnUnavailable};
use crate::audit::{self, AuditRecord};
use crate::host::{Callout, Host, Level, Next};
use crate::headers::HeaderList;
use crate::identity::Identity;
use crate::jwt::{self, AuthError};
use crate::mask::{MaskError, MaskProfile};
use crate::normalize::{self, RequestTarget};
use crate::policy::{Action, Body, Decision, Evaluation, RequestFacts};
use crate::reply::{ApprovalRef, Code, Reply};
use crate::vm_state::{FetchReason, VmState};

/// Header a client sends to redeem an approved ticket.
pub const APPROVAL_ID_HEADER: &str = "x-airlock-approval-id";
/// Header in which a caller may say why it needs an approval.
pub const REASON_HEADER: &str = "x-airlock-reason";
/// Approval bodies shown to approvers are cut to this size.
const MAX_APPROVAL_BODY: usize = 64 * 1024;
/// One long-poll to the control service lasts at most this long; a hold loops until its
/// deadline.
const MAX_WAIT_POLL_MS: u64 = 25_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing decided yet.
    Start,
    /// Paused until a JWKS fetch answers.
    AwaitingKeys,
    /// Buffering the request body for a decision.
    AwaitingBody,
    /// Paused on the control service (create, wait or redeem).
    AwaitingApproval,
    /// Sent upstream.
    Forwarded,
    /// Answered by the filter.
    Replied,
}

/// Which call to the control service is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApprovalCall {
    Create,
    Wait,
    Redeem,
}

/// What was decided, for the log line and the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Approved,
    DryRunWouldBlock,
    Refused(Code),
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allow",
            Outcome::Approved => "approved",
            Outcome::DryRunWouldBlock => "dry_run_allow",
            Outcome::Refused(code) => code.as_str(),
        }
    }
}

pub struct RequestFlow {
    vm: Rc<VmState>,
    stage: Stage,
    started_ms: u64,
    token: Option<String>,
    /// The audit session the client named in the session header, if any.
    session_header: Option<String>,
    identity: Option<Rc<Identity>>,
    target: Option<RequestTarget>,
    /// As the client sent them, less the identity headers only the filter may set.
    headers: HeaderList,
    request_body_len: usize,
    request_complete: bool,
    /// The buffered request body, once read (for approval digests and audit).
    request_body: Option<Vec<u8>>,
    callout: Option<u32>,
    approval_call: Option<ApprovalCall>,
    approval_id: Option<String>,
    /// The ticket a client retries with, read before the header is stripped.
    ticket: Option<String>,
    /// Why the caller says it needs this (read in the headers phase, like every header:
    /// Envoy's request header map is not reliably readable from later callbacks).
    reason: Option<String>,
    approval_deadline_ms: u64,
    rule: Option<usize>,
    outcome: Option<Outcome>,
    /// Mask profile index for the response, when the deciding rule has one.
    mask_profile: Option<usize>,
    buffering_response: bool,
    response_body_len: usize,
    /// Read in the response-headers phase: Envoy's header map is not reliably readable
    /// from the body callbacks once the headers have moved on.
    response_is_json: bool,
    status: u32,
    masked_values: u64,
    masked_response: Option<String>,
    /// A dry-run rule matched: the log line says so even when the request was allowed.
    dry_run_rule: bool,
    /// Credential and encoding headers are set (they cannot change once headers continue).
    upstream_headers_done: bool,
}

impl RequestFlow {
    pub fn new(vm: Rc<VmState>) -> Self {
        RequestFlow {
            vm,
            stage: Stage::Start,
            started_ms: 0,
            token: None,
            session_header: None,
            identity: None,
            target: None,
            headers: HeaderList::default(),
            request_body_len: 0,
            request_complete: false,
            request_body: None,
            callout: None,
            approval_call: None,
            approval_id: None,
            ticket: None,
            reason: None,
            approval_deadline_ms: 0,
            rule: None,
            outcome: None,
            mask_profile: None,
            buffering_response: false,
            response_body_len: 0,
            response_is_json: false,
            status: 0,
            masked_values: 0,
            masked_response: None,
            dry_run_rule: false,
            upstream_headers_done: false,
        }
    }

    // ---- request headers -------------------------------------------------------------

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Next {
        let vm = Rc::clone(&self.vm);
        host.increment(vm.stats.requests, 1);
        self.started_ms = host.now_unix_ms();
        self.request_complete = end_of_stream;
        // One host call for the whole map: every single-header read is a crossing into
        // Envoy and another back into the VM to allocate the value.
        self.headers = host.request_headers();
        self.ticket = self.header(APPROVAL_ID_HEADER).map(str::to_string);
        self.reason = self.header(REASON_HEADER).map(|r| audit::excerpt(r, 2000).to_string());

        // Identity headers come from the filter only; whatever the client sent is dropped
        // before anything else can look at it.
        self.drop_client_header(host, &vm.config.identity_headers.subject);
        self.drop_client_header(host, &vm.config.identity_headers.groups);

        if let Some(audit) = &vm.config.audit {
            if audit.strict && vm.audit.borrow().is_failing() {
                host.increment(vm.stats.audit_refused_requests, 1);
                return self.refuse(host, Reply::new(Code::AuditUnavailable, "strict audit mode: requests are refused while audit records cannot be delivered"));
            }
            self.session_header = self.header(&audit.session_header).map(|s| audit::excerpt(s, audit::MAX_SESSION_ID_BYTES).to_string());
        }

        let token = match self.header(&vm.config.auth.header).map(jwt::bearer_token) {
            None => return self.refuse_auth(host, &AuthError::MissingToken),
            Some(Ok(t)) => t.to_string(),
            Some(Err(e)) => return self.refuse_auth(host, &e),
        };
        let now = self.started_ms / 1000;
        match vm.verify(&token, now) {
            Ok(identity) => {
                self.identity = Some(identity);
                self.after_authentication(host)
            }
            Err(err) => {
                let reason = if !vm.has_keys() {
                    Some(FetchReason::NoKeys)
                } else if err == AuthError::UnknownKey {
                    Some(FetchReason::UnknownKey)
                } else {
                    None
                };
                match reason {
                    Some(reason) if vm.may_fetch(reason, now) => self.fetch_keys(host, token),
                    Some(FetchReason::NoKeys) if vm.uses_remote_keys() => {
                        self.refuse(host, Reply::new(Code::DependencyUnavailable, "the token signing keys are not available yet"))
                    }
                    _ => self.refuse_auth(host, &err),
                }
            }
        }
    }

    fn fetch_keys(&mut self, host: &mut dyn Host, token: String) -> Next {
        match self.vm.start_key_fetch(host) {
            Ok(call) => {
                self.callout = Some(call);
                self.token = Some(token);
                self.stage = Stage::AwaitingKeys;
                Next::Pause
            }
            Err(problem) => {
                host.log(Level::Warn, &format!("airlock: {problem}"));
                self.refuse(host, Reply::new(Code::DependencyUnavailable, "the token signing keys cannot be fetched"))
            }
        }
    }

    /// The caller is known: normalise the target and ask the policy.
    fn after_authentication(&mut self, host: &mut dyn Host) -> Next {
        match normalize::normalize_target(self.raw_path()) {
            Ok(target) => self.target = Some(target),
            Err(e) => {
                host.increment(self.vm.stats.invalid_target, 1);
                return self.refuse(host, Reply::new(Code::InvalidRequestTarget, format!("the request path cannot be inspected: {e}")));
            }
        }
        self.strip_for_upstream(host);
        if self.request_complete {
            self.request_body = Some(Vec::new());
        }
        let body = if self.request_complete { Body::Empty } else { Body::NotRead };
        self.evaluate(host, body)
    }

    /// Header changes that hold whatever the decision: the agent's token and any
    /// credential or identity header the client sent never go upstream, and the identity
    /// the filter vouches for is set.
    fn strip_for_upstream(&mut self, host: &mut dyn Host) {
        let vm = Rc::clone(&self.vm);
        let config = &vm.config;
        for header in &config.stripped_headers {
            self.remove_if_sent(host, header);
        }
        if let Some(identity) = &self.identity {
            host.set_request_header(&config.identity_headers.subject, &identity.subject);
            if !identity.groups.is_empty() {
                host.set_request_header(&config.identity_headers.groups, identity.groups_header());
            }
        }
    }

    /// The first value of a request header, as read in the headers callback.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Sessions exist for audit: the one the client named, else one per token.
    fn session_id(&self) -> &str {
        if self.vm.config.audit.is_none() {
            return "";
        }
        self.session_header.as_deref().or_else(|| self.identity.as_deref().map(Identity::token_session)).unwrap_or("")
    }

    fn method(&self) -> &str {
        self.header(":method").unwrap_or_default()
    }

    /// Path and query exactly as sent.
    fn raw_path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }

    fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    /// Removes every value of a header from the request; no host call when it was not sent.
    /// Rules still see it (they judge what the client sent).
    fn remove_if_sent(&self, host: &mut dyn Host, name: &str) {
        if self.header(name).is_some() {
            host.remove_request_header(name);
        }
    }

    /// Removes a header the client may not set, also from what rules see.
    fn drop_client_header(&mut self, host: &mut dyn Host, name: &str) {
        self.remove_if_sent(host, name);
        self.headers.remove(name);
    }

    fn evaluate(&mut self, host: &mut dyn Host, body: Body) -> Next {
        let vm = Rc::clone(&self.vm);
        let Some(target) = self.target.as_ref() else {
            return self.refuse(host, Reply::new(Code::Misconfigured, "request evaluated before its target was read"));
        };
        let facts = RequestFacts {
            method: self.method(),
            target,
            headers: &self.headers,
            identity: self.identity.as_deref(),
        };
        match vm.config.policy.evaluate(&facts, body) {
            Evaluation::NeedBody => self.wait_for_body(host),
            Evaluation::Decided(decision) => self.apply(host, &decision),
        }
    }

    /// Continue: the body callbacks that follow buffer it and decide. Envoy stops
    /// letting the filter change the request headers once they continue, so they get now
    /// what an allowed request needs; a refusal still answers before the buffer filter
    /// behind Airlock lets them reach the upstream.
    fn wait_for_body(&mut self, host: &mut dyn Host) -> Next {
        let may_mask = !self.vm.config.mask_profiles.is_empty();
        self.complete_upstream_headers(host, may_mask);
        self.stage = Stage::AwaitingBody;
        Next::Continue
    }

    /// The upstream's own credential in, compression off when the response may be masked.
    fn complete_upstream_headers(&mut self, host: &mut dyn Host, may_mask: bool) {
        if self.upstream_headers_done {
            return;
        }
        self.upstream_headers_done = true;
        let vm = Rc::clone(&self.vm);
        let config = &vm.config;
        if !config.upstreams.is_empty() {
            if let Some(cluster) = host.upstream_cluster() {
                if let Some(cred) = config.upstreams.credential_for(&cluster) {
                    host.set_request_header(&cred.header, cred.value.expose());
                }
            }
        }
        if may_mask {
            host.remove_request_header("accept-encoding");
        }
    }

    fn apply(&mut self, host: &mut dyn Host, decision: &Decision) -> Next {
        let vm = Rc::clone(&self.vm);
        let index = decision.rule.and_then(|r| vm.config.policy.rules().iter().position(|x| std::ptr::eq(x, r)));
        self.rule = index;
        if let Some(id) = index.and_then(|i| vm.stats.rule_matched.get(i)) {
            host.increment(*id, 1);
        }
        let rule_name = decision.rule.map(|r| r.name());
        // A dry-run rule that matched earlier did not decide (the policy went on to the
        // real decision); it is reported as what it would have done.
        if let Some(shadow) = decision.dry_run {
            if shadow.action() != Action::Allow {
                self.report_dry_run(host, shadow.name(), shadow.action().as_str());
            }
        }
        self.mask_profile = decision.rule.and_then(|r| r.mask_profile());
        let refusal = match decision.action {
            Action::Allow => return self.forward(host, Outcome::Allowed),
            Action::Deny => match rule_name {
                Some(name) => Reply::new(Code::DeniedByRule, format!("the request was blocked by rule `{name}`")).with_rule(name),
                None => Reply::new(Code::DeniedByDefault, "no rule allows this request"),
            },
            Action::Approve => {
                let settings = decision.rule.and_then(|r| r.approval());
                match (settings, vm.config.dry_run) {
                    (Some(settings), false) => return self.request_approval(host, settings.clone()),
                    _ => Reply::new(Code::ApprovalPending, "this request needs human approval").with_rule(rule_name.unwrap_or("default")),
                }
            }
        };
        if vm.config.dry_run {
            self.report_dry_run(host, rule_name.unwrap_or("default"), refusal.code.as_str());
            return self.forward(host, Outcome::DryRunWouldBlock);
        }
        match refusal.code {
            Code::DeniedByDefault => host.increment(vm.stats.denied_by_default, 1),
            _ => host.increment(vm.stats.denied, 1),
        }
        self.refuse(host, refusal)
    }

    fn report_dry_run(&mut self, host: &mut dyn Host, rule: &str, would: &str) {
        host.increment(self.vm.stats.dry_run_would_block, 1);
        self.dry_run_rule = true;
        if host.log_enabled(Level::Info) {
            let line = format!("airlock: dry-run: rule `{rule}` would have answered {would} ({})", self.describe());
            host.log(Level::Info, &line);
        }
    }

    /// Sends the request on, its headers completed unless that already happened when
    /// they continued ahead of a body decision.
    fn forward(&mut self, host: &mut dyn Host, outcome: Outcome) -> Next {
        let vm = Rc::clone(&self.vm);
        self.complete_upstream_headers(host, self.mask_profile.is_some());
        host.increment(vm.stats.allowed, 1);
        self.outcome = Some(outcome);
        self.stage = Stage::Forwarded;
        Next::Continue
    }

    // ---- approvals -------------------------------------------------------------------

    fn rule_name(&self) -> &str {
        self.rule.and_then(|i| self.vm.config.policy.rules().get(i)).map_or("default", |r| r.name())
    }

    /// The mask profile for bodies shown to approvers and stored in audit records.
    fn record_masker(&self) -> &MaskProfile {
        let vm = &self.vm;
        self.mask_profile.and_then(|i| vm.config.mask_profile(i)).unwrap_or(&vm.config.record_masker)
    }

    fn request_approval(&mut self, host: &mut dyn Host, settings: ApprovalSettings) -> Next {
        // The approval is bound to the exact body: read it before asking anyone.
        if self.request_body.is_none() {
            return self.wait_for_body(host);
        }
        let body = self.request_body.clone().unwrap_or_default();
        let subject = self.identity.as_ref().map(|i| i.subject.clone()).unwrap_or_default();
        let digest = approval::request_digest(self.method(), self.raw_path(), &body, &subject);
        let ticket = self.ticket.clone().filter(|_| settings.mode == Mode::Ticket);
        if let Some(id) = ticket {
            return self.redeem(host, &settings, id, &digest, &subject);
        }
        let text = String::from_utf8_lossy(audit::excerpt_bytes(&body, MAX_APPROVAL_BODY)).into_owned();
        let (masked_body, _) = self.record_masker().mask_text(&text);
        let groups = self.identity.as_ref().map(|i| i.groups.clone()).unwrap_or_default();
        let request = approval::CreateRequest {
            rule: self.rule_name(),
            subject: &subject,
            groups: &groups,
            method: self.method(),
            path: self.raw_path(),
            body: &masked_body,
            digest: &digest,
            reason: self.reason.as_deref(),
            session_id: self.session_id(),
            mode: settings.mode.as_str(),
            ttl_seconds: settings.ttl_seconds,
            approvers: approval::Approvers { groups: &settings.approver_groups, required: settings.required },
        };
        let payload = serde_json::to_vec(&request).unwrap_or_default();
        host.increment(self.vm.stats.approvals_requested, 1);
        self.approval_deadline_ms = host.now_unix_ms() + settings.ttl_seconds * 1000;
        self.call_control(host, ApprovalCall::Create, "POST", "/v1/approvals", Some(&payload), None, &settings)
    }

    fn redeem(&mut self, host: &mut dyn Host, settings: &ApprovalSettings, id: String, digest: &str, subject: &str) -> Next {
        if !approval::valid_id(&id) {
            host.increment(self.vm.stats.approvals_refused, 1);
            return self.refuse(host, Reply::new(Code::ApprovalRejected, format!("`{APPROVAL_ID_HEADER}` is not a valid approval id")).with_rule(self.rule_name()));
        }
        let payload = serde_json::to_vec(&serde_json::json!({"digest": digest, "subject": subject})).unwrap_or_default();
        let path = format!("/v1/approvals/{id}/redeem");
        self.approval_id = Some(id);
        self.call_control(host, ApprovalCall::Redeem, "POST", &path, Some(&payload), None, settings)
    }

    fn wait_for_decision(&mut self, host: &mut dyn Host, settings: &ApprovalSettings) -> Next {
        let Some(id) = self.approval_id.clone() else {
            return self.approval_unavailable(host, settings);
        };
        let remaining = self.approval_deadline_ms.saturating_sub(host.now_unix_ms());
        if remaining == 0 {
            return self.approval_refused(host, Code::ApprovalExpired, "no approver decided before the deadline");
        }
        let poll = remaining.min(MAX_WAIT_POLL_MS);
        let path = format!("/v1/approvals/{id}/wait?timeout_ms={poll}");
        self.call_control(host, ApprovalCall::Wait, "GET", &path, None, Some(poll + 5000), settings)
    }

    #[allow(clippy::too_many_arguments)]
    fn call_control(
        &mut self,
        host: &mut dyn Host,
        kind: ApprovalCall,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout_ms: Option<u64>,
        settings: &ApprovalSettings,
    ) -> Next {
        let vm = Rc::clone(&self.vm);
        let Some(control) = &vm.config.control else {
            return self.approval_unavailable(host, settings);
        };
        let call = Callout {
            cluster: &control.cluster,
            method,
            authority: &control.authority,
            path,
            headers: &[("content-type", "application/json"), ("authorization", control.authorization.expose())],
            body,
            timeout_ms: timeout_ms.unwrap_or(control.timeout_ms),
        };
        match host.dispatch(&call) {
            Ok(token) => {
                self.callout = Some(token);
                self.approval_call = Some(kind);
                self.stage = Stage::AwaitingApproval;
                Next::Pause
            }
            Err(problem) => {
                host.log(Level::Warn, &format!("airlock: approval call failed to start: {problem}"));
                self.approval_unavailable(host, settings)
            }
        }
    }

    /// The control service cannot be asked: fail closed unless the rule says otherwise.
    fn approval_unavailable(&mut self, host: &mut dyn Host, settings: &ApprovalSettings) -> Next {
        host.increment(self.vm.stats.approval_service_errors, 1);
        match settings.on_unavailable {
            OnUnavailable::Allow => {
                host.log(Level::Warn, &format!("airlock: approval service unavailable; rule `{}` allows the request anyway", self.rule_name()));
                self.forward(host, Outcome::Allowed)
            }
            OnUnavailable::Deny => {
                let reply = Reply::new(Code::DependencyUnavailable, "the approval service is unavailable").with_rule(self.rule_name());
                self.refuse(host, reply)
            }
        }
    }

    fn approval_refused(&mut self, host: &mut dyn Host, code: Code, message: &str) -> Next {
        host.increment(self.vm.stats.approvals_refused, 1);
        let mut reply = Reply::new(code, message).with_rule(self.rule_name());
        if let Some(id) = &self.approval_id {
            reply = reply.with_approval(ApprovalRef { id: id.clone(), url: String::new(), status: code.as_str().trim_start_matches("approval_").to_string() });
        }
        self.refuse(host, reply)
    }

    fn on_approval_answer(&mut self, host: &mut dyn Host, kind: ApprovalCall, status: Option<u32>, body: &[u8]) -> Next {
        let Some(settings) = self.rule.and_then(|i| self.vm.config.policy.rules().get(i)).and_then(|r| r.approval()).cloned() else {
            return self.refuse(host, Reply::new(Code::Misconfigured, "approval answer without an approve rule"));
        };
        match (kind, status) {
            (ApprovalCall::Create, Some(201)) => {
                let Some(state) = approval::parse_state(body) else {
                    return self.approval_unavailable(host, &settings);
                };
                self.approval_id = Some(state.id.clone());
                if settings.mode == Mode::Hold {
                    return self.wait_for_decision(host, &settings);
                }
                let approval = ApprovalRef { id: state.id, url: state.url.unwrap_or_default(), status: "pending".into() };
                let reply = Reply::new(Code::ApprovalPending, format!("approval requested; retry with header `{APPROVAL_ID_HEADER}` once approved"))
                    .with_rule(self.rule_name())
                    .with_approval(approval);
                self.refuse(host, reply)
            }
            (ApprovalCall::Wait, Some(200)) => match approval::parse_state(body).map(|s| s.status) {
                Some(s) if s == "approved" => {
                    host.increment(self.vm.stats.approvals_granted, 1);
                    self.forward(host, Outcome::Approved)
                }
                Some(s) if s == "denied" => self.approval_refused(host, Code::ApprovalDenied, "an approver denied this request"),
                Some(s) if s == "expired" => self.approval_refused(host, Code::ApprovalExpired, "no approver decided before the deadline"),
                Some(_) => self.wait_for_decision(host, &settings),
                None => self.approval_unavailable(host, &settings),
            },
            (ApprovalCall::Redeem, Some(200)) => {
                host.increment(self.vm.stats.approvals_granted, 1);
                self.forward(host, Outcome::Approved)
            }
            (ApprovalCall::Redeem, Some(404 | 409)) => match approval::parse_error_code(body).as_deref() {
                Some("approval_not_approved") => {
                    let approval = ApprovalRef { id: self.approval_id.clone().unwrap_or_default(), url: String::new(), status: "pending".into() };
                    let reply = Reply::new(Code::ApprovalPending, "this approval is not granted (yet)").with_rule(self.rule_name()).with_approval(approval);
                    self.refuse(host, reply)
                }
                Some("approval_denied") => self.approval_refused(host, Code::ApprovalDenied, "an approver denied this request"),
                Some("approval_expired") => self.approval_refused(host, Code::ApprovalExpired, "this approval has expired"),
                _ => self.approval_refused(host, Code::ApprovalRejected, "this approval does not cover this request, or was already used"),
            },
            _ => self.approval_unavailable(host, &settings),
        }
    }

    // ---- request body ----------------------------------------------------------------

    pub fn on_request_body(&mut self, host: &mut dyn Host, body_len: usize, end_of_stream: bool) -> Next {
        self.request_body_len = body_len;
        self.request_complete = end_of_stream;
        match self.stage {
            Stage::AwaitingKeys | Stage::AwaitingApproval => Next::Pause,
            Stage::AwaitingBody => {
                if body_len > self.vm.config.request_body_limit {
                    return self.body_over_limit(host);
                }
                if !end_of_stream {
                    return Next::Pause;
                }
                self.evaluate_buffered_body(host)
            }
            Stage::Start | Stage::Forwarded | Stage::Replied => Next::Continue,
        }
    }

    /// With trailers (HTTP/2, gRPC) the last body callback never says end-of-stream: the
    /// trailers callback is where the body is known to be complete.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Next {
        self.request_complete = true;
        match self.stage {
            Stage::AwaitingKeys | Stage::AwaitingApproval => Next::Pause,
            Stage::AwaitingBody => self.evaluate_buffered_body(host),
            _ => Next::Continue,
        }
    }

    fn evaluate_buffered_body(&mut self, host: &mut dyn Host) -> Next {
        if self.request_body_len > self.vm.config.request_body_limit {
            return self.body_over_limit(host);
        }
        let bytes = if self.request_body_len == 0 { Vec::new() } else { host.request_body(self.request_body_len).unwrap_or_default() };
        // Kept for the approval digest and the audit record.
        self.request_body = Some(bytes.clone());
        if bytes.is_empty() {
            return self.evaluate(host, Body::Empty);
        }
        // Parsed, not grepped: JSON escapes such as `\u0044ROP` are decoded before matching.
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
        match (&parsed, std::str::from_utf8(&bytes)) {
            (Ok(json), _) => self.evaluate(host, Body::Json(json)),
            (Err(_), Ok(text)) => self.evaluate(host, Body::NotJson(text)),
            (Err(_), Err(_)) => self.evaluate(host, Body::Unreadable),
        }
    }

    fn body_over_limit(&mut self, host: &mut dyn Host) -> Next {
        host.increment(self.vm.stats.request_body_over_limit, 1);
        let limit = self.vm.config.request_body_limit;
        self.refuse(
            host,
            Reply::new(Code::RequestBodyTooLarge, format!("the request body must be inspected and is larger than the {limit}-byte inspection limit")),
        )
    }

    // ---- callouts --------------------------------------------------------------------

    pub fn on_callout_response(&mut self, host: &mut dyn Host, token: u32, status: Option<u32>, body: Option<Vec<u8>>) {
        if self.callout != Some(token) {
            return;
        }
        self.callout = None;
        let next = match self.stage {
            Stage::AwaitingKeys => self.on_keys(host, status, body.as_deref()),
            Stage::AwaitingApproval => {
                let kind = self.approval_call.take().unwrap_or(ApprovalCall::Create);
                self.on_approval_answer(host, kind, status, body.as_deref().unwrap_or_default())
            }
            _ => return,
        };
        // The request was paused for this call. Forwarding releases it, and so does
        // waiting for the body, whose callbacks only come once resumed. A refusal already
        // answered; another callout keeps it paused.
        if next == Next::Continue && matches!(self.stage, Stage::Forwarded | Stage::AwaitingBody) {
            host.resume_request();
        }
    }

    fn on_keys(&mut self, host: &mut dyn Host, status: Option<u32>, body: Option<&[u8]>) -> Next {
        let vm = Rc::clone(&self.vm);
        vm.finish_key_fetch(host, status, body);
        let token = self.token.take().unwrap_or_default();
        match vm.verify(&token, host.now_unix_secs()) {
            Ok(identity) => {
                self.identity = Some(identity);
                self.after_authentication(host)
            }
            Err(_) if !vm.has_keys() => {
                self.refuse(host, Reply::new(Code::DependencyUnavailable, "the token signing keys cannot be fetched"))
            }
            Err(e) => self.refuse_auth(host, &e),
        }
    }

    // ---- response --------------------------------------------------------------------

    /// Checks what can be refused while the status can still change, then lets the
    /// headers go (pausing here would also stop the body callbacks) without
    /// `content-length`, since masking changes the body's size.
    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Next {
        if self.vm.config.audit.is_some() {
            self.status = host.response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        }
        if self.stage != Stage::Forwarded || self.mask_profile.is_none() || end_of_stream {
            return Next::Continue;
        }
        if let Some(encoding) = host.response_header("content-encoding") {
            if !encoding.trim().eq_ignore_ascii_case("identity") {
                return self.refuse_response(host, Code::ResponseNotMaskable, "the upstream answered with a compressed body, which cannot be masked");
            }
        }
        let declared = host.response_header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|len| len > self.vm.config.response_body_limit) {
            host.increment(self.vm.stats.response_over_limit, 1);
            return self.refuse_response(host, Code::ResponseTooLarge, "the response is larger than the masking limit and cannot be sent unmasked");
        }
        self.response_is_json = host.response_header("content-type").is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        host.remove_response_header("content-length");
        self.buffering_response = true;
        Next::Continue
    }

    pub fn on_response_body(&mut self, host: &mut dyn Host, body_len: usize, end_of_stream: bool) -> Next {
        if !self.buffering_response {
            return Next::Continue;
        }
        self.response_body_len = body_len;
        if body_len > self.vm.config.response_body_limit {
            // Headers are gone already: Envoy turns this reply into a reset of the
            // stream. Either way no unmasked byte leaves; the buffered body is dropped.
            host.increment(self.vm.stats.response_over_limit, 1);
            return self.refuse_response(host, Code::ResponseTooLarge, "the response is larger than the masking limit and cannot be sent unmasked");
        }
        if !end_of_stream {
            return Next::Pause;
        }
        self.mask_response(host, body_len)
    }

    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Next {
        if !self.buffering_response {
            return Next::Continue;
        }
        self.mask_response(host, self.response_body_len)
    }

    fn mask_response(&mut self, host: &mut dyn Host, body_len: usize) -> Next {
        self.buffering_response = false;
        let vm = Rc::clone(&self.vm);
        let Some(index) = self.mask_profile else { return Next::Continue };
        let Some(profile) = vm.config.mask_profile(index) else { return Next::Continue };
        if body_len == 0 {
            return Next::Continue;
        }
        let Some(body) = host.response_body(body_len) else {
            return self.refuse_response(host, Code::ResponseNotMaskable, "the response body could not be read for masking");
        };
        let masked = if self.response_is_json {
            match profile.mask_json(&body) {
                Ok(done) => Some(done),
                // Not JSON after all: masked as text below, never passed as is, unless
                // the profile relies on JSON structure that text masking cannot see.
                Err(MaskError::InvalidJson(_)) if !profile.masks_by_structure() => None,
                Err(_) => return self.refuse_response(host, Code::ResponseNotMaskable, "the JSON response could not be masked safely"),
            }
        } else {
            None
        };
        let (out, counts) = match masked {
            Some(done) => done,
            None => match std::str::from_utf8(&body) {
                Ok(text) => {
                    let (out, counts) = profile.mask_text(text);
                    (out.into_owned().into_bytes(), counts)
                }
                Err(_) => return self.refuse_response(host, Code::ResponseNotMaskable, "the response is not text, so it cannot be masked"),
            },
        };
        if counts.total() > 0 {
            host.increment(vm.stats.masked_responses, 1);
            if let Some(ids) = vm.stats.masked_values.get(index) {
                for (kind, n) in counts.iter() {
                    if let Some(id) = ids.get(kind) {
                        host.increment(*id, n);
                    }
                }
            }
            self.masked_values = counts.total();
            host.set_response_body(body_len, &out);
        }
        if let Some(audit) = &vm.config.audit {
            self.masked_response = Some(String::from_utf8_lossy(audit::excerpt_bytes(&out, audit.max_body_bytes)).into_owned());
        }
        Next::Continue
    }

    fn refuse_response(&mut self, host: &mut dyn Host, code: Code, message: &str) -> Next {
        self.buffering_response = false;
        if code == Code::ResponseNotMaskable {
            host.increment(self.vm.stats.response_not_maskable, 1);
        }
        self.outcome = Some(Outcome::Refused(code));
        self.status = code.status();
        self.send(host, &Reply::new(code, message));
        Next::Pause
    }

    // ---- log and audit ---------------------------------------------------------------

    /// One log line per request, at info for refusals and debug for the rest (so a busy
    /// gateway is not slowed by logging every allowed call), and one audit record.
    /// Neither contains the query string in clear, headers, or unmasked bodies.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        self.record(host);
        let level = match self.outcome {
            Some(Outcome::Allowed) if !self.dry_run_rule => Level::Debug,
            _ => Level::Info,
        };
        if !host.log_enabled(level) {
            return;
        }
        let decision = self.outcome.map_or("incomplete", Outcome::as_str);
        let line = format!("airlock: decision={decision} masked={} {}", self.masked_values, self.describe());
        host.log(level, &line);
    }

    fn record(&mut self, host: &mut dyn Host) {
        let vm = Rc::clone(&self.vm);
        let Some(audit) = &vm.config.audit else { return };
        let masker = self.record_masker();
        let raw_path = self.raw_path();
        let path = if raw_path.starts_with('/') { Cow::Borrowed(raw_path) } else { Cow::Owned(format!("/{raw_path}")) };
        let (path, _) = masker.mask_text(audit::excerpt(&path, 8000));
        let request_body = self.request_body.as_deref().filter(|b| !b.is_empty()).map(|b| {
            let text = String::from_utf8_lossy(audit::excerpt_bytes(b, audit.max_body_bytes)).into_owned();
            masker.mask_text(&text).0.into_owned()
        });
        let empty: &[String] = &[];
        let now = host.now_unix_ms();
        let method = if self.method().is_empty() { "GET" } else { self.method() };
        let record = AuditRecord {
            id: vm.next_record_id(),
            time_ms: self.started_ms,
            subject: self.identity.as_ref().map_or("", |i| i.subject.as_str()),
            groups: self.identity.as_ref().map_or(empty, |i| i.groups.as_slice()),
            session_id: self.session_id(),
            method,
            path: &path,
            request_body: request_body.as_deref(),
            status: self.status,
            response_body: self.masked_response.as_deref(),
            decision: self.outcome.map_or("incomplete", Outcome::as_str),
            rule: self.rule.and_then(|i| vm.config.policy.rules().get(i)).map(|r| r.name()),
            approval_id: self.approval_id.as_deref(),
            latency_ms: now.saturating_sub(self.started_ms),
            reason: self.reason.as_deref(),
        };
        let Ok(line) = serde_json::to_string(&record) else { return };
        if vm.audit.borrow_mut().push(line, audit.max_queued_records) {
            host.increment(vm.stats.audit_records, 1);
        } else {
            host.increment(vm.stats.audit_dropped, 1);
            if let Some(total) = vm.note_audit_drop() {
                host.log(Level::Warn, &format!("airlock: audit queue full, {total} records dropped so far (is the control service down?)"));
            }
        }
    }

    fn describe(&self) -> String {
        let rule = self.rule.and_then(|i| self.vm.config.policy.rules().get(i)).map(|r| r.name()).unwrap_or("-");
        let subject = self.identity.as_ref().map(|i| i.subject.as_str()).unwrap_or("-");
        let path = self.target.as_ref().map(|t| t.path.as_str()).unwrap_or("-");
        let request_id = self.request_id().unwrap_or("-");
        let approval = self.approval_id.as_deref().unwrap_or("-");
        format!("rule={rule} subject={subject} method={} path={path} approval={approval} request_id={request_id}", self.method())
    }

    // ---- refusals --------------------------------------------------------------------

    fn refuse_auth(&mut self, host: &mut dyn Host, err: &AuthError) -> Next {
        host.increment(self.vm.stats.unauthenticated, 1);
        self.refuse(host, Reply::new(Code::Unauthenticated, err.to_string()).with_reason(err.reason()))
    }

    fn refuse(&mut self, host: &mut dyn Host, reply: Reply) -> Next {
        if reply.code == Code::DependencyUnavailable {
            host.increment(self.vm.stats.dependency_unavailable, 1);
        }
        self.outcome = Some(Outcome::Refused(reply.code));
        self.status = reply.status();
        self.stage = Stage::Replied;
        self.send(host, &reply);
        Next::Pause
    }

    fn send(&mut self, host: &mut dyn Host, reply: &Reply) {
        let body = reply.to_json(self.request_id());
        let extra = reply.extra_headers();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json"), ("cache-control", "no-store")];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        host.send_reply(reply.status(), &headers, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::host::mock::MockHost;
    use crate::stats::{DefineCounter, MetricId, Stats};
    use base64::Engine as _;
    use jwt_simple::prelude::*;
    use std::collections::HashMap;

    const SECRET: &[u8] = b"a-test-hmac-secret-that-is-long-enough-for-hs256";

    #[derive(Default)]
    struct Names(HashMap<String, MetricId>);
    impl DefineCounter for Names {
        fn define_counter(&mut self, name: &str) -> Option<MetricId> {
            let next = self.0.len() as MetricId + 1;
            Some(*self.0.entry(name.to_string()).or_insert(next))
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn jwks() -> serde_json::Value {
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        serde_json::json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]})
    }

    fn token(sub: &str, groups: &[&str]) -> String {
        let key = HS256Key::from_bytes(SECRET).with_key_id("k1");
        let claims = Claims::with_custom_claims(serde_json::json!({"groups": groups}), Duration::from_secs(300))
            .with_issuer("https://idp.test")
            .with_audience("airlock")
            .with_subject(sub);
        key.authenticate(claims).unwrap()
    }

    fn config(jwks_source: serde_json::Value, rules: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "auth": {"issuers": ["https://idp.test"], "audiences": ["airlock"], "groups_claim": "groups", "jwks": jwks_source},
            "request_body_limit_bytes": 64,
            "response_body_limit_bytes": 256,
            "mask_profiles": {"pii": {"detectors": ["email"]}},
            "upstreams": [{"cluster": "db", "credential": {"type": "bearer", "token": {"value": "upstream-secret"}}}],
            "control": {"cluster": "control", "authority": "control", "filter_key": {"value": "a-filter-key-of-16+chars"}},
            "rules": rules,
            "default_action": "deny"
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn standard_rules() -> serde_json::Value {
        serde_json::json!([
            {"name": "no-drop", "action": "deny", "when": {"methods": ["POST"], "body": [{"json_pointer": "/sql", "regex": "\\bdrop\\s+table\\b", "case_insensitive": true, "normalize": "sql"}]}},
            {"name": "writes-need-approval", "action": "approve", "when": {"methods": ["PUT"]}, "approval": {"mode": "hold", "approvers": {"groups": ["dba"]}, "ttl_seconds": 60}},
            {"name": "deletes-need-a-ticket", "action": "approve", "when": {"methods": ["DELETE"]}, "approval": {"mode": "ticket", "approvers": {"groups": ["dba"]}}},
            {"name": "support", "action": "allow", "when": {"groups": {"any_of": ["support"]}}, "mask": "pii"}
        ])
    }

    struct Fixture {
        vm: Rc<VmState>,
        names: HashMap<String, MetricId>,
    }

    impl Fixture {
        fn new(config: serde_json::Value) -> Fixture {
            let config = Config::from_json(config.to_string().as_bytes(), &|_| None).unwrap();
            let mut names = Names::default();
            let stats = Stats::define(&mut names, &config).unwrap();
            Fixture { vm: Rc::new(VmState::new(config, stats, "test")), names: names.0 }
        }

        fn standard() -> Fixture {
            Fixture::new(config(serde_json::json!({"inline": jwks()}), standard_rules(), serde_json::json!({})))
        }

        fn counter(&self, host: &MockHost, name: &str) -> u64 {
            host.count(self.names[&format!("airlock.{name}")])
        }

        fn flow(&self) -> RequestFlow {
            RequestFlow::new(Rc::clone(&self.vm))
        }
    }

    fn request(method: &str, path: &str, token: Option<&str>) -> MockHost {
        let mut host = MockHost { now: now(), cluster: Some("db".into()), ..MockHost::default() };
        host.request_headers = vec![(":method".into(), method.into()), (":path".into(), path.into()), ("x-request-id".into(), "req-1".into())];
        if let Some(t) = token {
            host.request_headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        host
    }

    #[test]
    fn request_without_token_gets_401_json_and_is_counted() {
        let f = Fixture::standard();
        let mut host = request("GET", "/customers", None);
        assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Pause);
        assert_eq!(host.reply_status(), Some(401));
        let v = host.reply_json();
        assert_eq!(v["error"]["code"], "unauthenticated");
        assert_eq!(v["error"]["retry"], "reauthenticate");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert_eq!(f.counter(&host, "unauthenticated"), 1);
    }

    #[test]
    fn allowed_request_swaps_agent_token_for_upstream_credential_and_sets_identity() {
        let f = Fixture::standard();
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        host.request_headers.push(("x-airlock-subject".into(), "root".into()));
        assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Continue);
        assert_eq!(host.reply, None);
        assert_eq!(host.header("authorization"), Some("Bearer upstream-secret"));
        assert_eq!(host.header("x-airlock-subject"), Some("alice"));
        assert_eq!(host.header("x-airlock-groups"), Some("support"));
        assert_eq!(f.counter(&host, "allowed"), 1);
        assert_eq!(f.counter(&host, "rule.support.matched"), 1);
    }

    #[test]
    fn headers_that_never_go_upstream_are_listed_once_at_load() {
        // The bearer credential of both upstreams goes in `authorization`, the token header.
        let extra = serde_json::json!({"upstreams": [
            {"cluster": "db", "credential": {"type": "bearer", "token": {"value": "one"}}},
            {"cluster": "crm", "credential": {"type": "bearer", "token": {"value": "two"}}},
            {"cluster": "ops", "credential": {"type": "header", "name": "x-api-key", "value": {"value": "three"}}}
        ]});
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), standard_rules(), extra));
        assert_eq!(f.vm.config.stripped_headers, ["authorization", APPROVAL_ID_HEADER, "x-api-key"]);
    }

    #[test]
    fn header_rules_see_client_headers_but_not_spoofed_identity_headers() {
        let mut rules = standard_rules();
        rules.as_array_mut().unwrap().insert(0, serde_json::json!({"name": "no-debug", "action": "deny", "when": {"headers": [{"name": "x-debug", "exact": "1"}]}}));
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), rules, serde_json::json!({})));
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        host.request_headers.push(("x-debug".into(), "1".into()));
        f.flow().on_request_headers(&mut host, true);
        assert_eq!(host.reply_json()["error"]["rule"], "no-debug");

        // A rule on the identity header judges the filter's own value, never the client's.
        let mut rules = standard_rules();
        rules.as_array_mut().unwrap().insert(0, serde_json::json!({"name": "spoof", "action": "deny", "when": {"headers": [{"name": "x-airlock-subject", "regex": "."}]}}));
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), rules, serde_json::json!({})));
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        host.request_headers.push(("x-airlock-subject".into(), "root".into()));
        assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Continue);
        assert_eq!(host.header("x-airlock-subject"), Some("alice"));
    }

    #[test]
    fn caller_no_rule_allows_gets_403_denied_by_default() {
        let f = Fixture::standard();
        let mut host = request("GET", "/customers", Some(&token("mallory", &["guests"])));
        assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Pause);
        assert_eq!(host.reply_status(), Some(403));
        assert_eq!(host.reply_json()["error"]["code"], "denied_by_default");
        assert_eq!(f.counter(&host, "denied_by_default"), 1);
    }

    #[test]
    fn body_rule_buffers_until_the_whole_body_is_seen_then_blocks() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
        // Continue: Envoy's buffer filter behind Airlock holds the headers; pausing here
        // would stop the body callbacks too.
        assert_eq!(flow.on_request_headers(&mut host, false), Next::Continue);
        assert_eq!(host.header("authorization"), Some("Bearer upstream-secret"), "headers are completed before they move on: the agent token out, the upstream credential in");
        assert_eq!(host.header("x-airlock-subject"), Some("alice"));
        host.request_body = br#"{"sql": "DROP/**/"#.to_vec();
        assert_eq!({ let n = host.request_body.len(); flow.on_request_body(&mut host, n, false) }, Next::Pause);
        host.request_body = br#"{"sql": "DROP/**/TABLE customers"}"#.to_vec();
        assert_eq!({ let n = host.request_body.len(); flow.on_request_body(&mut host, n, true) }, Next::Pause);
        assert_eq!(host.reply_status(), Some(403));
        let v = host.reply_json();
        assert_eq!(v["error"]["rule"], "no-drop");
        assert!(!String::from_utf8_lossy(&host.reply.as_ref().unwrap().2).contains("customers"), "reply must not echo the request");
        assert_eq!(f.counter(&host, "denied"), 1);
    }

    #[test]
    fn body_decision_completes_on_trailers_with_headers_finished_before_they_continued() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
        assert_eq!(flow.on_request_headers(&mut host, false), Next::Continue);
        host.request_headers_frozen = true;
        host.request_body = br#"{"sql": "select 1"}"#.to_vec();
        assert_eq!({ let n = host.request_body.len(); flow.on_request_body(&mut host, n, false) }, Next::Pause);
        assert_eq!(flow.on_request_trailers(&mut host), Next::Continue);
        assert_eq!(host.reply, None);
        assert_eq!(host.header("authorization"), Some("Bearer upstream-secret"), "set before the headers continued");
        assert_eq!(host.header("accept-encoding"), None);
    }

    #[test]
    fn body_over_inspection_limit_is_refused_not_passed() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, false);
        host.request_body = vec![b' '; 65];
        assert_eq!(flow.on_request_body(&mut host, 65, false), Next::Pause);
        assert_eq!(host.reply_status(), Some(413));
        assert_eq!(f.counter(&host, "request_body_over_limit"), 1);
    }

    fn json(v: serde_json::Value) -> Option<Vec<u8>> {
        Some(v.to_string().into_bytes())
    }

    #[test]
    fn hold_mode_pauses_until_approved_then_forwards_with_credentials() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("PUT", "/customers/1", Some(&token("alice", &["support"])));
        assert_eq!(flow.on_request_headers(&mut host, true), Next::Pause);
        assert_eq!(host.callouts[0], ("control".to_string(), "/v1/approvals".to_string()));
        let created: serde_json::Value = serde_json::from_slice(&host.callout_bodies[0]).unwrap();
        assert_eq!(created["rule"], "writes-need-approval");
        assert_eq!(created["subject"], "alice");
        assert_eq!(created["mode"], "hold");
        assert_eq!(created["digest"].as_str().unwrap().len(), 64);
        flow.on_callout_response(&mut host, 1, Some(201), json(serde_json::json!({"id": "apr1", "status": "pending", "url": "http://c/console#apr1"})));
        assert!(host.callouts[1].1.starts_with("/v1/approvals/apr1/wait?timeout_ms="));
        assert_eq!(host.resumed, 0);
        flow.on_callout_response(&mut host, 2, Some(200), json(serde_json::json!({"id": "apr1", "status": "pending"})));
        assert_eq!(host.callouts.len(), 3, "a pending answer before the deadline polls again");
        flow.on_callout_response(&mut host, 3, Some(200), json(serde_json::json!({"id": "apr1", "status": "approved"})));
        assert_eq!(host.resumed, 1);
        assert_eq!(host.reply, None);
        assert_eq!(host.header("authorization"), Some("Bearer upstream-secret"));
        assert_eq!(f.counter(&host, "approvals.granted"), 1);
    }

    #[test]
    fn hold_mode_denial_is_403_with_the_approval_id() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("PUT", "/customers/1", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, true);
        flow.on_callout_response(&mut host, 1, Some(201), json(serde_json::json!({"id": "apr1", "status": "pending"})));
        flow.on_callout_response(&mut host, 2, Some(200), json(serde_json::json!({"id": "apr1", "status": "denied"})));
        assert_eq!(host.resumed, 0);
        let v = host.reply_json();
        assert_eq!((v["error"]["code"].as_str(), v["error"]["approval"]["id"].as_str()), (Some("approval_denied"), Some("apr1")));
    }

    #[test]
    fn control_service_down_during_hold_fails_closed() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("PUT", "/customers/1", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, true);
        flow.on_callout_response(&mut host, 1, Some(201), json(serde_json::json!({"id": "apr1", "status": "pending"})));
        flow.on_callout_response(&mut host, 2, None, None);
        assert_eq!(host.resumed, 0);
        assert_eq!(host.reply_status(), Some(503));
        assert_eq!(f.counter(&host, "approvals.service_errors"), 1);
    }

    #[test]
    fn ticket_mode_answers_202_then_redeems_the_ticket_bound_to_the_request() {
        let f = Fixture::standard();
        let t = token("alice", &["support"]);
        let mut host = request("DELETE", "/customers/1", Some(&t));
        f.flow().on_request_headers(&mut host, true);
        f.flow().on_callout_response(&mut host, 1, Some(201), json(serde_json::json!({"id": "apr9", "status": "pending", "url": "u"})));
        // A fresh flow never saw call 1: the answer is ignored.
        assert_eq!(host.reply, None);

        let mut flow = f.flow();
        let mut host = request("DELETE", "/customers/1", Some(&t));
        flow.on_request_headers(&mut host, true);
        flow.on_callout_response(&mut host, 1, Some(201), json(serde_json::json!({"id": "apr9", "status": "pending", "url": "u"})));
        assert_eq!(host.reply_status(), Some(202));
        let v = host.reply_json();
        assert_eq!(v["error"]["approval"]["id"], "apr9");
        assert_eq!(v["error"]["retry"], "after_approval");

        let mut flow = f.flow();
        let mut retry = request("DELETE", "/customers/1", Some(&t));
        retry.request_headers.push((APPROVAL_ID_HEADER.into(), "apr9".into()));
        assert_eq!(flow.on_request_headers(&mut retry, true), Next::Pause);
        assert_eq!(retry.callouts[0].1, "/v1/approvals/apr9/redeem");
        let redeem: serde_json::Value = serde_json::from_slice(&retry.callout_bodies[0]).unwrap();
        let original: serde_json::Value = serde_json::from_slice(&host.callout_bodies[0]).unwrap();
        assert_eq!(redeem["digest"], original["digest"], "the retry is bound to the same digest");
        flow.on_callout_response(&mut retry, 1, Some(409), json(serde_json::json!({"error": {"code": "approval_already_used"}})));
        assert_eq!(retry.reply_json()["error"]["code"], "approval_rejected");
    }

    #[test]
    fn redeeming_a_denied_ticket_says_denied_not_pending() {
        let f = Fixture::standard();
        let t = token("alice", &["support"]);
        let answers = [
            (serde_json::json!({"error": {"code": "approval_denied"}}), 403, "approval_denied"),
            (serde_json::json!({"error": {"code": "approval_not_approved"}}), 202, "approval_pending"),
        ];
        for (answer, status, code) in answers {
            let mut flow = f.flow();
            let mut retry = request("DELETE", "/customers/1", Some(&t));
            retry.request_headers.push((APPROVAL_ID_HEADER.into(), "apr9".into()));
            flow.on_request_headers(&mut retry, true);
            flow.on_callout_response(&mut retry, 1, Some(409), json(answer));
            assert_eq!((retry.reply_status(), retry.reply_json()["error"]["code"].as_str()), (Some(status), Some(code)));
        }
    }

    #[test]
    fn approval_of_a_request_with_a_body_reads_the_body_first() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("PUT", "/customers/1", Some(&token("alice", &["support"])));
        assert_eq!(flow.on_request_headers(&mut host, false), Next::Continue);
        assert!(host.callouts.is_empty());
        host.request_body = br#"{"email":"new@example.com"}"#.to_vec();
        let n = host.request_body.len();
        assert_eq!(flow.on_request_body(&mut host, n, true), Next::Pause);
        let created: serde_json::Value = serde_json::from_slice(&host.callout_bodies[0]).unwrap();
        assert!(!created["body"].as_str().unwrap().contains("new@example.com"), "approvers see masked bodies");
        assert_ne!(created["digest"], serde_json::Value::String(approval::request_digest("PUT", "/customers/1", b"", "alice")));
    }

    #[test]
    fn every_request_leaves_one_masked_audit_record() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("POST", "/sql?api_key=AKIAIOSFODNN7EXAMPLE", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, false);
        host.request_body = br#"{"sql": "drop table customers -- by bob@example.com"}"#.to_vec();
        let n = host.request_body.len();
        flow.on_request_body(&mut host, n, true);
        flow.on_log(&mut host);
        let (body, count) = f.vm.audit.borrow_mut().next_batch(0, 10).unwrap();
        assert_eq!(count, 1);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let r = &v["records"][0];
        assert_eq!(r["decision"], "denied_by_rule");
        assert_eq!(r["rule"], "no-drop");
        assert_eq!(r["status"], 403);
        assert_eq!(r["subject"], "alice");
        assert!(r["session_id"].as_str().unwrap().starts_with("tok-alice-"));
        assert!(!body.contains("AKIAIOSFODNN7EXAMPLE") && !body.contains("bob@example.com"), "{body}");
        assert!(r["request_body"].as_str().unwrap().contains("drop table"));
    }

    #[test]
    fn dropped_audit_records_are_counted_and_logged_sparingly() {
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), standard_rules(), serde_json::json!({"audit": {"max_queued_records": 1}})));
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        for _ in 0..5 {
            let mut flow = f.flow();
            flow.on_request_headers(&mut host, true);
            flow.on_log(&mut host);
        }
        assert_eq!(f.counter(&host, "audit.records"), 1);
        assert_eq!(f.counter(&host, "audit.dropped"), 4);
        let warnings = host.logs.iter().filter(|l| l.contains("records dropped so far")).count();
        assert_eq!(warnings, 3, "drops 1, 2 and 4 are logged: {:?}", host.logs);
    }

    #[test]
    fn strict_audit_refuses_requests_while_records_cannot_be_delivered() {
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), standard_rules(), serde_json::json!({"audit": {"strict": true}})));
        f.vm.audit.borrow_mut().push("{}".into(), 10);
        f.vm.audit.borrow_mut().next_batch(0, 10);
        f.vm.audit.borrow_mut().failed(0);
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        f.flow().on_request_headers(&mut host, true);
        assert_eq!(host.reply_status(), Some(503));
        assert_eq!(host.reply_json()["error"]["code"], "audit_unavailable");
    }

    #[test]
    fn dry_run_lets_a_denied_request_through_and_counts_it() {
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), standard_rules(), serde_json::json!({"dry_run": true})));
        let mut host = request("GET", "/customers", Some(&token("mallory", &[])));
        assert_eq!(f.flow().on_request_headers(&mut host, true), Next::Continue);
        assert_eq!(host.reply, None);
        assert_eq!(f.counter(&host, "dry_run.would_block"), 1);
        assert!(host.logs.iter().any(|l| l.contains("would have answered denied_by_default")));
    }

    #[test]
    fn remote_keys_are_fetched_on_first_request_then_the_request_resumes() {
        let remote = serde_json::json!({"remote": {"cluster": "jwks", "authority": "idp", "path": "/jwks"}});
        let f = Fixture::new(config(remote, standard_rules(), serde_json::json!({})));
        let mut flow = f.flow();
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        assert_eq!(flow.on_request_headers(&mut host, true), Next::Pause);
        assert_eq!(host.callouts, vec![("jwks".to_string(), "/jwks".to_string())]);
        flow.on_callout_response(&mut host, 1, Some(200), Some(jwks().to_string().into_bytes()));
        assert_eq!(host.resumed, 1);
        assert_eq!(host.reply, None);
        assert_eq!(host.header("x-airlock-subject"), Some("alice"));
        assert_eq!(f.counter(&host, "jwks.fetch_ok"), 1);
    }

    #[test]
    fn unreachable_jwks_fails_closed_with_503() {
        let remote = serde_json::json!({"remote": {"cluster": "jwks", "authority": "idp", "path": "/jwks"}});
        let f = Fixture::new(config(remote, standard_rules(), serde_json::json!({})));
        let mut flow = f.flow();
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, true);
        flow.on_callout_response(&mut host, 1, None, None);
        assert_eq!(host.resumed, 0);
        assert_eq!(host.reply_status(), Some(503));
        assert_eq!(host.reply_json()["error"]["retry"], "later");
    }

    fn allowed_masked_flow(f: &Fixture) -> (RequestFlow, MockHost) {
        let mut flow = f.flow();
        let mut host = request("GET", "/customers", Some(&token("alice", &["support"])));
        host.request_headers.push(("accept-encoding".into(), "gzip".into()));
        assert_eq!(flow.on_request_headers(&mut host, true), Next::Continue);
        assert_eq!(host.header("accept-encoding"), None, "compression must be off for masked responses");
        (flow, host)
    }

    #[test]
    fn masked_response_body_is_rewritten_and_content_length_dropped() {
        let f = Fixture::standard();
        let (mut flow, mut host) = allowed_masked_flow(&f);
        host.response_headers = vec![("content-type".into(), "application/json".into()), ("content-length".into(), "40".into())];
        assert_eq!(flow.on_response_headers(&mut host, false), Next::Continue);
        assert!(host.response_header("content-length").is_none());
        host.response_body = br#"{"email":"alice@example.com","id":7}"#.to_vec();
        assert_eq!({ let n = host.response_body.len(); flow.on_response_body(&mut host, n, true) }, Next::Continue);
        let v: serde_json::Value = serde_json::from_slice(&host.response_body).unwrap();
        assert_ne!(v["email"], "alice@example.com");
        assert_eq!(v["id"], 7);
        assert_eq!(f.counter(&host, "masked.pii.email"), 1);
    }

    #[test]
    fn invalid_json_under_a_field_masking_profile_is_refused_not_masked_as_text() {
        let mut c = config(serde_json::json!({"inline": jwks()}), standard_rules(), serde_json::json!({}));
        c["mask_profiles"]["pii"]["fields"] = serde_json::json!(["password"]);
        let f = Fixture::new(c);
        let (mut flow, mut host) = allowed_masked_flow(&f);
        host.response_headers = vec![("content-type".into(), "application/json".into())];
        flow.on_response_headers(&mut host, false);
        host.response_body = br#"{"password": "hunter2", oops"#.to_vec();
        let n = host.response_body.len();
        assert_eq!(flow.on_response_body(&mut host, n, true), Next::Pause);
        assert_eq!(host.reply_json()["error"]["code"], "response_not_maskable");
    }

    #[test]
    fn compressed_response_on_masked_route_is_refused() {
        let f = Fixture::standard();
        let (mut flow, mut host) = allowed_masked_flow(&f);
        host.response_headers = vec![("content-encoding".into(), "gzip".into())];
        assert_eq!(flow.on_response_headers(&mut host, false), Next::Pause);
        assert_eq!(host.reply_status(), Some(502));
        assert_eq!(host.reply_json()["error"]["code"], "response_not_maskable");
    }

    #[test]
    fn response_over_masking_limit_is_refused_not_sent_unmasked() {
        let f = Fixture::standard();
        let (mut flow, mut host) = allowed_masked_flow(&f);
        host.response_headers = vec![("content-type".into(), "text/plain".into())];
        flow.on_response_headers(&mut host, false);
        assert_eq!(flow.on_response_body(&mut host, 257, false), Next::Pause);
        assert_eq!(host.reply_status(), Some(502));
        assert_eq!(host.reply_json()["error"]["code"], "response_too_large");
    }

    #[test]
    fn declared_oversized_response_is_refused_while_status_can_still_change() {
        let f = Fixture::standard();
        let (mut flow, mut host) = allowed_masked_flow(&f);
        host.response_headers = vec![("content-length".into(), "100000".into())];
        assert_eq!(flow.on_response_headers(&mut host, false), Next::Pause);
        assert_eq!(host.reply_status(), Some(502));
    }

    #[test]
    fn body_decision_after_a_key_fetch_resumes_so_the_body_can_arrive() {
        let remote = serde_json::json!({"remote": {"cluster": "jwks", "authority": "idp", "path": "/jwks"}});
        let f = Fixture::new(config(remote, standard_rules(), serde_json::json!({})));
        let mut flow = f.flow();
        let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
        assert_eq!(flow.on_request_headers(&mut host, false), Next::Pause);
        flow.on_callout_response(&mut host, 1, Some(200), Some(jwks().to_string().into_bytes()));
        assert_eq!(host.resumed, 1);
        host.request_body = br#"{"sql": "drop table x"}"#.to_vec();
        let n = host.request_body.len();
        assert_eq!(flow.on_request_body(&mut host, n, true), Next::Pause);
        assert_eq!(host.reply_json()["error"]["rule"], "no-drop");
    }

    #[test]
    fn rule_level_dry_run_reports_and_evaluation_goes_on() {
        let mut rules = standard_rules();
        rules[0]["dry_run"] = serde_json::json!(true);
        let f = Fixture::new(config(serde_json::json!({"inline": jwks()}), rules, serde_json::json!({})));
        let mut flow = f.flow();
        let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, false);
        host.request_body = br#"{"sql": "drop table x"}"#.to_vec();
        let n = host.request_body.len();
        assert_eq!(flow.on_request_body(&mut host, n, true), Next::Continue);
        assert_eq!(host.reply, None);
        assert_eq!(f.counter(&host, "dry_run.would_block"), 1);
        assert_eq!(f.counter(&host, "rule.support.matched"), 1);
    }

    #[test]
    fn log_line_never_contains_query_string_or_token() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let t = token("alice", &["guests"]);
        let mut host = request("GET", "/customers?api_key=sekrit", Some(&t));
        flow.on_request_headers(&mut host, true);
        flow.on_log(&mut host);
        let all = host.logs.join("\n");
        assert!(all.contains("decision=denied_by_default"));
        assert!(!all.contains("sekrit") && !all.contains(&t));
    }
}

//! The approval phase: ask the control service for a human decision (or redeem the
//! client's ticket), and read its answers.
//!
//! A held request loops on long-polls until its deadline; a ticket is answered at once
//! with 202 and the approval id, and the retry redeems it. Whatever the service cannot
//! answer fails closed unless the rule says `on_unavailable: allow`.

use std::borrow::Cow;

use airlock_wire::{
    ApprovalErrorCode, ApprovalState, ApprovalStatus, Approvers, CreateApproval, Decision, ErrorEnvelope,
    RedeemApproval,
};

use super::record::record_masker;
use super::request::Request;
use super::step::{ApprovalCall, Caller, PendingApproval, Step};
use crate::approval::{self as rules, Mode, OnUnavailable, APPROVAL_ID_HEADER};
use crate::audit;
use crate::host::{Callout, Host, Level};
use crate::reply::{ApprovalRef, Code, Reply};
use crate::vm_state::VmState;

/// Approval bodies shown to approvers are cut to this size.
const MAX_APPROVAL_BODY: usize = 64 * 1024;
/// One long-poll to the control service lasts at most this long; a hold loops until its
/// deadline.
const MAX_WAIT_POLL_MS: u64 = 25_000;

/// Asks for the approval `rule` requires, bound to this exact request.
pub fn start(vm: &VmState, host: &mut dyn Host, request: &Request, caller: &Caller, rule: usize) -> Step {
    let Some(settings) = vm.config.policy.rules().get(rule).and_then(|r| r.approval()).cloned() else {
        return Step::Refuse(Reply::new(Code::Misconfigured, "an approve rule without approval settings"));
    };
    let subject = caller.identity.subject.as_str();
    let digest = rules::request_digest(request.method(), request.raw_path(), request.body_bytes(), subject);
    let mut pending = PendingApproval { call: ApprovalCall::Create, rule, settings, id: None, deadline_ms: 0 };
    if let Some(ticket) = request.ticket.as_deref().filter(|_| pending.settings.mode == Mode::Ticket) {
        if !rules::valid_id(ticket) {
            let reply =
                Reply::new(Code::ApprovalRejected, format!("`{APPROVAL_ID_HEADER}` is not a valid approval id"));
            return Step::Refuse(reply.with_rule(rule_name(vm, rule)));
        }
        let payload =
            serde_json::to_vec(&RedeemApproval { digest: Cow::Borrowed(&digest), subject: Cow::Borrowed(subject) })
                .unwrap_or_default();
        pending.call = ApprovalCall::Redeem;
        pending.id = Some(ticket.to_string());
        return call(vm, host, pending, "POST", &format!("/v1/approvals/{ticket}/redeem"), Some(&payload), None);
    }
    let body = String::from_utf8_lossy(audit::excerpt_bytes(request.body_bytes(), MAX_APPROVAL_BODY));
    let (masked_body, _) = record_masker(&vm.config, Some(rule)).mask_text(&body);
    let settings = &pending.settings;
    let create = CreateApproval {
        rule: Cow::Borrowed(rule_name(vm, rule)),
        subject: Cow::Borrowed(subject),
        groups: Cow::Borrowed(&caller.identity.groups),
        method: Cow::Borrowed(request.method()),
        path: Cow::Borrowed(request.raw_path()),
        body: masked_body,
        digest: Cow::Borrowed(&digest),
        reason: request.reason.as_deref().map(Cow::Borrowed),
        session_id: Cow::Borrowed(request.session_id(&vm.config, Some(&caller.identity))),
        mode: settings.mode,
        ttl_seconds: settings.ttl_seconds,
        approvers: Approvers { groups: Cow::Borrowed(&settings.approver_groups), required: settings.required },
    };
    let payload = serde_json::to_vec(&create).unwrap_or_default();
    host.increment(vm.stats.approvals_requested, 1);
    pending.deadline_ms = host.now_unix_ms() + settings.ttl_seconds * 1000;
    call(vm, host, pending, "POST", "/v1/approvals", Some(&payload), None)
}

/// The control service answered the call `pending` was waiting on (`status` is `None`
/// when it timed out or could not connect).
pub fn answer(
    vm: &VmState,
    host: &mut dyn Host,
    mut pending: PendingApproval,
    status: Option<u32>,
    body: &[u8],
) -> Step {
    match (pending.call, status) {
        (ApprovalCall::Create, Some(201)) => {
            let Ok(state) = serde_json::from_slice::<ApprovalState>(body) else {
                return unavailable(vm, host, &pending);
            };
            pending.id = Some(state.id.clone());
            if pending.settings.mode == Mode::Hold {
                return wait(vm, host, pending);
            }
            let approval = ApprovalRef { id: state.id, url: state.url.unwrap_or_default(), status: "pending" };
            let reply = Reply::new(
                Code::ApprovalPending,
                format!("approval requested; retry with header `{APPROVAL_ID_HEADER}` once approved"),
            );
            Step::Refuse(reply.with_rule(rule_name(vm, pending.rule)).with_approval(approval))
        }
        (ApprovalCall::Wait, Some(200)) => match serde_json::from_slice::<ApprovalState>(body).map(|s| s.status) {
            Ok(ApprovalStatus::Approved) => granted(vm, host),
            Ok(ApprovalStatus::Denied) => {
                refused(vm, &pending, Code::ApprovalDenied, "an approver denied this request")
            }
            Ok(ApprovalStatus::Expired) => {
                refused(vm, &pending, Code::ApprovalExpired, "no approver decided before the deadline")
            }
            Ok(ApprovalStatus::Pending) => wait(vm, host, pending),
            Err(_) => unavailable(vm, host, &pending),
        },
        (ApprovalCall::Redeem, Some(200)) => granted(vm, host),
        (ApprovalCall::Redeem, Some(404 | 409)) => match serde_json::from_slice::<ErrorEnvelope>(body)
            .map(|e| e.error.code)
        {
            Ok(ApprovalErrorCode::ApprovalNotApproved) => {
                let approval =
                    ApprovalRef { id: pending.id.clone().unwrap_or_default(), url: String::new(), status: "pending" };
                let reply = Reply::new(Code::ApprovalPending, "this approval is not granted (yet)");
                Step::Refuse(reply.with_rule(rule_name(vm, pending.rule)).with_approval(approval))
            }
            Ok(ApprovalErrorCode::ApprovalDenied) => {
                refused(vm, &pending, Code::ApprovalDenied, "an approver denied this request")
            }
            Ok(ApprovalErrorCode::ApprovalExpired) => {
                refused(vm, &pending, Code::ApprovalExpired, "this approval has expired")
            }
            _ => refused(
                vm,
                &pending,
                Code::ApprovalRejected,
                "this approval does not cover this request, or was already used",
            ),
        },
        _ => unavailable(vm, host, &pending),
    }
}

/// Polls for the decision of a held request, until its deadline.
fn wait(vm: &VmState, host: &mut dyn Host, mut pending: PendingApproval) -> Step {
    let Some(id) = pending.id.clone() else {
        return unavailable(vm, host, &pending);
    };
    let remaining = pending.deadline_ms.saturating_sub(host.now_unix_ms());
    if remaining == 0 {
        return refused(vm, &pending, Code::ApprovalExpired, "no approver decided before the deadline");
    }
    let poll = remaining.min(MAX_WAIT_POLL_MS);
    pending.call = ApprovalCall::Wait;
    call(vm, host, pending, "GET", &format!("/v1/approvals/{id}/wait?timeout_ms={poll}"), None, Some(poll + 5000))
}

fn call(
    vm: &VmState,
    host: &mut dyn Host,
    pending: PendingApproval,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout_ms: Option<u64>,
) -> Step {
    let Some(control) = &vm.config.control else {
        return unavailable(vm, host, &pending);
    };
    let callout = Callout {
        cluster: &control.cluster,
        method,
        authority: &control.authority,
        path,
        headers: &[("content-type", "application/json"), ("authorization", control.authorization.expose())],
        body,
        timeout_ms: timeout_ms.unwrap_or(control.timeout_ms),
    };
    match host.dispatch(&callout) {
        Ok(call) => Step::NeedsApproval { call, pending },
        Err(problem) => {
            host.log(Level::Warn, &format!("airlock: approval call failed to start: {problem}"));
            unavailable(vm, host, &pending)
        }
    }
}

fn granted(vm: &VmState, host: &mut dyn Host) -> Step {
    host.increment(vm.stats.approvals_granted, 1);
    Step::Forward(Decision::Approved)
}

/// The control service cannot be asked: fail closed unless the rule says otherwise.
fn unavailable(vm: &VmState, host: &mut dyn Host, pending: &PendingApproval) -> Step {
    host.increment(vm.stats.approval_service_errors, 1);
    let name = rule_name(vm, pending.rule);
    match pending.settings.on_unavailable {
        OnUnavailable::Allow => {
            host.log(
                Level::Warn,
                &format!("airlock: approval service unavailable; rule `{name}` allows the request anyway"),
            );
            Step::Forward(Decision::Allow)
        }
        OnUnavailable::Deny => {
            Step::Refuse(Reply::new(Code::DependencyUnavailable, "the approval service is unavailable").with_rule(name))
        }
    }
}

fn refused(vm: &VmState, pending: &PendingApproval, code: Code, message: &str) -> Step {
    let mut reply = Reply::new(code, message).with_rule(rule_name(vm, pending.rule));
    if let Some(id) = &pending.id {
        let status = code.as_str().trim_start_matches("approval_");
        reply = reply.with_approval(ApprovalRef { id: id.clone(), url: String::new(), status });
    }
    Step::Refuse(reply)
}

fn rule_name(vm: &VmState, rule: usize) -> &str {
    vm.config.policy.rules().get(rule).map_or("default", |r| r.name())
}

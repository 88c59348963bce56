//! One request's life through Airlock, as a state machine written against the `Host`
//! trait. Each Envoy callback lands here; the phases (files of this module) return a
//! [`Step`], and [`RequestFlow::settle`] alone turns it into the next state and tells
//! Envoy whether to go on.
//!
//! ```text
//!  Start ──headers──▶ token ─┬─ keys missing ──▶ AwaitingKeys ──JWKS answer──┐
//!                            └─ verified ◀───────────────────────────────────┘
//!                                  │ policy (runs once)
//!       ┌──────────────┬───────────┼────────────────────┬──────────────────┐
//!   needs body       allow        deny            approve (body read)      │
//!       ▼              │           │                     ▼                 │
//!  AwaitingBody ──▶ policy /       │             AwaitingApproval ⟲ poll   │
//!       │         approval         │                     │                 │
//!       ▼              ▼           ▼                     ▼                 │
//!                  Forwarded ── masked route ──▶ MaskingResponse ──▶ Finished (log, audit)
//!                                         refusals ──────────────────▶ Finished
//! ```
//!
//! Envoy's Wasm host turns "pause" in a headers callback into "stop everything": no body
//! callback arrives until the filter resumes, and resuming sends the headers on. So when a
//! decision needs the body, the headers callback *continues* and the body callbacks buffer
//! until the decision. The shipped Envoy configs put Envoy's `buffer` filter right after
//! Airlock so that continued headers wait there: nothing reaches the upstream before the
//! decision. Whatever must never reach the upstream (the agent's token, spoofed identity
//! headers) is removed in the headers callback, so that holds even without it.

mod approval;
mod body;
mod decide;
mod record;
mod request;
mod response;
mod step;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;

use std::rc::Rc;

use airlock_wire::Decision;

use crate::authenticate::{unauthenticated, Authentication};
use crate::host::{Host, Level, Next};
use crate::identity::Identity;
use crate::jwt::{self, AuthError};
use crate::normalize;
use crate::policy::Body;
use crate::reply::{Code, Reply};
use crate::vm_state::VmState;
use body::{BodyBuffer, Progress};
use decide::{decide, decide_on_body, Verdict};
use record::Record;
use request::{complete_upstream_headers, Request};
use response::Plan;
use step::{AfterBody, Caller, PendingApproval, Step};

enum State {
    /// Nothing seen yet.
    Start,
    /// Paused until the JWKS fetch `call` answers; then `token` is judged again.
    AwaitingKeys { call: u32, token: String },
    /// Buffering the request body for the decision.
    AwaitingBody { caller: Caller, body: BodyBuffer, then: AfterBody },
    /// Paused until the control service answers `call`.
    AwaitingApproval { call: u32, pending: PendingApproval },
    /// Sent upstream; the response is masked with this profile, if any.
    Forwarded { mask: Option<usize> },
    /// Buffering the response body to mask it whole.
    MaskingResponse { profile: usize, is_json: bool, body: BodyBuffer },
    /// Answered by the filter, or the response needs nothing more.
    Finished,
}

pub struct RequestFlow {
    vm: Rc<VmState>,
    state: State,
    request: Request,
    record: Record,
    /// The request headers have moved on: Envoy ignores changes to them from now on.
    headers_continued: bool,
}

impl RequestFlow {
    pub fn new(vm: Rc<VmState>) -> Self {
        RequestFlow { vm, state: State::Start, request: Request::default(), record: Record::default(), headers_continued: false }
    }

    // ---- Envoy's callbacks, in the order of a request's life ---------------------------

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Next {
        let vm = Rc::clone(&self.vm);
        host.increment(vm.stats.requests, 1);
        let started_ms = host.now_unix_ms();
        self.request = Request::read(host, &vm.config, started_ms, end_of_stream);
        let step = self.authenticate(host);
        self.settle(host, step)
    }

    pub fn on_request_body(&mut self, host: &mut dyn Host, buffered: usize, end_of_stream: bool) -> Next {
        let progress = match &mut self.state {
            State::AwaitingBody { body, .. } => body.on_data(buffered, end_of_stream),
            State::AwaitingKeys { .. } | State::AwaitingApproval { .. } => return Next::Pause,
            _ => return Next::Continue,
        };
        self.request_body_progress(host, progress)
    }

    /// With trailers (HTTP/2, gRPC) the last body callback never says end-of-stream: the
    /// trailers callback is where the body is known to be complete.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Next {
        let progress = match &self.state {
            State::AwaitingBody { body, .. } => body.on_trailers(),
            State::AwaitingKeys { .. } | State::AwaitingApproval { .. } => return Next::Pause,
            _ => return Next::Continue,
        };
        self.request_body_progress(host, progress)
    }

    /// The answer to a JWKS fetch or a control-service call this request paused on.
    pub fn on_callout_response(&mut self, host: &mut dyn Host, token: u32, status: Option<u32>, body: Option<Vec<u8>>) {
        let vm = Rc::clone(&self.vm);
        let step = match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingKeys { call, token: jwt } if call == token => match vm.auth.keys_arrived(host, status, body.as_deref(), &jwt) {
                Ok(identity) => self.authenticated(host, identity),
                Err(reply) => Step::Refuse(reply),
            },
            State::AwaitingApproval { call, pending } if call == token => approval::answer(&vm, host, pending, status, body.as_deref().unwrap_or_default()),
            other => {
                self.state = other;
                return;
            }
        };
        // The request was paused for this call: going on means resuming it (forwarding,
        // or waiting for the body, whose callbacks only come once resumed). A refusal has
        // answered already; another call keeps it paused.
        if self.settle(host, step) == Next::Continue {
            host.resume_request();
        }
    }

    /// Refuses what cannot be masked while the status can still change, then lets the
    /// headers go (pausing here would also stop the body callbacks).
    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Next {
        if self.vm.config.audit.is_some() {
            self.record.status = host.response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        }
        let State::Forwarded { mask: Some(profile) } = self.state else {
            return Next::Continue;
        };
        match response::plan(&self.vm, host, end_of_stream) {
            Plan::PassThrough => Next::Continue,
            Plan::Buffer { is_json } => self.settle(host, Step::MaskResponse { profile, is_json }),
            Plan::Refuse(reply) => self.settle(host, Step::Refuse(reply)),
        }
    }

    pub fn on_response_body(&mut self, host: &mut dyn Host, buffered: usize, end_of_stream: bool) -> Next {
        let progress = match &mut self.state {
            State::MaskingResponse { body, .. } => body.on_data(buffered, end_of_stream),
            _ => return Next::Continue,
        };
        self.response_body_progress(host, progress)
    }

    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Next {
        let progress = match &self.state {
            State::MaskingResponse { body, .. } => body.on_trailers(),
            _ => return Next::Continue,
        };
        self.response_body_progress(host, progress)
    }

    /// One log line and one audit record per request.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        self.record.finish(&self.vm, host, &self.request);
    }

    // ---- the one place that changes state -------------------------------------------

    fn settle(&mut self, host: &mut dyn Host, step: Step) -> Next {
        let vm = Rc::clone(&self.vm);
        match step {
            Step::Forward(decision) => {
                let mask = self.record.rule.and_then(|i| vm.config.policy.rules().get(i)).and_then(|r| r.mask_profile());
                self.continue_headers(host, mask.is_some());
                host.increment(vm.stats.allowed, 1);
                self.record.decision = Some(decision);
                self.state = State::Forwarded { mask };
                Next::Continue
            }
            Step::Refuse(reply) => {
                self.refuse(host, &reply);
                self.state = State::Finished;
                Next::Pause
            }
            Step::NeedsBody(caller, then) => {
                // Continue: the body callbacks that follow buffer it. The headers get now
                // what an allowed request needs; a refusal still answers before Envoy's
                // buffer filter behind Airlock lets them reach the upstream.
                self.continue_headers(host, !vm.config.mask_profiles.is_empty());
                self.state = State::AwaitingBody { caller, body: BodyBuffer::new(vm.config.request_body_limit), then };
                Next::Continue
            }
            Step::Approve(caller, rule) => {
                let step = approval::start(&vm, host, &self.request, &caller, rule);
                self.settle(host, step)
            }
            Step::NeedsKeys { call, token } => {
                self.state = State::AwaitingKeys { call, token };
                Next::Pause
            }
            Step::NeedsApproval { call, pending } => {
                if let Some(id) = &pending.id {
                    self.record.approval_id = Some(id.clone());
                }
                self.state = State::AwaitingApproval { call, pending };
                Next::Pause
            }
            Step::MaskResponse { profile, is_json } => {
                self.state = State::MaskingResponse { profile, is_json, body: BodyBuffer::new(vm.config.response_body_limit) };
                Next::Continue
            }
            Step::Finished => {
                self.state = State::Finished;
                Next::Continue
            }
        }
    }

    // ---- phases of the request side -------------------------------------------------

    fn authenticate(&mut self, host: &mut dyn Host) -> Step {
        let vm = Rc::clone(&self.vm);
        let config = &vm.config;
        if config.audit.as_ref().is_some_and(|a| a.strict) && vm.audit.borrow().is_failing() {
            return Step::Refuse(Reply::new(Code::AuditUnavailable, "strict audit mode: requests are refused while audit records cannot be delivered"));
        }
        let token = match self.request.header(&config.auth.header).map(jwt::bearer_token) {
            None => return Step::Refuse(unauthenticated(&AuthError::MissingToken)),
            Some(Err(e)) => return Step::Refuse(unauthenticated(&e)),
            Some(Ok(token)) => token,
        };
        match vm.auth.authenticate(host, token, self.request.started_ms / 1000) {
            Authentication::Verified(identity) => self.authenticated(host, identity),
            Authentication::Fetching(call) => Step::NeedsKeys { call, token: token.to_string() },
            Authentication::Refused(reply) => Step::Refuse(reply),
        }
    }

    /// The caller is known: read the target, clean the headers, ask the policy.
    fn authenticated(&mut self, host: &mut dyn Host, identity: Rc<Identity>) -> Step {
        let vm = Rc::clone(&self.vm);
        self.record.identity = Some(Rc::clone(&identity));
        let target = match normalize::normalize_target(self.request.raw_path()) {
            Ok(target) => target,
            Err(e) => return Step::Refuse(Reply::new(Code::InvalidRequestTarget, format!("the request path cannot be inspected: {e}"))),
        };
        self.request.strip_for_upstream(host, &vm.config, &identity);
        let body = if self.request.bodiless {
            self.request.body = Some(Vec::new());
            Body::Empty
        } else {
            Body::NotRead
        };
        let verdict = decide(&vm, host, &self.request, Caller { identity, target }, body);
        self.note(verdict)
    }

    fn request_body_progress(&mut self, host: &mut dyn Host, progress: Progress) -> Next {
        let vm = Rc::clone(&self.vm);
        let len = match progress {
            Progress::Partial => return Next::Pause,
            Progress::OverLimit => {
                let limit = vm.config.request_body_limit;
                let message = format!("the request body must be inspected and is larger than the {limit}-byte inspection limit");
                return self.settle(host, Step::Refuse(Reply::new(Code::RequestBodyTooLarge, message)));
            }
            Progress::Complete(len) => len,
        };
        let State::AwaitingBody { caller, then, .. } = std::mem::replace(&mut self.state, State::Finished) else {
            return Next::Continue;
        };
        self.request.body = Some(if len == 0 { Vec::new() } else { host.request_body(len).unwrap_or_default() });
        let step = match then {
            AfterBody::Decide => {
                let verdict = decide_on_body(&vm, host, &self.request, caller);
                self.note(verdict)
            }
            AfterBody::Approve(rule) => Step::Approve(caller, rule),
        };
        self.settle(host, step)
    }

    /// Keeps what the policy decided for the record; the step goes on.
    fn note(&mut self, verdict: Verdict) -> Step {
        self.record.rule = verdict.rule.or(self.record.rule);
        self.record.dry_run_reported |= verdict.dry_run_reported;
        verdict.step
    }

    /// The last changes before the request headers move on, made once.
    fn continue_headers(&mut self, host: &mut dyn Host, may_mask: bool) {
        if !self.headers_continued {
            complete_upstream_headers(host, &self.vm.config, may_mask);
            self.headers_continued = true;
        }
    }

    // ---- the response side -------------------------------------------------------------

    fn response_body_progress(&mut self, host: &mut dyn Host, progress: Progress) -> Next {
        let len = match progress {
            Progress::Partial => return Next::Pause,
            Progress::OverLimit => return self.settle(host, Step::Refuse(response::too_large())),
            Progress::Complete(len) => len,
        };
        let State::MaskingResponse { profile, is_json, .. } = self.state else {
            return Next::Continue;
        };
        match response::mask(&self.vm, host, profile, is_json, len) {
            Ok(masked) => {
                self.record.masked_values = masked.values;
                self.record.masked_response = masked.excerpt;
                self.settle(host, Step::Finished)
            }
            Err(reply) => self.settle(host, Step::Refuse(reply)),
        }
    }

    // ---- answers ------------------------------------------------------------------------

    /// Counts the refusal, keeps it for the record, and answers the client.
    fn refuse(&mut self, host: &mut dyn Host, reply: &Reply) {
        if let Some(counter) = self.vm.stats.refusal(reply.code) {
            host.increment(counter, 1);
        }
        if reply.code == Code::Misconfigured {
            host.log(Level::Warn, &format!("airlock: misconfigured: {}", reply.message));
        }
        self.record.decision = Some(Decision::Refused(reply.code));
        self.record.status = reply.status();
        if let Some(approval) = &reply.approval {
            self.record.approval_id = Some(approval.id.clone());
        }
        let body = reply.to_json(self.request.request_id());
        let extra = reply.extra_headers();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json"), ("cache-control", "no-store")];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        host.send_reply(reply.status(), &headers, &body);
    }
}

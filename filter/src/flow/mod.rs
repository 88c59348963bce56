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
//! When a decision needs the body, the request is held (see `hold.rs`): with
//! `allow_on_headers_stop_iteration` the headers callback pauses and Envoy still feeds the
//! body, so nothing — no connection, no header, no injected credential — reaches the
//! upstream before the decision; with the `buffer_filter` fallback the headers continue and
//! Envoy's `buffer` filter after Airlock holds them. Either way, whatever must never reach
//! the upstream (the agent's token, spoofed identity headers) is removed in the headers
//! callback.
//!
//! A `token_exchange` credential with no exchanged token cached for the caller's token,
//! or an `oauth2_client_credentials` one with no token held yet, pauses the allowed
//! request (`AwaitingCredential`) until the token endpoint answers; the answer forwards
//! it with the new token, or refuses it.
//!
//! A `signed_request` credential is bound to the body: an allowed request that has one
//! waits for it (`AfterBody::Forward`, held like a body rule's request) and its token is
//! minted once the body is complete, just before the headers move on.
//!
//! A refusal answers an MCP request in JSON-RPC, by the request's id (`reply.rs`): so an
//! MCP request refused on its headers alone is held the same way until its body is read
//! (`AfterBody::Refuse`), and only then answered.

mod approval;
mod body;
mod credential;
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
use crate::decompress::{Coding, Decoder};
use crate::hold::HoldBy;
use crate::host::{Host, Level, Next};
use crate::identity::Identity;
use crate::jwt::{self, AuthError};
use crate::mcp;
use crate::normalize;
use crate::policy::Body;
use crate::reply::{Code, Reply};
use crate::stream::{StreamKind, StreamLimits, StreamMasker};
use crate::vm_state::VmState;
use body::{BodyBuffer, Progress};
use credential::{body_too_large_to_sign, Injected, Prepared};
use decide::{decide, decide_on_body, denies_use, Listing, Verdict};
use record::Record;
use request::{complete_upstream_headers, Request};
use response::Plan;
use step::{AfterBody, Caller, PendingApproval, Step};

enum State {
    /// Nothing seen yet.
    Start,
    /// Paused until the JWKS fetch `call` answers; then `token` is judged again.
    AwaitingKeys { call: u32, token: String },
    /// Buffering the request body for the decision, or for the answer.
    AwaitingBody { then: AfterBody },
    /// Paused until the control service answers `call`.
    AwaitingApproval { call: u32, pending: PendingApproval },
    /// Decided to forward; paused until the token endpoint answers `call`, the fetch of
    /// upstream `upstream`'s credential (the caller's token exchanged, or a first OAuth
    /// access token).
    AwaitingCredential { call: u32, upstream: usize, decision: Decision },
    /// Sent upstream; the response is masked with this profile, if any.
    Forwarded { mask: Option<usize> },
    /// Buffering the response body to mask it whole; with the hold in Envoy its headers
    /// wait too (`held`), so the status and `content-length` can still be set.
    /// A tool list (the flow's `listing`) is buffered the same way, masked or not.
    MaskingResponse {
        profile: Option<usize>,
        is_json: bool,
        sse: bool,
        coding: Option<Coding>,
        body: BodyBuffer,
        held: bool,
    },
    /// Masking a streamed response chunk by chunk.
    /// A compressed stream is decoded first (`decoder`).
    StreamingResponse { profile: usize, masker: Box<StreamMasker>, decoder: Option<Box<Decoder>> },
    /// A response that could not be masked was cut: nothing more of it passes.
    Severed,
    /// Answered by the filter, or the response needs nothing more.
    Finished,
}

pub struct RequestFlow {
    vm: Rc<VmState>,
    /// Envoy's id of this request's context: the root context's hold watch answers a
    /// request by it.
    context_id: u32,
    state: State,
    request: Request,
    /// What the body callbacks said so far, whatever the state: with the hold in Envoy,
    /// the body keeps arriving while a key fetch is in flight.
    request_body: BodyBuffer,
    record: Record,
    /// The request headers have moved on: Envoy ignores changes to them from now on.
    headers_continued: bool,
    /// The upstream (index in the config) whose credential went into those headers: the
    /// record names it once the request is forwarded.
    credential: Option<usize>,
    /// The hold watch knows this request.
    watched: bool,
    /// An allowed MCP `tools/list`: what its answer is checked for.
    listing: Option<Listing>,
    /// A SQL answer masked by column: the result columns to mask by name.
    result_columns: Option<Vec<String>>,
}

impl RequestFlow {
    pub fn new(vm: Rc<VmState>, context_id: u32) -> Self {
        let request_body = BodyBuffer::new(vm.config.request_body_limit);
        RequestFlow {
            vm,
            context_id,
            state: State::Start,
            request: Request::default(),
            request_body,
            record: Record::default(),
            headers_continued: false,
            credential: None,
            watched: false,
            listing: None,
            result_columns: None,
        }
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
        let progress = self.request_body.on_data(buffered, end_of_stream);
        self.request_body_progress(host, progress)
    }

    /// With trailers (HTTP/2, gRPC) the last body callback never says end-of-stream: the
    /// trailers callback is where the body is known to be complete.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Next {
        let progress = self.request_body.on_trailers();
        self.request_body_progress(host, progress)
    }

    /// The answer to a JWKS fetch, a control-service call or a token exchange this request
    /// paused on.
    pub fn on_callout_response(&mut self, host: &mut dyn Host, token: u32, status: Option<u32>, body: Option<Vec<u8>>) {
        let vm = Rc::clone(&self.vm);
        let step = match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingKeys { call, token: jwt } if call == token => {
                match vm.auth.keys_arrived(host, call, status, body.as_deref(), &jwt) {
                    Authentication::Verified(identity) => self.authenticated(host, identity),
                    // OpenID Connect discovery: the JWKS it names is fetched next.
                    Authentication::Fetching(next) => Step::NeedsKeys { call: next, token: jwt },
                    Authentication::Refused(reply) => Step::Refuse(reply),
                }
            }
            State::AwaitingApproval { call, pending } if call == token => {
                approval::answer(&vm, host, pending, status, body.as_deref().unwrap_or_default())
            }
            State::AwaitingCredential { call, upstream, decision } if call == token => {
                Step::CredentialArrived { decision, upstream, status, body }
            }
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
        let State::Forwarded { mask } = self.state else {
            return Next::Continue;
        };
        if mask.is_none() && self.listing.is_none() {
            return Next::Continue;
        }
        let is_head = self.request.method().eq_ignore_ascii_case("HEAD");
        let step = match response::plan(&self.vm, host, end_of_stream, is_head) {
            Plan::PassThrough => return Next::Continue,
            Plan::Buffer { is_json, coding } => Step::MaskResponse { profile: mask, is_json, sse: false, coding },
            // Rows masked by column are found in the whole answer, not in events.
            Plan::Stream(..) if self.result_columns.as_ref().is_some_and(|c| !c.is_empty()) => {
                Step::Refuse(response::stream_of_sql_rows())
            }
            Plan::Stream(kind, coding) => match (mask, &self.listing) {
                (Some(profile), None) => Step::StreamResponse { profile, kind, coding },
                // A tool list answered as events is one short stream: filtered whole.
                _ => Step::MaskResponse { profile: mask, is_json: false, sse: kind == StreamKind::Sse, coding },
            },
            Plan::Refuse(reply) => Step::Refuse(reply),
        };
        self.settle(host, step)
    }

    pub fn on_response_body(&mut self, host: &mut dyn Host, buffered: usize, end_of_stream: bool) -> Next {
        let progress = match &mut self.state {
            State::MaskingResponse { body, .. } => body.on_data(buffered, end_of_stream),
            State::StreamingResponse { profile, masker, decoder } => {
                let decoder = decoder.as_deref_mut();
                let masked = response::mask_chunk(&self.vm, host, *profile, masker, decoder, buffered, end_of_stream);
                return self.streamed(host, masked, end_of_stream);
            }
            State::Severed => {
                host.set_response_body(buffered, &[]);
                return Next::Continue;
            }
            _ => return Next::Continue,
        };
        self.response_body_progress(host, progress)
    }

    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Next {
        let progress = match &mut self.state {
            State::MaskingResponse { body, .. } => body.on_trailers(),
            // Held-back text can no longer be sent after the body: Envoy's Wasm host only
            // lets the trailers callback write a body it buffered (the last body callback
            // paused), and a stream's callbacks go on. It is dropped, which loses the
            // stream's last words but never leaks them. A stream that ends without
            // trailers (HTTP/1.1 upstreams; Envoy drops their trailers unless told
            // otherwise) flushes it in its last body callback instead.
            State::StreamingResponse { .. } => return self.settle(host, Step::Finished),
            _ => return Next::Continue,
        };
        self.response_body_progress(host, progress)
    }

    /// One log line and one audit record per request.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        if self.watched && self.vm.holds.finished(self.context_id) {
            // The root context answered this request: Envoy never delivered its body.
            self.record.decision = Some(Decision::Refused(Code::Misconfigured));
            self.record.status = Code::Misconfigured.status();
        }
        self.record.finish(&self.vm, host, &self.request);
    }

    // ---- the one place that changes state -------------------------------------------

    fn settle(&mut self, host: &mut dyn Host, step: Step) -> Next {
        let vm = Rc::clone(&self.vm);
        match step {
            Step::Forward(decision) => {
                match credential::prepare(&vm, host, &self.request, self.record.identity.as_deref(), true) {
                    Prepared::Ready(credential) => self.forward(host, decision, credential),
                    Prepared::NeedsBody => self.settle(host, Step::NeedsBody(AfterBody::Forward(decision))),
                    Prepared::Fetching { call, upstream } => {
                        self.state = State::AwaitingCredential { call, upstream, decision };
                        Next::Pause
                    }
                    Prepared::Unavailable(reply) => self.settle(host, Step::Refuse(reply)),
                }
            }
            Step::CredentialArrived { decision, upstream, status, body } => {
                let identity = self.record.identity.as_deref();
                let answer = (status, body.as_deref());
                match credential::fetched(&vm, host, &self.request, identity, upstream, answer) {
                    Ok(credential) => self.forward(host, decision, Some(credential)),
                    Err(reply) => self.settle(host, Step::Refuse(reply)),
                }
            }
            Step::Refuse(reply) => {
                self.refuse(host, &reply);
                // On the response side the body may still flow (Envoy resets a stream whose
                // headers are gone when answered; until then nothing more passes).
                let responding = matches!(
                    self.state,
                    State::Forwarded { .. } | State::MaskingResponse { .. } | State::StreamingResponse { .. }
                );
                self.state = if responding { State::Severed } else { State::Finished };
                Next::Pause
            }
            Step::NeedsBody(then) => match vm.config.hold.by {
                // Paused, Envoy keeps feeding the body and sends nothing upstream. Some or
                // all of it may have arrived already (during a key fetch).
                HoldBy::Envoy => match self.request_body.progress() {
                    Progress::Partial => {
                        if !self.request_body.started() && !vm.holds.is_verified() {
                            vm.holds.paused(self.context_id, self.request.started_ms);
                            self.watched = true;
                        }
                        self.state = State::AwaitingBody { then };
                        Next::Pause
                    }
                    Progress::OverLimit => self.settle(host, Step::Refuse(over_limit(&vm, then))),
                    Progress::Complete(len) => {
                        let step = self.body_complete(host, then, len);
                        self.settle(host, step)
                    }
                },
                // Continue: the body callbacks that follow buffer it, while Envoy's buffer
                // filter after Airlock holds the headers. They get now what an allowed
                // request needs: they cannot change once they move on.
                HoldBy::BufferFilter => {
                    // The config refuses `signed_request` credentials with this hold: the
                    // headers move on before the body a token would be bound to.
                    let credential =
                        match credential::prepare(&vm, host, &self.request, self.record.identity.as_deref(), false) {
                            Prepared::Ready(credential) => credential,
                            Prepared::NeedsBody => {
                                let reply = Reply::new(
                                    Code::Misconfigured,
                                    "a signed_request credential with hold.by buffer_filter",
                                );
                                return self.settle(host, Step::Refuse(reply));
                            }
                            // Never with `may_wait` false: nothing is fetched.
                            Prepared::Fetching { .. } => {
                                let reply =
                                    Reply::new(Code::Misconfigured, "a credential fetch with hold.by buffer_filter");
                                return self.settle(host, Step::Refuse(reply));
                            }
                            Prepared::Unavailable(reply) => return self.settle(host, Step::Refuse(reply)),
                        };
                    self.continue_headers(host, !vm.config.mask_profiles.is_empty(), credential);
                    self.state = State::AwaitingBody { then };
                    Next::Continue
                }
            },
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
            Step::MaskResponse { profile, is_json, sse, coding } => {
                // With the hold in Envoy the headers wait for the masked body: a refusal
                // gets its real status, and the masked body its real length.
                let held = vm.config.hold.by == HoldBy::Envoy;
                self.state = State::MaskingResponse {
                    profile,
                    is_json,
                    sse,
                    coding,
                    body: BodyBuffer::new(vm.config.response_body_limit),
                    held,
                };
                if held {
                    Next::Pause
                } else {
                    Next::Continue
                }
            }
            Step::StreamResponse { profile, kind, coding } => {
                let masker = Box::new(StreamMasker::new(kind, StreamLimits::default()));
                let decoder = coding.map(|c| Box::new(Decoder::for_stream(c)));
                self.state = State::StreamingResponse { profile, masker, decoder };
                Next::Continue
            }
            Step::Finished => {
                self.state = State::Finished;
                Next::Continue
            }
        }
    }

    /// Decided, with the credential in hand: the headers move on, counted and recorded.
    /// Only `settle` calls this.
    fn forward(&mut self, host: &mut dyn Host, decision: Decision, credential: Option<Injected>) -> Next {
        let vm = Rc::clone(&self.vm);
        let mask = self.record.rule.and_then(|i| vm.config.policy.rules().get(i)).and_then(|r| r.mask_profile());
        self.continue_headers(host, mask.is_some() || self.listing.is_some(), credential);
        self.record.credential = self.credential;
        host.increment(vm.stats.allowed, 1);
        self.record.decision = Some(decision);
        self.state = State::Forwarded { mask };
        Next::Continue
    }

    // ---- phases of the request side -------------------------------------------------

    fn authenticate(&mut self, host: &mut dyn Host) -> Step {
        let vm = Rc::clone(&self.vm);
        let config = &vm.config;
        if config.audit.as_ref().is_some_and(|a| a.strict) && vm.audit.borrow().is_failing() {
            return Step::Refuse(Reply::new(
                Code::AuditUnavailable,
                "strict audit mode: requests are refused while audit records cannot be delivered",
            ));
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
            Err(e) => {
                let reply =
                    Reply::new(Code::InvalidRequestTarget, format!("the request path cannot be inspected: {e}"));
                return self.answer_after_body(Step::Refuse(reply));
            }
        };
        self.request.strip_for_upstream(host, &vm.config, &identity);
        let body = if self.request.bodiless {
            self.request.body = Some(Vec::new());
            Body::Empty
        } else {
            Body::NotRead
        };
        let verdict = decide(&vm, host, &self.request, Caller { identity, target }, body);
        let step = self.note(verdict);
        self.answer_after_body(step)
    }

    /// A refusal of an authenticated MCP request whose body is not read yet waits for the
    /// body: answered as JSON-RPC, it needs the request's id. Refusals before the caller
    /// is known are answered at once (reading bodies for anyone is work for an attacker),
    /// and so is everything that does not look like MCP's Streamable HTTP.
    fn answer_after_body(&self, step: Step) -> Step {
        let request = &self.request;
        match step {
            Step::Refuse(reply)
                if request.body.is_none()
                    && !request.bodiless
                    && mcp::streamable_http(
                        request.method(),
                        request.header("content-type"),
                        request.header("accept"),
                    ) =>
            {
                Step::NeedsBody(AfterBody::Refuse(Box::new(reply)))
            }
            step => step,
        }
    }

    fn request_body_progress(&mut self, host: &mut dyn Host, progress: Progress) -> Next {
        if !self.headers_continued {
            // Body bytes while the headers are paused: Envoy holds headers for us.
            self.vm.holds.body_arrived(self.context_id);
            self.watched = false;
        }
        match self.state {
            State::AwaitingBody { .. } => {}
            // Paused for a callout: keep buffering; the answer decides what comes next.
            State::AwaitingKeys { .. } | State::AwaitingApproval { .. } | State::AwaitingCredential { .. } => {
                return Next::Pause
            }
            _ => return Next::Continue,
        }
        if progress == Progress::Partial {
            return Next::Pause;
        }
        let State::AwaitingBody { then } = std::mem::replace(&mut self.state, State::Finished) else {
            return Next::Continue;
        };
        let step = match progress {
            Progress::Complete(len) => self.body_complete(host, then, len),
            _ => Step::Refuse(over_limit(&self.vm, then)),
        };
        self.settle(host, step)
    }

    /// The whole body is buffered: read it, then decide or ask for the approval.
    fn body_complete(&mut self, host: &mut dyn Host, then: AfterBody, len: usize) -> Step {
        let vm = Rc::clone(&self.vm);
        self.request.body = Some(if len == 0 { Vec::new() } else { host.request_body(len).unwrap_or_default() });
        match then {
            AfterBody::Decide(caller) => {
                let verdict = decide_on_body(&vm, host, &self.request, caller);
                self.note(verdict)
            }
            AfterBody::Approve(caller, rule) => Step::Approve(caller, rule),
            AfterBody::Forward(decision) => Step::Forward(decision),
            AfterBody::Refuse(reply) => Step::Refuse(*reply),
        }
    }

    /// Keeps what the policy decided for the record; the step goes on.
    fn note(&mut self, verdict: Verdict) -> Step {
        self.record.rule = verdict.rule.or(self.record.rule);
        self.record.dry_run_reported |= verdict.dry_run_reported;
        self.listing = verdict.listing;
        self.result_columns = verdict.columns.or(self.result_columns.take());
        verdict.step
    }

    /// The last changes before the request headers move on, made once.
    fn continue_headers(&mut self, host: &mut dyn Host, may_mask: bool, credential: Option<Injected>) {
        if !self.headers_continued {
            self.credential = credential.as_ref().map(|c| c.upstream);
            complete_upstream_headers(host, &self.request, may_mask, credential);
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
        let State::MaskingResponse { profile, is_json, sse, mut coding, held, .. } = self.state else {
            return Next::Continue;
        };
        let mut len = len;
        if let (Some(listing), Some(identity)) = (self.listing.take(), self.record.identity.clone()) {
            let (vm, request) = (&self.vm, &self.request);
            let kind = listing.kind;
            let mut hide = |item: &str| {
                listing.hide_for.as_ref().is_some_and(|t| denies_use(vm, request, &identity, t, kind, item))
            };
            match response::filter_list(vm, host, coding, sse, len, &listing, &mut hide) {
                Ok(filtered) => len = filtered,
                Err(reply) => return self.settle(host, Step::Refuse(reply)),
            }
            // Decoded for filtering: what masking gets now is plain.
            coding = None;
        }
        let rule = self.record.rule.and_then(|i| self.vm.config.policy.rules().get(i));
        let columns = match (rule.and_then(|r| r.sql_result()), &self.result_columns) {
            (Some(sql_result), Some(names)) => Some((sql_result.shape(), names.as_slice())),
            _ => None,
        };
        let masked = match profile {
            Some(profile) => response::mask(&self.vm, host, profile, is_json, coding, len, columns),
            None => Ok(response::Masked { values: 0, len, excerpt: None }),
        };
        match masked {
            Ok(masked) => {
                if held {
                    host.set_response_header("content-length", &masked.len.to_string());
                }
                self.record.masked_values = masked.values;
                self.record.masked_response = masked.excerpt;
                self.settle(host, Step::Finished)
            }
            Err(reply) => self.settle(host, Step::Refuse(reply)),
        }
    }

    /// After a chunk of a streamed response: counted, and the stream cut on an error.
    fn streamed(&mut self, host: &mut dyn Host, masked: Result<u64, Reply>, end_of_stream: bool) -> Next {
        match masked {
            Ok(values) => {
                if values > 0 && self.record.masked_values == 0 {
                    host.increment(self.vm.stats.masked_responses, 1);
                }
                self.record.masked_values += values;
                if end_of_stream {
                    self.settle(host, Step::Finished)
                } else {
                    Next::Continue
                }
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
        if let Some(approval) = &reply.approval {
            self.record.approval_id = Some(approval.id.clone());
        }
        let request_id = self.request.request_id();
        // An MCP request (a JSON-RPC body, read) is answered in JSON-RPC, which its client
        // reads as the answer to its call rather than as a broken transport.
        let jsonrpc = self.request.body.as_deref().filter(|_| self.request.method().eq_ignore_ascii_case("POST"));
        let (status, body) = match jsonrpc.and_then(mcp::awaited) {
            Some(awaited) => {
                host.increment(self.vm.stats.mcp_jsonrpc_refusals, 1);
                reply.to_jsonrpc(&awaited, request_id)
            }
            None => (reply.status(), reply.to_json(request_id)),
        };
        self.record.decision = Some(Decision::Refused(reply.code));
        self.record.status = status;
        // The answer says why (which rule, which column); it never quotes a secret.
        if let Some(audit) = &self.vm.config.audit {
            let excerpt = crate::audit::excerpt_bytes(&body, audit.max_body_bytes);
            self.record.masked_response = Some(String::from_utf8_lossy(excerpt).into_owned());
        }
        let extra = reply.extra_headers();
        let mut headers: Vec<(&str, &str)> = vec![("cache-control", "no-store")];
        if !body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        host.send_reply(status, &headers, &body);
    }
}

/// A body over the inspection limit: refused as too large, or, when the request was
/// refused already and only waited for its body to say so in JSON-RPC, with that refusal
/// (in the plain answer: the body and its id are not read).
fn over_limit(vm: &VmState, then: AfterBody) -> Reply {
    match then {
        AfterBody::Refuse(reply) => *reply,
        AfterBody::Forward(_) => body_too_large_to_sign(vm.config.request_body_limit),
        AfterBody::Decide(_) | AfterBody::Approve(..) => body_too_large(vm),
    }
}

fn body_too_large(vm: &VmState) -> Reply {
    let limit = vm.config.request_body_limit;
    Reply::new(
        Code::RequestBodyTooLarge,
        format!("the request body must be inspected and is larger than the {limit}-byte inspection limit"),
    )
}

//! One request's life through Airlock, written against the `Host` trait:
//! headers (token check, policy) → body (policy on the body) → upstream → response
//! headers and body (masking) → log.
//!
//! Envoy's Wasm host turns "pause" in a headers callback into "stop everything": no body
//! callback arrives until the filter resumes, and resuming sends the headers on. So when a
//! decision needs the body, the headers callback *continues* and the body callbacks buffer
//! until the decision. The shipped Envoy configs put Envoy's `buffer` filter right after
//! Airlock so that continued headers wait there: nothing reaches the upstream before the
//! decision. Whatever must never reach the upstream (the agent's token, spoofed identity
//! headers) is removed in the headers callback, so that holds even without it.
//! The headers callback pauses only while a JWKS fetch is in flight.

use std::rc::Rc;

use crate::host::{Host, Level, Next};
use crate::identity::Identity;
use crate::jwt::{self, AuthError};
use crate::mask::MaskError;
use crate::normalize::{self, RequestTarget};
use crate::policy::{Action, Body, Decision, Evaluation, RequestFacts};
use crate::reply::{Code, Reply};
use crate::vm_state::{FetchReason, VmState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing decided yet.
    Start,
    /// Paused until a JWKS fetch answers.
    AwaitingKeys,
    /// Paused until the whole request body is buffered.
    AwaitingBody,
    /// Sent upstream.
    Forwarded,
    /// Answered by the filter.
    Replied,
}

/// What was decided, for the log line (and the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    DryRunWouldBlock,
    Refused(Code),
}

pub struct RequestFlow {
    vm: Rc<VmState>,
    stage: Stage,
    request_id: Option<String>,
    method: String,
    raw_path: String,
    token: Option<String>,
    identity: Option<Rc<Identity>>,
    target: Option<RequestTarget>,
    headers: Vec<(String, String)>,
    request_body_len: usize,
    request_complete: bool,
    jwks_call: Option<u32>,
    rule: Option<usize>,
    outcome: Option<Outcome>,
    /// Mask profile index for the response, when the deciding rule has one.
    mask_profile: Option<usize>,
    buffering_response: bool,
    response_body_len: usize,
    /// Read in the response-headers phase: Envoy's header map is not reliably readable
    /// from the body callbacks once the headers have moved on.
    response_is_json: bool,
    masked_values: u64,
    /// A dry-run rule matched: the log line says so even when the request was allowed.
    dry_run_rule: bool,
}

impl RequestFlow {
    pub fn new(vm: Rc<VmState>) -> Self {
        RequestFlow {
            vm,
            stage: Stage::Start,
            request_id: None,
            method: String::new(),
            raw_path: String::new(),
            token: None,
            identity: None,
            target: None,
            headers: Vec::new(),
            request_body_len: 0,
            request_complete: false,
            jwks_call: None,
            rule: None,
            outcome: None,
            mask_profile: None,
            buffering_response: false,
            response_body_len: 0,
            response_is_json: false,
            masked_values: 0,
            dry_run_rule: false,
        }
    }

    // ---- request headers -------------------------------------------------------------

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Next {
        let vm = Rc::clone(&self.vm);
        host.increment(vm.stats.requests, 1);
        self.request_complete = end_of_stream;
        self.request_id = host.request_header("x-request-id");
        self.method = host.request_header(":method").unwrap_or_default();
        self.raw_path = host.request_header(":path").unwrap_or_default();

        // Identity headers come from the filter only; whatever the client sent is dropped
        // before anything else can look at it.
        host.remove_request_header(&vm.config.identity_headers.subject);
        host.remove_request_header(&vm.config.identity_headers.groups);

        let token = match host.request_header(&vm.config.auth.header) {
            None => return self.refuse_auth(host, &AuthError::MissingToken),
            Some(value) => match jwt::bearer_token(&value) {
                Ok(t) => t.to_string(),
                Err(e) => return self.refuse_auth(host, &e),
            },
        };
        let now = host.now_unix_secs();
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
                self.jwks_call = Some(call);
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
        match normalize::normalize_target(&self.raw_path) {
            Ok(target) => self.target = Some(target),
            Err(e) => {
                host.increment(self.vm.stats.invalid_target, 1);
                return self.refuse(host, Reply::new(Code::InvalidRequestTarget, format!("the request path cannot be inspected: {e}")));
            }
        }
        self.headers = host.request_headers();
        self.strip_for_upstream(host);
        let body = if self.request_complete { Body::Empty } else { Body::NotRead };
        self.evaluate(host, body)
    }

    /// Header changes that hold whatever the decision: the agent's token and any
    /// credential or identity header the client sent never go upstream, and the identity
    /// the filter vouches for is set.
    fn strip_for_upstream(&mut self, host: &mut dyn Host) {
        let vm = Rc::clone(&self.vm);
        let config = &vm.config;
        host.remove_request_header(&config.auth.header);
        for header in config.upstreams.credential_headers() {
            host.remove_request_header(header);
        }
        if let Some(identity) = &self.identity {
            host.set_request_header(&config.identity_headers.subject, &identity.subject);
            if !identity.groups.is_empty() {
                host.set_request_header(&config.identity_headers.groups, &identity.groups.join(","));
            }
        }
    }

    fn evaluate(&mut self, host: &mut dyn Host, body: Body) -> Next {
        let vm = Rc::clone(&self.vm);
        let Some(target) = self.target.as_ref() else {
            return self.refuse(host, Reply::new(Code::Misconfigured, "request evaluated before its target was read"));
        };
        let facts = RequestFacts {
            method: &self.method,
            target,
            headers: &self.headers,
            identity: self.identity.as_deref(),
        };
        match vm.policy().evaluate(&facts, body) {
            Evaluation::NeedBody => {
                // Continue: the body callbacks that follow buffer and decide.
                self.stage = Stage::AwaitingBody;
                Next::Continue
            }
            Evaluation::Decided(decision) => self.apply(host, &decision),
        }
    }

    fn apply(&mut self, host: &mut dyn Host, decision: &Decision) -> Next {
        let vm = Rc::clone(&self.vm);
        let index = decision.rule.and_then(|r| vm.policy().rules().iter().position(|x| std::ptr::eq(x, r)));
        self.rule = index;
        if let Some(i) = index {
            if let Some(id) = vm.stats.rule_matched.get(i) {
                host.increment(*id, 1);
            }
        }
        let rule_name = decision.rule.map(|r| r.name());
        // A dry-run rule that matched earlier did not decide (the policy went on to the
        // real decision); it is reported as what it would have done.
        if let Some(shadow) = decision.dry_run {
            if shadow.action() != Action::Allow {
                self.report_dry_run(host, shadow.name(), shadow.action().as_str());
            }
        }
        let dry_run = vm.config.dry_run;
        let refusal = match decision.action {
            Action::Allow => None,
            Action::Deny => Some(match rule_name {
                Some(name) => Reply::new(Code::DeniedByRule, format!("the request was blocked by rule `{name}`")).with_rule(name),
                None => Reply::new(Code::DeniedByDefault, "no rule allows this request"),
            }),
            Action::Approve => {
                let name = rule_name.unwrap_or("default");
                Some(
                    Reply::new(Code::ApprovalRequired, format!("rule `{name}` requires human approval, and no approval service is configured"))
                        .with_rule(name),
                )
            }
        };
        self.mask_profile = decision.rule.and_then(|r| r.mask_profile());
        match refusal {
            None => self.forward(host, Outcome::Allowed),
            Some(reply) if dry_run => {
                self.report_dry_run(host, rule_name.unwrap_or("default"), reply.code.as_str());
                self.forward(host, Outcome::DryRunWouldBlock)
            }
            Some(reply) => {
                match reply.code {
                    Code::DeniedByDefault => host.increment(vm.stats.denied_by_default, 1),
                    Code::ApprovalRequired => host.increment(vm.stats.approval_required, 1),
                    _ => host.increment(vm.stats.denied, 1),
                }
                self.refuse(host, reply)
            }
        }
    }

    fn report_dry_run(&mut self, host: &mut dyn Host, rule: &str, would: &str) {
        host.increment(self.vm.stats.dry_run_would_block, 1);
        self.dry_run_rule = true;
        if host.log_enabled(Level::Info) {
            let line = format!("airlock: dry-run: rule `{rule}` would have answered {would} ({})", self.describe());
            host.log(Level::Info, &line);
        }
    }

    /// Completes the request for the upstream once it is allowed: the upstream's own
    /// credential in, compression off when the response will be masked.
    fn forward(&mut self, host: &mut dyn Host, outcome: Outcome) -> Next {
        let vm = Rc::clone(&self.vm);
        let config = &vm.config;
        if !config.upstreams.is_empty() {
            if let Some(cluster) = host.upstream_cluster() {
                if let Some(cred) = config.upstreams.credential_for(&cluster) {
                    host.set_request_header(&cred.header, cred.value.expose());
                }
            }
        }
        if self.mask_profile.is_some() {
            host.remove_request_header("accept-encoding");
        }
        host.increment(vm.stats.allowed, 1);
        self.outcome = Some(outcome);
        self.stage = Stage::Forwarded;
        Next::Continue
    }

    // ---- request body ----------------------------------------------------------------

    pub fn on_request_body(&mut self, host: &mut dyn Host, body_len: usize, end_of_stream: bool) -> Next {
        self.request_body_len = body_len;
        self.request_complete = end_of_stream;
        match self.stage {
            Stage::AwaitingKeys => Next::Pause,
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
            Stage::AwaitingKeys => Next::Pause,
            Stage::AwaitingBody => self.evaluate_buffered_body(host),
            _ => Next::Continue,
        }
    }

    fn evaluate_buffered_body(&mut self, host: &mut dyn Host) -> Next {
        if self.request_body_len > self.vm.config.request_body_limit {
            return self.body_over_limit(host);
        }
        if self.request_body_len == 0 {
            return self.evaluate(host, Body::Empty);
        }
        let bytes = host.request_body(self.request_body_len).unwrap_or_default();
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
        if self.jwks_call != Some(token) {
            return;
        }
        self.jwks_call = None;
        let vm = Rc::clone(&self.vm);
        vm.finish_key_fetch(host, status, body.as_deref());
        if self.stage != Stage::AwaitingKeys {
            return;
        }
        let token = self.token.take().unwrap_or_default();
        let next = match vm.verify(&token, host.now_unix_secs()) {
            Ok(identity) => {
                self.identity = Some(identity);
                self.after_authentication(host)
            }
            Err(_) if !vm.has_keys() => {
                self.refuse(host, Reply::new(Code::DependencyUnavailable, "the token signing keys cannot be fetched"))
            }
            Err(e) => self.refuse_auth(host, &e),
        };
        // Headers were paused for the fetch: forwarding, or waiting for the body (whose
        // callbacks only come once resumed), releases them. A refusal already answered.
        if next == Next::Continue {
            host.resume_request();
        }
    }

    // ---- response --------------------------------------------------------------------

    /// Checks what can be refused while the status can still change, then lets the
    /// headers go (pausing here would also stop the body callbacks) without
    /// `content-length`, since masking changes the body's size.
    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Next {
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
                Ok((out, counts)) => Some((out, counts)),
                Err(MaskError::InvalidJson(_)) => None,
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
        Next::Continue
    }

    fn refuse_response(&mut self, host: &mut dyn Host, code: Code, message: &str) -> Next {
        self.buffering_response = false;
        if code == Code::ResponseNotMaskable {
            host.increment(self.vm.stats.response_not_maskable, 1);
        }
        self.outcome = Some(Outcome::Refused(code));
        self.send(host, &Reply::new(code, message));
        Next::Pause
    }

    // ---- log -------------------------------------------------------------------------

    /// One line per request, at info for refusals and debug for the rest (so a busy
    /// gateway is not slowed by logging every allowed call). Never contains the query
    /// string, headers or bodies: those can carry secrets.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        let level = match self.outcome {
            Some(Outcome::Allowed) if !self.dry_run_rule => Level::Debug,
            _ => Level::Info,
        };
        if !host.log_enabled(level) {
            return;
        }
        let decision = match self.outcome {
            Some(Outcome::Allowed) => "allow",
            Some(Outcome::DryRunWouldBlock) => "dry_run_allow",
            Some(Outcome::Refused(code)) => code.as_str(),
            None => "incomplete",
        };
        let line = format!("airlock: decision={decision} masked={} {}", self.masked_values, self.describe());
        host.log(level, &line);
    }

    fn describe(&self) -> String {
        let rule = self.rule.and_then(|i| self.vm.policy().rules().get(i)).map(|r| r.name()).unwrap_or("-");
        let subject = self.identity.as_ref().map(|i| i.subject.as_str()).unwrap_or("-");
        let path = self.target.as_ref().map(|t| t.path.as_str()).unwrap_or("-");
        let request_id = self.request_id.as_deref().unwrap_or("-");
        format!("rule={rule} subject={subject} method={} path={path} request_id={request_id}", self.method)
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
        self.stage = Stage::Replied;
        self.send(host, &reply);
        Next::Pause
    }

    fn send(&mut self, host: &mut dyn Host, reply: &Reply) {
        let body = reply.to_json(self.request_id.as_deref());
        let extra = reply.extra_headers();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json"), ("cache-control", "no-store")];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        host.send_reply(reply.status(), &headers, &body);
    }
}

impl VmState {
    fn policy(&self) -> &crate::policy::Policy {
        &self.config.policy
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
            {"name": "writes-need-approval", "action": "approve", "when": {"methods": ["PUT"]}},
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
            Fixture { vm: Rc::new(VmState::new(config, stats)), names: names.0 }
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
        assert_eq!(host.header("authorization"), None, "the agent token is stripped before the headers move on");
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
    fn trailers_complete_a_body_decision_when_end_of_stream_never_comes() {
        let f = Fixture::standard();
        let mut flow = f.flow();
        let mut host = request("POST", "/sql", Some(&token("alice", &["support"])));
        flow.on_request_headers(&mut host, false);
        host.request_body = br#"{"sql": "select 1"}"#.to_vec();
        assert_eq!({ let n = host.request_body.len(); flow.on_request_body(&mut host, n, false) }, Next::Pause);
        assert_eq!(flow.on_request_trailers(&mut host), Next::Continue);
        assert_eq!(host.reply, None);
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

    #[test]
    fn approve_rule_answers_approval_required_until_the_service_exists() {
        let f = Fixture::standard();
        let mut host = request("PUT", "/customers/1", Some(&token("alice", &["support"])));
        f.flow().on_request_headers(&mut host, true);
        let v = host.reply_json();
        assert_eq!(v["error"]["code"], "approval_required");
        assert_eq!(v["error"]["retry"], "after_approval");
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

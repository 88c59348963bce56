//! `token_exchange` (RFC 8693): the agent's verified token is exchanged at a token
//! endpoint for one made for this upstream (`audience`, `resource`, `scope`,
//! `requested_token_type`), so the upstream sees the agent's identity in a token meant
//! for it, and the agent never sees that token.
//!
//! Exchanged tokens are cached per upstream and per subject token, in this VM only: a
//! subject's new token (other claims, other expiry) is exchanged anew, and an exchanged
//! token is never used past the subject token's own `exp`. A request whose token has no
//! exchanged token yet waits for the exchange (the flow pauses on the callout); one
//! whose cached token is past 80% of its life (or `refresh_before_seconds` before its
//! end) still uses it and has the root context's timer exchange it again, so requests
//! never wait for a refresh. The cache holds at most `cache_entries` tokens per upstream;
//! when full, expired tokens go first, then the one nearest its end.
//!
//! The endpoint unreachable, timing out or failing (5xx) fails the request closed with
//! `503 dependency_unavailable`; an endpoint that refuses this subject (RFC 6749 §5.2
//! `invalid_grant`, `invalid_target`, `unauthorized_client`, ...) gets it
//! `403 credential_refused`. Neither the subject token nor an exchanged one is logged,
//! counted or recorded: log lines name the upstream, the subject and the error code.

use std::cell::RefCell;
use std::collections::HashMap;

use super::oauth::{expires_at, refresh_at, EXPIRY_MARGIN_MS};
use super::shared::RETRY_MS;
use super::token_endpoint::{form_encode, read_answer, Jti, TokenEndpoint};
use super::Secret;
use crate::host::{Level, Runtime};
use crate::stats::MetricId;

/// RFC 8693 §3: what the agent's token is, and what is asked for by default.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Refreshes the timer starts per tick and upstream: a burst of subjects due at once is
/// spread over ticks instead of hitting the endpoint together.
const REFRESHES_PER_TICK: usize = 16;

/// One upstream's exchange, built and checked at load.
pub struct TokenExchange {
    /// The upstream cluster: names it in logs.
    pub upstream: String,
    pub endpoint: TokenEndpoint,
    /// The form without the subject token: grant type, token types, audience, resource,
    /// scope.
    form: String,
    requested_token_type: String,
    refresh_before_ms: Option<u64>,
    cache_entries: usize,
}

/// What the config gives for one upstream's exchange.
pub struct ExchangeSpec {
    pub upstream: String,
    pub endpoint: TokenEndpoint,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: String,
    pub subject_token_type: String,
    pub refresh_before_seconds: Option<u64>,
    pub cache_entries: usize,
}

impl TokenExchange {
    pub fn new(spec: ExchangeSpec) -> TokenExchange {
        let mut form = String::from("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange");
        let given = [
            ("requested_token_type", Some(&spec.requested_token_type)),
            ("subject_token_type", Some(&spec.subject_token_type)),
            ("audience", spec.audience.as_ref()),
            ("resource", spec.resource.as_ref()),
            ("scope", spec.scope.as_ref()),
        ];
        for (name, value) in given {
            if let Some(value) = value {
                form.push_str(&format!("&{name}={}", form_encode(value)));
            }
        }
        TokenExchange {
            upstream: spec.upstream,
            endpoint: spec.endpoint,
            form,
            requested_token_type: spec.requested_token_type,
            refresh_before_ms: spec.refresh_before_seconds.map(|s| s * 1000),
            cache_entries: spec.cache_entries,
        }
    }

    fn form_for(&self, subject_token: &str) -> String {
        format!("{}&subject_token={}", self.form, form_encode(subject_token))
    }
}

impl std::fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenExchange({} via `{}`)", self.endpoint.client_id, self.endpoint.cluster)
    }
}

pub struct ExchangeCounters {
    pub ok: MetricId,
    pub failed: MetricId,
}

/// Why a request gets no exchanged token.
#[derive(Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The endpoint could not be reached or failed: worth retrying.
    Unavailable,
    /// The endpoint refused to issue this subject a token for the upstream.
    Refused,
}

struct Entry {
    /// `Bearer <token>`.
    value: Secret,
    refresh_at_ms: u64,
    expires_ms: u64,
    /// The subject token's `exp`: no refresh is made for a token that cannot outlive it.
    subject_expires_ms: u64,
    /// Used past `refresh_at_ms`: the timer exchanges it again.
    refresh_wanted: bool,
    in_flight: bool,
    retry_at_ms: u64,
}

/// This VM's exchanged tokens: one map per `token_exchange` upstream, keyed by the
/// subject token. The maps use std's SipHash with a per-process random key, so subject
/// tokens chosen to collide cannot slow lookups.
pub struct ExchangedTokens {
    caches: RefCell<Vec<HashMap<String, Entry>>>,
    jti: Jti,
}

impl ExchangedTokens {
    /// `instance` differs between VMs (as for audit record ids).
    pub fn new(count: usize, instance: &str) -> ExchangedTokens {
        ExchangedTokens { caches: RefCell::new((0..count).map(|_| HashMap::new()).collect()), jti: Jti::new(instance) }
    }

    /// The `Bearer` value to send now for `subject_token`, if one is cached and has not
    /// expired; past its refresh time it is still used, and marked for the timer.
    pub fn current(&self, index: usize, subject_token: &str, now_ms: u64) -> Option<Secret> {
        let mut caches = self.caches.borrow_mut();
        let entry = caches.get_mut(index)?.get_mut(subject_token)?;
        if now_ms >= entry.expires_ms {
            return None;
        }
        if now_ms >= entry.refresh_at_ms {
            entry.refresh_wanted = true;
        }
        Some(entry.value.clone())
    }

    /// Sends the exchange for a request that waits for it; the answer goes to
    /// [`ExchangedTokens::finish`].
    pub fn exchange(&self, rt: &mut dyn Runtime, exchange: &TokenExchange, subject_token: &str) -> Result<u32, String> {
        exchange.endpoint.post(rt, &exchange.form_for(subject_token), &self.jti)
    }

    /// Takes the endpoint's answer for `subject_token` (whose token expires at
    /// `subject_expires_ms`): caches it and returns the `Bearer` value, or says why not.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &self,
        rt: &mut dyn Runtime,
        exchange: &TokenExchange,
        index: usize,
        subject: (&str, &str, u64),
        status: Option<u32>,
        body: Option<&[u8]>,
        counters: &ExchangeCounters,
    ) -> Result<Secret, ExchangeError> {
        let (subject_token, subject_name, subject_expires_ms) = subject;
        let issued = match read_answer(status, body, Some(&exchange.requested_token_type)) {
            Ok(issued) => issued,
            Err(why) => {
                rt.increment(counters.failed, 1);
                let error = classify(status, body);
                let consequence = match error {
                    ExchangeError::Unavailable => "requests that need it fail closed (503)",
                    ExchangeError::Refused => "the request is refused (403 credential_refused)",
                };
                rt.log(
                    Level::Warn,
                    &format!(
                        "airlock: token exchange for upstream `{}` (subject `{}`) failed at the token endpoint \
                         ({why}); {consequence}",
                        exchange.upstream,
                        crate::audit::excerpt(subject_name, 128)
                    ),
                );
                self.note_failure(index, subject_token, rt.now_unix_ms());
                return Err(error);
            }
        };
        rt.increment(counters.ok, 1);
        let now = rt.now_unix_ms();
        // Never past the subject token's own end, with the same margin as an expiry.
        let subject_end = subject_expires_ms.saturating_sub(EXPIRY_MARGIN_MS.min(issued.lifetime_ms / 10));
        let expires_ms = expires_at(now, issued.lifetime_ms).min(subject_end);
        let refresh = refresh_at(exchange.refresh_before_ms, now, issued.lifetime_ms);
        // A refresh can give nothing once the subject token ends before the token would.
        let refresh_at_ms = if refresh >= subject_end { u64::MAX } else { refresh };
        let value = Secret::new(format!("Bearer {}", issued.access_token));
        let entry = Entry {
            value: value.clone(),
            refresh_at_ms,
            expires_ms,
            subject_expires_ms,
            refresh_wanted: false,
            in_flight: false,
            retry_at_ms: 0,
        };
        let mut caches = self.caches.borrow_mut();
        if let Some(cache) = caches.get_mut(index) {
            if !cache.contains_key(subject_token) && cache.len() >= exchange.cache_entries {
                make_room(cache, now);
            }
            cache.insert(subject_token.to_string(), entry);
        }
        Ok(value)
    }

    /// On the root context's timer: exchanges again the tokens used past their refresh
    /// time. Returns the callouts made, with the upstream and subject token each is for.
    pub fn refresh(
        &self,
        rt: &mut dyn Runtime,
        exchanges: &[TokenExchange],
        counters: &ExchangeCounters,
    ) -> Vec<(u32, usize, String)> {
        let now = rt.now_unix_ms();
        let mut due: Vec<(usize, String)> = Vec::new();
        {
            let mut caches = self.caches.borrow_mut();
            for (index, cache) in caches.iter_mut().enumerate() {
                let wanted = cache
                    .iter_mut()
                    .filter(|(_, e)| e.refresh_wanted && !e.in_flight && now >= e.retry_at_ms && now < e.expires_ms)
                    .take(REFRESHES_PER_TICK);
                for (subject_token, entry) in wanted {
                    entry.in_flight = true;
                    due.push((index, subject_token.clone()));
                }
            }
        }
        let mut calls = Vec::new();
        for (index, subject_token) in due {
            let Some(exchange) = exchanges.get(index) else { continue };
            match self.exchange(rt, exchange, &subject_token) {
                Ok(call) => calls.push((call, index, subject_token)),
                Err(problem) => {
                    rt.increment(counters.failed, 1);
                    rt.log(
                        Level::Warn,
                        &format!(
                            "airlock: token exchange refresh for upstream `{}` not sent: {problem}",
                            exchange.upstream
                        ),
                    );
                    self.note_failure(index, &subject_token, now);
                }
            }
        }
        calls
    }

    /// Takes the answer to a refresh the timer sent: the token cached before stays in
    /// use until it expires when the refresh fails.
    pub fn finish_refresh(
        &self,
        rt: &mut dyn Runtime,
        exchanges: &[TokenExchange],
        (index, subject_token): (usize, &str),
        status: Option<u32>,
        body: Option<&[u8]>,
        counters: &ExchangeCounters,
    ) {
        let Some(exchange) = exchanges.get(index) else { return };
        let subject_expires_ms = {
            let caches = self.caches.borrow();
            match caches.get(index).and_then(|c| c.get(subject_token)) {
                Some(entry) => entry.subject_expires_ms,
                // Evicted meanwhile: nobody is waiting for it.
                None => return,
            }
        };
        let subject = (subject_token, "(refresh)", subject_expires_ms);
        let _ = self.finish(rt, exchange, index, subject, status, body, counters);
    }

    /// A failed exchange: a cached token stays in use; the timer retries after a pause.
    fn note_failure(&self, index: usize, subject_token: &str, now: u64) {
        if let Some(entry) = self.caches.borrow_mut().get_mut(index).and_then(|c| c.get_mut(subject_token)) {
            entry.in_flight = false;
            entry.retry_at_ms = now + RETRY_MS;
        }
    }

    #[cfg(test)]
    fn len(&self, index: usize) -> usize {
        self.caches.borrow().get(index).map_or(0, HashMap::len)
    }
}

/// A full cache drops its expired tokens, or else the one nearest its end.
fn make_room(cache: &mut HashMap<String, Entry>, now: u64) {
    let before = cache.len();
    cache.retain(|_, e| e.expires_ms > now);
    if cache.len() < before {
        return;
    }
    let nearest = cache.iter().min_by_key(|(_, e)| e.expires_ms).map(|(k, _)| k.clone());
    if let Some(key) = nearest {
        cache.remove(&key);
    }
}

/// Whether a failed exchange is the endpoint's refusal of this subject (a 4xx naming an
/// RFC 6749 §5.2 or RFC 8693 §2.2.2 error other than the client's own) or a failure worth
/// retrying. `invalid_client` is the proxy's own credential being wrong: an outage, not
/// the agent's fault.
fn classify(status: Option<u32>, body: Option<&[u8]>) -> ExchangeError {
    #[derive(serde::Deserialize)]
    struct ErrorAnswer<'a> {
        error: &'a str,
    }
    let refusal = matches!(status, Some(400 | 403))
        && body
            .and_then(|b| serde_json::from_slice::<ErrorAnswer>(b).ok())
            .is_some_and(|e| e.error != "invalid_client" && e.error != "server_error");
    if refusal {
        ExchangeError::Refused
    } else {
        ExchangeError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_endpoint::AuthSpec;
    use super::*;
    use crate::host::mock::MockHost;

    const SUBJECT: &str = "eyJ.agent-token.sig";

    fn exchange(cache_entries: usize) -> TokenExchange {
        let endpoint = TokenEndpoint::new(
            "airlock".into(),
            AuthSpec::Secret(Secret::new("client-secret")),
            "idp".into(),
            "idp.test".into(),
            "/oauth/token".into(),
        );
        TokenExchange::new(ExchangeSpec {
            upstream: "db".into(),
            endpoint,
            audience: Some("customer-db".into()),
            resource: None,
            scope: Some("customers:read".into()),
            requested_token_type: ACCESS_TOKEN_TYPE.into(),
            subject_token_type: JWT_TOKEN_TYPE.into(),
            refresh_before_seconds: None,
            cache_entries,
        })
    }

    fn counters() -> ExchangeCounters {
        ExchangeCounters { ok: 0, failed: 1 }
    }

    fn answer(token: &str, expires_in: u64) -> Vec<u8> {
        format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in},
            "issued_token_type":"{ACCESS_TOKEN_TYPE}"}}"#
        )
        .into_bytes()
    }

    /// Exchanges `subject` (expiring in an hour) and answers with `token`.
    fn exchanged(tokens: &ExchangedTokens, host: &mut MockHost, ex: &TokenExchange, subject: &str, token: &str) {
        tokens.exchange(host, ex, subject).unwrap();
        let subject = (subject, "ivy", host.now_ms + 3_600_000);
        tokens.finish(host, ex, 0, subject, Some(200), Some(&answer(token, 100)), &counters()).unwrap();
    }

    #[test]
    fn the_exchange_posts_the_rfc_8693_form_with_the_subject_token_and_client_authentication() {
        let ex = exchange(10);
        let tokens = ExchangedTokens::new(1, "vm");
        let mut host = MockHost::default();
        tokens.exchange(&mut host, &ex, "a.b+c/d").unwrap();
        assert_eq!(host.callouts, [("idp".to_string(), "/oauth/token".to_string())]);
        let body = String::from_utf8(host.callout_bodies[0].clone()).unwrap();
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt\
             &audience=customer-db&scope=customers%3Aread&subject_token=a.b%2Bc%2Fd"
        );
        assert!(host.callout_headers[0].iter().any(|(n, v)| n == "authorization" && v.starts_with("Basic ")));
    }

    #[test]
    fn an_exchanged_token_is_cached_per_subject_token_and_never_outlives_it() {
        let ex = exchange(10);
        let tokens = ExchangedTokens::new(1, "vm");
        let mut host = MockHost { now_ms: 1_000_000, ..MockHost::default() };
        assert!(tokens.current(0, SUBJECT, host.now_ms).is_none());
        exchanged(&tokens, &mut host, &ex, SUBJECT, "for-ivy");
        assert_eq!(tokens.current(0, SUBJECT, host.now_ms).unwrap().expose(), "Bearer for-ivy");
        assert!(tokens.current(0, "another.subject.token", host.now_ms).is_none(), "one token per subject token");
        // A subject token ending in 20 s caps a token issued for 100.
        tokens.exchange(&mut host, &ex, "short.lived.subject").unwrap();
        let short = ("short.lived.subject", "ivy", host.now_ms + 20_000);
        tokens.finish(&mut host, &ex, 0, short, Some(200), Some(&answer("capped", 100)), &counters()).unwrap();
        host.now_ms += 19_000;
        assert!(tokens.current(0, "short.lived.subject", host.now_ms).is_none(), "not used past the subject's end");
        assert!(tokens.current(0, SUBJECT, host.now_ms).is_some());
    }

    #[test]
    fn a_token_used_past_eighty_percent_is_refreshed_on_the_timer_while_still_in_use() {
        let ex = exchange(10);
        let tokens = ExchangedTokens::new(1, "vm");
        let mut host = MockHost { now_ms: 1_000_000, ..MockHost::default() };
        exchanged(&tokens, &mut host, &ex, SUBJECT, "tok-1");
        host.now_ms += 79_000;
        tokens.current(0, SUBJECT, host.now_ms);
        assert!(tokens.refresh(&mut host, &[exchange(10)], &counters()).is_empty(), "not due before 80%");
        host.now_ms += 1_000;
        assert!(tokens.current(0, SUBJECT, host.now_ms).is_some());
        let calls = tokens.refresh(&mut host, std::slice::from_ref(&ex), &counters());
        assert_eq!(calls.len(), 1);
        assert!(tokens.refresh(&mut host, std::slice::from_ref(&ex), &counters()).is_empty(), "one at a time");
        assert_eq!(tokens.current(0, SUBJECT, host.now_ms).unwrap().expose(), "Bearer tok-1", "in use meanwhile");
        let (_, index, subject) = &calls[0];
        let answer = answer("tok-2", 100);
        tokens.finish_refresh(
            &mut host,
            std::slice::from_ref(&ex),
            (*index, subject),
            Some(200),
            Some(&answer),
            &counters(),
        );
        assert_eq!(tokens.current(0, SUBJECT, host.now_ms).unwrap().expose(), "Bearer tok-2");
        // A failed refresh keeps the old token and is retried after a pause.
        host.now_ms += 80_000;
        tokens.current(0, SUBJECT, host.now_ms);
        let calls = tokens.refresh(&mut host, std::slice::from_ref(&ex), &counters());
        tokens.finish_refresh(&mut host, std::slice::from_ref(&ex), (0, &calls[0].2), None, None, &counters());
        assert_eq!(tokens.current(0, SUBJECT, host.now_ms).unwrap().expose(), "Bearer tok-2");
        assert!(tokens.refresh(&mut host, std::slice::from_ref(&ex), &counters()).is_empty(), "paused");
        host.now_ms += RETRY_MS;
        assert_eq!(tokens.refresh(&mut host, std::slice::from_ref(&ex), &counters()).len(), 1);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_then_the_one_nearest_its_end() {
        let ex = exchange(2);
        let tokens = ExchangedTokens::new(1, "vm");
        let mut host = MockHost { now_ms: 1_000_000, ..MockHost::default() };
        exchanged(&tokens, &mut host, &ex, "first", "t1");
        host.now_ms += 1_000;
        exchanged(&tokens, &mut host, &ex, "second", "t2");
        exchanged(&tokens, &mut host, &ex, "third", "t3");
        assert_eq!(tokens.len(0), 2);
        assert!(tokens.current(0, "first", host.now_ms).is_none(), "the one nearest its end went");
        host.now_ms += 200_000;
        exchanged(&tokens, &mut host, &ex, "fourth", "t4");
        assert_eq!(tokens.len(0), 1, "expired tokens went");
    }

    #[test]
    fn a_refusal_of_the_subject_is_told_from_an_outage_and_no_token_is_logged() {
        let ex = exchange(10);
        let tokens = ExchangedTokens::new(1, "vm");
        let mut host = MockHost::default();
        let subject = (SUBJECT, "ivy", 3_600_000);
        let cases: [(Option<u32>, &[u8], ExchangeError); 4] = [
            (Some(400), br#"{"error":"invalid_grant"}"#, ExchangeError::Refused),
            (Some(400), br#"{"error":"invalid_target"}"#, ExchangeError::Refused),
            (Some(401), br#"{"error":"invalid_client"}"#, ExchangeError::Unavailable),
            (Some(503), b"down", ExchangeError::Unavailable),
        ];
        for (status, body, expected) in cases {
            let got = tokens.finish(&mut host, &ex, 0, subject, status, Some(body), &counters());
            assert_eq!(got.err(), Some(expected));
        }
        assert_eq!(
            tokens.finish(&mut host, &ex, 0, subject, None, None, &counters()).err(),
            Some(ExchangeError::Unavailable)
        );
        assert_eq!(host.count(1), 5);
        let log = host.logs.join("\n");
        assert!(log.contains("subject `ivy`") && log.contains("error `invalid_grant`"), "{log}");
        assert!(!log.contains(SUBJECT) && !log.contains("client-secret"), "{log}");
    }
}

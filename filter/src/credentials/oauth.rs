//! `oauth2_client_credentials` (RFC 6749 §4.4): the upstream's access token, fetched by
//! the filter from a token endpoint through an Envoy cluster with the client's own
//! credentials (`client_secret_basic`, §2.3.1, or an RFC 7523 `private_key_jwt`
//! assertion signed like a `signed_request` token), cached until shortly before it
//! expires.
//!
//! The root context's timer fetches it when there is none, and again ahead of its expiry
//! (at 80% of its lifetime, or `refresh_before_seconds` before the end), so requests
//! never wait for a refresh. One worker fetches for the whole proxy (see `shared`). A
//! token still valid keeps being used while the endpoint is down; with none, requests
//! fail closed (`503 dependency_unavailable`). Neither the client secret nor a token is
//! ever logged or counted: log lines name the upstream and the endpoint's error code.

use super::shared::{Fetched, SharedSlots, RETRY_MS};
use super::token_endpoint::{form_encode, read_answer, Jti, TokenEndpoint};
use super::Secret;
use crate::host::{Level, Runtime};
use crate::stats::MetricId;

/// A token is not sent in its last tenth of life (at most this long before its end), so
/// it does not expire on its way to the upstream.
pub const EXPIRY_MARGIN_MS: u64 = 5_000;

/// Where and how the filter asks for a token; built and checked at load.
pub struct OAuthClient {
    /// The upstream cluster this token is for: names it in logs.
    pub upstream: String,
    /// Names the token in shared data: the upstream and a digest of what is asked for
    /// (endpoint, client, form), so a VM of a changed config never takes up a token
    /// fetched for the old one.
    shared_name: String,
    pub endpoint: TokenEndpoint,
    /// The form body: grant type, and `scope` and `audience` when given.
    form: String,
    refresh_before_ms: Option<u64>,
}

/// What the config gives for one client.
pub struct ClientSpec {
    pub upstream: String,
    pub endpoint: TokenEndpoint,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub refresh_before_seconds: Option<u64>,
}

impl OAuthClient {
    pub fn new(spec: ClientSpec) -> OAuthClient {
        let mut form = String::from("grant_type=client_credentials");
        for (name, value) in [("scope", &spec.scope), ("audience", &spec.audience)] {
            if let Some(value) = value {
                form.push_str(&format!("&{name}={}", form_encode(value)));
            }
        }
        OAuthClient {
            shared_name: format!("{}.{}", spec.upstream, spec.endpoint.digest(&form)),
            upstream: spec.upstream,
            endpoint: spec.endpoint,
            form,
            refresh_before_ms: spec.refresh_before_seconds.map(|s| s * 1000),
        }
    }

    /// When a token of `lifetime_ms` fetched at `now` is fetched again.
    fn refresh_at(&self, now: u64, lifetime_ms: u64) -> u64 {
        refresh_at(self.refresh_before_ms, now, lifetime_ms)
    }
}

/// When a token of `lifetime_ms` fetched at `now` is fetched again: `refresh_before` its
/// end, or at 80% of its life; never in its first half.
pub fn refresh_at(refresh_before_ms: Option<u64>, now: u64, lifetime_ms: u64) -> u64 {
    let ahead = refresh_before_ms.unwrap_or(lifetime_ms / 5).min(lifetime_ms / 2);
    now + lifetime_ms - ahead
}

/// When a token of `lifetime_ms` fetched at `now` is no longer sent.
pub fn expires_at(now: u64, lifetime_ms: u64) -> u64 {
    now + lifetime_ms - (lifetime_ms / 10).min(EXPIRY_MARGIN_MS)
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OAuthClient({} via `{}`)", self.endpoint.client_id, self.endpoint.cluster)
    }
}

pub struct TokenCounters {
    pub ok: MetricId,
    pub failed: MetricId,
}

/// This VM's copies of the upstreams' access tokens, by index into
/// `Upstreams::oauth_clients`.
pub struct OAuthTokens {
    slots: SharedSlots,
    jti: Jti,
}

impl OAuthTokens {
    /// `instance` differs between VMs (as for audit record ids).
    pub fn new(count: usize, instance: &str) -> OAuthTokens {
        OAuthTokens { slots: SharedSlots::new(count, "airlock.credentials.oauth."), jti: Jti::new(instance) }
    }

    /// The `Bearer` header value to send now, if a token is held that has not expired.
    /// When this VM's copy is missing or expired, the shared one is read (another worker
    /// may have fetched it since this one's last tick).
    pub fn current(&self, rt: &dyn Runtime, index: usize, client: &OAuthClient) -> Option<Secret> {
        let now = rt.now_unix_ms();
        self.slots.current(index, now).or_else(|| {
            self.slots.take_shared(rt, index, &client.shared_name);
            self.slots.current(index, now)
        })
    }

    /// For a request that finds no token held (a VM just started, or every token
    /// expired): fetches one now and the request waits for it, unless a fetch failed
    /// less than a second ago. The answer goes to [`OAuthTokens::finish`] like the
    /// timer's.
    pub fn fetch_for_request(&self, rt: &mut dyn Runtime, index: usize, client: &OAuthClient) -> Option<u32> {
        if self.slots.retrying(index, rt.now_unix_ms()) {
            return None;
        }
        client.endpoint.post(rt, &client.form, &self.jti).ok()
    }

    /// On the root context's timer: fetches the tokens that are missing or due.
    /// Returns the callouts made, with the client each is for.
    pub fn refresh(
        &self,
        rt: &mut dyn Runtime,
        clients: &[OAuthClient],
        counters: &TokenCounters,
    ) -> Vec<(u32, usize)> {
        let mut calls = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            let lease_until = rt.now_unix_ms() + client.endpoint.timeout_ms + RETRY_MS;
            if !self.slots.due(rt, index, &client.shared_name, lease_until) {
                continue;
            }
            match client.endpoint.post(rt, &client.form, &self.jti) {
                Ok(token) => {
                    self.slots.set_in_flight(index, true);
                    calls.push((token, index));
                }
                Err(problem) => self.failed(rt, client, index, counters, &problem),
            }
        }
        calls
    }

    /// Takes the token endpoint's answer for client `index`.
    pub fn finish(
        &self,
        rt: &mut dyn Runtime,
        client: &OAuthClient,
        index: usize,
        status: Option<u32>,
        body: Option<&[u8]>,
        counters: &TokenCounters,
    ) {
        self.slots.set_in_flight(index, false);
        let issued = match read_answer(status, body, None) {
            Ok(issued) => issued,
            Err(why) => return self.failed(rt, client, index, counters, &why),
        };
        rt.increment(counters.ok, 1);
        let now = rt.now_unix_ms();
        let fetched = Fetched {
            value: format!("Bearer {}", issued.access_token),
            refresh_at_ms: client.refresh_at(now, issued.lifetime_ms),
            expires_ms: Some(expires_at(now, issued.lifetime_ms)),
        };
        if let Err(problem) = self.slots.store(rt, index, &client.shared_name, fetched) {
            let upstream = &client.upstream;
            rt.log(
                Level::Warn,
                &format!("airlock: OAuth token for `{upstream}` not shared with other workers: {problem}"),
            );
        }
    }

    fn failed(&self, rt: &mut dyn Runtime, client: &OAuthClient, index: usize, counters: &TokenCounters, why: &str) {
        rt.increment(counters.failed, 1);
        let consequence = if self.slots.failed(rt, index, &client.shared_name) {
            "the token fetched before stays in use until it expires"
        } else {
            "requests to this upstream are refused until one is fetched"
        };
        rt.log(
            Level::Warn,
            &format!(
                "airlock: OAuth token for upstream `{}` (client `{}`) not fetched from the token endpoint ({why}); \
                 {consequence}",
                client.upstream, client.endpoint.client_id
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::signed::RequestSigner;
    use super::super::token_endpoint::AuthSpec;
    use super::*;
    use crate::host::mock::MockHost;
    use base64::Engine as _;
    use serde_json::Value;

    const SECRET: &str = "s3cr3t:with&odd chars";

    fn client(refresh_before_seconds: Option<u64>) -> OAuthClient {
        OAuthClient::new(spec(refresh_before_seconds))
    }

    fn endpoint(auth: AuthSpec) -> TokenEndpoint {
        TokenEndpoint::new("airlock".into(), auth, "idp".into(), "idp.test".into(), "/oauth/token".into())
    }

    fn spec(refresh_before_seconds: Option<u64>) -> ClientSpec {
        ClientSpec {
            upstream: "db".into(),
            endpoint: endpoint(AuthSpec::Secret(Secret::new(SECRET))),
            scope: Some("read write".into()),
            audience: None,
            refresh_before_seconds,
        }
    }

    fn counters() -> TokenCounters {
        TokenCounters { ok: 0, failed: 1 }
    }

    fn answer(token: &str, expires_in: u64) -> Vec<u8> {
        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#).into_bytes()
    }

    /// Fetches on the timer and answers with `token`, as the token endpoint would.
    fn fetch(tokens: &OAuthTokens, host: &mut MockHost, clients: &[OAuthClient], token: &str, expires_in: u64) {
        let calls = tokens.refresh(host, clients, &counters());
        assert_eq!(calls.len(), 1, "one fetch is due");
        tokens.finish(host, &clients[0], 0, Some(200), Some(&answer(token, expires_in)), &counters());
    }

    #[test]
    fn the_token_request_is_a_form_post_with_basic_client_authentication() {
        let clients = [client(None)];
        let tokens = OAuthTokens::new(1, "vm");
        let mut host = MockHost::default();
        tokens.refresh(&mut host, &clients, &counters());
        assert_eq!(host.callouts, [("idp".to_string(), "/oauth/token".to_string())]);
        assert_eq!(host.callout_bodies[0], b"grant_type=client_credentials&scope=read+write");
        let headers = &host.callout_headers[0];
        assert!(headers.contains(&("content-type".into(), "application/x-www-form-urlencoded".into())));
        let auth = headers.iter().find(|(n, _)| n == "authorization").unwrap().1.clone();
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "airlock:s3cr3t%3Awith%26odd+chars");
    }

    #[test]
    fn private_key_jwt_sends_a_fresh_signed_assertion_for_the_token_endpoint_and_no_basic_auth() {
        use super::super::signed::{test_keys::ED25519_PEM, SigningAlg};
        let audience = "https://idp.test/oauth/token".to_string();
        let signer = RequestSigner::new(
            SigningAlg::EdDSA,
            &Secret::new(ED25519_PEM),
            "k1".into(),
            "airlock".into(),
            audience,
            60,
        )
        .unwrap();
        let assertion = endpoint(AuthSpec::Assertion(Box::new(signer)));
        let clients = [OAuthClient::new(ClientSpec { endpoint: assertion, ..spec(None) })];
        let tokens = OAuthTokens::new(1, "vm");
        let mut host = MockHost { now_ms: 1_700_000_000_000, ..MockHost::default() };
        tokens.refresh(&mut host, &clients, &counters());
        host.now_ms += RETRY_MS;
        tokens.finish(&mut host, &clients[0], 0, None, None, &counters());
        host.now_ms += RETRY_MS;
        tokens.refresh(&mut host, &clients, &counters());
        assert!(host.callout_headers[0].iter().all(|(name, _)| name != "authorization"));
        let assertions: Vec<Value> = host
            .callout_bodies
            .iter()
            .map(|body| {
                let body = String::from_utf8(body.clone()).unwrap();
                let prefix = "grant_type=client_credentials&scope=read+write&client_id=airlock&client_assertion_type=\
                              urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=";
                let jwt = body.strip_prefix(prefix).unwrap_or_else(|| panic!("{body}"));
                let payload = jwt.split('.').nth(1).unwrap();
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
                    .unwrap()
            })
            .collect();
        let first = &assertions[0];
        assert_eq!((first["iss"].as_str(), first["sub"].as_str()), (Some("airlock"), Some("airlock")));
        assert_eq!(first["aud"], "https://idp.test/oauth/token");
        assert_eq!(first["exp"].as_u64().unwrap() - first["iat"].as_u64().unwrap(), 60);
        assert_ne!(first["jti"], assertions[1]["jti"], "a fresh jti per fetch");
    }

    #[test]
    fn a_token_is_fetched_once_used_until_refresh_and_refreshed_at_eighty_percent_of_its_life() {
        let clients = [client(None)];
        let tokens = OAuthTokens::new(1, "vm");
        let mut host = MockHost { now_ms: 1_000_000, ..MockHost::default() };
        assert!(tokens.current(&host, 0, &clients[0]).is_none());
        fetch(&tokens, &mut host, &clients, "tok-1", 100);
        assert_eq!(tokens.current(&host, 0, &clients[0]).unwrap().expose(), "Bearer tok-1");
        host.now_ms += 79_000;
        assert!(tokens.refresh(&mut host, &clients, &counters()).is_empty(), "not due before 80%");
        host.now_ms += 1_000;
        let calls = tokens.refresh(&mut host, &clients, &counters());
        assert_eq!(calls.len(), 1, "due at 80%");
        assert!(tokens.refresh(&mut host, &clients, &counters()).is_empty(), "one fetch at a time");
        assert_eq!(tokens.current(&host, 0, &clients[0]).unwrap().expose(), "Bearer tok-1", "in use meanwhile");
        tokens.finish(&mut host, &clients[0], 0, Some(200), Some(&answer("tok-2", 100)), &counters());
        assert_eq!(tokens.current(&host, 0, &clients[0]).unwrap().expose(), "Bearer tok-2");
        assert_eq!(host.count(0), 2);
    }

    #[test]
    fn refresh_before_seconds_moves_the_refresh_but_never_into_the_first_half_of_life() {
        let c = client(Some(30));
        assert_eq!(c.refresh_at(0, 100_000), 70_000);
        assert_eq!(c.refresh_at(0, 20_000), 10_000);
        assert_eq!(client(None).refresh_at(0, 100_000), 80_000);
    }

    #[test]
    fn a_token_past_its_expiry_margin_is_not_used_while_the_endpoint_is_down() {
        let clients = [client(None)];
        let tokens = OAuthTokens::new(1, "vm");
        let mut host = MockHost::default();
        fetch(&tokens, &mut host, &clients, "tok-1", 10);
        host.now_ms += 8_000;
        tokens.refresh(&mut host, &clients, &counters());
        tokens.finish(&mut host, &clients[0], 0, None, None, &counters());
        assert!(tokens.current(&host, 0, &clients[0]).is_some(), "still valid while the endpoint is down");
        assert!(host.logs.last().unwrap().contains("stays in use"), "{:?}", host.logs);
        host.now_ms += 1_000;
        assert!(tokens.current(&host, 0, &clients[0]).is_none(), "not sent in its last second");
    }

    #[test]
    fn a_refused_client_is_logged_with_the_error_code_and_never_the_secret() {
        let clients = [client(None)];
        let tokens = OAuthTokens::new(1, "vm");
        let mut host = MockHost::default();
        tokens.refresh(&mut host, &clients, &counters());
        let body = br#"{"error":"invalid_client","error_description":"bad secret s3cr3t"}"#;
        tokens.finish(&mut host, &clients[0], 0, Some(401), Some(body), &counters());
        let log = host.logs.last().unwrap();
        assert!(log.contains("HTTP 401, error `invalid_client`") && log.contains("refused until"), "{log}");
        assert!(!log.contains("s3cr3t"), "{log}");
        assert!(tokens.current(&host, 0, &clients[0]).is_none());
        assert!(tokens.refresh(&mut host, &clients, &counters()).is_empty(), "retried after a pause");
        host.now_ms += RETRY_MS;
        assert_eq!(tokens.refresh(&mut host, &clients, &counters()).len(), 1);
        assert_eq!(host.count(1), 1);
    }

    #[test]
    fn one_worker_fetches_and_another_uses_its_token_from_shared_data() {
        let clients = [client(None)];
        let (first, second) = (OAuthTokens::new(1, "vm"), OAuthTokens::new(1, "vm"));
        let mut host = MockHost::default();
        assert_eq!(first.refresh(&mut host, &clients, &counters()).len(), 1);
        assert!(second.refresh(&mut host, &clients, &counters()).is_empty(), "the first holds the lease");
        first.finish(&mut host, &clients[0], 0, Some(200), Some(&answer("tok-1", 100)), &counters());
        assert_eq!(second.current(&host, 0, &clients[0]).unwrap().expose(), "Bearer tok-1");
        assert!(second.refresh(&mut host, &clients, &counters()).is_empty(), "nothing due");
        assert_eq!(host.callouts.len(), 1, "one fetch for both workers");
    }

    #[test]
    fn a_vm_of_a_changed_config_does_not_take_up_the_token_fetched_for_the_old_one() {
        let old = [client(None)];
        let changed = [OAuthClient::new(ClientSpec { scope: Some("admin".into()), ..spec(None) })];
        let (before, after) = (OAuthTokens::new(1, "a"), OAuthTokens::new(1, "b"));
        let mut host = MockHost::default();
        fetch(&before, &mut host, &old, "tok-old", 100);
        assert!(after.current(&host, 0, &changed[0]).is_none(), "another scope, another token");
        assert_eq!(after.refresh(&mut host, &changed, &counters()).len(), 1, "fetched for the new config");
    }

    #[test]
    fn a_token_that_is_not_bearer_or_not_header_safe_is_refused() {
        let clients = [client(None)];
        let tokens = OAuthTokens::new(1, "vm");
        let mut host = MockHost::default();
        for body in [
            br#"{"access_token":"t","token_type":"mac","expires_in":60}"#.to_vec(),
            br#"{"access_token":"a\r\nb","token_type":"Bearer","expires_in":60}"#.to_vec(),
        ] {
            host.now_ms += RETRY_MS;
            tokens.refresh(&mut host, &clients, &counters());
            tokens.finish(&mut host, &clients[0], 0, Some(200), Some(&body), &counters());
            assert!(tokens.current(&host, 0, &clients[0]).is_none());
        }
        assert_eq!(host.count(1), 2);
    }
}

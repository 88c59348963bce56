//! The upstream's credential, made just before the request headers move on: copied when
//! fixed at load, taken from this VM's copy of a control-service secret or OAuth access
//! token, minted for this request and bound to its method, path and body, or exchanged
//! for the caller's own token (the request waits for the exchange when none is cached).

use std::borrow::Cow;

use super::request::Request;
use crate::credentials::exchange::ExchangeError;
use crate::credentials::signed::RequestFacts;
use crate::credentials::Source;
use crate::host::Host;
use crate::host::Level;
use crate::identity::Identity;
use crate::jwt;
use crate::reply::{Code, Reply};
use crate::vm_state::VmState;

/// A credential ready to set.
pub struct Injected<'v> {
    /// Index of the upstream in the config, for the audit record.
    pub upstream: usize,
    pub header: &'v str,
    pub value: Cow<'v, str>,
}

pub enum Prepared<'v> {
    /// Set this (or nothing: the upstream has no credential).
    Ready(Option<Injected<'v>>),
    /// The credential is bound to the body, which is not read yet.
    NeedsBody,
    /// The caller's token is being exchanged for upstream `upstream`'s (callout `call`).
    Exchanging { call: u32, upstream: usize },
    /// The credential cannot be had now: the request is refused (fail closed).
    Unavailable(Reply),
}

pub fn prepare<'v>(
    vm: &'v VmState,
    host: &mut dyn Host,
    request: &Request,
    identity: Option<&Identity>,
) -> Prepared<'v> {
    let upstreams = &vm.config.upstreams;
    if upstreams.is_empty() {
        return Prepared::Ready(None);
    }
    let Some(upstream) = host.upstream_cluster().and_then(|cluster| upstreams.find(&cluster)) else {
        return Prepared::Ready(None);
    };
    let Some(credential) = upstreams.at(upstream) else { return Prepared::Ready(None) };
    let value = match &credential.source {
        Source::Fixed(value) => Cow::Borrowed(value.expose()),
        Source::Control { secret, format } => match vm.secrets.current(*secret) {
            Some(value) => Cow::Owned(format.header_value(value.expose()).expose().to_string()),
            None => {
                let reply = Reply::new(
                    Code::DependencyUnavailable,
                    "the upstream's credential is held by the control service and has not been fetched yet",
                );
                return Prepared::Unavailable(reply.with_retry_after(1));
            }
        },
        Source::OAuth { client } => {
            let token = upstreams.oauth_clients.get(*client).and_then(|c| vm.oauth.current(host, *client, c));
            match token {
                Some(value) => Cow::Owned(value.expose().to_string()),
                None => {
                    let reply = Reply::new(
                        Code::DependencyUnavailable,
                        "the upstream's OAuth access token could not be fetched from its token endpoint",
                    );
                    return Prepared::Unavailable(reply.with_retry_after(1));
                }
            }
        }
        Source::Exchange { exchange } => {
            let (Some(ex), Some(subject_token)) =
                (upstreams.token_exchanges.get(*exchange), subject_token(vm, request))
            else {
                let reply = Reply::new(Code::Misconfigured, "a token_exchange credential needs a verified caller");
                return Prepared::Unavailable(reply);
            };
            match vm.exchanged.current(*exchange, subject_token, host.now_unix_ms()) {
                Some(value) => Cow::Owned(value.expose().to_string()),
                None => match vm.exchanged.exchange(host, ex, subject_token) {
                    Ok(call) => return Prepared::Exchanging { call, upstream },
                    Err(problem) => {
                        host.increment(vm.stats.credentials_exchange_failed, 1);
                        let upstream = &ex.upstream;
                        host.log(Level::Warn, &format!("airlock: token exchange for `{upstream}` not sent: {problem}"));
                        return Prepared::Unavailable(exchange_unavailable());
                    }
                },
            }
        }
        Source::Signed { signer, bearer } => {
            let Some(body) = request.body.as_deref() else { return Prepared::NeedsBody };
            let Some(identity) = identity else {
                let reply = Reply::new(Code::Misconfigured, "a signed_request credential needs a verified caller");
                return Prepared::Unavailable(reply);
            };
            // Envoy sets `x-request-id` on every request it sees; a proxy told not to
            // still gets a unique `jti`.
            let fallback;
            let jti = match request.request_id() {
                Some(id) => id,
                None => {
                    fallback = vm.next_record_id();
                    &fallback
                }
            };
            let token = signer.mint(&RequestFacts {
                subject: &identity.subject,
                groups: &identity.groups,
                jti,
                method: request.method(),
                path: request.raw_path(),
                body,
                now_s: host.now_unix_secs(),
            });
            host.increment(vm.stats.credentials_signed, 1);
            Cow::Owned(if *bearer { format!("Bearer {}", token.expose()) } else { token.expose().to_string() })
        }
    };
    Prepared::Ready(Some(Injected { upstream, header: &credential.header, value }))
}

/// The token endpoint's answer to the exchange a request waited for: the credential to
/// set, or why the request is refused.
pub fn exchanged<'v>(
    vm: &'v VmState,
    host: &mut dyn Host,
    request: &Request,
    identity: Option<&Identity>,
    upstream: usize,
    (status, body): (Option<u32>, Option<&[u8]>),
) -> Result<Injected<'v>, Reply> {
    let upstreams = &vm.config.upstreams;
    let credential = upstreams.at(upstream);
    let exchange = match credential.map(|c| &c.source) {
        Some(Source::Exchange { exchange }) => *exchange,
        _ => return Err(Reply::new(Code::Misconfigured, "a token exchange answered for another credential")),
    };
    let (Some(credential), Some(ex), Some(subject_token), Some(identity)) =
        (credential, upstreams.token_exchanges.get(exchange), subject_token(vm, request), identity)
    else {
        return Err(Reply::new(Code::Misconfigured, "a token_exchange credential needs a verified caller"));
    };
    let subject = (subject_token, identity.subject.as_str(), identity.expires_at.saturating_mul(1000));
    match vm.exchanged.finish(host, ex, exchange, subject, status, body, &vm.exchange_counters()) {
        Ok(value) => {
            Ok(Injected { upstream, header: &credential.header, value: Cow::Owned(value.expose().to_string()) })
        }
        Err(ExchangeError::Unavailable) => Err(exchange_unavailable()),
        Err(ExchangeError::Refused) => Err(Reply::new(
            Code::CredentialRefused,
            "the upstream's token endpoint refused to exchange the caller's token for one for this upstream",
        )),
    }
}

/// The caller's token as it sent it: what is exchanged.
fn subject_token<'r>(vm: &VmState, request: &'r Request) -> Option<&'r str> {
    request.header(&vm.config.auth.header).and_then(|value| jwt::bearer_token(value).ok())
}

fn exchange_unavailable() -> Reply {
    Reply::new(
        Code::DependencyUnavailable,
        "the caller's token could not be exchanged at the upstream's token endpoint",
    )
    .with_retry_after(1)
}

/// A body a `signed_request` credential must be bound to, over the limit Airlock holds.
pub fn body_too_large_to_sign(limit: usize) -> Reply {
    Reply::new(
        Code::RequestBodyTooLarge,
        format!(
            "the upstream's signed_request credential is bound to the request body, and the body is larger than \
             the {limit}-byte limit Airlock holds a body to"
        ),
    )
}

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
    /// Upstream `upstream`'s credential is on its way (callout `call`): the caller's token
    /// being exchanged, or a first OAuth access token.
    Fetching { call: u32, upstream: usize },
    /// The credential cannot be had now: the request is refused (fail closed).
    Unavailable(Reply),
}

/// Makes the credential for the request's upstream. `may_wait`: the request can pause
/// for a token fetch (its headers have not moved on).
pub fn prepare<'v>(
    vm: &'v VmState,
    host: &mut dyn Host,
    request: &Request,
    identity: Option<&Identity>,
    may_wait: bool,
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
            let Some(spec) = upstreams.oauth_clients.get(*client) else { return Prepared::Ready(None) };
            match vm.oauth.current(host, *client, spec) {
                Some(value) => Cow::Owned(value.expose().to_string()),
                None => match may_wait.then(|| vm.oauth.fetch_for_request(host, *client, spec)).flatten() {
                    Some(call) => return Prepared::Fetching { call, upstream },
                    None => return Prepared::Unavailable(oauth_unavailable()),
                },
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
                None if !may_wait => {
                    let reply =
                        Reply::new(Code::Misconfigured, "a token_exchange credential with hold.by buffer_filter");
                    return Prepared::Unavailable(reply);
                }
                None => match vm.exchanged.exchange(host, ex, subject_token) {
                    Ok(call) => return Prepared::Fetching { call, upstream },
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

/// The token endpoint's answer to the fetch a request waited for (the exchange of its
/// caller's token, or a first OAuth access token): the credential to set, or why the
/// request is refused.
pub fn fetched<'v>(
    vm: &'v VmState,
    host: &mut dyn Host,
    request: &Request,
    identity: Option<&Identity>,
    upstream: usize,
    (status, body): (Option<u32>, Option<&[u8]>),
) -> Result<Injected<'v>, Reply> {
    let upstreams = &vm.config.upstreams;
    let Some(credential) = upstreams.at(upstream) else {
        return Err(Reply::new(Code::Misconfigured, "a credential fetch answered for no upstream"));
    };
    let value = match &credential.source {
        Source::OAuth { client } => {
            let Some(spec) = upstreams.oauth_clients.get(*client) else {
                return Err(Reply::new(Code::Misconfigured, "an OAuth fetch answered for no client"));
            };
            vm.oauth.finish(host, spec, *client, status, body, &vm.token_counters());
            vm.oauth.current(host, *client, spec).ok_or_else(oauth_unavailable)?
        }
        Source::Exchange { exchange } => {
            let (Some(ex), Some(subject_token), Some(identity)) =
                (upstreams.token_exchanges.get(*exchange), subject_token(vm, request), identity)
            else {
                return Err(Reply::new(Code::Misconfigured, "a token_exchange credential needs a verified caller"));
            };
            let subject = (subject_token, identity.subject.as_str(), identity.expires_at.saturating_mul(1000));
            match vm.exchanged.finish(host, ex, *exchange, subject, status, body, &vm.exchange_counters()) {
                Ok(value) => value,
                Err(ExchangeError::Unavailable) => return Err(exchange_unavailable()),
                Err(ExchangeError::Refused) => {
                    return Err(Reply::new(
                        Code::CredentialRefused,
                        "the upstream's token endpoint refused to exchange the caller's token for one for this \
                         upstream",
                    ))
                }
            }
        }
        _ => return Err(Reply::new(Code::Misconfigured, "a credential fetch answered for a credential fixed at load")),
    };
    Ok(Injected { upstream, header: &credential.header, value: Cow::Owned(value.expose().to_string()) })
}

fn oauth_unavailable() -> Reply {
    Reply::new(
        Code::DependencyUnavailable,
        "the upstream's OAuth access token could not be fetched from its token endpoint",
    )
    .with_retry_after(1)
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

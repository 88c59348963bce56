//! The upstream's credential, made just before the request headers move on: copied when
//! fixed at load, taken from this VM's copy of a control-service secret or OAuth access
//! token, or minted for this request and bound to its method, path and body.

use std::borrow::Cow;

use super::request::Request;
use crate::credentials::signed::RequestFacts;
use crate::credentials::Source;
use crate::host::Host;
use crate::identity::Identity;
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

//! What the filter knows of a request from its headers, read once, and the header
//! changes made on the way upstream.
//!
//! Envoy's request header map is read in one host call in the headers callback and kept
//! here: it is not reliably readable from later callbacks, and every single-header read
//! is a crossing into Envoy and another back into the VM to allocate the value.

use crate::approval::{APPROVAL_ID_HEADER, REASON_HEADER};
use crate::audit;
use crate::config::Config;
use crate::headers::HeaderList;
use crate::host::Host;
use crate::identity::Identity;
use crate::mcp;

use super::credential::Injected;

#[derive(Default)]
pub struct Request {
    pub started_ms: u64,
    /// As the client sent them, less the identity headers only the filter may set.
    pub headers: HeaderList,
    /// The ticket a client retries with, read before the header is stripped.
    pub ticket: Option<String>,
    /// Why the caller says it needs this.
    pub reason: Option<String>,
    /// The audit session the client named, or its MCP session's, if any.
    pub session_header: Option<String>,
    /// The headers callback said end-of-stream: there is no body.
    pub bodiless: bool,
    /// The body once read: for the approval digest and the audit record.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// Reads the headers and removes the identity headers a client may not set, also
    /// from what rules see.
    pub fn read(host: &mut dyn Host, config: &Config, started_ms: u64, end_of_stream: bool) -> Request {
        let mut headers = host.request_headers();
        for name in [&config.identity_headers.subject, &config.identity_headers.groups] {
            if headers.get(name).is_some() {
                host.remove_request_header(name);
                headers.remove(name);
            }
        }
        let ticket = headers.get(APPROVAL_ID_HEADER).map(str::to_string);
        let reason = headers.get(REASON_HEADER).map(|r| audit::excerpt(r, 2000).to_string());
        // The session the client names; else the MCP session it is in (by digest).
        let session_header = config.audit.as_ref().and_then(|audit| {
            let named = headers.get(&audit.session_header).map(|s| audit::excerpt(s, audit::MAX_SESSION_ID_BYTES));
            named
                .map(str::to_string)
                .or_else(|| headers.get(mcp::SESSION_HEADER).filter(|s| !s.is_empty()).map(mcp::audit_session))
        });
        Request { started_ms, headers, ticket, reason, session_header, bodiless: end_of_stream, body: None }
    }

    /// The first value of a request header, as the client sent it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or_default()
    }

    /// Path and query exactly as sent.
    pub fn raw_path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }

    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    /// The body as read, empty when there is none or it was not read.
    pub fn body_bytes(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }

    /// Sessions exist for audit: the one the client named, else its MCP session, else one
    /// per token.
    pub fn session_id<'a>(&'a self, config: &Config, identity: Option<&'a Identity>) -> &'a str {
        if config.audit.is_none() {
            return "";
        }
        identity.map_or(self.session_header.as_deref().unwrap_or(""), |i| self.session(i))
    }

    /// The caller's session, as audit records name it and `by: session` limits count it:
    /// the one the client named, else one per token.
    pub fn session<'a>(&'a self, identity: &'a Identity) -> &'a str {
        self.session_header.as_deref().unwrap_or(identity.token_session())
    }

    /// Header changes that hold whatever the decision: the agent's token and any
    /// credential the client sent never go upstream, and the identity the filter vouches
    /// for is set. Rules still judged the headers as sent.
    pub fn strip_for_upstream(&self, host: &mut dyn Host, config: &Config, identity: &Identity) {
        for header in &config.stripped_headers {
            if self.header(header).is_some() {
                host.remove_request_header(header);
            }
        }
        host.set_request_header(&config.identity_headers.subject, &identity.subject);
        if !identity.groups.is_empty() {
            host.set_request_header(&config.identity_headers.groups, identity.groups_header());
        }
    }
}

/// What the request needs just before its headers move on (Envoy ignores header changes
/// after that): the upstream's own credential, and, when the response may be masked, no
/// compression and no `Range` (a fragment cannot be masked: the whole body is fetched
/// and masked instead).
pub fn complete_upstream_headers(host: &mut dyn Host, request: &Request, may_mask: bool, credential: Option<Injected>) {
    if let Some(credential) = credential {
        host.set_request_header(credential.header, &credential.value);
    }
    if may_mask {
        for name in ["accept-encoding", "range"] {
            if request.header(name).is_some() {
                host.remove_request_header(name);
            }
        }
    }
}

//! What a phase of the request flow returns, and the data a paused request carries.
//!
//! Phases never call each other and never change the flow's state: each returns a
//! [`Step`], and `RequestFlow::settle` alone turns it into the next state and tells
//! Envoy whether to go on.

use std::rc::Rc;

use airlock_wire::Decision;

use crate::approval::ApprovalSettings;
use crate::decompress::Coding;
use crate::identity::Identity;
use crate::normalize::RequestTarget;
use crate::reply::Reply;
use crate::stream::StreamKind;

/// An authenticated caller and the target it asked for: what the policy judges.
pub struct Caller {
    pub identity: Rc<Identity>,
    pub target: RequestTarget,
}

/// The outcome of a phase.
pub enum Step {
    /// Decided: send the request upstream (`Allow`, `Approved` or `DryRunAllow`).
    Forward(Decision),
    /// Decided: the filter answers the request itself.
    Refuse(Reply),
    /// The decision, or the answer, needs the request body.
    NeedsBody(AfterBody),
    /// This `approve` rule (index) decided, and the body is read: ask for the approval.
    Approve(Caller, usize),
    /// Paused until the JWKS fetch `call` answers; then `token` is judged again.
    NeedsKeys { call: u32, token: String },
    /// Paused until the control service answers `call`.
    NeedsApproval { call: u32, pending: PendingApproval },
    /// The token endpoint answered the fetch of upstream `upstream`'s credential (the
    /// caller's token exchanged, or a first OAuth token): forward with it, as `decision`
    /// said, or refuse.
    CredentialArrived { decision: Decision, upstream: usize, status: Option<u32>, body: Option<Vec<u8>> },
    /// The response is to be masked (with `profile`) or is a tool list to filter (the
    /// flow's `listing`; `sse`: its events): buffer its body.
    MaskResponse { profile: Option<usize>, is_json: bool, sse: bool, coding: Option<Coding> },
    /// The response streams (SSE, NDJSON): mask it chunk by chunk as it passes.
    StreamResponse { profile: usize, kind: StreamKind, coding: Option<Coding> },
    /// Nothing more to do: the rest of the response passes.
    Finished,
}

/// What to do once the body is complete.
pub enum AfterBody {
    /// Run the policy on it.
    Decide(Caller),
    /// The policy already chose this `approve` rule without looking at the body (rule
    /// index); the approval is bound to the body, so it is asked for now. The policy
    /// does not run twice.
    Approve(Caller, usize),
    /// Decided to forward; the upstream's credential is bound to the body (a
    /// `signed_request`), so it is minted once the body is complete.
    Forward(Decision),
    /// Refused already, before the body was read; an MCP request's body is read first so
    /// the refusal can be answered as JSON-RPC, with the request's id. Boxed: a `Reply`
    /// is larger than a caller.
    Refuse(Box<Reply>),
}

/// Which call to the control service is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalCall {
    Create,
    Wait,
    Redeem,
}

/// A request waiting on the control service.
pub struct PendingApproval {
    pub call: ApprovalCall,
    /// Index of the `approve` rule, and its settings (cloned: approvals are rare).
    pub rule: usize,
    pub settings: ApprovalSettings,
    /// Known once the service created the approval, or from the client's ticket.
    pub id: Option<String>,
    /// A held request is refused as expired at this time (Unix ms).
    pub deadline_ms: u64,
}

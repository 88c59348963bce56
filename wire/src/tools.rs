//! MCP tool-definition pinning: what the filter saw in `tools/list` answers
//! (`POST /v1/mcp/tool-definitions`) and the pins the service holds for it
//! (`GET /v1/mcp/tool-pins`, also the answer to the post).
//!
//! A fingerprint is the hex SHA-256 of a tool's canonical `{name, description,
//! inputSchema}`; the service never sees the definitions themselves, only whether they
//! changed.

use serde::{Deserialize, Serialize};

/// One tool as one upstream listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolObservation {
    /// The upstream's name in the filter config, else the request's `:authority`.
    pub upstream: String,
    pub tool: String,
    pub fingerprint: String,
    /// The fingerprint the filter trusts for the tool (the same, on first sight). The
    /// service pins it when it has no pin yet: reports of several workers may arrive out
    /// of order, and a change reported first must not become the trusted definition.
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolObservations {
    pub observations: Vec<ToolObservation>,
}

/// A definition that differs from the pin and waits for an approver to accept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// `tch_…`: what `airlock tools accept` takes.
    pub id: String,
    pub fingerprint: String,
}

/// The accepted definition of one tool of one upstream, trusted on first use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPin {
    pub upstream: String,
    pub tool: String,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPins {
    pub pins: Vec<ToolPin>,
}

/// Where a recorded change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChangeStatus {
    /// Seen, not accepted: in `block` mode the tool is refused.
    Pending,
    /// An approver accepted it: it is the pin now.
    Accepted,
    /// A later definition replaced it before anyone accepted it.
    Superseded,
}

impl ToolChangeStatus {
    pub const ALL: [ToolChangeStatus; 3] =
        [ToolChangeStatus::Pending, ToolChangeStatus::Accepted, ToolChangeStatus::Superseded];

    pub fn as_str(self) -> &'static str {
        match self {
            ToolChangeStatus::Pending => "pending",
            ToolChangeStatus::Accepted => "accepted",
            ToolChangeStatus::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<ToolChangeStatus> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_without_a_pending_change_omits_it_and_reads_back() {
        let pin = ToolPin { upstream: "u".into(), tool: "t".into(), fingerprint: "ab".into(), pending: None };
        let json = serde_json::to_string(&pin).unwrap();
        assert!(!json.contains("pending"), "{json}");
        assert_eq!(serde_json::from_str::<ToolPin>(&json).unwrap(), pin);
        for s in ToolChangeStatus::ALL {
            assert_eq!(ToolChangeStatus::parse(s.as_str()), Some(s));
        }
    }
}

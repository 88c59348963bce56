//! Envoy counters for every decision the filter takes.
//!
//! All counters are defined once when the plugin is configured, so the hot path only
//! increments a known id. Envoy shows them under `wasmcustom.airlock.*`.

use crate::config::Config;
use crate::reply::Code;

pub type MetricId = u32;

/// Defines counters in the host at configure time.
pub trait DefineCounter {
    fn define_counter(&mut self, name: &str) -> Option<MetricId>;
}

pub struct Stats {
    pub requests: MetricId,
    pub allowed: MetricId,
    pub denied: MetricId,
    pub denied_by_default: MetricId,
    pub dry_run_would_block: MetricId,
    pub unauthenticated: MetricId,
    pub invalid_target: MetricId,
    pub request_body_over_limit: MetricId,
    pub response_over_limit: MetricId,
    pub response_not_maskable: MetricId,
    pub dependency_unavailable: MetricId,
    pub jwks_fetch_ok: MetricId,
    pub jwks_fetch_failed: MetricId,
    pub masked_responses: MetricId,
    /// Tools removed from MCP `tools/list` answers because the caller's rules deny them.
    pub mcp_tools_hidden: MetricId,
    /// Resources removed from `resources/list` answers (their `resources/read` is denied).
    pub mcp_resources_hidden: MetricId,
    /// Prompts removed from `prompts/list` answers (their `prompts/get` is denied).
    pub mcp_prompts_hidden: MetricId,
    /// Refusals of MCP requests answered in JSON-RPC (also counted by their code).
    pub mcp_jsonrpc_refusals: MetricId,
    /// Tools pinned on first sight (`mcp.pin_tools`).
    pub mcp_tools_pinned: MetricId,
    /// Listed tool definitions that differ from their pin (each new definition once).
    pub mcp_tool_definition_changed: MetricId,
    /// Calls of a tool `block` mode refuses (`tool_definition_changed`).
    pub mcp_tool_calls_blocked: MetricId,
    /// Failed exchanges of pins with the control service (reports and refreshes).
    pub mcp_pin_sync_failed: MetricId,
    pub approvals_requested: MetricId,
    pub approvals_granted: MetricId,
    pub approvals_refused: MetricId,
    pub approval_service_errors: MetricId,
    pub audit_records: MetricId,
    pub audit_dropped: MetricId,
    pub audit_batches_shipped: MetricId,
    pub audit_ship_failed: MetricId,
    pub audit_refused_requests: MetricId,
    /// Requests refused by a rule's rate limit (or because they could not be counted).
    pub rate_limited: MetricId,
    /// Tokens minted for `signed_request` upstreams.
    pub credentials_signed: MetricId,
    /// Fetches of control-service secrets (`{"control": ...}`) that succeeded or failed.
    pub credentials_secret_fetch_ok: MetricId,
    pub credentials_secret_fetch_failed: MetricId,
    pub credentials_oauth_fetch_ok: MetricId,
    pub credentials_oauth_fetch_failed: MetricId,
    /// Token exchanges answered with a token, and those that failed or were refused.
    pub credentials_exchange_ok: MetricId,
    pub credentials_exchange_failed: MetricId,
    /// Requests refused because the token endpoint would not issue their caller a token.
    pub credential_refused: MetricId,
    /// Per rule (same index as the policy): how often it decided a request.
    pub rule_matched: Vec<MetricId>,
    /// Per rule (same index as the policy): `Some` for rules with a limit, how often it
    /// refused a request.
    pub rule_rate_limited: Vec<Option<MetricId>>,
    /// Per mask profile, per kind (same index as `MaskProfile::kinds`).
    pub masked_values: Vec<Vec<MetricId>>,
}

impl Stats {
    /// `None` if the host refused to define a counter, which only happens when the VM is
    /// broken; the plugin then refuses to start rather than run blind.
    pub fn define(host: &mut dyn DefineCounter, config: &Config) -> Option<Stats> {
        let mut c = |name: &str| host.define_counter(&format!("airlock.{name}"));
        let mut stats = Stats {
            requests: c("requests")?,
            allowed: c("allowed")?,
            denied: c("denied")?,
            denied_by_default: c("denied_by_default")?,
            dry_run_would_block: c("dry_run.would_block")?,
            unauthenticated: c("unauthenticated")?,
            invalid_target: c("invalid_request_target")?,
            request_body_over_limit: c("request_body_over_limit")?,
            response_over_limit: c("response_over_limit")?,
            response_not_maskable: c("response_not_maskable")?,
            dependency_unavailable: c("dependency_unavailable")?,
            jwks_fetch_ok: c("jwks.fetch_ok")?,
            jwks_fetch_failed: c("jwks.fetch_failed")?,
            masked_responses: c("masked_responses")?,
            mcp_tools_hidden: c("mcp.tools_hidden")?,
            mcp_resources_hidden: c("mcp.resources_hidden")?,
            mcp_prompts_hidden: c("mcp.prompts_hidden")?,
            mcp_jsonrpc_refusals: c("mcp.jsonrpc_refusals")?,
            mcp_tools_pinned: c("mcp.tools_pinned")?,
            mcp_tool_definition_changed: c("mcp.tool_definition_changed")?,
            mcp_tool_calls_blocked: c("mcp.tool_calls_blocked")?,
            mcp_pin_sync_failed: c("mcp.pin_sync_failed")?,
            approvals_requested: c("approvals.requested")?,
            approvals_granted: c("approvals.granted")?,
            approvals_refused: c("approvals.refused")?,
            approval_service_errors: c("approvals.service_errors")?,
            audit_records: c("audit.records")?,
            audit_dropped: c("audit.dropped")?,
            audit_batches_shipped: c("audit.batches_shipped")?,
            audit_ship_failed: c("audit.ship_failed")?,
            audit_refused_requests: c("audit.refused_requests")?,
            rate_limited: c("rate_limited")?,
            credentials_signed: c("credentials.signed")?,
            credentials_secret_fetch_ok: c("credentials.secret_fetch_ok")?,
            credentials_secret_fetch_failed: c("credentials.secret_fetch_failed")?,
            credentials_oauth_fetch_ok: c("credentials.oauth_fetch_ok")?,
            credentials_oauth_fetch_failed: c("credentials.oauth_fetch_failed")?,
            credentials_exchange_ok: c("credentials.exchange_ok")?,
            credentials_exchange_failed: c("credentials.exchange_failed")?,
            credential_refused: c("credentials.refused")?,
            rule_matched: Vec::new(),
            rule_rate_limited: Vec::new(),
            masked_values: Vec::new(),
        };
        for rule in config.policy.rules() {
            stats.rule_matched.push(c(&format!("rule.{}.matched", rule.name()))?);
            let limited = match rule.limit() {
                Some(_) => Some(c(&format!("rule.{}.rate_limited", rule.name()))?),
                None => None,
            };
            stats.rule_rate_limited.push(limited);
        }
        for (name, profile) in &config.mask_profiles {
            let mut ids = Vec::with_capacity(profile.kinds().len());
            for kind in profile.kinds() {
                ids.push(c(&format!("masked.{name}.{kind}"))?);
            }
            stats.masked_values.push(ids);
        }
        Some(stats)
    }

    /// The counter of a refusal, by its code: every answer the filter gives is counted
    /// once, in one place.
    pub fn refusal(&self, code: Code) -> Option<MetricId> {
        match code {
            Code::Unauthenticated => Some(self.unauthenticated),
            Code::DeniedByRule => Some(self.denied),
            Code::DeniedByDefault => Some(self.denied_by_default),
            Code::ApprovalDenied | Code::ApprovalExpired | Code::ApprovalRejected => Some(self.approvals_refused),
            Code::AuditUnavailable => Some(self.audit_refused_requests),
            Code::InvalidRequestTarget => Some(self.invalid_target),
            Code::RequestBodyTooLarge => Some(self.request_body_over_limit),
            Code::DependencyUnavailable => Some(self.dependency_unavailable),
            Code::ResponseTooLarge => Some(self.response_over_limit),
            Code::ResponseNotMaskable => Some(self.response_not_maskable),
            Code::RateLimited => Some(self.rate_limited),
            Code::ToolDefinitionChanged => Some(self.mcp_tool_calls_blocked),
            Code::CredentialRefused => Some(self.credential_refused),
            // Pending is counted as `approvals.requested`; the flow logs a misconfiguration.
            Code::ApprovalPending | Code::Misconfigured => None,
        }
    }
}

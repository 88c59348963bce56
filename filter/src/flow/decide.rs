//! The decision: the policy, run once per request on what is known so far, turned into
//! the next step.

use airlock_wire::Decision;

use super::record::describe;
use super::request::Request;
use super::step::{AfterBody, Caller, Step};
use crate::host::{Host, Level};
use crate::identity::Identity;
use crate::limit::{self, Counter, Outcome};
use crate::mcp;
use crate::normalize::RequestTarget;
use crate::pins::{self, PinMode};
use crate::policy::{Action, Body, Evaluation, Memo, RequestFacts, Rule};
use crate::reply::{Code, Reply};
use crate::sql::UseKind;
use crate::vm_state::VmState;

pub struct Verdict {
    /// The deciding rule (index into the policy's rules); `None` for the default action.
    pub rule: Option<usize>,
    /// A dry-run rule, or the dry-run config, was reported as "would have refused".
    pub dry_run_reported: bool,
    pub step: Step,
    /// An allowed MCP `tools/list`: what its answer is checked for.
    pub listing: Option<Listing>,
    /// A SQL answer masked by column (`sql_result`): the result columns to mask.
    pub columns: Option<Vec<String>>,
}

impl Verdict {
    fn step(rule: Option<usize>, dry_run_reported: bool, step: Step) -> Verdict {
        Verdict { rule, dry_run_reported, step, listing: None, columns: None }
    }
}

/// What an allowed list answer (`tools/list`, `resources/list`, `prompts/list`) is
/// checked for.
pub struct Listing {
    pub kind: mcp::ListKind,
    /// Tools the caller's rules deny are hidden, judged on this target (not in a dry run).
    pub hide_for: Option<RequestTarget>,
    /// The upstream whose tool definitions are pinned (`mcp.pin_tools`), if any.
    pub pins: Option<String>,
    /// `block` mode, enforced: changed tools are hidden too.
    pub block: bool,
}

/// The name tool pins are kept under for this request's upstream: its Envoy cluster
/// (the name `upstreams[].cluster` gives it too), else its `:authority`. The cluster
/// first: the authority is the client's to choose, and a new name would trust a changed
/// definition on first use.
pub fn pin_upstream(host: &dyn Host, request: &Request) -> String {
    host.upstream_cluster()
        .filter(|c| !c.is_empty())
        .or_else(|| request.header(":authority").map(str::to_string))
        .unwrap_or_default()
}

/// A `tools/call` (alone or in a batch) of a tool `block` mode refuses: its definition
/// changed and no approver accepted it yet.
fn blocked_call(vm: &VmState, host: &mut dyn Host, request: &Request, body: &serde_json::Value) -> Option<Reply> {
    if vm.config.mcp.pin_tools != PinMode::Block {
        return None;
    }
    let tools = mcp::called_tools(body);
    if tools.is_empty() {
        return None;
    }
    let upstream = pin_upstream(host, request);
    let (tool, change) = tools.into_iter().find_map(|t| pins::blocking_change(host, &upstream, t).map(|c| (t, c)))?;
    Some(
        Reply::new(
            Code::ToolDefinitionChanged,
            format!(
                "the definition of MCP tool `{tool}` changed since it was pinned; it is refused until an approver \
                 accepts the new definition"
            ),
        )
        .with_tool_change(change),
    )
}

/// Runs the policy. `body` is `NotRead` until the body is buffered; a rule that needs it
/// then answers `NeedsBody`, and the policy runs again, once, on the whole body.
pub fn decide(vm: &VmState, host: &mut dyn Host, request: &Request, caller: Caller, body: Body) -> Verdict {
    let config = &vm.config;
    let body_read = !matches!(body, Body::NotRead);
    let facts = RequestFacts {
        method: request.method(),
        target: &caller.target,
        headers: &request.headers,
        identity: Some(&caller.identity),
    };
    // Pinning reads what an MCP request lists or calls, whatever the rules need.
    if config.mcp.pin_tools != PinMode::Off
        && !body_read
        && mcp::may_carry_jsonrpc(request.method(), request.header("content-type"))
    {
        return Verdict::step(None, false, Step::NeedsBody(AfterBody::Decide(caller)));
    }
    let memo = Memo::default();
    let decision = match config.policy.evaluate_with(&facts, body, &memo) {
        Evaluation::NeedBody => return Verdict::step(None, false, Step::NeedsBody(AfterBody::Decide(caller))),
        Evaluation::Decided(decision) => decision,
    };
    let rules = config.policy.rules();
    let rule = decision.rule.and_then(|r| rules.iter().position(|x| std::ptr::eq(x, r)));
    if let Some(id) = rule.and_then(|i| vm.stats.rule_matched.get(i)) {
        host.increment(*id, 1);
    }
    let rule_name = decision.rule.map(|r| r.name());
    let report = |host: &mut dyn Host, who: &str, would: &str| {
        host.increment(vm.stats.dry_run_would_block, 1);
        if host.log_enabled(Level::Info) {
            let context = describe(rule_name, Some(&caller.identity), request, None);
            host.log(Level::Info, &format!("airlock: dry-run: rule `{who}` would have answered {would} ({context})"));
        }
    };
    // A dry-run rule that matched earlier did not decide (the policy went on to the real
    // decision); it is reported as what it would have done.
    let mut dry_run_reported = false;
    if let Some(shadow) = decision.dry_run.filter(|r| r.action() != Action::Allow) {
        report(host, shadow.name(), shadow.action().as_str());
        dry_run_reported = true;
    }
    let limited = match (rule, decision.rule) {
        (Some(index), Some(r)) => over_limit(vm, host, request, &caller, index, r),
        _ => None,
    };
    // A rule masking SQL results by column: the columns to mask, and what cannot be
    // masked (refused unless a human approves it), or why nothing can be.
    let (columns, computed, unreadable) = match decision.rule {
        Some(r) if body_read && decision.action != Action::Deny => match result_columns(r, body, &memo) {
            Ok(Some(c)) => (Some(c.returned), c.first_unmaskable, None),
            Ok(None) => (None, None, None),
            Err(reply) => (None, None, Some(reply)),
        },
        _ => (None, None, None),
    };
    // Over its limit, or unmaskable, the rule's own action does not apply.
    let refusal = match (limited.or(unreadable), decision.action) {
        (Some(reply), _) => reply,
        (None, Action::Allow) => {
            let json = match body {
                Body::Json(b) => Some(b),
                _ => None,
            };
            match json.and_then(|b| blocked_call(vm, host, request, b)).or(computed) {
                Some(refusal) => refusal,
                None => {
                    let listing = json.and_then(mcp::lists).and_then(|kind| listing(vm, host, request, &caller, kind));
                    let step = Step::Forward(Decision::Allow);
                    return Verdict { rule, dry_run_reported, step, listing, columns };
                }
            }
        }
        (None, Action::Deny) => match (rule_name, decision.rule) {
            (Some(name), Some(matched)) => {
                Reply::new(Code::DeniedByRule, denial_message(name, matched, body)).with_rule(name)
            }
            _ => Reply::new(Code::DeniedByDefault, "no rule allows this request"),
        },
        (None, Action::Approve) => match (rule, config.dry_run) {
            // The approval is bound to the exact body: read it before asking anyone.
            (Some(index), false) if !body_read => {
                return Verdict::step(rule, dry_run_reported, Step::NeedsBody(AfterBody::Approve(caller, index)));
            }
            // Approved, a computed or filtering use is a human's call; what is returned
            // as it is stays masked.
            (Some(index), false) => {
                let mut verdict = Verdict::step(rule, dry_run_reported, Step::Approve(caller, index));
                verdict.columns = columns;
                return verdict;
            }
            _ => Reply::new(Code::ApprovalPending, "this request needs human approval")
                .with_rule(rule_name.unwrap_or("default")),
        },
    };
    if config.dry_run {
        report(host, rule_name.unwrap_or("default"), refusal.code.as_str());
        // Not enforced, but what is returned as it is stays masked, as masking is.
        let mut verdict = Verdict::step(rule, true, Step::Forward(Decision::DryRunAllow));
        verdict.columns = columns;
        return verdict;
    }
    Verdict::step(rule, dry_run_reported, Step::Refuse(refusal))
}

/// What a rule that masks SQL results by column (`sql_result`) makes of the request.
struct ResultColumns {
    /// The result columns to mask by name.
    returned: Vec<String>,
    /// Why masking cannot answer it without a human's approval: something computed from
    /// a sensitive column, or filtered by one.
    first_unmaskable: Option<Reply>,
}

/// `Ok(None)` for a rule without `sql_result`; `Err` when what to mask cannot be known
/// (no SQL where the rule says, or SQL that does not parse): refused even if approved.
fn result_columns(rule: &Rule, body: Body, memo: &Memo) -> Result<Option<ResultColumns>, Reply> {
    let Some(sql_result) = rule.sql_result() else { return Ok(None) };
    let name = rule.name();
    let uses = sql_result.read(body, &memo.sql).map_err(|e| {
        Reply::new(
            Code::DeniedByRule,
            format!(
                "the request was blocked by rule `{name}`: its SQL results are masked by column, and {e}, so what \
                 to mask cannot be known"
            ),
        )
        .with_rule(name)
        .with_reason("sql_not_maskable")
    })?;
    let first_unmaskable = uses.unmaskable().map(|u| {
        let (reason, advice) = match u.kind {
            UseKind::Predicate => (
                "sensitive_column_predicate",
                "filter, join, group and sort by other columns; a sensitive column may only be returned as it is",
            ),
            _ => (
                "sensitive_column_transform",
                "return sensitive columns as they are (they come back masked) or leave them out",
            ),
        };
        Reply::new(
            Code::DeniedByRule,
            format!(
                "the request was blocked by rule `{name}`: its SQL results are masked by column, and masking cannot \
                 hide sensitive column {u}; {advice}"
            ),
        )
        .with_rule(name)
        .with_reason(reason)
    });
    Ok(Some(ResultColumns { returned: uses.returned, first_unmaskable }))
}

/// Why a rule refused: its name, and when one of its `sql` conditions read SQL that does
/// not parse, that too, so an agent that made a typo is not told its query was
/// destructive. The parser's own message stays out: it quotes the text, which may hold a
/// value that should not be echoed back or land in logs.
fn denial_message(name: &str, rule: &crate::policy::Rule, body: Body) -> String {
    let readings = rule.sql_readings(body);
    if let Some(reading) = readings.iter().find(|r| r.analysis.is_err()) {
        return format!(
            "the request was blocked by rule `{name}`: the SQL at {} does not parse as {} SQL, and SQL that \
             does not parse is refused",
            reading.place, reading.dialect
        );
    }
    let sensitive = readings
        .iter()
        .filter(|r| r.judges_sensitive)
        .find_map(|r| r.analysis.as_ref().ok().and_then(|a| a.columns.uses.iter().find(|u| u.kind != UseKind::Column)));
    match sensitive {
        Some(u) => format!("the request was blocked by rule `{name}`: its SQL uses sensitive column {u}"),
        None => format!("the request was blocked by rule `{name}`"),
    }
}

/// What the answer to an allowed list request is checked for; `None`: nothing.
fn listing(vm: &VmState, host: &dyn Host, request: &Request, caller: &Caller, kind: mcp::ListKind) -> Option<Listing> {
    let config = &vm.config;
    // Hiding enforces the rules: not while the whole config is a dry run.
    let hide_for = (!config.dry_run).then(|| caller.target.clone());
    let pinned = kind == mcp::ListKind::Tools && config.mcp.pin_tools != PinMode::Off;
    let pins = pinned.then(|| pin_upstream(host, request));
    let block = config.mcp.pin_tools == PinMode::Block && !config.dry_run;
    (hide_for.is_some() || pins.is_some()).then_some(Listing { kind, hide_for, pins, block })
}

/// Counts the request against the deciding rule's limit, if it has one. `Some` refusal
/// when the limit is reached, or when the request cannot be counted (fail closed).
/// Called only where the policy decided, which happens once per request: a decision
/// that needs the body is taken (and counted) once the body is read, and an `approve`
/// rule that reads the body afterwards does not decide again.
fn over_limit(
    vm: &VmState,
    host: &mut dyn Host,
    request: &Request,
    caller: &Caller,
    index: usize,
    rule: &Rule,
) -> Option<Reply> {
    let limit = rule.limit()?;
    let name = rule.name();
    let hash = limit::identity_hash(limit.by, &caller.identity, request.session(&caller.identity));
    let reply = match Counter::new(name, limit).count(host, &hash, request.started_ms) {
        Outcome::Counted => return None,
        Outcome::Limited { retry_after_secs } => Reply::new(
            Code::RateLimited,
            format!(
                "rule `{name}` allows {} requests per {} s per {}; retry in {retry_after_secs} s",
                limit.requests,
                limit.per_seconds,
                limit.by.as_str()
            ),
        )
        .with_retry_after(retry_after_secs),
        Outcome::Uncounted(failure) => {
            host.log(
                Level::Warn,
                &format!("airlock: rule `{name}`: a request could not be counted, refused: {}", failure.describe()),
            );
            Reply::new(Code::RateLimited, format!("rule `{name}` could not count this request against its limit"))
                .with_reason("limit_uncounted")
                .with_retry_after(1)
        }
    };
    if let Some(Some(id)) = vm.stats.rule_rate_limited.get(index) {
        host.increment(*id, 1);
    }
    Some(reply.with_rule(name))
}

/// The policy's view of a buffered body: parsed, not grepped, so JSON escapes such as
/// `\u0044ROP` are decoded before any rule matches.
pub fn decide_on_body(vm: &VmState, host: &mut dyn Host, request: &Request, caller: Caller) -> Verdict {
    let bytes = request.body_bytes();
    if bytes.is_empty() {
        return decide(vm, host, request, caller, Body::Empty);
    }
    match (serde_json::from_slice::<serde_json::Value>(bytes), std::str::from_utf8(bytes)) {
        (Ok(json), _) => decide(vm, host, request, caller, Body::Json(&json)),
        (Err(_), Ok(text)) => decide(vm, host, request, caller, Body::NotJson(text)),
        (Err(_), Err(_)) => decide(vm, host, request, caller, Body::Unreadable),
    }
}

/// Whether the caller's rules deny the use of a listed `item` (a tool called, a resource
/// read, a prompt got, with no arguments): such an item is hidden from the caller's list.
pub fn denies_use(
    vm: &VmState,
    request: &Request,
    identity: &Identity,
    target: &RequestTarget,
    kind: mcp::ListKind,
    item: &str,
) -> bool {
    let facts = RequestFacts { method: request.method(), target, headers: &request.headers, identity: Some(identity) };
    let usage = kind.use_of(item);
    matches!(vm.config.policy.evaluate(&facts, Body::Json(&usage)), Evaluation::Decided(d) if d.action == Action::Deny)
}

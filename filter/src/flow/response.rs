//! The response phase on a masked route: refuse what cannot be masked while the status
//! can still change; then mask streams (SSE, NDJSON) as they arrive, and buffer any other
//! body to mask it whole.
//!
//! Compressed bodies: Airlock removes `accept-encoding` from requests on masked routes, so
//! a compliant upstream answers uncompressed. A `gzip`, `deflate` or `br` answer all the same is
//! decoded (bounded, see `decompress`), masked and sent decoded; any other coding cannot be
//! masked as it is, and is refused rather than passed through.

use crate::audit;
use crate::decompress::{Coding, DecodeError, Decoder, Encoding};
use crate::host::{Host, Level};
use crate::mask::{MaskError, ResultShape};
use crate::mcp::ListKind;
use crate::pins;
use crate::reply::{Code, Reply};
use crate::stream::{StreamKind, StreamMasker};
use crate::vm_state::VmState;

use super::decide::Listing;

/// What to do with a response whose request was forwarded under a mask profile.
pub enum Plan {
    /// Nothing to mask (no body).
    PassThrough,
    /// Buffer the body; `content-length` is gone, since masking changes the size.
    /// `coding`: decoded first (`content-encoding` is gone too).
    Buffer {
        is_json: bool,
        coding: Option<Coding>,
    },
    /// Mask the body as it streams, decoded first if `Some`; `content-length` is gone.
    Stream(StreamKind, Option<Coding>),
    Refuse(Reply),
}

/// The headers callback: the last moment the status can change.
pub fn plan(vm: &VmState, host: &mut dyn Host, end_of_stream: bool, is_head: bool) -> Plan {
    if is_head {
        // The length a GET would get is the unmasked body's: it must not be told.
        host.remove_response_header("content-length");
        return Plan::PassThrough;
    }
    if end_of_stream {
        return Plan::PassThrough;
    }
    let coding = match host.response_header("content-encoding").as_deref().map(crate::decompress::encoding) {
        None | Some(Encoding::Identity) => None,
        Some(Encoding::Decode(coding)) => Some(coding),
        Some(Encoding::Unsupported(codings)) => return Plan::Refuse(still_encoded(&codings)),
    };
    let content_type = host.response_header("content-type").unwrap_or_default().to_ascii_lowercase();
    // Before streams too: a stream in another charset would only fail once its headers
    // are gone, and the client would get a 200 and a cut connection.
    if let Some(charset) =
        charset(&content_type).filter(|c| !matches!(c.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii"))
    {
        return Plan::Refuse(not_maskable(&format!("the response's charset `{charset}` cannot be masked")));
    }
    if let Some(kind) = StreamKind::from_content_type(&content_type) {
        host.remove_response_header("content-length");
        drop_coding(host, coding);
        return Plan::Stream(kind, coding);
    }
    // Compressed, the declared length is a lower bound of what the masker must hold.
    let declared = host.response_header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > vm.config.response_body_limit) {
        return Plan::Refuse(too_large());
    }
    let is_json = content_type.contains("json");
    host.remove_response_header("content-length");
    drop_coding(host, coding);
    Plan::Buffer { is_json, coding }
}

/// The client gets the decoded body: it must not be told it is still encoded.
fn drop_coding(host: &mut dyn Host, coding: Option<Coding>) {
    if coding.is_some() {
        host.remove_response_header("content-encoding");
    }
}

/// The refusal of codings Airlock does not decode (all but one `gzip`, `deflate` or `br`).
fn still_encoded(codings: &str) -> Reply {
    not_maskable(&format!(
        "the response is encoded (`content-encoding: {codings}`) although Airlock removed `accept-encoding`; \
        Airlock decodes only a single gzip, deflate or br coding, so it cannot be masked"
    ))
}

/// A body that could not be decoded: too large once decoded, a bomb, or corrupt.
fn undecodable(e: DecodeError) -> Reply {
    let code = match e {
        DecodeError::TooLarge { .. } | DecodeError::Ratio => Code::ResponseTooLarge,
        DecodeError::Corrupt(_) | DecodeError::LargeWindow => Code::ResponseNotMaskable,
    };
    Reply::new(code, format!("the compressed response cannot be masked: {e}"))
}

/// The `charset` parameter of a lower-cased `content-type`, unquoted.
fn charset(content_type: &str) -> Option<String> {
    content_type
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("charset="))
        .map(|c| c.trim_matches('"').trim().to_string())
}

/// The body arrived over the limit. Its headers are gone already: Envoy turns the reply
/// into a reset of the stream. Either way no unmasked byte leaves.
pub fn too_large() -> Reply {
    Reply::new(Code::ResponseTooLarge, "the response is larger than the masking limit and cannot be sent unmasked")
}

/// What masking did, for the log line and the audit record.
pub struct Masked {
    pub values: u64,
    /// The body's length now (what `content-length` must say).
    pub len: usize,
    /// The masked body as the audit record keeps it (cut to `audit.max_body_bytes`).
    pub excerpt: Option<String>,
}

/// A streamed answer on a route whose SQL rows are masked by column.
pub fn stream_of_sql_rows() -> Reply {
    not_maskable("the query returns sensitive columns, which are masked by column in a JSON answer, not in a stream")
}

/// Masks the whole buffered body of `len` bytes with mask profile `profile`, and the
/// result `columns` of a SQL answer laid out as their shape says.
pub fn mask(
    vm: &VmState,
    host: &mut dyn Host,
    profile: usize,
    is_json: bool,
    coding: Option<Coding>,
    len: usize,
    columns: Option<(&ResultShape, &[String])>,
) -> Result<Masked, Reply> {
    let config = &vm.config;
    let Some(masker) = config.mask_profile(profile) else {
        return Err(Reply::new(Code::Misconfigured, "the rule names a mask profile that does not exist"));
    };
    if len == 0 {
        return Ok(Masked { values: 0, len: 0, excerpt: None });
    }
    let Some(body) = host.response_body(len) else {
        return Err(not_maskable("the response body could not be read for masking"));
    };
    let body = match coding {
        Some(c) => Decoder::decode_all(c, &body, config.response_body_limit as u64).map_err(undecodable)?,
        None => body,
    };
    if body.starts_with(&[0xFF, 0xFE]) || body.starts_with(&[0xFE, 0xFF]) {
        return Err(not_maskable("the response starts with a UTF-16 byte order mark: it cannot be masked"));
    }
    // RFC 8259 lets a parser ignore a UTF-8 byte order mark: the JSON after it is masked,
    // and the mark is sent back in front of it.
    let (bom, content) = match body.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM, rest),
        None => (&[][..], body.as_slice()),
    };
    let by_column = columns.filter(|(_, names)| !names.is_empty());
    if by_column.is_some() && !is_json {
        return Err(not_maskable(
            "the query returns sensitive columns, which are masked by column in a JSON answer, and this answer is \
             not JSON",
        ));
    }
    let as_json = if is_json {
        let masked = match by_column {
            Some((shape, names)) => masker.mask_sql_result(content, shape, names),
            None => masker.mask_json(content),
        };
        match masked {
            Ok((out, counts)) if !bom.is_empty() => Some(([bom, out.as_slice()].concat(), counts)),
            Ok(done) => Some(done),
            // Not JSON after all: masked as text below, never passed as is, unless the
            // profile relies on JSON structure that text masking cannot see.
            Err(MaskError::InvalidJson(_)) if !masker.masks_by_structure() && by_column.is_none() => None,
            Err(_) => return Err(not_maskable("the JSON response could not be masked safely")),
        }
    } else {
        None
    };
    let (out, counts) = match as_json {
        Some(done) => done,
        None => match std::str::from_utf8(&body) {
            // Text never holds NUL; UTF-16 or UTF-32 without a byte order mark does (and is
            // valid UTF-8 when its characters are ASCII), and detectors cannot see through it.
            Ok(text) if text.contains('\0') => {
                return Err(not_maskable(
                    "the response holds NUL bytes (UTF-16, UTF-32 or binary): it cannot be masked",
                ))
            }
            Ok(text) => {
                let (out, counts) = masker.mask_text(text);
                (out.into_owned().into_bytes(), counts)
            }
            Err(_) => return Err(not_maskable("the response is not text, so it cannot be masked")),
        },
    };
    if counts.total() > 0 {
        host.increment(vm.stats.masked_responses, 1);
        if let Some(ids) = vm.stats.masked_values.get(profile) {
            for (kind, n) in counts.iter() {
                if let Some(id) = ids.get(kind) {
                    host.increment(*id, n);
                }
            }
        }
    }
    // A decoded body is sent decoded, masked or not.
    let changed = counts.total() > 0 || coding.is_some();
    if changed {
        host.set_response_body(len, &out);
    }
    let excerpt = config
        .audit
        .as_ref()
        .map(|a| String::from_utf8_lossy(audit::excerpt_bytes(&out, a.max_body_bytes)).into_owned());
    let len = if changed { out.len() } else { len };
    Ok(Masked { values: counts.total(), len, excerpt })
}

/// Removes from a buffered MCP list answer of `len` bytes the items `hide` names
/// (decoding it first if `coding`), counting them by kind. With pinning, a tool list's
/// definitions are checked against their pins first, and in `block` mode a changed tool
/// is removed too. Returns the body's length now.
pub fn filter_list(
    vm: &VmState,
    host: &mut dyn Host,
    coding: Option<Coding>,
    sse: bool,
    len: usize,
    listing: &Listing,
    hide: &mut dyn FnMut(&str) -> bool,
) -> Result<usize, Reply> {
    if len == 0 {
        return Ok(0);
    }
    let Some(body) = host.response_body(len) else {
        return Err(not_maskable("the MCP list could not be read to filter it"));
    };
    let body = match coding {
        Some(c) => Decoder::decode_all(c, &body, vm.config.response_body_limit as u64).map_err(undecodable)?,
        None => body,
    };
    let blocked = match &listing.pins {
        Some(upstream) => check_pins(vm, host, upstream, &body, sse, listing.block),
        None => Vec::new(),
    };
    let mut hide = |item: &str| blocked.iter().any(|b| b == item) || hide(item);
    match crate::mcp::filter_list(&body, sse, listing.kind, &mut hide) {
        Some((out, hidden)) => {
            let counter = match listing.kind {
                ListKind::Tools => vm.stats.mcp_tools_hidden,
                ListKind::Resources => vm.stats.mcp_resources_hidden,
                ListKind::Prompts => vm.stats.mcp_prompts_hidden,
            };
            host.increment(counter, hidden as u64);
            host.set_response_body(len, &out);
            Ok(out.len())
        }
        None if coding.is_some() => {
            host.set_response_body(len, &body);
            Ok(body.len())
        }
        None => Ok(len),
    }
}

/// Checks the definitions a tool list shows against the upstream's pins: new ones are
/// pinned, changed ones counted and logged, and both reported to the control service
/// (which alerts). Returns the tools to remove: the changed ones, in `block` mode.
fn check_pins(vm: &VmState, host: &mut dyn Host, upstream: &str, body: &[u8], sse: bool, block: bool) -> Vec<String> {
    let tools = crate::mcp::listed_tools(body, sse);
    if tools.is_empty() {
        return Vec::new();
    }
    let observed = pins::observe(host, upstream, &tools);
    host.increment(vm.stats.mcp_tools_pinned, observed.pinned.len() as u64);
    host.increment(vm.stats.mcp_tool_definition_changed, observed.changed.len() as u64);
    let then = if block { "hidden and its calls refused" } else { "still usable (mcp.pin_tools: alert)" };
    for tool in &observed.changed {
        host.log(
            Level::Warn,
            &format!(
                "airlock: MCP tool `{tool}` of upstream `{upstream}` changed its definition since it was pinned; \
                 {then} until an approver accepts it (airlock tools changes)"
            ),
        );
    }
    vm.report_pins(host, observed.report);
    if block {
        observed.blocked
    } else {
        Vec::new()
    }
}

/// The byte order mark of UTF-8.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn not_maskable(message: &str) -> Reply {
    Reply::new(Code::ResponseNotMaskable, message)
}

/// One chunk of a streamed response (`len` bytes as Envoy hands them over), masked and
/// written back in its place: often shorter (held back until it cannot become part of a
/// detection), sometimes longer (what was held is released). Returns the values masked.
pub fn mask_chunk(
    vm: &VmState,
    host: &mut dyn Host,
    profile: usize,
    masker: &mut StreamMasker,
    decoder: Option<&mut Decoder>,
    len: usize,
    end_of_stream: bool,
) -> Result<u64, Reply> {
    let Some(mask) = vm.config.mask_profile(profile) else {
        return Err(Reply::new(Code::Misconfigured, "the rule names a mask profile that does not exist"));
    };
    let mut chunk = match host.response_body(len) {
        _ if len == 0 => Vec::new(),
        Some(chunk) => chunk,
        // Unread bytes must not pass as they are.
        None => {
            host.set_response_body(len, &[]);
            return Err(not_maskable("the streamed response could not be read for masking"));
        }
    };
    let decoded = decoder.is_some();
    if let Some(decoder) = decoder {
        let mut plain = Vec::with_capacity(chunk.len() * 4);
        let mut done = decoder.push(&chunk, &mut plain);
        if done.is_ok() && end_of_stream {
            done = decoder.finish(&mut plain);
        }
        if let Err(e) = done {
            host.set_response_body(len, &[]);
            return Err(undecodable(e));
        }
        chunk = plain;
    }
    let mut out = Vec::with_capacity(chunk.len() + 64);
    let mut done = masker.push(mask, &chunk, &mut out);
    if done.is_ok() && end_of_stream {
        done = masker.finish(mask, &mut out);
    }
    if let Err(e) = done {
        // Nothing of this chunk passes; the reply then cuts the stream.
        host.set_response_body(len, &[]);
        return Err(Reply::new(e.code(), format!("the streamed response cannot be masked safely: {e}")));
    }
    if decoded || out != chunk {
        host.set_response_body(len, &out);
    }
    let counts = masker.take_counts();
    if let Some(ids) = vm.stats.masked_values.get(profile) {
        for (kind, n) in counts.iter() {
            if let Some(id) = ids.get(kind) {
                host.increment(*id, n);
            }
        }
    }
    Ok(counts.total())
}

//! The response phase on a masked route: refuse what cannot be masked while the status
//! can still change; then mask streams (SSE, NDJSON) as they arrive, and buffer any other
//! body to mask it whole.
//!
//! Compressed bodies are refused: Airlock removes `accept-encoding` from requests on masked
//! routes, so a compliant upstream answers uncompressed; whatever still names a coding in
//! `content-encoding` cannot be masked as it is, and is never passed through.

use crate::audit;
use crate::host::Host;
use crate::mask::MaskError;
use crate::reply::{Code, Reply};
use crate::stream::{StreamKind, StreamMasker};
use crate::vm_state::VmState;

/// What to do with a response whose request was forwarded under a mask profile.
pub enum Plan {
    /// Nothing to mask (no body).
    PassThrough,
    /// Buffer the body; `content-length` is gone, since masking changes the size.
    Buffer {
        is_json: bool,
    },
    /// Mask the body as it streams; `content-length` is gone.
    Stream(StreamKind),
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
    if let Some(encoding) = host.response_header("content-encoding") {
        if let Some(reply) = still_encoded(&encoding) {
            return Plan::Refuse(reply);
        }
    }
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
        return Plan::Stream(kind);
    }
    let declared = host.response_header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > vm.config.response_body_limit) {
        return Plan::Refuse(too_large());
    }
    let is_json = content_type.contains("json");
    host.remove_response_header("content-length");
    Plan::Buffer { is_json }
}

/// A `content-encoding` naming a coding (any but `identity`, in any case, with any
/// spacing, stacked or not): the body cannot be masked. The refusal names the codings.
fn still_encoded(value: &str) -> Option<Reply> {
    let codings: Vec<&str> =
        value.split(',').map(str::trim).filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")).collect();
    if codings.is_empty() {
        return None;
    }
    Some(not_maskable(&format!(
        "the response is encoded (`content-encoding: {}`) although Airlock removed `accept-encoding`; Airlock \
        does not decode response bodies, so it cannot be masked",
        codings.join(", ")
    )))
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

/// Masks the whole buffered body of `len` bytes with mask profile `profile`.
pub fn mask(vm: &VmState, host: &mut dyn Host, profile: usize, is_json: bool, len: usize) -> Result<Masked, Reply> {
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
    if body.starts_with(&[0xFF, 0xFE]) || body.starts_with(&[0xFE, 0xFF]) {
        return Err(not_maskable("the response starts with a UTF-16 byte order mark: it cannot be masked"));
    }
    // RFC 8259 lets a parser ignore a UTF-8 byte order mark: the JSON after it is masked,
    // and the mark is sent back in front of it.
    let (bom, content) = match body.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM, rest),
        None => (&[][..], body.as_slice()),
    };
    let as_json = if is_json {
        match masker.mask_json(content) {
            Ok((out, counts)) if !bom.is_empty() => Some(([bom, out.as_slice()].concat(), counts)),
            Ok(done) => Some(done),
            // Not JSON after all: masked as text below, never passed as is, unless the
            // profile relies on JSON structure that text masking cannot see.
            Err(MaskError::InvalidJson(_)) if !masker.masks_by_structure() => None,
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
        host.set_response_body(len, &out);
    }
    let excerpt = config
        .audit
        .as_ref()
        .map(|a| String::from_utf8_lossy(audit::excerpt_bytes(&out, a.max_body_bytes)).into_owned());
    let len = if counts.total() > 0 { out.len() } else { len };
    Ok(Masked { values: counts.total(), len, excerpt })
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
    len: usize,
    end_of_stream: bool,
) -> Result<u64, Reply> {
    let Some(mask) = vm.config.mask_profile(profile) else {
        return Err(Reply::new(Code::Misconfigured, "the rule names a mask profile that does not exist"));
    };
    let chunk = if len == 0 { Vec::new() } else { host.response_body(len).unwrap_or_default() };
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
    if out != chunk {
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

//! The response phase on a masked route: refuse what cannot be masked while the status
//! can still change, then buffer the body and mask it whole.

use crate::audit;
use crate::host::Host;
use crate::mask::MaskError;
use crate::reply::{Code, Reply};
use crate::vm_state::VmState;

/// What to do with a response whose request was forwarded under a mask profile.
pub enum Plan {
    /// Nothing to mask (no body).
    PassThrough,
    /// Buffer the body; `content-length` is gone, since masking changes the size.
    Buffer { is_json: bool },
    Refuse(Reply),
}

/// The headers callback: the last moment the status can change.
pub fn plan(vm: &VmState, host: &mut dyn Host, end_of_stream: bool) -> Plan {
    if end_of_stream {
        return Plan::PassThrough;
    }
    if let Some(encoding) = host.response_header("content-encoding") {
        if !encoding.trim().eq_ignore_ascii_case("identity") {
            return Plan::Refuse(Reply::new(Code::ResponseNotMaskable, "the upstream answered with a compressed body, which cannot be masked"));
        }
    }
    let declared = host.response_header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > vm.config.response_body_limit) {
        return Plan::Refuse(too_large());
    }
    let is_json = host.response_header("content-type").is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    host.remove_response_header("content-length");
    Plan::Buffer { is_json }
}

/// The body arrived over the limit. Its headers are gone already: Envoy turns the reply
/// into a reset of the stream. Either way no unmasked byte leaves.
pub fn too_large() -> Reply {
    Reply::new(Code::ResponseTooLarge, "the response is larger than the masking limit and cannot be sent unmasked")
}

/// What masking did, for the log line and the audit record.
pub struct Masked {
    pub values: u64,
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
        return Ok(Masked { values: 0, excerpt: None });
    }
    let Some(body) = host.response_body(len) else {
        return Err(not_maskable("the response body could not be read for masking"));
    };
    let as_json = if is_json {
        match masker.mask_json(&body) {
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
    let excerpt = config.audit.as_ref().map(|a| String::from_utf8_lossy(audit::excerpt_bytes(&out, a.max_body_bytes)).into_owned());
    Ok(Masked { values: counts.total(), excerpt })
}

fn not_maskable(message: &str) -> Reply {
    Reply::new(Code::ResponseNotMaskable, message)
}

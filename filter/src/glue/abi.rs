//! Non-panicking wrappers over the proxy-wasm host ABI.
//!
//! The SDK's `hostcalls` panic on any status they do not expect and on header values
//! that are not UTF-8 (legal `obs-text` in HTTP/1). A panic kills the VM, and with
//! `FAIL_CLOSED` every later request on that worker is refused: one odd header would be a
//! denial of service. These wrappers return `Option`/`bool` instead, read header values as
//! bytes and decode them lossily.
#![allow(clashing_extern_declarations)]

use std::ptr::null_mut;

use crate::headers::HeaderList;

/// Host status codes (proxy-wasm ABI 0.2.1).
const OK: u32 = 0;
const CAS_MISMATCH: u32 = 8;

pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const MAP_CALLOUT_RESPONSE_HEADERS: u32 = 6;
pub const BUFFER_REQUEST_BODY: u32 = 0;
pub const BUFFER_RESPONSE_BODY: u32 = 1;
pub const BUFFER_CALLOUT_RESPONSE_BODY: u32 = 4;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_REQUEST: u32 = 0;
const METRIC_COUNTER: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_done() -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
}

/// Takes ownership of a buffer the host allocated through the SDK's exported
/// `proxy_on_memory_allocate` (a boxed byte slice of exactly `size` bytes).
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host filled `size` bytes it allocated with our allocator, and hands us
    // the only pointer to them.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length of a live str.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

pub fn log_level() -> Option<u32> {
    let mut level = 0;
    // SAFETY: writes one u32 into a local.
    (unsafe { proxy_get_log_level(&mut level) } == OK).then_some(level)
}

pub fn now_nanos() -> Option<u64> {
    let mut t = 0;
    // SAFETY: writes one u64 into a local.
    (unsafe { proxy_get_current_time_nanoseconds(&mut t) } == OK).then_some(t)
}

pub fn set_tick_period_ms(ms: u32) -> bool {
    // SAFETY: plain value call.
    unsafe { proxy_set_tick_period_milliseconds(ms) == OK }
}

/// Tells Envoy that the root context, whose `on_done` asked it to wait, is done.
pub fn done() -> bool {
    // SAFETY: plain call.
    unsafe { proxy_done() == OK }
}

pub fn buffer(buffer_type: u32, max: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer/length pair into locals.
    let status = unsafe { proxy_get_buffer_bytes(buffer_type, 0, max, &mut data, &mut size) };
    (status == OK).then(|| take(data, size))
}

pub fn set_buffer(buffer_type: u32, replace_len: usize, value: &[u8]) -> bool {
    // SAFETY: pointer and length of a live slice.
    unsafe { proxy_set_buffer_bytes(buffer_type, 0, replace_len, value.as_ptr(), value.len()) == OK }
}

pub fn header(map_type: u32, name: &str) -> Option<String> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: key is a live str; the host writes a pointer/length pair into locals.
    let status = unsafe { proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size) };
    (status == OK).then(|| lossy(take(data, size)))
}

pub fn headers(map_type: u32) -> HeaderList {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer/length pair into locals.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    if status != OK {
        return HeaderList::default();
    }
    parse_pairs(&take(data, size)).unwrap_or_default()
}

pub fn set_header(map_type: u32, name: &str, value: &str) -> bool {
    // SAFETY: pointers and lengths of live strs.
    unsafe { proxy_replace_header_map_value(map_type, name.as_ptr(), name.len(), value.as_ptr(), value.len()) == OK }
}

pub fn remove_header(map_type: u32, name: &str) -> bool {
    // SAFETY: pointer and length of a live str.
    unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) == OK }
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: path is a live String; the host writes a pointer/length pair into locals.
    let status = unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) };
    (status == OK && !data.is_null()).then(|| take(data, size))
}

pub fn resume_request() -> bool {
    // SAFETY: plain value call.
    unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) == OK }
}

/// Makes the following host calls act for another context (a request, from the root).
pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: plain value call.
    unsafe { proxy_set_effective_context(context_id) == OK }
}

pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let serialized = serialize_pairs(headers);
    let details = "airlock";
    // SAFETY: pointers and lengths of live buffers.
    unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        ) == OK
    }
}

pub fn define_counter(name: &str) -> Option<u32> {
    let mut id = 0;
    // SAFETY: name is a live str; the host writes one u32 into a local.
    (unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) } == OK).then_some(id)
}

pub fn increment(metric: u32, by: i64) {
    // SAFETY: plain value call.
    unsafe { proxy_increment_metric(metric, by) };
}

/// A value every VM of this proxy sees, with the version a conditional write must name.
pub fn shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: key is a live str; the host writes a pointer/length pair and a u32 into locals.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    (status == OK).then(|| (take(data, size), cas))
}

/// Writes a shared value if its version is still `cas` (0: whatever it is).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<bool, u32> {
    // SAFETY: pointers and lengths of live buffers.
    match unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) } {
        OK => Ok(true),
        CAS_MISMATCH => Ok(false),
        status => Err(status),
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The ABI's map encoding: count, then (name length, value length) pairs, then the
/// NUL-terminated names and values.
fn parse_pairs(bytes: &[u8]) -> Option<HeaderList> {
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    };
    let count = word(0)?;
    let mut sizes = 4;
    let mut data = 4 + count.checked_mul(8)?;
    let mut out = HeaderList::with_capacity(count.min(256), bytes.len());
    for _ in 0..count {
        let (name_len, value_len) = (word(sizes)?, word(sizes + 4)?);
        sizes += 8;
        let name = bytes.get(data..data + name_len)?;
        data += name_len + 1;
        let value = bytes.get(data..data + value_len)?;
        data += value_len + 1;
        out.push(&String::from_utf8_lossy(name), &String::from_utf8_lossy(value));
    }
    Some(out)
}

fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + pairs.iter().map(|(n, v)| n.len() + v.len() + 10).sum::<usize>());
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

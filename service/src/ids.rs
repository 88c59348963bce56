//! Unguessable identifiers. Approval ids appear in console links and alert messages, so
//! they must not be enumerable: 128 random bits from the OS generator.

use std::fmt;

/// The OS random source failed; the service cannot mint ids safely.
#[derive(Debug)]
pub struct RandomUnavailable;

impl fmt::Display for RandomUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operating system's random number generator is unavailable")
    }
}

impl std::error::Error for RandomUnavailable {}

/// A new approval id: `apr_` followed by 32 lowercase hex digits.
pub fn new_approval_id() -> Result<String, RandomUnavailable> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| RandomUnavailable)?;
    Ok(format!("apr_{}", hex::encode(bytes)))
}

/// Whether `s` has the shape of an id minted by [`new_approval_id`]; lets handlers answer
/// 404 for garbage without a database round trip.
pub fn is_approval_id(s: &str) -> bool {
    s.len() == 36
        && s.starts_with("apr_")
        && s.bytes().skip(4).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new tool-change id: `tch_` followed by 32 lowercase hex digits.
pub fn new_tool_change_id() -> Result<String, RandomUnavailable> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| RandomUnavailable)?;
    Ok(format!("tch_{}", hex::encode(bytes)))
}

/// Whether `s` has the shape of an id minted by [`new_tool_change_id`].
pub fn is_tool_change_id(s: &str) -> bool {
    s.len() == 36
        && s.starts_with("tch_")
        && s.bytes().skip(4).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_distinct_and_well_formed() {
        let a = new_approval_id().unwrap();
        let b = new_approval_id().unwrap();
        assert_ne!(a, b);
        assert!(is_approval_id(&a), "{a}");
    }

    #[test]
    fn rejects_ids_of_the_wrong_shape() {
        assert!(!is_approval_id("apr_123"));
        assert!(!is_approval_id("xyz_0123456789abcdef0123456789abcdef"));
        assert!(!is_approval_id("apr_0123456789ABCDEF0123456789abcdef"));
        assert!(!is_approval_id("apr_0123456789abcdef0123456789abcde/"));
    }
}

//! Who is calling: what a verified token says, in the form the policy matches on.

/// The caller's identity, taken from a verified token. Shared by `Rc` between the token
/// cache and the requests that use it, so a cache hit copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The configured subject claim (`sub` by default).
    pub subject: String,
    /// The configured groups claim (`groups`, `roles`, `realm_access.roles`, ...),
    /// flattened to strings; empty when the token carries none.
    pub groups: Vec<String>,
    /// `exp` of the token, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

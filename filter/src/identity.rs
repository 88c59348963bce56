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
    /// Derived once per token (identities are cached with it), not once per request.
    groups_header: String,
    token_session: String,
}

impl Identity {
    pub fn new(subject: String, groups: Vec<String>, expires_at: u64) -> Identity {
        let groups_header = groups.join(",");
        let session = format!("tok-{subject}-{expires_at}");
        let token_session = crate::audit::excerpt(&session, crate::audit::MAX_SESSION_ID_BYTES).to_string();
        Identity { subject, groups, expires_at, groups_header, token_session }
    }

    /// The groups as the value of the identity groups header.
    pub fn groups_header(&self) -> &str {
        &self.groups_header
    }

    /// The audit session of requests that name none: one per token, named by its subject
    /// and expiry (no hash of the token).
    pub fn token_session(&self) -> &str {
        &self.token_session
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

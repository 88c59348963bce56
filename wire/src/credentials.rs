//! Upstream credentials as the audit trail names them, and the control service's answer
//! to a filter fetching a secret it holds (`GET /v1/secrets/{name}`).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Which credential the filter gave the upstream: its kind (`bearer`, `basic`, `header`,
/// `signed_request`, `oauth2_client_credentials`) and, where there is one, the id of the
/// key that signed it, the control service's name of the secret or the OAuth client id.
/// Never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialUse<'a> {
    pub kind: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Cow<'a, str>>,
}

/// `GET /v1/secrets/{name}`: the secret's current value. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretValue<'a> {
    pub value: Cow<'a, str>,
}

impl fmt::Debug for SecretValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_value_never_shows_in_debug_output() {
        let v = SecretValue { value: "hunter2".into() };
        assert!(!format!("{v:?}").contains("hunter2"));
    }

    #[test]
    fn a_credential_without_a_key_id_is_written_without_one() {
        let used = CredentialUse { kind: "bearer".into(), key_id: None };
        assert_eq!(serde_json::to_string(&used).unwrap(), r#"{"kind":"bearer"}"#);
    }
}

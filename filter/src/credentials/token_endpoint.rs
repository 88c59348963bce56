//! What `oauth2_client_credentials` and `token_exchange` share: an OAuth 2.0 token
//! endpoint (RFC 6749 §3.2) reached through an Envoy cluster, the client's authentication
//! to it (`client_secret_basic`, §2.3.1, or an RFC 7523 `private_key_jwt` assertion), the
//! form it is sent, and the reading of its answer (§5.1) or error (§5.2).
//!
//! Only error codes and token types the endpoint sends are ever put in a log line, cut
//! to printable ASCII: never a secret, an assertion or a token.

use std::cell::Cell;

use base64::Engine as _;
use serde::Deserialize;

use super::signed::RequestSigner;
use super::{header_safe, Secret};
use crate::host::{Callout, Runtime};

/// A token with no `expires_in` is taken to live this long (RFC 6749 §5.1 leaves it to
/// the server's documentation; short is the safe guess).
const DEFAULT_LIFETIME_MS: u64 = 60_000;

/// How the client proves itself to the token endpoint.
pub enum ClientAuth {
    /// `client_secret_basic`: `Basic base64(urlencode(id):urlencode(secret))`.
    Basic(Secret),
    /// `private_key_jwt`: a fresh assertion per request, `iss` = `sub` = the client id,
    /// `aud` = the token endpoint.
    Assertion(Box<RequestSigner>),
}

/// The client's secret, or its signer, as the config gives them.
pub enum AuthSpec {
    Secret(Secret),
    Assertion(Box<RequestSigner>),
}

/// Where the token endpoint is and who the filter is there; built and checked at load.
pub struct TokenEndpoint {
    pub client_id: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    auth: ClientAuth,
}

impl TokenEndpoint {
    pub fn new(client_id: String, auth: AuthSpec, cluster: String, authority: String, path: String) -> Self {
        let auth = match auth {
            AuthSpec::Secret(secret) => {
                let credentials = format!("{}:{}", form_encode(&client_id), form_encode(secret.expose()));
                let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
                ClientAuth::Basic(Secret::new(format!("Basic {encoded}")))
            }
            AuthSpec::Assertion(signer) => ClientAuth::Assertion(signer),
        };
        TokenEndpoint { client_id, cluster, authority, path, timeout_ms: 2000, auth }
    }

    pub fn with_timeout_ms(self, timeout_ms: u64) -> Self {
        TokenEndpoint { timeout_ms, ..self }
    }

    /// Sends `form` (the grant and its parameters, form-encoded) with the client's
    /// authentication; an assertion is minted now, named by `jti`.
    pub fn post(&self, rt: &mut dyn Runtime, form: &str, jti: &Jti) -> Result<u32, String> {
        let content_type = ("content-type", "application/x-www-form-urlencoded");
        let accept = ("accept", "application/json");
        let (headers, body) = match &self.auth {
            ClientAuth::Basic(authorization) => {
                (vec![content_type, accept, ("authorization", authorization.expose())], form.to_string())
            }
            ClientAuth::Assertion(signer) => {
                let assertion = signer.mint_assertion(&jti.next(), rt.now_unix_secs());
                let body = format!(
                    "{form}&client_id={}&client_assertion_type={}&client_assertion={}",
                    form_encode(&self.client_id),
                    form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    assertion.expose()
                );
                (vec![content_type, accept], body)
            }
        };
        rt.dispatch(&Callout {
            cluster: &self.cluster,
            method: "POST",
            authority: &self.authority,
            path: &self.path,
            headers: &headers,
            body: Some(body.as_bytes()),
            timeout_ms: self.timeout_ms,
        })
    }

    /// Digests what is asked of the endpoint (where, as whom, with what `form`): names a
    /// token in shared data so a VM of a changed config never takes up an old one.
    pub fn digest(&self, form: &str) -> String {
        let mut digest = hmac_sha256::Hash::new();
        for part in [&self.cluster, &self.authority, &self.path, &self.client_id, form] {
            digest.update(part.as_bytes());
            digest.update(b"\n");
        }
        digest.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Makes each client assertion's `jti` unique across VMs and restarts.
pub struct Jti {
    prefix: String,
    seq: Cell<u64>,
}

impl Jti {
    /// `instance` differs between VMs (as for audit record ids).
    pub fn new(instance: &str) -> Jti {
        Jti { prefix: instance.to_string(), seq: Cell::new(0) }
    }

    fn next(&self) -> String {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        format!("{}-{n}", self.prefix)
    }
}

/// `application/x-www-form-urlencoded` (the WHATWG byte serializer): what RFC 6749
/// §2.3.1 also asks of the client id and secret before they go in Basic auth.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: String,
    expires_in: Option<u64>,
    /// RFC 8693 §2.2.1: required in a token exchange answer.
    issued_token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// An access token the endpoint issued: header-safe, `Bearer`, with its lifetime.
pub struct Issued {
    pub access_token: String,
    pub lifetime_ms: u64,
}

/// Reads the endpoint's answer. `issued_token_type`, when given, is what RFC 8693 says
/// the answer must name. The error says why in words a log line may carry.
pub fn read_answer(
    status: Option<u32>,
    body: Option<&[u8]>,
    issued_token_type: Option<&str>,
) -> Result<Issued, String> {
    let answer = match (status, body) {
        (Some(200), Some(body)) => {
            serde_json::from_slice::<TokenAnswer>(body).map_err(|_| "the answer is not a token response".to_string())?
        }
        (Some(s), body) => {
            let code = body.and_then(|b| serde_json::from_slice::<ErrorAnswer>(b).ok()).map(|e| e.error);
            return Err(match code {
                Some(code) => format!("HTTP {s}, error `{}`", printable_code(&code)),
                None => format!("HTTP {s}"),
            });
        }
        (None, _) => return Err("unreachable or timed out".into()),
    };
    if !answer.token_type.eq_ignore_ascii_case("bearer") {
        return Err(format!("token_type `{}` is not Bearer", printable_code(&answer.token_type)));
    }
    if let Some(expected) = issued_token_type {
        match answer.issued_token_type.as_deref() {
            Some(issued) if issued == expected => {}
            Some(issued) => return Err(format!("issued_token_type `{}`, not `{expected}`", printable_code(issued))),
            None => return Err("the answer has no issued_token_type (RFC 8693 §2.2.1)".into()),
        }
    }
    header_safe(&answer.access_token)?;
    let lifetime_ms = answer.expires_in.map_or(DEFAULT_LIFETIME_MS, |s| s.saturating_mul(1000)).max(1000);
    Ok(Issued { access_token: answer.access_token, lifetime_ms })
}

/// An error code or token type from the endpoint, safe to log: RFC 6749 codes are
/// printable ASCII; anything else is cut to that, and short.
fn printable_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_graphic()).take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_only_when_bearer_header_safe_and_of_the_issued_type_asked_for() {
        let ok = br#"{"access_token":"t","token_type":"bearer","expires_in":30}"#;
        assert_eq!(read_answer(Some(200), Some(ok), None).unwrap().lifetime_ms, 30_000);
        let refused = [
            (&br#"{"access_token":"t","token_type":"mac"}"#[..], None, "not Bearer"),
            (br#"{"access_token":"a\r\nb","token_type":"Bearer"}"#, None, "control characters"),
            (br#"{"access_token":"t","token_type":"Bearer"}"#, Some("urn:x"), "no issued_token_type"),
            (br#"{"access_token":"t","token_type":"Bearer","issued_token_type":"urn:y"}"#, Some("urn:x"), "`urn:y`"),
            (b"not json", None, "not a token response"),
        ];
        for (body, issued, why) in refused {
            let err = read_answer(Some(200), Some(body), issued).err().unwrap();
            assert!(err.contains(why), "{err}");
        }
        let error = br#"{"error":"invalid_grant\u0007","error_description":"secret s3cr3t"}"#;
        assert_eq!(read_answer(Some(400), Some(error), None).err().unwrap(), "HTTP 400, error `invalid_grant`");
    }
}
